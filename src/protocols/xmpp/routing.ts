import { bareOf, type FullJid } from '../../core/jid.js';
import type { PresenceEngine } from '../../engine/engine.js';
import type { StanzaRoute } from '../../ports/bus.js';
import { XmppConnection } from './connection.js';
import type { XmppContext } from './context.js';
import { blockedError, StanzaError } from './errors.js';
import { NS } from './namespaces.js';
import { bounce, routeTo, xmppResourcesOf, type Resource } from './stanza-delivery.js';
import { jidAttr } from './stanza-util.js';
import { escapeAttr, type XmlElement } from './xml.js';
import type { XmppHookEvents } from '../../features/registries.js';

/** Tells the features listening (push notifications) what happened; a failing listener never fails routing. */
export function emitHook<K extends keyof XmppHookEvents>(conn: { readonly ctx: XmppContext }, event: K, ...args: XmppHookEvents[K]): void {
  const hooks = conn.ctx.extensions?.hooks;
  if (!hooks || hooks.listenerCount(event) === 0) return;
  try {
    (hooks.emit as (e: K, ...a: XmppHookEvents[K]) => boolean)(event, ...args);
  } catch (err) {
    conn.ctx.log.error({ err, event }, 'an xmpp hook listener failed');
  }
}

/** The XMPP connections bound to sessions of `jid` on this node (native sessions take no stanzas); xmppResourcesOf for the cluster. */
export function xmppConnectionsOf(engine: PresenceEngine, jid: string): XmppConnection[] {
  const out: XmppConnection[] = [];
  for (const s of engine.localSessionsOf(jid)) {
    if (s.sink instanceof XmppConnection && !s.sink.isEnded && s.sink.session === s) out.push(s.sink);
  }
  return out;
}

/**
 * The resource `to` if the bound client of `conn` may address it directly, else null. It may when the
 * resource is one of its own, when that resource sent it directed presence, or when it may see the
 * account's presence and the resource is available (sent available presence). Anything else is
 * answered as for a resource that is not there, so that stanzas to full JIDs (iq pings, message
 * receipts) reveal nothing the requester may not see (RFC 6121 §8.5.3 leaves this to policy; ours is
 * "no leak"). The same lookups run whether or not the resource or account exists.
 *
 * Directed presence is known only to the node holding the resource (its connection remembers whom it
 * sent it to): for a resource on another node that the requester may not see otherwise, the answer is
 * the resource with `directed` set, and that node delivers only if the resource did send it directed
 * presence, treating the stanza as one to a resource that is gone otherwise.
 */
export async function visibleResource(conn: XmppConnection, to: FullJid): Promise<(Resource & { readonly directed?: true }) | null> {
  const me = conn.session;
  if (!me || to.resource === null) return null;
  const engine = conn.ctx.engine;
  const r = (await xmppResourcesOf(engine, to.bare)).find((x) => x.resource === to.resource) ?? null;
  if (to.bare === me.jid) return r;
  const visible = await engine.canSee(me.jid, to.bare);
  const blocked = (await engine.blocks(to.bare)).includes(me.jid) || (await engine.blocks(me.jid)).includes(to.bare);
  if (r === null) return null;
  if (visible && r.available) return r;
  // Directed presence shows the resource to its addressee (RFC 6121 §4.6), unless a block is in the way.
  if (blocked) return null;
  if (r.conn === null) return { ...r, directed: true };
  return r.conn.directed.has(me.fullJid) || r.conn.directed.has(me.jid) ? r : null;
}

/**
 * RFC 6121 §8.5: routes a message from a bound client to a local account, storing it when nobody can take it.
 *
 * The sender learns nothing about the recipient from the answer: a message to an account that does
 * not exist, to one that blocks the sender, or to one that is offline is accepted silently alike
 * (RFC 6121 §8.5.2.2.1 allows silently dropping for a nonexistent account), and a full JID whose
 * resource the sender may not see is treated as if that resource were gone.
 */
