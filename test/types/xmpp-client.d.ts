// Minimal types for the parts of @xmpp/client (which ships none) the tests use.
declare module '@xmpp/client' {
  export interface Element {
    name: string;
    attrs: Record<string, string | undefined>;
    children: Array<Element | string>;
    getChild(name: string, xmlns?: string): Element | undefined;
    getChildren(name: string, xmlns?: string): Element[];
    getChildText(name: string, xmlns?: string): string | null;
    getText(): string;
    is(name: string, xmlns?: string): boolean;
    toString(): string;
  }
  export interface Jid {
    toString(): string;
    bare(): Jid;
    getResource(): string;
  }
  export interface IqCaller {
    request(stanza: Element, timeout?: number): Promise<Element>;
  }
  export interface XmppClient {
    start(): Promise<Jid>;
    stop(): Promise<void>;
    send(...stanzas: Element[]): Promise<void>;
    on(event: 'stanza', cb: (s: Element) => void): void;
    on(event: 'error', cb: (e: Error) => void): void;
    on(event: 'online', cb: (jid: Jid) => void): void;
    on(event: 'offline' | 'status', cb: (...a: unknown[]) => void): void;
    iqCaller: IqCaller;
    reconnect: { stop(): void };
    jid: Jid | null;
  }
  export interface ClientOptions {
    service: string;
    domain?: string;
    username?: string;
    password?: string;
    resource?: string;
  }
  export function client(opts: ClientOptions): XmppClient;
  export function xml(name: string, attrs?: Record<string, string | number | undefined> | null, ...children: Array<Element | string>): Element;
}
