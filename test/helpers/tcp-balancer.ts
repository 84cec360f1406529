import net from 'node:net';

/**
 * A TCP load balancer on loopback in front of a test cluster's nodes, as an operator's HAProxy in
 * `mode tcp` would be (docs/cluster.md): each accepted connection is piped, bytes unchanged, to the
 * node port `choose` names. Spreads a suite's clients over the nodes without the suite knowing.
 *
 * `choose` may look at the connection's first bytes (to tell a WebSocket upgrade from a plain HTTP
 * request, so that clients and HTTP requests are spread by separate turns). It gets null when the
 * client sent nothing yet: some clients wait for the server to speak, and some tests check what the
 * server does with a connection that never sends (the server must see that connection too).
 */
export type ChooseBackend = (head: Buffer | null) => number | null;

/**
 * Awaited before each chunk a client sends is passed on: a test cluster settles there (see
 * cluster.ts), so that whatever a client asks reaches its node after every earlier change made
 * anywhere in the cluster has reached every node, as it would on one server.
 */
export type Gate = () => Promise<void>;

/** How long a new connection may stay silent before it is sent to a node without its first bytes. */
const FIRST_BYTES_WAIT_MS = 50;

/** One turn of the event loop with its I/O: what peers in this process already sent has been read. */
const ioTurn = async (): Promise<void> => {
  // The first immediate runs in this turn's check phase, the second in the next one's, after its poll.
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
};

export class TcpBalancer {
  readonly #pairs = new Set<net.Socket>();
  /** Connections to nodes whose client has gone (its end passed on, or cut) and that are not closed yet. */
  readonly #closing = new Set<net.Socket>();
  #closed: Array<() => void> = [];

  private constructor(
    /** The listening socket: its 'connection' events carry the client-facing sockets. */
    readonly server: net.Server,
    readonly port: number,
    private readonly gate: Gate | null,
  ) {}

  static async listen(port: number, choose: ChooseBackend, peek: boolean, gate: Gate | null = null): Promise<TcpBalancer> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const b = new TcpBalancer(server, (server.address() as net.AddressInfo).port, gate);
    server.on('connection', (client) => b.#accept(client, choose, peek));
    return b;
  }

  #accept(client: net.Socket, choose: ChooseBackend, peek: boolean): void {
    this.#pairs.add(client);
    client.once('close', () => this.#pairs.delete(client));
    client.on('error', () => client.destroy());
    if (!peek) {
      this.#connect(client, choose(null), null);
      return;
    }
    let done = false;
    const go = (head: Buffer | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      client.off('data', onData);
      client.off('end', onEnd);
      client.pause();
      this.#connect(client, choose(head), head);
    };
    const onData = (chunk: Buffer): void => go(chunk);
    const onEnd = (): void => go(null);
    const timer = setTimeout(() => go(null), FIRST_BYTES_WAIT_MS);
    client.on('data', onData);
    client.once('end', onEnd);
  }

  #connect(client: net.Socket, port: number | null, head: Buffer | null): void {
    if (port === null || client.destroyed) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
    this.#pairs.add(upstream);
    upstream.once('close', () => {
      this.#pairs.delete(upstream);
      if (this.#closing.delete(upstream)) for (const w of this.#closed.splice(0)) w();
      // What the node wrote last (an error answer before it cut the connection) may still be on its
      // way to the client: end after it rather than cut, as the node's own socket would have.
      if (client.destroyed) return;
      client.end();
      setTimeout(() => client.destroy(), 1_000).unref();
    });
    client.once('close', () => {
      if (!upstream.destroyed) this.#closing.add(upstream);
      upstream.destroy();
    });
    upstream.on('error', () => upstream.destroy());
    // pipe() forwards each direction's end (a half-close) and respects backpressure both ways.
    upstream.pipe(client);
    const gate = this.gate;
    if (gate === null) {
      if (head !== null) upstream.write(head);
      client.pipe(upstream);
      client.resume();
      return;
    }
    // Each chunk after the gate, in order; the client is paused while one waits, so that a client
    // sending faster than the gate opens is held back rather than buffered here. Its end follows its
    // last chunk without waiting for the gate (which may be waiting for this very connection to close).
    let queue = Promise.resolve();
    const pass = (chunk: Buffer): void => {
      client.pause();
      queue = queue
        .then(gate)
        .then(() => {
          if (upstream.destroyed) return;
          if (upstream.write(chunk)) client.resume();
          else upstream.once('drain', () => client.resume());
        });
    };
    client.on('data', (chunk: Buffer) => pass(chunk));
    client.once('end', () => {
      queue = queue.then(() => {
        if (upstream.destroyed) return;
        this.#closing.add(upstream);
        upstream.end();
      });
    });
    if (head !== null) pass(head);
    else client.resume();
  }

  /**
   * Resolves once every connection whose client went away before the call is closed on the node's
   * side too, and the node has had a turn to handle it (so that a test's next request, wherever it
   * lands, finds the session of a client that disconnected already ending).
   */
  async quiet(deadlineMs = 5_000): Promise<void> {
    await ioTurn();
    const deadline = Date.now() + deadlineMs;
    while (this.#closing.size > 0 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.#closed.push(resolve);
        // A node that keeps a half-closed connection open must not hold every client back forever.
        setTimeout(resolve, Math.max(0, deadline - Date.now())).unref();
      });
    }
    await ioTurn();
  }

  /** Stops accepting and cuts every connection still open. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.#pairs) s.destroy();
    await closed;
  }
}
