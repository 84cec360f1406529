import type { ContactPresence, ContactShow, LeaveReason, OwnPresence, RosterItem, Show, Subscription, SubscriptionState } from './types.js';

/**
 * Decoding of what the server sends into the client's types. The server is trusted to follow the
 * protocol, but a malformed entry is skipped rather than allowed to poison the client's view.
 */
const SHOWS: ReadonlySet<string> = new Set(['available', 'chat', 'away', 'xa', 'dnd', 'offline']);
const SUBSCRIPTIONS: ReadonlySet<string> = new Set(['none', 'to', 'from', 'both']);
const LEAVE_REASONS: ReadonlySet<string> = new Set(['graceful', 'timeout', 'replaced', 'kicked', 'shutdown', 'crash-recovery', 'node_down']);

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const strOrNull = (v: unknown): string | null => (typeof v === 'string' ? v : null);

export function contactPresence(v: unknown): ContactPresence | null {
  if (!isObj(v) || typeof v.jid !== 'string') return null;
  const show = typeof v.show === 'string' && SHOWS.has(v.show) ? (v.show as ContactShow) : 'offline';
  const available = v.online === true && show !== 'offline';
  const lastSeen = typeof v.lastSeen === 'string' ? new Date(v.lastSeen) : null;
  const p: ContactPresence = {
    jid: v.jid,
    available,
    show: available ? show : 'offline',
    status: strOrNull(v.status),
    priority: typeof v.priority === 'number' ? v.priority : 0,
    lastSeen: lastSeen && !Number.isNaN(lastSeen.getTime()) ? lastSeen : null,
  };
  // Reasons this client does not know yet (a newer server) are left out rather than guessed.
  return !available && typeof v.reason === 'string' && LEAVE_REASONS.has(v.reason) ? { ...p, reason: v.reason as LeaveReason } : p;
}

/** How the server shows a contact you may no longer see: offline, with no status and no last seen. */
export function maskedPresence(jid: string): ContactPresence {
  return { jid, available: false, show: 'offline', status: null, priority: 0, lastSeen: null };
}

export function samePresence(a: ContactPresence, b: ContactPresence): boolean {
  return (
    a.available === b.available &&
    a.show === b.show &&
    a.status === b.status &&
    a.priority === b.priority &&
    (a.lastSeen?.getTime() ?? null) === (b.lastSeen?.getTime() ?? null)
  );
}

export function ownPresence(v: unknown): OwnPresence {
  const o = isObj(v) ? v : {};
  return {
    show: typeof o.show === 'string' && SHOWS.has(o.show) && o.show !== 'offline' ? (o.show as Show) : 'available',
    status: strOrNull(o.status),
    priority: typeof o.priority === 'number' ? o.priority : 0,
  };
}

export function subscriptionState(v: unknown): SubscriptionState {
  const o = isObj(v) ? v : {};
  return {
    jid: typeof o.jid === 'string' ? o.jid : '',
    subscription: typeof o.subscription === 'string' && SUBSCRIPTIONS.has(o.subscription) ? (o.subscription as Subscription) : 'none',
    pendingOut: o.pendingOut === true,
    pendingIn: o.pendingIn === true,
    preApproved: o.preApproved === true,
  };
}

export function rosterItem(v: unknown): RosterItem | null {
  if (!isObj(v) || typeof v.jid !== 'string') return null;
  return {
    ...subscriptionState(v),
    name: strOrNull(v.name),
    groups: Array.isArray(v.groups) ? v.groups.filter((g): g is string => typeof g === 'string') : [],
  };
}

export function sameRosterItem(a: RosterItem, b: RosterItem): boolean {
  return (
    a.jid === b.jid &&
    a.name === b.name &&
    a.subscription === b.subscription &&
    a.pendingOut === b.pendingOut &&
    a.pendingIn === b.pendingIn &&
    a.preApproved === b.preApproved &&
    a.groups.length === b.groups.length &&
    a.groups.every((g, i) => g === b.groups[i])
  );
}
