import { EventEmitter } from 'node:events';
import type { XmlElement } from '../protocols/xmpp/xml.js';

/**
 * The registries through which features add to the front doors without edits to protocol code: the
 * native protocol looks up request types it does not know itself here, the XMPP server IQ payload
 * namespaces and the disco features they add. Built-in names are reserved: a feature can add, never
 * replace, so turning a feature on cannot change what an existing request means.
 */

/** What a feature's native request handler gets: the authenticated caller and the request body. */
export interface NativeRequestContext {
  /** Bare JID of the authenticated account. */
  readonly jid: string;
  readonly resource: string;
  readonly body: Record<string, unknown>;
}

/**
 * Answers one request type; the value is the `result`. Throw a PresenceError for an error frame with
 * its code (anything else is answered `internal` and logged). Called only after `auth`.
 */
export type NativeRequestHandler = (req: NativeRequestContext) => unknown;

const REQUEST_TYPE_NAME = /^[a-z][a-z0-9]*(?:[.-][a-z0-9]+)*$/;

export class NativeRequestRegistry {
  private readonly handlers = new Map<string, NativeRequestHandler>();

  constructor(private readonly reserved: readonly string[]) {}

  handle(type: string, handler: NativeRequestHandler): void {
    if (!REQUEST_TYPE_NAME.test(type) || type.length > 64) throw new Error(`native request type "${type}" is not a valid name (lower case, dot-separated)`);
    if (this.reserved.includes(type)) throw new Error(`native request type "${type}" is built in`);
    if (this.handlers.has(type)) throw new Error(`native request type "${type}" is already registered`);
    this.handlers.set(type, handler);
  }

  get(type: string): NativeRequestHandler | undefined {
    return this.handlers.get(type);
  }

  has(type: string): boolean {
    return this.handlers.has(type);
  }
}

/**
 * Whom an IQ is addressed to, as the XMPP server resolved its `to`. `component` is a service address
 * such as `push.example.com` that a feature registered (XmppIqRegistry.component).
 */
export type IqTarget =
  | { readonly kind: 'server' }
  | { readonly kind: 'self' }
  | { readonly kind: 'account'; readonly jid: string }
  | { readonly kind: 'component'; readonly jid: string };

export interface IqRequest {
  readonly type: 'get' | 'set';
  /** Bare and full JID of the authenticated sender. */
  readonly jid: string;
  readonly fullJid: string;
  readonly target: IqTarget;
  /** The IQ's single child, in the registered namespace. */
  readonly payload: XmlElement;
}

/**
 * Answers one IQ: the children of the result (none for an empty result). Throw a StanzaError
 * (src/protocols/xmpp/errors.ts) for an error reply; anything else is answered internal-server-error.
 */
export type IqHandler = (req: IqRequest) => Promise<XmlElement | readonly XmlElement[] | null | void> | XmlElement | readonly XmlElement[] | null | void;

export interface DiscoIdentity {
  readonly category: string;
  readonly type: string;
  readonly name?: string;
}

export interface DiscoItem {
  readonly jid: string;
  readonly node?: string;
  readonly name?: string;
}

/**
 * A service with an address of its own under a hosted domain (`<label>.<domain>`, like Prosody's
 * components or Tigase's push component). The XMPP server routes IQs addressed to it here and answers
 * disco#info and disco#items from `info` and `items` (null: item-not-found for that node).
 */
export interface XmppComponent {
  /** What disco#info of the component (node undefined) or of one of its nodes says. */
  info(node: string | undefined, jid: string): { readonly identities: readonly DiscoIdentity[]; readonly features: readonly string[] } | null;
  items(node: string | undefined, jid: string): readonly DiscoItem[] | null;
  /** Any other IQ addressed to the component; `target` is `{kind: 'component', jid}`. */
  readonly iq: IqHandler;
  /** Listed in the server's disco#items under this name. */
  readonly name: string;
}

/**
 * What the XMPP front door tells features about messages and streams, so that they can act (push
 * notifications) without protocol code naming them. Listeners run synchronously inside routing: they
 * must start their own asynchronous work and catch its errors.
 */
