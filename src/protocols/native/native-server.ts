import type { IncomingMessage, Server } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { PresenceEngine } from '../../engine/engine.js';
import type { NativeRequestRegistry } from '../../features/registries.js';
import { DeadPeerCheck, livenessVerdict, type LivenessTimes } from '../liveness.js';
import { LoginTurns } from '../login-turns.js';
import { CLOSE, NativeConnection, type NativeHooks, type NativeLimits } from './connection.js';
import { flushQueuedFrames } from './outbox.js';

const CONN = Symbol('presenced.conn');
const SERVER = Symbol('presenced.server');
type SocketWithConn = WebSocket & { [CONN]: NativeConnection; [SERVER]: NativeServer };

function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  const self = this as SocketWithConn;
  self[CONN].onMessage(data, isBinary, self[SERVER].now());
}
function onPong(this: WebSocket): void {
  const self = this as SocketWithConn;
  self[CONN].heard(self[SERVER].now());
}
function onError(): void {
  // 'close' follows; oversized frames and protocol errors end up there with their code.
}
function onClose(this: WebSocket, code: number, reason: Buffer): void {
  const self = this as SocketWithConn;
  self[SERVER].forget(self[CONN]);
  self[CONN].onClose(code === CLOSE.normal, reason.toString() || `closed (${code})`);
}

/** The longest interval between two sweeps of the connections. */
export const MAX_SWEEP_TICK_MS = 1000;

export interface NativeServerOptions extends NativeLimits {
  readonly path: string;
  readonly maxFrameBytes: number;
  /** How often an idle connection is pinged. */
  readonly heartbeatIntervalMs: number;
  /** No frame (pong included) for this long and the connection is considered dead. */
  readonly idleTimeoutMs: number;
  /** A connection that has not authenticated within this time is closed. */
  readonly authTimeoutMs: number;
  readonly maxConnections: number;
  /** The clock of the liveness sweep and its timeouts (ms); Date.now unless a test drives it. */
  readonly now?: () => number;
  /** Where login work waits behind the online sessions' traffic; shared with the other front doors. */
  readonly loginTurns?: LoginTurns;
}

/**
 * The native JSON-over-WebSocket front door, mounted on the HTTP server's upgrade event. One sweep
 * timer serves every connection (pings, idle and auth timeouts): per-connection timers would cost
 * memory and timer-wheel churn at tens of thousands of sessions.
 */
export class NativeServer {
  private readonly wss: WebSocketServer;
  private readonly conns = new Set<NativeConnection>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly dead: DeadPeerCheck<NativeConnection>;
  /** @internal the clock (NativeServerOptions.now). */
  readonly now: () => number;
  private readonly loginTurns: LoginTurns;

  constructor(
    private readonly engine: PresenceEngine,
    private readonly opts: NativeServerOptions,
    private readonly hooks: NativeHooks & { onInternalError(e: unknown): void },
    /** Request types registered by features (src/features/feature.ts). */
    private readonly extensions: NativeRequestRegistry | null = null,
  ) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: opts.maxFrameBytes,
      perMessageDeflate: false, // deflate contexts cost hundreds of KB per connection
      clientTracking: false,
    });
    // At most a second: the tick adds to the time a watcher waits to see a silent client go (docs/liveness.md).
    this.now = opts.now ?? Date.now;
    this.loginTurns = opts.loginTurns ?? new LoginTurns();
    this.loginTurns.beforeEachTurn(flushQueuedFrames);
    this.dead = new DeadPeerCheck(
      (conn) => !conn.isEnded && !conn.authenticating && livenessVerdict(this.now(), conn, this.times) === 'dead',
      (conn) => conn.terminate(),
    );
    const tick = Math.max(20, Math.min(MAX_SWEEP_TICK_MS, opts.heartbeatIntervalMs / 2, opts.idleTimeoutMs - opts.heartbeatIntervalMs, opts.authTimeoutMs / 2));
    this.sweeper = setInterval(() => this.sweep(), tick);
    this.sweeper.unref();
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  attach(server: Server): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = (req.url ?? '').split('?')[0];
      if (path !== this.opts.path) return; // another front door (XMPP over WebSocket) may own it
      if (this.conns.size >= this.opts.maxConnections) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      // The handshake is login work: it waits its turn behind the online sessions' traffic.
      this.loginTurns.enqueue(() => {
        if (!socket.destroyed) this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, socket));
      });
    });
  }

  private accept(ws: WebSocket, socket: Duplex): void {
    // The kernel probes a peer whose host vanished even when pings are set far apart (a mobile profile).
    if (socket instanceof Socket) socket.setKeepAlive(true, this.opts.heartbeatIntervalMs);
    const conn = new NativeConnection(ws, socket, this.engine, this.opts, this.hooks, this.now(), this.extensions, this.now, this.loginTurns);
    conn.onInternalError = this.hooks.onInternalError;
    this.conns.add(conn);
    // Shared listeners that find their connection on the socket: four closures per connection would
    // cost more memory than the connection object itself.
    (ws as SocketWithConn)[CONN] = conn;
    (ws as SocketWithConn)[SERVER] = this;
    ws.on('message', onMessage);
    ws.on('pong', onPong);
    ws.on('error', onError);
    ws.on('close', onClose);
  }

  /** @internal */
  forget(conn: NativeConnection): void {
    this.conns.delete(conn);
  }

  private get times(): LivenessTimes {
    return { pingIntervalMs: this.opts.heartbeatIntervalMs, idleTimeoutMs: this.opts.idleTimeoutMs };
  }

  private sweep(): void {
    const now = this.now();
    const times = this.times;
    for (const conn of this.conns) {
      // A login being checked is waiting for the server, not the client (a queued password check).
      if (conn.authenticating) continue;
      if (conn.authTimedOut(now, this.opts.authTimeoutMs)) {
        conn.close('auth-timeout');
        continue;
      }
      const verdict = livenessVerdict(now, conn, times);
      if (verdict === 'ping') conn.ping(now);
      else if (verdict === 'dead') this.dead.suspect(conn);
    }
  }

  /** Stops accepting and closes every connection (the engine has already told them why). */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    for (const conn of this.conns) conn.close('shutdown');
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}
