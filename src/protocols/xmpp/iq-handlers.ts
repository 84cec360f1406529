import type { FullJid } from '../../core/jid.js';
import type { XmppConnection } from './connection.js';
import { blockedError, StanzaError, stanzaErrorReply } from './errors.js';
import { NS } from './namespaces.js';
import { visibleResource } from './routing.js';
import { routeToAddress, routeTo } from './stanza-delivery.js';
import { handleRosterIq } from './roster.js';
import { jidAttr } from './stanza-util.js';
import { el, XmlElement } from './xml.js';
import type { XmppComponent } from '../../features/registries.js';

/** What an iq is addressed to, once the server has looked at its `to`. */
type Target = { kind: 'server' } | { kind: 'self' } | { kind: 'account'; jid: string } | { kind: 'resource'; jid: FullJid } | { kind: 'component'; jid: string; component: XmppComponent };

function targetOf(conn: XmppConnection, to: string | undefined): Target {
  if (to === undefined) return { kind: 'self' };
  const j = jidAttr(to);
  if (j.local === '' && j.resource === null && conn.ctx.engine.isLocalDomain(j.domain)) return { kind: 'server' };
  if (j.local === '' && j.resource === null) {
    // A service a feature runs under a hosted domain (push.<domain>).
    const component = conn.ctx.extensions?.componentFor(j.domain, (d) => conn.ctx.engine.isLocalDomain(d));
    if (component !== undefined) return { kind: 'component', jid: j.domain, component };
  }
  if (j.local === '' || !conn.ctx.engine.isLocalDomain(j.domain)) throw new StanzaError(j.local === '' ? 'item-not-found' : 'remote-server-not-found');
  if (j.resource !== null) return { kind: 'resource', jid: j };
  return j.bare === conn.jid ? { kind: 'self' } : { kind: 'account', jid: j.bare };
}

/** Namespaces the server answers itself; features may not register these (src/features/registries.ts). */
export const BUILT_IN_IQ_NAMESPACES: readonly string[] = [NS.ping, NS.discoInfo, NS.discoItems, NS.version, NS.last, NS.session, NS.bind, NS.roster, NS.blocking, NS.register];

const SERVER_FEATURES = [NS.discoInfo, NS.discoItems, NS.ping, NS.version, NS.last, NS.blocking, 'msgoffline', NS.roster, NS.rosterVer];

export async function handleIq(conn: XmppConnection, s: XmlElement): Promise<void> {
  const type = s.attr('type');
  const id = s.attr('id');
  const target = targetOf(conn, s.attr('to'));
  if (type === 'result' || type === 'error') {
    // Answers to other clients' requests are routed; answers to ours (pings, pushes) need nothing.
    if (target.kind === 'resource' && id !== undefined) await forwardAnswer(conn, s, target.jid, id);
    return;
  }
  if ((type !== 'get' && type !== 'set') || id === undefined) throw new StanzaError('bad-request', 'an iq needs an id and a type of get or set');
  const payloads = s.elements();
  if (payloads.length !== 1) throw new StanzaError('bad-request', 'an iq get or set carries exactly one child');
  const q = payloads[0] as XmlElement;
  if (target.kind === 'resource' && target.jid.bare === conn.jid && target.jid.resource === conn.session?.resource) {
    return answer(conn, s, await local(conn, s, q, { kind: 'self' }));
  }
  const other = target.kind === 'resource' ? target.jid.bare : target.kind === 'account' ? target.jid : null;
  // XEP-0191 §3.4: the user's own stanzas to a contact it blocks are refused, saying why.
  if (other !== null && other !== conn.jid && (await conn.ctx.engine.blocks(conn.jid)).includes(other)) throw blockedError();
  if (target.kind === 'component') return answer(conn, s, await componentIq(conn, s, q, target));
  if (target.kind === 'resource') {
    const me = conn.session;
    if (!me) return;
    const r = await visibleResource(conn, target.jid);
    const stamped = s.withAttrs({ from: me.fullJid, to: target.jid.full });
    // Exactly the answer of a resource that is not there (no text, no hint of why), built as the node
    // holding a resource that went meanwhile builds it.
    if (r === null) conn.sendStanza(stanzaErrorReply(stamped, 'service-unavailable'));
    else routeTo(conn.ctx.engine, r, stamped, { from: me.fullJid, ifGone: 'bounce', expect: id, ...(r.directed ? { directed: true as const } : {}) });
    return;
  }
  answer(conn, s, await local(conn, s, q, target));
}

function answer(conn: XmppConnection, s: XmlElement, reply: XmlElement): void {
  conn.sendStanza(reply.withAttrs({ from: reply.attr('from') ?? s.attr('to'), to: conn.fullJid || undefined }));
}

