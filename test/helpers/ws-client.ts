import { WebSocket, type ClientOptions } from 'ws';

export interface WireError {
  code: string;
  message: string;
}

export class RequestFailed extends Error {
  constructor(readonly error: WireError) {
    super(`${error.code}: ${error.message}`);
  }
}

type Push = Record<string, any>;

/**
 * A raw native-protocol client for tests: it speaks the wire format directly (not through the SDK) so
 * tests pin the protocol itself. Pushes are queued; `waitFor` consumes the first matching one.
 */
export class TestClient {
  readonly pushes: Push[] = [];
  readonly all: Push[] = [];
  private nextId = 1;
  private readonly pending = new Map<string | number, { resolve(v: any): void; reject(e: Error): void }>();
  private waiters: Array<{ pred: (p: Push) => boolean; resolve(p: Push): void }> = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.onFrame(data.toString()));
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        // A request the server will never answer fails the test that made it, instead of hanging it.
        for (const [id, p] of this.pending) p.reject(new Error(`connection closed (${code} ${reason.toString()}) before request ${String(id)} was answered`));
        this.pending.clear();
        resolve({ code, reason: reason.toString() });
      }),
    );
  }

  static async connect(url: string, opts: ClientOptions = {}): Promise<TestClient> {
    const ws = new WebSocket(url, opts);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new TestClient(ws);
  }

  /** Connects and authenticates with a password. */
  static async login(url: string, jid: string, password = 'secret-pw', extra: Record<string, unknown> = {}): Promise<{ client: TestClient; auth: any }> {
    const client = await TestClient.connect(url);
    const auth = await client.request('auth', { jid, password, ...extra });
    return { client, auth };
  }

  private onFrame(text: string): void {
    const msg = JSON.parse(text) as Push;
    this.all.push(msg);
    if ((msg.type === 'result' || msg.type === 'error') && msg.id !== null && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id)!;
      this.pending.delete(msg.id);
      if (msg.type === 'result') p.resolve(msg.result);
      else p.reject(new RequestFailed(msg.error));
      return;
    }
    const w = this.waiters.find((x) => x.pred(msg));
    if (w) {
      this.waiters = this.waiters.filter((x) => x !== w);
      w.resolve(msg);
      return;
    }
    this.pushes.push(msg);
  }

  request(type: string, body: Record<string, unknown> = {}): Promise<any> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, type, ...body }));
    });
  }

  /** Sends a raw text frame (for bad-input tests). */
  sendRaw(text: string | Buffer): void {
    this.ws.send(text);
  }

  /** Resolves with the first push (already queued or yet to come) matching `pred`, consuming it. */
  waitFor(pred: (p: Push) => boolean, what = 'push', timeoutMs = 5000): Promise<Push> {
    const i = this.pushes.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.pushes.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; queued: ${JSON.stringify(this.pushes)}`)), timeoutMs);
      this.waiters.push({
        pred,
        resolve: (p) => {
          clearTimeout(timer);
          resolve(p);
        },
      });
    });
  }

  presenceOf(jid: string, pred: (p: Push) => boolean = () => true): Promise<Push> {
    return this.waitFor((p) => p.type === 'presence' && p.jid === jid && pred(p), `presence of ${jid}`);
  }

  /**
   * Set by a test cluster (cluster.ts) while one runs in this process: resolves once every delivery
   * its nodes handed to one another has arrived, so that barrier() means the same as on one server.
   */
  static settle: (() => Promise<void>) | null = null;

  /**
   * A round trip through the server: everything the server sent this client before it answered the
   * ping has arrived once this resolves (in a test cluster, also what other nodes sent it before the
   * barrier). Used to assert that something was NOT delivered.
   */
  async barrier(): Promise<void> {
    await TestClient.settle?.();
    await this.request('ping');
  }

  queuedPresence(jid?: string): Push[] {
    return this.pushes.filter((p) => p.type === 'presence' && (jid === undefined || p.jid === jid));
  }

  close(code = 1000): Promise<{ code: number; reason: string }> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(code);
    return this.closed;
  }

  /** Kills the TCP connection with no WebSocket goodbye, as a crashed or vanished device would. */
  destroy(): void {
    (this.ws as unknown as { _socket: import('node:net').Socket })._socket.destroy();
  }
}

/** Makes `a` and `b` mutual contacts through the native protocol, the way two users would. */
export async function befriend(a: TestClient, aJid: string, b: TestClient, bJid: string): Promise<void> {
  await a.request('subscribe', { jid: bJid });
  await b.waitFor((p) => p.type === 'subscription' && p.from === aJid && p.kind === 'subscribe', 'subscribe request');
  await b.request('approve', { jid: aJid });
  await b.request('subscribe', { jid: aJid });
  await a.waitFor((p) => p.type === 'subscription' && p.from === bJid && p.kind === 'subscribe', 'subscribe request');
  await a.request('approve', { jid: bJid });
}
