/**
 * Presence of sessions and the account presence derived from them.
 *
 * The account's presence is never stored: it is computed from the live sessions each time they change,
 * so there is one truth and it cannot drift from the sessions it summarises.
 */
export const SHOWS = ['chat', 'available', 'away', 'xa', 'dnd'] as const;
export type Show = (typeof SHOWS)[number];
export type StatusWord = Show | 'offline';

export const MIN_PRIORITY = -128;
export const MAX_PRIORITY = 127;
export const MAX_STATUS_LENGTH = 1024;

/**
 * Rank used to break priority ties: the more available show wins. `chat` ("free for chat") is the most
 * available, `dnd` the least, following the order in which RFC 6121 §4.7.2.1 describes them as
 * increasingly unavailable.
 */
const SHOW_RANK: Record<Show, number> = { chat: 5, available: 4, away: 3, xa: 2, dnd: 1 };

export function isShow(v: unknown): v is Show {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(SHOW_RANK, v);
}

export interface SessionPresence {
  readonly resource: string;
  /** false for a connected session that has not (yet) sent available presence. */
  readonly available: boolean;
  readonly show: Show;
  readonly status: string | null;
  readonly priority: number;
  /** Epoch ms of the last presence change or activity of the session. */
  readonly lastActive: number;
}

export interface LastSeen {
  readonly at: number;
  readonly status: string | null;
}

export interface AccountPresence {
  readonly jid: string;
  readonly online: boolean;
  readonly show: StatusWord;
  readonly status: string | null;
  readonly priority: number;
  /** The resource whose presence represents the account, when online. */
  readonly resource: string | null;
  /** When the account was last online (epoch ms); null when online or never seen. */
  readonly lastSeen: number | null;
}

/** Orders sessions best first: highest priority, then most available show, then most recent. */
export function compareSessions(a: SessionPresence, b: SessionPresence): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  const r = SHOW_RANK[b.show] - SHOW_RANK[a.show];
  if (r !== 0) return r;
  if (a.lastActive !== b.lastActive) return b.lastActive - a.lastActive;
  return a.resource < b.resource ? -1 : a.resource > b.resource ? 1 : 0;
}

export function topSession(sessions: Iterable<SessionPresence>): SessionPresence | undefined {
  let best: SessionPresence | undefined;
  for (const s of sessions) {
    if (!s.available) continue;
    if (best === undefined || compareSessions(s, best) < 0) best = s;
  }
  return best;
}

export function aggregatePresence(
  jid: string,
  sessions: Iterable<SessionPresence>,
  lastSeen: LastSeen | null,
): AccountPresence {
  const top = topSession(sessions);
  if (top) {
    return {
      jid,
      online: true,
      show: top.show,
      status: top.status,
      priority: top.priority,
      resource: top.resource,
      lastSeen: null,
    };
  }
  return {
    jid,
    online: false,
    show: 'offline',
    status: lastSeen?.status ?? null,
    priority: 0,
    resource: null,
    lastSeen: lastSeen?.at ?? null,
  };
}

/** What watchers can observe of a presence; two presences equal here need not be re-sent. */
export function samePresence(a: AccountPresence, b: AccountPresence): boolean {
  return (
    a.online === b.online &&
    a.show === b.show &&
    a.status === b.status &&
    a.priority === b.priority &&
    a.lastSeen === b.lastSeen
  );
}

/**
 * The last-seen record to keep when the account goes from `before` to offline. `heardAt` is when the
 * account was last heard while online (for a lost connection, its last frame or pong, not the moment the
 * loss was noticed). When an explicit unavailable presence took it offline, its status is the last
 * status, even if empty (RFC 6121 §4.5.1, XEP-0012 §3); otherwise the last available status is kept.
 */
export function lastSeenOnGoingOffline(
  before: AccountPresence,
  heardAt: number,
  unavailable: { readonly status: string | null } | null = null,
): LastSeen {
  return { at: heardAt, status: unavailable !== null ? unavailable.status : before.status };
}

export function validatePriority(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= MIN_PRIORITY && v <= MAX_PRIORITY;
}
