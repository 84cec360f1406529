import type { SubType } from '../../core/subscription.js';
import { isShow, type AccountPresence, type SessionPresence, type Show } from '../../core/presence.js';
import type { PresenceInput } from '../../engine/engine.js';
import type { Delivery } from '../../ports/bus.js';
import type { XmppConnection } from './connection.js';
import { blockedError, StanzaError } from './errors.js';
import { deliverOffline } from './routing.js';
import { routeToAddress } from './stanza-delivery.js';
import { subscriptionPresence } from './roster.js';
import { jidAttr } from './stanza-util.js';
import { escapeAttr, escapeText, type XmlElement } from './xml.js';

const SUBSCRIPTION_TYPES: ReadonlySet<string> = new Set(['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed']);

/**
 * Presence stanzas are the bulk of what the server writes, so they are built as text directly rather
 * than as an element tree serialised afterwards: at thousands of changes a second the tree was a good
 * part of the garbage behind young-generation pauses. `to` is written as given (already escaped, or the
 * delivery marker below); everything else is escaped here. The namespace is written on each stanza, as the
 * serialiser does, because an RFC 7395 WebSocket frame is a document of its own.
 */
function presenceText(fromAttr: string, toAttr: string, type: string | null, show: string | null, status: string | null, priority: number): string {
  let s = `<presence xmlns='jabber:client' from='${fromAttr}' to='${toAttr}'`;
  if (type !== null) s += ` type='${type}'`;
  if (show === null && status === null && priority === 0) return s + '/>';
  s += '>';
  if (show !== null) s += `<show>${show}</show>`;
  if (status !== null) s += `<status>${escapeText(status)}</status>`;
  if (priority !== 0) s += `<priority>${priority}</priority>`;
  return s + '</presence>';
}

/** `<presence/>` of one resource as XMPP shows it (no <show/> means plainly available); `toAttr` is already escaped. */
function resourcePresenceTo(from: string, toAttr: string, p: Pick<SessionPresence, 'available' | 'show' | 'status' | 'priority'>): string {
  const status = p.status ? p.status : null;
  if (!p.available) return presenceText(escapeAttr(from), toAttr, 'unavailable', null, status, 0);
  return presenceText(escapeAttr(from), toAttr, null, p.show !== 'available' ? p.show : null, status, p.priority);
}

function accountPresenceTo(p: AccountPresence, toAttr: string): string {
  if (p.online && p.resource !== null) {
    return resourcePresenceTo(`${p.jid}/${p.resource}`, toAttr, { available: true, show: p.show as Show, status: p.status, priority: p.priority });
  }
  return presenceText(escapeAttr(p.jid), toAttr, 'unavailable', null, p.status ? p.status : null, 0);
}

/**
 * One delivery goes to every watching connection, and their stanzas differ only in `to`: the stanza
 * is serialised once, with a marker where `to` goes, and each connection splices in its own JID. The
 * engine hands one delivery object to all recipients in a row, so a one-entry cache serves them all.
 * The marker (U+0001) can be in no JID and is not escaped, and `from` and `to` precede the children,
 * so its first occurrence is the `to` attribute.
 */
const TO_MARK = '\u0001';
let cachedDelivery: Delivery | null = null;
let cachedHead = '';
let cachedTail = '';

/** The presence stanza an engine delivery becomes for this connection, or null when it sees none. */
export function presenceDelivery(conn: XmppConnection, d: Extract<Delivery, { kind: 'presence' }>): string | null {
  const me = conn.session;
  if (!me || !conn.available) return null;
  // Our own presence was already echoed when we sent it.
  if (d.session !== null && d.from === me.jid && d.session.resource === me.resource) return null;
  if (d !== cachedDelivery) {
    const text = d.session !== null ? resourcePresenceTo(`${d.from}/${d.session.resource}`, TO_MARK, d.session) : accountPresenceTo(d.presence, TO_MARK);
    const at = text.indexOf(TO_MARK);
    cachedHead = text.slice(0, at);
    cachedTail = text.slice(at + 1);
    cachedDelivery = d;
  }
  return cachedHead + conn.toAttr + cachedTail;
}

function presenceInput(s: XmlElement): PresenceInput {
  const showText = s.childText('show')?.trim();
  let show: Show = 'available';
  if (showText !== undefined && showText !== '') {
    if (showText === 'available' || !isShow(showText)) throw new StanzaError('bad-request', 'show must be chat, away, xa or dnd');
    show = showText;
  }
  const status = s.childText('status') ?? null;
  const prioText = s.childText('priority')?.trim();
  let priority = 0;
  if (prioText !== undefined && prioText !== '') {
    priority = Number(prioText);
    if (!/^[+-]?\d+$/.test(prioText) || priority < -128 || priority > 127) throw new StanzaError('bad-request', 'priority must be an integer from -128 to 127');
  }
  return { show, status, priority };
}

