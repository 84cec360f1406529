import { connect, type Socket } from 'node:net';

export const HEADER = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/** A raw TCP XMPP connection for feeding the server exactly the bytes a test wants. */
export class RawXmpp {
  text = '';
  readonly closed: Promise<void>;
  private waiters: Array<() => void> = [];

  constructor(readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.text += d;
      for (const w of this.waiters) w();
    });
    socket.on('error', () => {
      // The server may close while we are still writing (huge stanzas): expected.
    });
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
  }

  static async open(port: number): Promise<RawXmpp> {
    return new RawXmpp(await RawXmpp.connectRaw(port));
  }

  static async connectRaw(port: number): Promise<Socket> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return socket;
  }

  write(s: string): void {
    if (!this.socket.destroyed) this.socket.write(s);
  }

  /**
   * Resolves once everything received so far matches `re`. It searches the whole transcript, or only
   * what arrived after offset `from` (a caller waiting for an answer to what it just sent, many times
   * over, would otherwise rescan an ever longer transcript).
   */
  waitFor(re: RegExp, what = String(re), timeoutMs = 20_000, from = 0): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = re.exec(from === 0 ? this.text : this.text.slice(from));
        if (m) {
          clearTimeout(timer);
          this.waiters = this.waiters.filter((w) => w !== check);
          resolve(m[0]);
        }
      };
      const timer = setTimeout(() => {
        // A waiter left behind would rescan the whole transcript at every later chunk.
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`timed out waiting for ${what}; got: ${this.text.slice(-500)}`));
      }, timeoutMs);
      this.waiters.push(check);
      check();
    });
  }

  /** Waits for the stream error `condition` and for the server to close the connection. */
  async streamError(condition: string): Promise<void> {
    await this.waitFor(new RegExp(`<stream:error[^>]*><${condition} `), `stream error ${condition}`);
    await this.closed;
  }

  /** Authenticates with PLAIN on a plaintext stream (servers started with xmpp_require_tls=false) and binds. */
  async loginPlain(user: string, password: string, resource: string): Promise<void> {
    this.write(HEADER);
    await this.waitFor(/<\/stream:features>/);
    this.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString('base64')}</auth>`);
    await this.waitFor(/<success/);
    this.text = '';
    this.write(HEADER);
    await this.waitFor(/<\/stream:features>/);
    this.write(`<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind></iq>`);
    await this.waitFor(/<jid>[^<]+<\/jid>/);
  }

  close(): void {
    this.socket.destroy();
  }
}