/**
 * Requests passed to each connection and not yet answered, as `requester full JID \0 id`, oldest first.
 * Only an answer to one of them is routed back (an unsolicited result or error to a full JID would
 * otherwise reach any resource, and its arrival or absence would tell the sender things). Bounded: a
 * client that never answers forgets the oldest requests, which then can no longer be answered.
 */
const awaitingAnswer = new WeakMap<XmppConnection, Map<string, true>>();
const MAX_AWAITING = 256;

/**
 * The connection `c` is being handed a request of `from` (clients query each other's capabilities,
 * versions, …): its answer will be routed back, once.
 */
export function expectAnswer(c: XmppConnection, from: string, id: string): void {
  let pending = awaitingAnswer.get(c);
  if (!pending) awaitingAnswer.set(c, (pending = new Map()));
  const key = `${from}\0${id}`;
  pending.delete(key);
  pending.set(key, true);
  if (pending.size > MAX_AWAITING) pending.delete(pending.keys().next().value as string);
}

/** Routes a result or error back to the resource whose request this connection was given; drops anything else silently. */
async function forwardAnswer(conn: XmppConnection, s: XmlElement, to: FullJid, id: string): Promise<void> {
  const me = conn.session;
  if (!me || !awaitingAnswer.get(conn)?.delete(`${to.full}\0${id}`)) return;
  const engine = conn.ctx.engine;
  // A block set since the request was forwarded stops the answer too (XEP-0191 §3.3/§3.4); no error for a result.
  if (to.bare !== me.jid && ((await engine.blocks(me.jid)).includes(to.bare) || (await engine.blocks(to.bare)).includes(me.jid))) return;
  await routeToAddress(engine, to.bare, to.resource, s.withAttrs({ from: me.fullJid, to: to.full }), me.fullJid);
}

/** disco#info and disco#items of a feature's component from what it declares; any other payload goes to its handler. */
async function componentIq(conn: XmppConnection, s: XmlElement, q: XmlElement, target: Extract<Target, { kind: 'component' }>): Promise<XmlElement> {
  const result = (...children: XmlElement[]) => el('iq', NS.client, { type: 'result', id: s.attr('id') }, ...children);
  const get = s.attr('type') === 'get';
  const node = q.attr('node');
  const c = target.component;
  if (q.ns === NS.discoInfo || q.ns === NS.discoItems) {
    if (!get) throw new StanzaError('bad-request', 'disco is a get');
    if (q.ns === NS.discoInfo) {
      const info = c.info(node, target.jid);
      if (info === null) throw new StanzaError('item-not-found');
      return result(
        el('query', NS.discoInfo, { node }, ...info.identities.map((i) => el('identity', NS.discoInfo, { category: i.category, type: i.type, name: i.name })), ...info.features.map((f) => el('feature', NS.discoInfo, { var: f }))),
      );
    }
    const items = c.items(node, target.jid);
    if (items === null) throw new StanzaError('item-not-found');
    return result(el('query', NS.discoItems, { node }, ...items.map((i) => el('item', NS.discoItems, { jid: i.jid, node: i.node, name: i.name }))));
  }
  if (!conn.session) throw new StanzaError('service-unavailable');
  const answer = await c.iq({ type: get ? 'get' : 'set', jid: conn.jid, fullJid: conn.session.fullJid, target: { kind: 'component', jid: target.jid }, payload: q });
  const children = answer === null || answer === undefined ? [] : answer instanceof XmlElement ? [answer] : [...answer];
  return result(...children);
}