export async function handlePresence(conn: XmppConnection, s: XmlElement): Promise<void> {
  const engine = conn.ctx.engine;
  const session = conn.session;
  if (!session) return;
  const type = s.attr('type');
  const to = s.attr('to');
  if (type === 'error') return;
  if (type !== undefined && SUBSCRIPTION_TYPES.has(type)) {
    if (to === undefined) throw new StanzaError('bad-request', 'subscription presence needs a to');
    const target = jidAttr(to).bare;
    try {
      await engine.subscription(session.jid, target, type as SubType);
    } catch {
      // RFC 6121 §3: subscription stanzas that cannot be applied are dropped, telling nobody.
    }
    return;
  }
  if (type === 'probe') {
    if (to === undefined) return;
    const target = jidAttr(to).bare;
    if (!(await engine.canSee(session.jid, target))) return;
    await sendResourcesOf(conn, target);
    return;
  }
  if (type !== undefined && type !== 'unavailable') throw new StanzaError('bad-request', `unknown presence type ${type.slice(0, 30)}`);
  if (to !== undefined) return directedPresence(conn, s, to, type === 'unavailable');

  if (type === 'unavailable') {
    const status = s.childText('status') ?? null;
    conn.available = false;
    await engine.setUnavailable(session, status);
    conn.sendStanza(presenceText(conn.toAttr, conn.toAttr, 'unavailable', null, null, 0));
    await sendDirectedUnavailable(conn);
    return;
  }
  const input = presenceInput(s);
  const initial = !conn.available;
  conn.available = true;
  const p = await engine.setPresence(session, input);
  conn.sendStanza(resourcePresenceTo(session.fullJid, conn.toAttr, p));
  if (initial) await initialPresence(conn, p.priority);
}

/** RFC 6121 §4.2.2–4.2.3: the contacts' presence (every available resource), our other resources, pending requests, offline messages. */
export async function initialPresence(conn: XmppConnection, priority: number): Promise<void> {
  const engine = conn.ctx.engine;
  const me = conn.session;
  if (!me) return;
  const contacts = await engine.contactsPresence(me.jid);
  for (const c of contacts) {
    if (c.online) await sendResourcesOf(conn, c.jid);
    else conn.sendStanza(accountPresenceTo(c, conn.toAttr));
  }
  for (const s of await engine.sessionsOf(me.jid)) {
    if (s.resource !== me.resource && s.available) conn.sendStanza(resourcePresenceTo(`${me.jid}/${s.resource}`, conn.toAttr, s));
  }
  const roster = await engine.roster(me.jid);
  for (const item of roster.items) {
    if (item.state.pendingIn) conn.sendStanza(subscriptionPresence(item.contact, me.jid, 'subscribe'));
  }
  // XEP-0160: stored messages go to a resource that can receive bare-JID messages.
  if (priority >= 0) await deliverOffline(conn);
}

async function sendResourcesOf(conn: XmppConnection, target: string): Promise<void> {
  const me = conn.session;
  if (!me) return;
  const sessions = (await conn.ctx.engine.sessionsOf(target)).filter((s) => s.available);
  if (sessions.length === 0) {
    conn.sendStanza(accountPresenceTo(await conn.ctx.engine.presenceOf(target), conn.toAttr));
    return;
  }
  for (const s of sessions) conn.sendStanza(resourcePresenceTo(`${target}/${s.resource}`, conn.toAttr, s));
}

async function directedPresence(conn: XmppConnection, s: XmlElement, to: string, unavailable: boolean): Promise<void> {
  const engine = conn.ctx.engine;
  const me = conn.session;
  if (!me) return;
  const target = jidAttr(to);
  if (!engine.isLocalDomain(target.domain) || target.local === '') return;
  if ((await engine.blocks(me.jid)).includes(target.bare)) throw blockedError();
  if ((await engine.accountExists(target.bare)) && (await engine.blocks(target.bare)).includes(me.jid)) return;
  const stamped = s.withAttrs({ from: me.fullJid, to: target.full });
  await routeToAddress(engine, target.bare, target.resource, stamped, me.fullJid);
  if (unavailable) conn.directed.delete(target.full);
  else conn.directed.add(target.full);
}

/** RFC 6121 §4.6.3: whoever got directed presence hears that the resource left, wherever it is connected. */
export async function sendDirectedUnavailable(conn: XmppConnection): Promise<void> {
  const me = conn.session;
  if (!me) return;
  const engine = conn.ctx.engine;
  const targets = [...conn.directed];
  conn.directed.clear();
  for (const full of targets) {
    const slash = full.indexOf('/');
    const bare = slash >= 0 ? full.slice(0, slash) : full;
    const resource = slash >= 0 ? full.slice(slash + 1) : null;
    await routeToAddress(engine, bare, resource, presenceText(escapeAttr(me.fullJid), escapeAttr(full), 'unavailable', null, null, 0), me.fullJid);
  }
}
