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

/** Whom an IQ is addressed to, as the XMPP server resolved its `to`. */
export type IqTarget = { readonly kind: 'server' } | { readonly kind: 'self' } | { readonly kind: 'account'; readonly jid: string };

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

export class XmppIqRegistry {
  private readonly handlers = new Map<string, IqHandler>();
  private readonly discoFeatures: string[] = [];

  constructor(private readonly reserved: readonly string[]) {}

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
