import type { PresenceEngine, Session } from '../../engine/engine.js';
import type { StanzaDelivery, StanzaRoute } from '../../ports/bus.js';
import type { XmppContext } from './context.js';
import { XmppConnection } from './connection.js';
import { stanzaErrorReply, type StanzaCondition } from './errors.js';
import { expectAnswer } from './iq-handlers.js';
import { parseFrame } from './parser.js';
import { emitHook, rerouteMessage, xmppConnectionsOf } from './routing.js';
import type { XmlElement } from './xml.js';

/**
 * Stanzas between resources, wherever in the cluster each is connected (docs/cluster.md, "XMPP across
 * nodes"). The sending node decides everything it can from the registry (which resource, whether the
 * sender may address it) and sends a `stanza` delivery through the bus to the node holding the
 * resource; that node's engine hands it here, where the connection takes it or, if it cannot, the
 * route says what to do instead. A stanza for a resource on the sending node takes the same path,
 * synchronously: the answers are the same whether the resource is here, elsewhere or nowhere.
 */

/** One XMPP resource of an account as routing sees it. */
export interface Resource {
  /** The account (bare JID). */
  readonly jid: string;
  readonly resource: string;
  /** The node holding its connection. */
  readonly node: string;
  /** It sent available presence (it takes messages to the bare JID if its priority is not negative). */
  readonly available: boolean;
  readonly priority: number;
  /** Its connection, when it is on this node. */
  readonly conn: XmppConnection | null;
}

/**
 * The account's XMPP resources across the cluster, this node's first: this node's as their
 * connections say (a session whose connection is gone, waiting out its grace period or a resumption,
 * takes nothing), the other nodes' as the registry says.
 */
export async function xmppResourcesOf(engine: PresenceEngine, jid: string): Promise<Resource[]> {
  const here = engine.bus.node;
  const out: Resource[] = [];
  for (const c of xmppConnectionsOf(engine, jid)) {
    const s = c.session as Session;
    out.push({ jid, resource: s.resource, node: here, available: c.available && s.presence.available, priority: s.presence.priority, conn: c });
  }
  for (const s of await engine.sessionsOf(jid)) {
    if (s.protocol !== 'xmpp' || s.node === here) continue;
    out.push({ jid, resource: s.resource, node: s.node, available: s.available, priority: s.priority, conn: null });
  }
  return out;
}

/** Stanzas routed to this node's own connections keep their parsed form (a stanza hook needs it). */
const parsed = new WeakMap<StanzaDelivery, XmlElement>();

/** Sends `stanza` to the resource `r`, on whichever node it is (see the module comment). */
export function routeTo(engine: PresenceEngine, r: Pick<Resource, 'jid' | 'resource' | 'node'>, stanza: XmlElement | string, route: StanzaRoute): void {
  const d: StanzaDelivery = { kind: 'stanza', node: r.node, xml: typeof stanza === 'string' ? stanza : stanza.toString(), route };
  if (typeof stanza !== 'string') parsed.set(d, stanza);
  engine.bus.deliver(r.jid, d, r.resource);
}

/**
 * Sends `stanza` to a full JID (that resource, whatever its presence) or to a bare JID (each available
 * resource), as directed presence goes (RFC 6121 §4.6); nothing happens for a resource that is not there.
 */
export async function routeToAddress(engine: PresenceEngine, bare: string, resource: string | null, stanza: XmlElement | string, from: string): Promise<void> {
  for (const r of await xmppResourcesOf(engine, bare)) {
    if (resource !== null ? r.resource === resource : r.available) {
      routeTo(engine, r, stanza, resource !== null ? { from, ifGone: 'drop' } : { from, ifGone: 'drop', available: true });
    }
  }
}

/** Answers `stanza` (its `from` a full JID, wherever that resource is) with an error of `condition`. */
export async function bounce(engine: PresenceEngine, stanza: XmlElement, condition: StanzaCondition, text?: string): Promise<void> {
  const to = stanza.attr('from');
  if (to === undefined || stanza.attr('type') === 'error' || stanza.attr('type') === 'result') return;
  const slash = to.indexOf('/');
  if (slash < 0) return;
  await routeToAddress(engine, to.slice(0, slash), to.slice(slash + 1), stanzaErrorReply(stanza, condition, text), stanza.attr('to') ?? '');
}

/**
 * The engine's stanza handler: a stanza routed to `to/resource` on this node. `session` is this node's
 * session of that resource, if any.
 */
export function receiveStanza(ctx: XmppContext, to: string, d: StanzaDelivery, resource: string | null, session: Session | null): void {
  const route = checkRoute(d.route);
  if (route === null || resource === null) {
    ctx.log.warn({ to }, 'malformed stanza delivery from another node ignored');
    return;
  }
  const sink = session?.sink;
  const c = sink instanceof XmppConnection && sink.session === session && sink.bound && !sink.isEnded ? sink : null;
  if (c !== null && takes(c, route)) {
    if (route.expect !== undefined) expectAnswer(c, route.from, route.expect);
    c.sendStanza(d.xml);
    if (route.hook !== undefined && (ctx.extensions?.hooks.listenerCount('message.delivered') ?? 0) > 0) {
      const stanza = stanzaOf(ctx, d);
      if (stanza !== null) emitHook({ ctx }, 'message.delivered', { to, from: route.from, stanza, resources: route.hook });
    }
    return;
  }
  if (route.ifGone === 'drop') return;
  const stanza = stanzaOf(ctx, d);
  if (stanza === null) return;
  const done = route.ifGone === 'bounce' ? bounce(ctx.engine, stanza, 'service-unavailable') : rerouteMessage(ctx, to, resource, c !== null, stanza, route);
  done.catch((err: unknown) => ctx.log.error({ err, to }, 'routing a stanza again failed'));
}

function takes(c: XmppConnection, route: StanzaRoute): boolean {
  if (route.available && !c.available) return false;
  if (route.directed) {
    const slash = route.from.indexOf('/');
    return c.directed.has(route.from) || (slash > 0 && c.directed.has(route.from.slice(0, slash)));
  }
  return true;
}

function stanzaOf(ctx: XmppContext, d: StanzaDelivery): XmlElement | null {
  const known = parsed.get(d);
  if (known !== undefined) return known;
  try {
    return parseFrame(d.xml, ctx.opts.limits);
  } catch (err) {
    ctx.log.warn({ err }, 'unreadable stanza from another node ignored');
    return null;
  }
}

const GONE = new Set(['drop', 'bounce', 'bare']);
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

/** A route as another node sent it, checked field by field (a node of another version may send more). */
function checkRoute(v: unknown): StanzaRoute | null {
  if (typeof v !== 'object' || v === null) return null;
  const r = v as Record<string, unknown>;
  if (typeof r.from !== 'string' || typeof r.ifGone !== 'string' || !GONE.has(r.ifGone)) return null;
  if (r.expect !== undefined && typeof r.expect !== 'string') return null;
  if (r.directed !== undefined && r.directed !== true) return null;
  if (r.available !== undefined && r.available !== true) return null;
  for (const k of ['hook', 'also', 'tried'] as const) if (r[k] !== undefined && !isStrings(r[k])) return null;
  if (r.hops !== undefined && (typeof r.hops !== 'number' || !Number.isInteger(r.hops) || r.hops < 0)) return null;
  return r as unknown as StanzaRoute;
}