async function local(conn: XmppConnection, s: XmlElement, q: XmlElement, target: Exclude<Target, { kind: 'resource' | 'component' }>): Promise<XmlElement> {
  const engine = conn.ctx.engine;
  const type = s.attr('type');
  const result = (...children: XmlElement[]) => el('iq', NS.client, { type: 'result', id: s.attr('id') }, ...children);
  const get = type === 'get';
  switch (q.ns) {
    case NS.ping:
      return result();
    case NS.discoInfo:
      if (!get) break;
      if (target.kind === 'server') {
        const features = [...SERVER_FEATURES, ...(conn.ctx.opts.registration === 'open' ? [NS.register] : []), ...(conn.ctx.extensions?.features() ?? [])];
        return result(el('query', NS.discoInfo, { node: q.attr('node') }, el('identity', NS.discoInfo, { category: 'server', type: 'im', name: 'presenced' }), ...features.map((f) => el('feature', NS.discoInfo, { var: f }))));
      }
      // visiblePresence is null alike for an account we may not see and for none at all (canSee alone says
      // yes to a nonexistent account when presence is public by default).
      if (target.kind === 'account' && (await engine.visiblePresence(conn.jid, target.jid)) === null) throw new StanzaError('service-unavailable');
      {
        // XEP-0357 §5 and the like: the server answers for the account, to the account itself.
        const own = target.kind === 'self' ? (conn.ctx.extensions?.accountFeatureList() ?? []) : [];
        return result(
          el('query', NS.discoInfo, { node: q.attr('node') }, el('identity', NS.discoInfo, { category: 'account', type: 'registered' }), ...[NS.discoInfo, NS.last, ...own].map((f) => el('feature', NS.discoInfo, { var: f }))),
        );
      }
    case NS.discoItems: {
      if (!get) break;
      // The server's services (components features run, e.g. push.<domain>) are its items.
      const domain = conn.streamDomain || conn.jid.split('@')[1] || '';
      const services = target.kind === 'server' && q.attr('node') === undefined ? (conn.ctx.extensions?.componentList() ?? []) : [];
      return result(el('query', NS.discoItems, { node: q.attr('node') }, ...services.map(([label, c]) => el('item', NS.discoItems, { jid: `${label}.${domain}`, name: c.name }))));
    }
    case NS.version:
      if (!get || target.kind !== 'server') break;
      return result(el('query', NS.version, {}, el('name', NS.version, {}, 'presenced'), el('version', NS.version, {}, conn.ctx.opts.serverVersion)));
    case NS.last:
      if (!get) break;
      return result(await lastActivity(conn, target));
    case NS.session:
      if (get) break;
      return result();
    case NS.bind:
      throw new StanzaError('not-allowed', 'a resource is already bound');
    case NS.roster:
      if (target.kind !== 'self') throw new StanzaError('forbidden');
      return handleRosterIq(conn, s, q);
    case NS.blocking:
      if (target.kind !== 'self') throw new StanzaError('forbidden');
      return blocking(conn, s, q, result);
    case NS.register:
      throw new StanzaError('feature-not-implemented', 'change passwords through the admin API');
  }
  const feature = conn.ctx.extensions?.get(q.ns);
  if (feature !== undefined && conn.session) {
    const answer = await feature({ type: get ? 'get' : 'set', jid: conn.jid, fullJid: conn.session.fullJid, target, payload: q });
    const children = answer === null || answer === undefined ? [] : answer instanceof XmlElement ? [answer] : [...answer];
    return result(...children);
  }
  if (target.kind === 'account') throw new StanzaError('service-unavailable');
  throw new StanzaError('service-unavailable');
}

/** XEP-0012: the server's uptime, or for an account how long ago it was last available. */
async function lastActivity(conn: XmppConnection, target: Exclude<Target, { kind: 'resource' | 'component' }>): Promise<XmlElement> {
  const now = Date.now();
  if (target.kind === 'server') return el('query', NS.last, { seconds: Math.floor((now - conn.ctx.startedAt) / 1000) });
  const jid = target.kind === 'self' ? conn.jid : target.jid;
  if (target.kind === 'account' && (await conn.ctx.engine.visiblePresence(conn.jid, jid)) === null) throw new StanzaError('forbidden');
  const p = await conn.ctx.engine.presenceOf(jid);
  if (p.online) return el('query', NS.last, { seconds: 0 });
  if (p.lastSeen === null) throw new StanzaError('item-not-found', 'never seen');
  return el('query', NS.last, { seconds: Math.max(0, Math.floor((now - p.lastSeen) / 1000)) }, p.status ?? '');
}

/** XEP-0191. Pushes to the user's resources come from the engine's block.changed events. */
async function blocking(conn: XmppConnection, s: XmlElement, q: XmlElement, result: (...c: XmlElement[]) => XmlElement): Promise<XmlElement> {
  const engine = conn.ctx.engine;
  const jid = conn.jid;
  if (s.attr('type') === 'get') {
    if (q.name !== 'blocklist') throw new StanzaError('bad-request');
    return result(el('blocklist', NS.blocking, {}, ...(await engine.blocks(jid)).map((b) => el('item', NS.blocking, { jid: b }))));
  }
  const jids = q.elements().filter((e) => e.name === 'item').map((e) => {
    const j = e.attr('jid');
    if (j === undefined) throw new StanzaError('bad-request', 'item without jid');
    const parsed = jidAttr(j);
    if (parsed.local === '' || parsed.resource !== null) throw new StanzaError('not-acceptable', 'only accounts can be blocked here');
    return parsed.bare;
  });
  if (q.name === 'block') {
    if (jids.length === 0) throw new StanzaError('bad-request', 'block needs at least one item');
    for (const j of jids) await engine.block(jid, j);
    return result();
  }
  if (q.name === 'unblock') {
    for (const j of jids.length ? jids : await engine.blocks(jid)) await engine.unblock(jid, j);
    return result();
  }
  throw new StanzaError('bad-request');
}