export async function routeMessage(conn: XmppConnection, s: XmlElement): Promise<void> {
  const engine = conn.ctx.engine;
  const me = conn.session;
  if (!me) return;
  const type = s.attr('type') ?? 'normal';
  const to = jidAttr(s.attr('to') ?? me.jid);
  if (!engine.isLocalDomain(to.domain)) throw new StanzaError('remote-server-not-found', 'no federation');
  if (to.local === '') {
    if (type === 'error') return;
    throw new StanzaError('service-unavailable');
  }
  // Before any look-up of the recipient, so the answer is the same whoever it is.
  if (type === 'groupchat') throw new StanzaError('service-unavailable', 'no group chat here');
  const stamped = s.withAttrs({ from: me.fullJid, to: to.full });
  if (to.bare !== me.jid) {
    if ((await engine.blocks(me.jid)).includes(to.bare)) {
      if (type === 'error') return;
      throw blockedError();
    }
    // XEP-0191 §3.3 and the "no leak" policy: a blocked sender and one writing to no one hear nothing.
    const exists = await engine.accountExists(to.bare);
    if (!exists || (await engine.blocks(to.bare)).includes(me.jid)) return;
  }
  const chat = type === 'chat' || type === 'normal';
  if (to.resource !== null) {
    const target = await visibleResource(conn, to);
    if (target) {
      // A chat message to a resource that went meanwhile is one to the bare JID (§8.5.3.2.1), decided where it went.
      const route: StanzaRoute = chat ? { from: me.fullJid, ifGone: 'bare', hook: [target.resource], tried: [], hops: 0 } : { from: me.fullJid, ifGone: 'drop' };
      routeTo(engine, target, stamped, target.directed ? { ...route, directed: true } : route);
      return;
    }
    if (!chat) return;
  }
  await routeToBare(conn.ctx, to.bare, stamped, type, new Set(), 0);
}

/** How many times a message whose resources keep vanishing is routed again before it is stored offline. */
const MAX_HOPS = 3;

/**
 * RFC 6121 §8.5.2.1: a message to the bare JID goes to the available resources of the highest
 * non-negative priority, wherever they are connected, and is stored offline when there are none
 * (chat and normal messages with content). Exactly one node takes that decision for a message: the
 * sender's, or, when the resource it chose vanished before the message arrived, that resource's node.
 *
 * One of the chosen resources leads (this node's if it holds one): the message.delivered hook fires
 * on its node, and if that resource is gone when the message arrives the message is routed again
 * from there, unless another chosen resource is still there to have taken it.
 */
async function routeToBare(ctx: XmppContext, to: string, stamped: XmlElement, type: string, exclude: ReadonlySet<string>, hops: number): Promise<void> {
  const engine = ctx.engine;
  const from = stamped.attr('from') ?? '';
  const avail = (await xmppResourcesOf(engine, to)).filter((r) => r.available && r.priority >= 0 && !exclude.has(r.resource));
  const top = Math.max(...avail.map((r) => r.priority));
  const recipients = avail.filter((r) => r.priority === top);
  if (type === 'headline' || type === 'error') {
    for (const r of recipients) routeTo(engine, r, stamped, { from, ifGone: 'drop' });
    return;
  }
  if (recipients.length > 0 && hops <= MAX_HOPS) {
    const lead = recipients.find((r) => r.conn !== null) ?? (recipients[0] as Resource);
    const names = recipients.map((r) => r.resource);
    for (const r of recipients) {
      const route: StanzaRoute =
        r === lead ? { from, ifGone: 'bare', hook: names, also: names.filter((n) => n !== r.resource), tried: [...exclude], hops } : { from, ifGone: 'drop' };
      routeTo(engine, r, stamped, route);
    }
    return;
  }
  await storeOffline(ctx, to, stamped);
}

/**
 * A chat or normal message reached this node for `to/resource`, which cannot take it: gone, or
 * (`present`) there but not shown to the sender. It is routed again by the bare JID's rules from
 * here, as the sender's node would have done (a resource that is there may take it that way), unless
 * another resource it went to at the same time is still there (it took it).
 */
export async function rerouteMessage(ctx: XmppContext, to: string, resource: string, present: boolean, stanza: XmlElement, route: StanzaRoute): Promise<void> {
  const all = await xmppResourcesOf(ctx.engine, to);
  const others = (route.also ?? []).filter((n) => all.some((r) => r.resource === n && r.available));
  if (others.length > 0) {
    emitHook({ ctx }, 'message.delivered', { to, from: route.from, stanza, resources: others });
    return;
  }
  const exclude = new Set([...(route.tried ?? []), ...(route.also ?? []), ...(present ? [] : [resource])]);
  await routeToBare(ctx, to, stanza, stanza.attr('type') ?? 'normal', exclude, (route.hops ?? 0) + 1);
}

async function storeOffline(ctx: XmppContext, to: string, stanza: XmlElement): Promise<void> {
  const store = ctx.engine.store;
  // Only messages with content are worth keeping (not chat states alone).
  if (!stanza.child('body') && !stanza.child('subject')) return;
  const from = stanza.attr('from') ?? '';
  // Counted and stored in one step: senders on other nodes may store for the same account meanwhile.
  const id = await store.addOfflineMessageIfRoom({ to, from, xml: stanza.toString(), at: Date.now() }, ctx.opts.maxOfflineMessages);
  if (id === null) {
    // "Storage full" proves the account exists, so only a sender who may see the recipient's presence
    // (who knows it exists anyway) is told; anyone else's message is dropped as silently as one to
    // nobody. Nothing is stored beyond the limit either way.
    if (await ctx.engine.canSee(bareOf(from), to)) await bounce(ctx.engine, stanza, 'service-unavailable', 'offline storage full');
    else ctx.log.warn({ to }, 'offline storage full: message dropped');
    return;
  }
  emitHook({ ctx }, 'message.stored', { to, from, stanza });
}

