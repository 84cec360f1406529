import type { PresenceEngine } from '../../engine/engine.js';
import { XmppConnection } from './connection.js';
import { blockedError, StanzaError } from './errors.js';
import { NS } from './namespaces.js';
import { jidAttr } from './stanza-util.js';
import { escapeAttr, type XmlElement } from './xml.js';

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

/** RFC 6121 §8.5: routes a message from a bound client to a local account, storing it when nobody can take it. */
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
  const stamped = s.withAttrs({ from: me.fullJid, to: to.full });
  const bounces = type !== 'error' && type !== 'headline';
  if (to.bare !== me.jid) {
    if ((await engine.blocks(me.jid)).includes(to.bare)) {
      if (type === 'error') return;
      throw blockedError();
    }
    // XEP-0191 §3.3: the blocked sender learns nothing more than that the service is unavailable.
    const exists = await engine.accountExists(to.bare);
    if (!exists || (await engine.blocks(to.bare)).includes(me.jid)) {
      if (bounces && type !== 'groupchat') throw new StanzaError('service-unavailable');
      return;
    }
  }
  if (type === 'groupchat') throw new StanzaError('service-unavailable', 'no group chat here');
  if (to.resource !== null) {
    const target = xmppConnectionsOf(engine, to.bare).find((c) => c.session?.resource === to.resource);
    if (target) {
      target.sendStanza(stamped);
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
    return;
  }
  await storeOffline(conn, to.bare, stamped);
}

async function storeOffline(conn: XmppConnection, to: string, stanza: XmlElement): Promise<void> {
  const store = conn.ctx.engine.store;
  // Only messages with content are worth keeping (not chat states alone).
  if (!stanza.child('body') && !stanza.child('subject')) return;
  if ((await store.countOfflineMessages(to)) >= conn.ctx.opts.maxOfflineMessages) throw new StanzaError('service-unavailable', 'offline storage full');
  await store.addOfflineMessage({ to, from: stanza.attr('from') ?? '', xml: stanza.toString(), at: Date.now() });
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

/**
 * XEP-0160: stored messages go to the resource that just became available. A row is deleted only once
 * its stanza has been written to the socket, so a connection dying midway leaves the rest stored.
 */
export async function deliverOffline(conn: XmppConnection): Promise<void> {
  const me = conn.session;
  if (!me || delivering.has(me.jid)) return;
  delivering.add(me.jid);
  try {
    const store = conn.ctx.engine.store;
    for (;;) {
      const batch = await store.getOfflineMessages(me.jid, BATCH);
      if (batch.length === 0) return;
      const written = await Promise.all(batch.map((m) => conn.sendConfirmed(withDelay(m.xml, conn.streamDomain || me.jid.split('@')[1] || '', m.at))));
      const done = batch.filter((_, i) => written[i]).map((m) => m.id);
      if (done.length) await store.deleteOfflineMessages(done);
      if (done.length < batch.length || batch.length < BATCH) return;
    }
  } finally {
    delivering.delete(me.jid);
  }
}
