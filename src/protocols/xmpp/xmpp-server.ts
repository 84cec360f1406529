import type { IncomingMessage, Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import type { PresenceEngine } from '../../engine/engine.js';
import type { XmppIqRegistry } from '../../features/registries.js';
import { XmppConnection } from './connection.js';
import type { XmppContext, XmppLog, XmppOptions } from './context.js';
import { DeadPeerCheck, livenessVerdict, type LivenessTimes } from '../liveness.js';
import { LoginTurns } from '../login-turns.js';
import { NS } from './namespaces.js';
import { xmppConnectionsOf } from './routing.js';
import { nextId } from './stanza-util.js';
import { receiveStanza, routeTo, xmppResourcesOf } from './stanza-delivery.js';
import { StreamManagement } from './stream-management.js';
import type { TlsMaterial } from './tls-certificate.js';
import { flushQueuedWrites, TcpTransport } from './tcp-transport.js';
import type { OutputLimits } from './transport.js';
import { WsTransport } from './ws-transport.js';
import { el } from './xml.js';

/** The longest interval between two sweeps of the connections. */
export const MAX_SWEEP_TICK_MS = 1000;

export interface XmppServerOptions extends XmppOptions {
  readonly host: string;
  /** -1 disables the listener, 0 picks a free port. */
  readonly port: number;
  readonly tlsPort: number;
  readonly websocketPath: string;
  readonly maxConnections: number;
  /** How long a peer has to answer our close before its socket is destroyed. */
  readonly closeTimeoutMs: number;
  /** Listen backlog of the TCP listeners (Node's default, 511, when omitted). */
  readonly backlog?: number;
}

/**
 * The XMPP front door: c2s over TCP (STARTTLS), direct TLS (XEP-0368) and WebSocket (RFC 7395). One
 * sweep timer serves every connection: negotiation and slow-stanza timeouts, XEP-0199 pings, dead peers.
 */
export class XmppServer {
  private readonly conns = new Set<XmppConnection>();
  private readonly ctx: XmppContext;
  private readonly sweeper: NodeJS.Timeout;
  private readonly dead: DeadPeerCheck<XmppConnection>;
  private tcp: NetServer | null = null;
  private tls: TlsServer | null = null;
  private readonly wss: WebSocketServer;
  port: number | null = null;
  tlsPort: number | null = null;

  constructor(
    private readonly engine: PresenceEngine,
    private readonly opts: XmppServerOptions,
    private readonly tlsMaterial: TlsMaterial | null,
    log: XmppLog,
    extensions: XmppIqRegistry | null = null,
  ) {
    const sm = new StreamManagement(engine, {
      resumeTimeoutMs: opts.smResumeTimeoutMs,
      maxUnacked: opts.smMaxUnacked,
      maxUnackedChars: opts.smMaxUnackedChars,
      maxOfflineMessages: opts.maxOfflineMessages,
      xml: opts.limits,
    });
    const now = opts.now ?? Date.now;
    const loginTurns = opts.loginTurns ?? new LoginTurns();
    loginTurns.beforeEachTurn(flushQueuedWrites);
    this.ctx = { engine, opts, log, saltSecret: randomBytes(32), startedAt: Date.now(), now, loginTurns, sm, extensions };
    this.dead = new DeadPeerCheck(
      (conn) => !conn.isEnded && livenessVerdict(this.ctx.now(), conn, this.times) === 'dead',
      (conn) => conn.terminate(),
    );
    extensions?.setSessionView({
      heldResources: (jid) => sm.heldResources(jid),
      inactive: (jid, resource) => xmppConnectionsOf(engine, jid).some((c) => c.session?.resource === resource && c.csi.inactive),
    });
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: opts.limits.maxStanzaChars * 4,
      perMessageDeflate: false,
      clientTracking: false,
      handleProtocols: (protocols) => (protocols.has('xmpp') ? 'xmpp' : false),
    });
    // At most a second: the tick adds to the time a watcher waits to see a silent client go (docs/liveness.md).
    const tick = Math.max(20, Math.min(MAX_SWEEP_TICK_MS, opts.pingIntervalMs / 2, opts.idleTimeoutMs - opts.pingIntervalMs, opts.stanzaTimeoutMs / 2, opts.negotiationTimeoutMs / 2, (opts.parserRestMs || Infinity) / 2));
    this.sweeper = setInterval(() => this.sweep(), tick);
    this.sweeper.unref();
    // Stanzas other resources (here or on other nodes) routed to this node's connections.
    engine.onStanza((to, d, resource, session) => receiveStanza(this.ctx, to, d, resource, session));
    engine.events.on('block.changed', (e) => {
      // XEP-0191 §3.3/§3.4: every resource of the user hears of the change, whichever door (and node) made it.
      const child = el(e.blocked ? 'block' : 'unblock', NS.blocking, {}, el('item', NS.blocking, { jid: e.contact }));
      xmppResourcesOf(engine, e.owner).then(
        (all) => {
          for (const r of all) routeTo(engine, r, el('iq', NS.client, { type: 'set', id: nextId('block'), to: `${r.jid}/${r.resource}` }, child), { from: e.owner, ifGone: 'drop' });
        },
        (err: unknown) => log.error({ err }, 'block push failed'),
      );
    });
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  async listen(): Promise<void> {
    if (this.opts.port >= 0) {
      // Not read until its login turn (acceptTcp): paused from the start, the accept costs no read
      // start and stop (12-15 % of what accepting a socket costs Node, in a storm's burst of accepts).
      this.tcp = createNetServer({ pauseOnConnect: true }, (socket) => this.acceptTcp(socket, false));
      this.port = await listen(this.tcp, this.opts.host, this.opts.port, this.opts.backlog);
    }
    if (this.opts.tlsPort >= 0 && this.tlsMaterial) {
      const { cert, key } = this.tlsMaterial;
      this.tls = createTlsServer({ cert, key, minVersion: 'TLSv1.2' }, (socket) => this.acceptTcp(socket, true));
      this.tls.on('tlsClientError', () => {
        // A failed handshake is the client's problem; the socket is gone.
      });
      this.tlsPort = await listen(this.tls, this.opts.host, this.opts.tlsPort, this.opts.backlog);
    }
  }

  attach(server: HttpServer): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = (req.url ?? '').split('?')[0];
      if (path !== this.opts.websocketPath) return;
      if (this.conns.size >= this.opts.maxConnections) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        const secure = (req.socket as Partial<TLSSocket>).encrypted === true;
        const transport = new WsTransport(ws, secure, `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`, this.opts.closeTimeoutMs, this.outputLimits);
        this.accept(transport);
      });
    });
  }

  /** Accepted sockets waiting for their login turn to become streams. */
  private acceptsWaiting = 0;

  private acceptTcp(socket: Socket, secure: boolean): void {
    if (this.conns.size + this.acceptsWaiting >= this.opts.maxConnections) {
      socket.destroy();
      return;
    }
    // Setting a stream up (its parser, its transport) is login work: it waits its turn behind the
    // online sessions' traffic; until then the socket is not read.
    socket.pause();
    socket.on('error', ignoreError);
    this.acceptsWaiting++;
    this.ctx.loginTurns.enqueue(() => {
      this.acceptsWaiting--;
      if (socket.destroyed) return;
      socket.setNoDelay(true);
      // The kernel probes a peer whose host vanished even when pings are set far apart (a mobile profile).
      socket.setKeepAlive(true, this.opts.pingIntervalMs);
      this.accept(new TcpTransport(socket, this.tlsMaterial?.context ?? null, secure, this.opts.closeTimeoutMs, this.outputLimits));
      socket.off('error', ignoreError);
      socket.resume();
    });
  }

  private get outputLimits(): OutputLimits {
    return { maxBytes: this.opts.maxOutputBytes, timeoutMs: this.opts.outputTimeoutMs };
  }

  private accept(transport: TcpTransport | WsTransport): void {
    const conn = new XmppConnection(transport, this.ctx, this.ctx.now());
    transport.events = {
      onData: (d) => conn.onData(d),
      onFrame: (t) => conn.onFrame(t),
      onOutputStalled: () => conn.onOutputStalled(),
      onTransportClosed: () => {
        this.conns.delete(conn);
        conn.onTransportClosed();
      },
    };
    this.conns.add(conn);
  }

  /** Streams whose parser is resting (for the metrics). */
  get restingParserCount(): number {
    let n = 0;
    for (const conn of this.conns) if (conn.parserResting) n++;
    return n;
  }

  private get times(): LivenessTimes {
    return { pingIntervalMs: this.opts.pingIntervalMs, idleTimeoutMs: this.opts.idleTimeoutMs };
  }

  private sweep(): void {
    const now = this.ctx.now();
    const times = this.times;
    for (const conn of this.conns) {
      if (conn.isEnded) continue;
      const timeout = conn.timedOut(now);
      if (timeout) {
        conn.closeStream(timeout, true);
        continue;
      }
      // Until bound, the negotiation timeout is the bound (a slow SCRAM client is not a dead one).
      if (!conn.bound) continue;
      const verdict = livenessVerdict(now, conn, times);
      if (verdict === 'ping') conn.ping();
      else if (verdict === 'dead') this.dead.suspect(conn);
      if (this.opts.parserRestMs > 0 && now - conn.lastReceived >= this.opts.parserRestMs) conn.restParser();
    }
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    for (const conn of this.conns) conn.close('shutdown');
    // Unacknowledged messages of resumable streams go to offline storage before the store closes.
    await this.ctx.sm.endAll();
    await Promise.all([this.tcp, this.tls].map((s) => (s ? new Promise<void>((resolve) => s.close(() => resolve())) : undefined)));
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

function ignoreError(): void {
  // A socket that fails before it became a stream is simply gone ('close' follows).
}

function listen(server: NetServer, host: string, port: number, backlog = 511): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, backlog, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}