/** Adds the XEP-0203 delay element saying when the server received the message. */
function withDelay(xml: string, from: string, at: number): string {
  const delay = `<delay xmlns='${NS.delay}' from='${escapeAttr(from)}' stamp='${new Date(at).toISOString()}'/>`;
  if (xml.endsWith('/>')) return `${xml.slice(0, -2)}>${delay}</message>`;
  const end = xml.lastIndexOf('</');
  return xml.slice(0, end) + delay + xml.slice(end);
}

/** Accounts whose stored messages a stream of this server is handing out now, per server (a process may run several, as tests do). */
const deliveringBy = new WeakMap<object, Set<string>>();
let deliveries = 0;
/** How long one batch of stored messages may take to go out before another node may take over the account's delivery. */
const OFFLINE_DELIVERY_LEASE_MS = 60_000;
const BATCH = 100;
/** XEP-0198 counters wrap at 2^32; `a` comes before `b` when it is less than half the range behind. */
const HALF = 2 ** 31;

/**
 * XEP-0160: stored messages go to the resource that just became available, one at a time, so a crash
 * (kill -9) can deliver again at most what was in flight:
 * - without stream management a row is deleted as soon as its stanza has been handed to the socket,
 *   before the next one is written: at most the one message in flight can come twice;
 * - with stream management a row is deleted only once the client acknowledged the stanza (see
 *   `settleOfflineAcks`); until then the state remembers it in `stillStored`, so a resumed stream gets
 *   it again from its unacknowledged queue and a state that ends leaves it in storage (not stored twice).
 */
export async function deliverOffline(conn: XmppConnection): Promise<void> {
  const me = conn.session;
  let delivering = deliveringBy.get(conn.ctx);
  if (delivering === undefined) deliveringBy.set(conn.ctx, (delivering = new Set()));
  if (!me || delivering.has(me.jid)) return;
  delivering.add(me.jid);
  let handed = 0;
  const store = conn.ctx.engine.store;
  // The same rule across nodes: a resource on another node handing the messages out right now has them.
  const holder = `${conn.ctx.engine.bus.node}:${++deliveries}`;
  let claimed = false;
  try {
    const domain = conn.streamDomain || me.jid.split('@')[1] || '';
    for (;;) {
      // Taken again before each batch: a long backlog to a slow client keeps it.
      claimed = await store.claimOfflineDelivery(me.jid, holder, Date.now(), OFFLINE_DELIVERY_LEASE_MS);
      if (!claimed) return;
      // Rows sent on this stream management state and not yet acknowledged are skipped, not sent twice.
      const awaiting = new Set(conn.sm?.stillStored.values() ?? []);
      const rows = (await store.getOfflineMessages(me.jid, BATCH + awaiting.size)).filter((m) => !awaiting.has(m.id));
      if (rows.length === 0) return;
      for (const m of rows) {
        let seq: number | null = null;
        const written = await conn.sendConfirmed(withDelay(m.xml, domain, m.at), (n) => {
          seq = n;
        });
        if (!written) return;
        handed++;
        const sm = conn.sm;
        if (sm !== null && seq !== null) sm.stillStored.set(seq, m.id);
        else await store.deleteOfflineMessages([m.id]);
      }
      if (rows.length < BATCH) return;
    }
  } finally {
    delivering.delete(me.jid);
    if (claimed) await store.releaseOfflineDelivery(me.jid, holder).catch(() => undefined);
    if (handed > 0) emitHook(conn, 'offline.delivered', { jid: me.jid, resource: me.resource, count: handed });
  }
}

/** Deletes the stored messages whose stanzas the client has now acknowledged (XEP-0198 `<a/>` or resume). */
export async function settleOfflineAcks(conn: XmppConnection): Promise<void> {
  const sm = conn.sm;
  if (!sm || sm.stillStored.size === 0) return;
  // Everything before the oldest unacknowledged stanza (or up to the last one sent) has been acknowledged.
  const firstUnacked = sm.unacked.length > 0 ? (sm.unacked[0] as { seq: number }).seq : (sm.outbound + 1) % 2 ** 32;
  const done: number[] = [];
  for (const [seq, id] of sm.stillStored) {
    const behind = (firstUnacked - seq + 2 ** 32) % 2 ** 32;
    if (behind > 0 && behind < HALF) {
      done.push(id);
      sm.stillStored.delete(seq);
    }
  }
  if (done.length > 0) await conn.ctx.engine.store.deleteOfflineMessages(done);
}
