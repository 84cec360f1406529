import { client, xml, type Element, type XmppClient } from '@xmpp/client';

// The server's certificate is self-signed (generated in the test's data directory).
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
// @xmpp/websocket needs the WHATWG WebSocket, which Node 20 does not have globally.
const g = globalThis as { WebSocket?: unknown };
g.WebSocket ??= (await import('ws')).WebSocket;

export { xml, type Element };

/**
 * A real XMPP client (xmpp.js) for tests: every stanza it receives is queued, and `waitFor` consumes
 * the first that matches, waiting for it if needed.
 */
export class XmppTestClient {
  readonly received: Element[] = [];
  /** Errors the client reported (stream errors carry a `condition`). */
  readonly errors: Array<Error & { condition?: string }> = [];
  private errorWaiters: Array<(e: Error & { condition?: string }) => void> = [];
  private waiters: Array<{ pred: (s: Element) => boolean; resolve(s: Element): void }> = [];
  jid = '';

  private constructor(readonly xmpp: XmppClient) {
    xmpp.on('stanza', (s) => {
      const w = this.waiters.find((x) => x.pred(s));
      if (w) {
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve(s);
      } else {
        this.received.push(s);
      }
    });
    xmpp.on('error', (e: Error & { condition?: string }) => {
      this.errors.push(e);
      for (const w of this.errorWaiters) w(e);
    });
  }

  /** `service` is `xmpp://host:port` (TCP + STARTTLS) or `ws://host:port/xmpp-websocket`. */
  static async login(service: string, username: string, password = 'secret-pw', resource?: string): Promise<XmppTestClient> {
    const xmpp = client({ service, domain: 'localhost', username, password, ...(resource ? { resource } : {}) });
    xmpp.reconnect.stop();
    const c = new XmppTestClient(xmpp);
    const address = await xmpp.start();
    c.jid = address.toString();
    return c;
  }

  waitFor(pred: (s: Element) => boolean, what: string, timeoutMs = 20_000): Promise<Element> {
    const i = this.received.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.received.splice(i, 1)[0] as Element);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.jid}: timed out waiting for ${what}`)), timeoutMs);
      this.waiters.push({
        pred,
        resolve: (s) => {
          clearTimeout(timer);
          resolve(s);
        },
      });
    });
  }

  /** The next presence from `bare` (any resource) matching `pred`. */
  presenceFrom(bare: string, pred: (s: Element) => boolean = () => true, what = 'presence'): Promise<Element> {
    return this.waitFor((s) => s.is('presence') && (s.attrs.from ?? '').split('/')[0] === bare && pred(s), `${what} from ${bare}`);
  }

  /** Resolves with the first stream error of `condition` the client reports. */
  streamError(condition: string): Promise<Error> {
    const seen = this.errors.find((e) => e.condition === condition);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.errorWaiters.push((e) => e.condition === condition && resolve(e)));
  }

  send(s: Element): Promise<void> {
    return this.xmpp.send(s);
  }

  iq(s: Element): Promise<Element> {
    return this.xmpp.iqCaller.request(s, 20_000);
  }

  async stop(): Promise<void> {
    await this.xmpp.stop().catch(() => {});
  }
}

/** a asks b for presence, b approves and asks back, a approves: a mutual subscription over XMPP. */
export async function befriend(a: XmppTestClient, aJid: string, b: XmppTestClient, bJid: string): Promise<void> {
  await a.send(xml('presence', { to: bJid, type: 'subscribe' }));
  await b.waitFor((s) => s.is('presence') && s.attrs.type === 'subscribe' && s.attrs.from === aJid, 'subscribe request');
  await b.send(xml('presence', { to: aJid, type: 'subscribed' }));
  await b.send(xml('presence', { to: aJid, type: 'subscribe' }));
  await a.waitFor((s) => s.is('presence') && s.attrs.type === 'subscribe' && s.attrs.from === bJid, 'subscribe request');
  await a.send(xml('presence', { to: bJid, type: 'subscribed' }));
}
