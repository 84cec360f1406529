import type { FullJid } from '../../core/jid.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { XmppConnection } from './connection.js';
import { blockedError, StanzaError } from './errors.js';
import { NS } from './namespaces.js';
import { jidAttr } from './stanza-util.js';
import { escapeAttr, type XmlElement } from './xml.js';
import type { XmppHookEvents } from '../../features/registries.js';

/** Tells the features listening (push notifications) what happened; a failing listener never fails routing. */
export function emitHook<K extends keyof XmppHookEvents>(conn: Pick<XmppConnection, 'ctx'>, event: K, ...args: XmppHookEvents[K]): void {
  const hooks = conn.ctx.extensions?.hooks;
  if (!hooks || hooks.listenerCount(event) === 0) return;
  try {
    (hooks.emit as (e: K, ...a: XmppHookEvents[K]) => boolean)(event, ...args);
  } catch (err) {
    conn.ctx.log.error({ err, event }, 'an xmpp hook listener failed');
  }
}

/** The XMPP connections bound to sessions of `jid` on this node (native sessions take no stanzas). */
export function xmppConnectionsOf(engine: PresenceEngine, jid: string): XmppConnection[] {
  const out: XmppConnection[] = [];
  for (const s of engine.localSessionsOf(jid)) {
    if (s.sink instanceof XmppConnection && !s.sink.isEnded && s.sink.session === s) out.push(s.sink);
  }
  return out;
}

/** Resources that take messages sent to the bare JID: available, non-negative priority (RFC 6121 §8.5.2.1). */
function bareRecipients(engine: PresenceEngine, jid: string): XmppConnection[] {
  const avail = xmppConnectionsOf(engine, jid).filter((c) => c.available && c.session !== null && c.session.presence.available && c.session.presence.priority >= 0);
  if (avail.length === 0) return [];
  const top = Math.max(...avail.map((c) => (c.session as NonNullable<typeof c.session>).presence.priority));
  return avail.filter((c) => c.session?.presence.priority === top);
}

/**
 * The connection of the resource `to` if the bound client of `conn` may address it directly, else
 * null. It may when the resource is one of its own, when that resource sent it directed presence, or
 * when it may see the account's presence and the resource is available (sent available presence).
 * Anything else is answered as for a resource that is not there, so that stanzas to full JIDs
 * (iq pings, message receipts) reveal nothing the requester may not see (RFC 6121 §8.5.3 leaves this
 * to policy; ours is "no leak"). The same lookups run whether or not the resource or account exists.
 */
export async function visibleResource(conn: XmppConnection, to: FullJid): Promise<XmppConnection | null> {
  const me = conn.session;
  if (!me || to.resource === null) return null;
  const engine = conn.ctx.engine;
  const c = xmppConnectionsOf(engine, to.bare).find((x) => x.session?.resource === to.resource) ?? null;
  if (to.bare === me.jid) return c;
  const visible = await engine.canSee(me.jid, to.bare);
  const blocked = (await engine.blocks(to.bare)).includes(me.jid) || (await engine.blocks(me.jid)).includes(to.bare);
  if (c === null || c.session === null) return null;
  if (visible && c.available && c.session.presence.available) return c;
  // Directed presence shows the resource to its addressee (RFC 6121 §4.6), unless a block is in the way.
  if (!blocked && (c.directed.has(me.fullJid) || c.directed.has(me.jid))) return c;
  return null;
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
  if (to.resource !== null) {
    const target = await visibleResource(conn, to);
    if (target) {
      target.sendStanza(stamped);
      if ((type === 'chat' || type === 'normal') && target.session) emitHook(conn, 'message.delivered', { to: to.bare, from: me.fullJid, stanza: stamped, resources: [target.session.resource] });
      return;
    }
    if (type !== 'chat' && type !== 'normal') return;
  }
  const recipients = bareRecipients(engine, to.bare);
  if (type === 'headline' || type === 'error') {
    for (const c of recipients) c.sendStanza(stamped);
    return;
  }
  if (recipients.length > 0) {
    for (const c of recipients) c.sendStanza(stamped);
    emitHook(conn, 'message.delivered', { to: to.bare, from: me.fullJid, stanza: stamped, resources: recipients.map((c) => c.session?.resource ?? '') });
    return;
  }
  await storeOffline(conn, to.bare, stamped);
}

async function storeOffline(conn: XmppConnection, to: string, stanza: XmlElement): Promise<void> {
  const store = conn.ctx.engine.store;
  // Only messages with content are worth keeping (not chat states alone).
  if (!stanza.child('body') && !stanza.child('subject')) return;
  // Counted and stored in one step: senders on other nodes may store for the same account meanwhile.
  const id = await store.addOfflineMessageIfRoom({ to, from: stanza.attr('from') ?? '', xml: stanza.toString(), at: Date.now() }, conn.ctx.opts.maxOfflineMessages);
  if (id === null) {
    // "Storage full" proves the account exists, so only a sender who may see the recipient's presence
    // (who knows it exists anyway) is told; anyone else's message is dropped as silently as one to
    // nobody. Nothing is stored beyond the limit either way.
    const me = conn.session;
    if (me && (await conn.ctx.engine.canSee(me.jid, to))) throw new StanzaError('service-unavailable', 'offline storage full');
    conn.ctx.log.warn({ to }, 'offline storage full: message dropped');
    return;
  }
  emitHook(conn, 'message.stored', { to, from: stanza.attr('from') ?? '', stanza });
}

/** Adds the XEP-0203 delay element saying when the server received the message. */
function withDelay(xml: string, from: string, at: number): string {
  const delay = `<delay xmlns='${NS.delay}' from='${escapeAttr(from)}' stamp='${new Date(at).toISOString()}'/>`;
  if (xml.endsWith('/>')) return `${xml.slice(0, -2)}>${delay}</message>`;
  const end = xml.lastIndexOf('</');
  return xml.slice(0, end) + delay + xml.slice(end);
}

const delivering = new Set<string>();
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
  if (!me || delivering.has(me.jid)) return;
  delivering.add(me.jid);
  let handed = 0;
  try {
    const store = conn.ctx.engine.store;
    const domain = conn.streamDomain || me.jid.split('@')[1] || '';
    for (;;) {
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