export interface XmppHookEvents {
  /** A chat or normal message with content was stored offline for `to` (bare JID): nobody could take it. */
  'message.stored': [{ readonly to: string; readonly from: string; readonly stanza: XmlElement }];
  /** A chat or normal message was handed to these resources of `to` (bare JID) live. */
  'message.delivered': [{ readonly to: string; readonly from: string; readonly stanza: XmlElement; readonly resources: readonly string[] }];
  /**
   * A stream-management session of `jid/resource` lost its connection and is held for resumption;
   * `messages` are the chat or normal messages with content it had been sent and had not acknowledged.
   */
  'stream.held': [{ readonly jid: string; readonly resource: string; readonly messages: readonly XmlElement[] }];
  /** `count` stored messages were handed to `jid/resource` (XEP-0160), and left storage or will once acknowledged. */
  'offline.delivered': [{ readonly jid: string; readonly resource: string; readonly count: number }];
}

/** What features may ask the XMPP front door about its streams (set by the XMPP server once it runs). */
export interface XmppSessionView {
  /** Resources of `jid` whose stream-management session waits for resumption, with no connection. */
  heldResources(jid: string): string[];
  /** Whether the client bound to `jid/resource` said it is inactive (XEP-0352 client state indication). */
  inactive(jid: string, resource: string): boolean;
}

const NO_SESSIONS: XmppSessionView = { heldResources: () => [], inactive: () => false };
const COMPONENT_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export class XmppIqRegistry {
  private readonly handlers = new Map<string, IqHandler>();
  private readonly discoFeatures: string[] = [];
  private readonly accountDiscoFeatures: string[] = [];
  private readonly components = new Map<string, XmppComponent>();
  /** Message and stream events for features (XmppHookEvents). */
  readonly hooks = new EventEmitter<XmppHookEvents>();
  private view: XmppSessionView = NO_SESSIONS;

  constructor(private readonly reserved: readonly string[]) {}

  /** Features an account's own bare JID advertises in disco#info (XEP-0357 §5: the server answers for the account). */
  accountFeatures(features: readonly string[]): void {
    for (const f of features) if (!this.accountDiscoFeatures.includes(f)) this.accountDiscoFeatures.push(f);
  }

  accountFeatureList(): readonly string[] {
    return this.accountDiscoFeatures;
  }

  /** Serves `<label>.<domain>` for every hosted domain. */
  component(label: string, component: XmppComponent): void {
    if (!COMPONENT_LABEL.test(label)) throw new Error(`component name "${label}" must be one DNS label (lower case letters, digits, -)`);
    if (this.components.has(label)) throw new Error(`component "${label}" is already registered`);
    this.components.set(label, component);
  }

  /** The component a domain names, if `isLocal` says the rest is a hosted domain. */
  componentFor(domain: string, isLocal: (d: string) => boolean): XmppComponent | undefined {
    const dot = domain.indexOf('.');
    if (dot <= 0) return undefined;
    const c = this.components.get(domain.slice(0, dot));
    return c !== undefined && isLocal(domain.slice(dot + 1)) ? c : undefined;
  }

  componentList(): ReadonlyArray<readonly [string, XmppComponent]> {
    return [...this.components];
  }

  /** The XMPP server says how to look at its streams; until then every lookup answers "none". */
  setSessionView(view: XmppSessionView): void {
    this.view = view;
  }

  get sessions(): XmppSessionView {
    return this.view;
  }

  /** Routes IQs whose payload is in `ns` to `handler`; `features` (default: `ns`) join the server's disco#info. */
  iq(ns: string, handler: IqHandler, features: readonly string[] = [ns]): void {
    if (ns === '' || ns.length > 1024) throw new Error('an IQ namespace must be a non-empty string');
    if (this.reserved.includes(ns)) throw new Error(`IQ namespace "${ns}" is handled by the XMPP server itself`);
    if (this.handlers.has(ns)) throw new Error(`IQ namespace "${ns}" is already registered`);
    this.handlers.set(ns, handler);
    for (const f of features) if (!this.discoFeatures.includes(f)) this.discoFeatures.push(f);
  }

  get(ns: string): IqHandler | undefined {
    return this.handlers.get(ns);
  }

  features(): readonly string[] {
    return this.discoFeatures;
  }
}
