import { isShow } from '../../core/presence.js';
import type { ClusterNote, Delivery, LiveSession } from '../../ports/bus.js';

/**
 * What crosses Redis: registry entries, feed messages and delivery batches, all JSON. Everything read
 * back is checked for shape, because a malformed entry (another version's, or a hand edit) must be
 * skipped, not crash the node or reach a client.
 */

/** A registry entry: the session as every node sees it, plus the epoch of the incarnation holding it (fencing). */
export function encodeEntry(s: LiveSession, epoch: string): string {
  return JSON.stringify({
    resource: s.resource,
    available: s.available,
    show: s.show,
    status: s.status,
    priority: s.priority,
    lastActive: s.lastActive,
    protocol: s.protocol,
    node: s.node,
    epoch: Number(epoch),
    ...(s.detached === true ? { detached: true } : {}),
  });
}

export interface Entry extends LiveSession {
  readonly epoch: number;
}

export function toEntry(v: unknown): Entry | null {
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  if (
    typeof o.resource !== 'string' ||
    typeof o.available !== 'boolean' ||
    !isShow(o.show) ||
    (o.status !== null && typeof o.status !== 'string') ||
    typeof o.priority !== 'number' ||
    typeof o.lastActive !== 'number' ||
    typeof o.protocol !== 'string' ||
    typeof o.node !== 'string' ||
    typeof o.epoch !== 'number' ||
    (o.detached !== undefined && o.detached !== true)
  ) {
    return null;
  }
  return {
    resource: o.resource,
    available: o.available,
    show: o.show,
    status: o.status as string | null,
    priority: o.priority,
    lastActive: o.lastActive,
    protocol: o.protocol,
    node: o.node,
    epoch: o.epoch,
    ...(o.detached === true ? { detached: true as const } : {}),
  };
}

/** Entries as the engine sees them (no epoch), skipping any that are malformed. */
export function toSessions(entries: readonly unknown[]): Entry[] {
  const out: Entry[] = [];
  for (const e of entries) {
    const s = toEntry(typeof e === 'string' ? safeParse(e) : e);
    if (s !== null) out.push(s);
  }
  return out;
}

/** The LiveSession part of an entry: what the engine and the features are handed. */
export function liveOf(e: Entry): LiveSession {
  return {
    resource: e.resource,
    available: e.available,
    show: e.show,
    status: e.status,
    priority: e.priority,
    lastActive: e.lastActive,
    protocol: e.protocol,
    node: e.node,
    ...(e.detached === true ? { detached: true as const } : {}),
  };
}

export function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Messages on the feed channel. */
export type FeedMessage =
  /** A registry change (published by the scripts): the account's whole session list at version v. */
  | { readonly t: 's'; readonly o: string; readonly j: string; readonly v: number; readonly s: Entry[] }
  /** A note from one engine to the others. */
  | { readonly t: 'n'; readonly o: string; readonly e: string; readonly n: ClusterNote }
  /** An incarnation was declared dead: its delivery batches still in flight are dropped. */
  | { readonly t: 'd'; readonly o: string; readonly n: string; readonly e: string }
  /** A node checking that its subscription is live again (it waits to read its own marker). */
  | { readonly t: 'm'; readonly o: string; readonly k: string }
  /** A feature's message to its peers (topic, JSON payload); with `a`, the sender waits for each node's acknowledgement. */
  | { readonly t: 'p'; readonly o: string; readonly e: string; readonly k: string; readonly p: unknown; readonly a?: string }
  /** Node `o` handled the feature message `i` of node `to`. */
  | { readonly t: 'k'; readonly o: string; readonly i: string; readonly to: string }
  /** A node dropped some of its feature messages while Redis was unreachable: every node's features read again. */
  | { readonly t: 'r'; readonly o: string; readonly e: string };

export function parseFeed(text: string): FeedMessage | null {
  const m = safeParse(text) as Record<string, unknown> | undefined;
  if (typeof m !== 'object' || m === null || typeof m.o !== 'string') return null;
  switch (m.t) {
    case 's':
      if (typeof m.j !== 'string' || typeof m.v !== 'number' || !Array.isArray(m.s)) return null;
      return { t: 's', o: m.o, j: m.j, v: m.v, s: toSessions(m.s) };
    case 'n':
      return typeof m.e === 'string' && isNote(m.n) ? { t: 'n', o: m.o, e: m.e, n: m.n } : null;
    case 'd':
      return typeof m.n === 'string' && typeof m.e === 'string' ? { t: 'd', o: m.o, n: m.n, e: m.e } : null;
    case 'm':
      return typeof m.k === 'string' ? { t: 'm', o: m.o, k: m.k } : null;
    case 'p':
      if (typeof m.e !== 'string' || typeof m.k !== 'string' || m.k === '' || !('p' in m) || (m.a !== undefined && typeof m.a !== 'string')) return null;
      return { t: 'p', o: m.o, e: m.e, k: m.k, p: m.p, ...(typeof m.a === 'string' ? { a: m.a } : {}) };
    case 'k':
      return typeof m.i === 'string' && typeof m.to === 'string' ? { t: 'k', o: m.o, i: m.i, to: m.to } : null;
    case 'r':
      return typeof m.e === 'string' ? { t: 'r', o: m.o, e: m.e } : null;
    default:
      return null;
  }
}

function isNote(n: unknown): n is ClusterNote {
  if (typeof n !== 'object' || n === null) return false;
  const o = n as Record<string, unknown>;
  if (typeof o.jid !== 'string') return false;
  if (o.kind === 'invalidate') return Array.isArray(o.parts) && o.parts.every((p) => p === 'roster' || p === 'blocks' || p === 'settings' || p === 'account');
  if (o.kind === 'last-seen') {
    const ls = o.lastSeen as Record<string, unknown> | null;
    return typeof ls === 'object' && ls !== null && typeof ls.at === 'number' && (ls.status === null || typeof ls.status === 'string');
  }
  return false;
}

/**
 * A batch of deliveries for one node: each distinct delivery once (a presence change fanned out to 500
 * contacts on that node is one object and 500 short items), so the receiving node also hands one object
 * to every recipient and the protocols encode it once.
 */
export interface Batch {
  /** Sender node and epoch: batches of an incarnation declared dead are dropped. */
  readonly o: string;
  readonly e: string;
  readonly d: Delivery[];
  /** [recipient, index into d] or [recipient, index, resource]. */
  readonly i: Array<[string, number] | [string, number, string]>;
}

export function parseBatch(text: string): Batch | null {
  const b = safeParse(text) as Record<string, unknown> | undefined;
  if (typeof b !== 'object' || b === null) return null;
  if (typeof b.o !== 'string' || typeof b.e !== 'string' || !Array.isArray(b.d) || !Array.isArray(b.i)) return null;
  return b as unknown as Batch;
}

/** A delivery decoded from another node carries only what a node of this version sends; anything else is dropped. */
export function isDelivery(d: unknown): d is Delivery {
  if (typeof d !== 'object' || d === null) return false;
  const k = (d as { kind?: unknown }).kind;
  if (k === 'stanza') {
    // The front door checks the route's fields itself (it parses the stanza anyway).
    const s = d as { node?: unknown; xml?: unknown; route?: unknown };
    return typeof s.node === 'string' && typeof s.xml === 'string' && typeof s.route === 'object' && s.route !== null;
  }
  return k === 'presence' || k === 'roster' || k === 'subscription' || k === 'kick' || k === 'notification';
}
