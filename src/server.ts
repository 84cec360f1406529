import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer as createHttpServer, STATUS_CODES } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { pino, type Logger } from 'pino';
import { SqliteStore } from './adapters/sqlite/sqlite-store.js';
import { PostgresStore } from './adapters/postgres/postgres-store.js';
import { MemoryBus } from './adapters/memory/memory-bus.js';
import { RedisBus } from './adapters/redis/redis-bus.js';
import type { PresenceBus } from './ports/bus.js';
import { resolveNodeId, type Config } from './config.js';
import { isPresenceError, type ErrorCode } from './core/errors.js';
import { PresenceEngine } from './engine/engine.js';
import { DEFAULT_SCRYPT } from './engine/credentials.js';
import { Passwords, type PasswordSettings } from './engine/passwords.js';
import { LoginTurns } from './protocols/login-turns.js';
import { LoginThrottled } from './engine/login-throttle.js';
import { Metrics } from './metrics.js';
import { adminApi } from './protocols/http/admin-api.js';
import { demoPage } from './protocols/http/demo-page.js';
import { NodeHealth } from './protocols/http/health.js';
import { httpPresence, type FastPath } from './protocols/http/http-presence.js';
import { NativeServer } from './protocols/native/native-server.js';
import { certificateFiles, loadTls } from './protocols/xmpp/tls-certificate.js';
import { XmppServer } from './protocols/xmpp/xmpp-server.js';
import type { Store } from './ports/store.js';
import { startControlChannel, type ControlChannel } from './control-channel.js';
import type { FeatureDefinition } from './features/feature.js';
import { startFeatures, type StartedFeatures } from './features/host.js';
import { BUILT_IN_FEATURES } from './features/index.js';
import { REQUEST_TYPES } from './protocols/native/messages.js';
import { BUILT_IN_IQ_NAMESPACES } from './protocols/xmpp/iq-handlers.js';

/** How long shutdown waits for HTTP connections to finish before cutting them. */
const HTTP_CLOSE_BOUND_MS = 2_000;

export const VERSION = '0.1.0';

const HTTP_STATUS: Record<ErrorCode, number> = {
  'bad-request': 400,
  'bad-jid': 400,
  'unknown-type': 400,
  'not-authenticated': 401,
  'already-authenticated': 409,
  'auth-failed': 401,
  'not-found': 404,
  'not-allowed': 403,
  conflict: 409,
  'rate-limited': 429,
  unsupported: 501,
  unavailable: 503,
  internal: 500,
};

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'presenced' } });
}

export interface OpenStoreOptions {
  /** This node's id (resolveNodeId), for the presence checkpoint rows; derived from the configuration if absent. */
  readonly node?: string;
  readonly log?: Logger;
}

/**
 * The Store the configuration names: PostgreSQL for a `store` URL, else SQLite in data_dir. Nothing is
 * contacted yet: migrate() is the first query, and its failure says what could not be reached.
 */
export function openStore(config: Config, opts: OpenStoreOptions = {}): Store {
  // Also with PostgreSQL: data_dir still holds the token secret, TLS files and the control socket.
  mkdirSync(config.data_dir, { recursive: true });
  if (config.store !== '') {
    const log = opts.log;
    return PostgresStore.open({
      url: config.store,
      node: opts.node ?? resolveNodeId(config),
      poolSize: config.store_pool_size,
      ...(log ? { onIdleError: (err: Error) => log.warn({ err: err.message }, 'a PostgreSQL connection was lost; the next query opens a new one') } : {}),
    });
  }
  const log = opts.log;
  return SqliteStore.open({
    path: join(config.data_dir, 'presenced.sqlite'),
    // A running server checkpoints the WAL off its event loop; the CLI's short runs need not.
    ...(log ? { checkpointThread: (error: string) => log.warn({ error }, 'WAL checkpoints keep failing; the database file checkpoints itself when its log grows large') } : {}),
  });
}

/** The in-process bus, or the cluster's bus on Redis (joining the cluster: rejects when Redis stays unreachable). */
async function openBus(config: Config, nodeId: string, log: Logger): Promise<PresenceBus> {
  if (config.bus === '') return new MemoryBus();
  return RedisBus.start({ url: config.bus, node: nodeId, leaseMs: config.node_lease_ms, log: log.child({ component: 'bus' }) });
}

/** The token secret survives restarts (issued tokens stay valid) and never leaves the data directory. */
function tokenSecret(config: Config): Buffer {
  if (config.token_secret !== '') return Buffer.from(config.token_secret);
  const file = join(config.data_dir, 'token-secret');
  if (existsSync(file)) return Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
  const secret = randomBytes(32);
  writeFileSync(file, secret.toString('base64') + '\n', { mode: 0o600 });
  return secret;
}

/** The password settings of the configuration (src/engine/passwords.ts). */
export function passwordSettings(config: Config): Partial<PasswordSettings> {
  return {
    scrypt: { logN: config.scrypt_cost, r: DEFAULT_SCRYPT.r, p: DEFAULT_SCRYPT.p },
    scramIterations: config.scram_iterations,
    pool: config.password_pool === 'libuv' ? 'libuv' : 'workers',
    poolSize: config.password_pool_size,
    cacheSize: config.password_cache_size,
  };
}

export interface RunningServer {
  readonly engine: PresenceEngine;
  readonly http: FastifyInstance;
  readonly port: number;
  readonly url: string;
  /** Bound XMPP ports (null when that listener is disabled). */
  readonly xmppPort: number | null;
  readonly xmppsPort: number | null;
  readonly log: Logger;
  stop(reason?: string): Promise<void>;
}

export interface StartOptions {
  /** The features to offer (each still switched on or off by the configuration); default the built-in ones. */
  readonly features?: readonly FeatureDefinition[];
  /**
   * Reads the configuration again from its source (the CLI passes its file and the environment), for
   * what reloads without a restart (the extensions). Without it a reload reuses `config`.
   */
  readonly rereadConfig?: () => Config;
  /** The clock of the front doors' liveness sweeps and timeouts (Date.now by default): tests drive the idle sweep with it. */
  readonly livenessClock?: () => number;
}

/** The composition root: builds adapters, the engine, the features and every front door from the configuration. */
export async function startServer(config: Config, log: Logger = createLogger(config.log_level), opts: StartOptions = {}): Promise<RunningServer> {
  // Once per process: derived ids may be random, and every part that names this node must agree.
  const nodeId = resolveNodeId(config);
  const store = openStore(config, { node: nodeId, log });
  let bus: PresenceBus;
  try {
    await store.migrate();
    bus = await openBus(config, nodeId, log);
  } catch (e) {
    await store.close();
    throw e;
  }
  const passwords = new Passwords(passwordSettings(config));
  const engine = new PresenceEngine(store, bus, {
    passwords,
    domains: config.domains,
    gracePeriodMs: config.grace_period_ms,
    defaultPublicPresence: config.public_presence_default,
    tokenSecret: tokenSecret(config),
    checkpointMs: config.presence_checkpoint_ms,
    loginThrottle: {
      accountFree: config.login_throttle_account_free,
      addressFree: config.login_throttle_address_free,
      maxDelayMs: config.login_throttle_max_delay_ms,
    },
  });
  engine.events.onListenerError = (err, event) => log.error({ err, event }, 'event listener failed');
  engine.events.on('session.closed', (e) => log.info({ jid: e.jid, resource: e.session.resource, reason: e.reason }, 'session ended'));
  engine.onCheckpointError = (err) => log.error({ err }, 'presence checkpoint failed');
  engine.onCheckpoint = (written, deleted) => log.debug({ written, deleted }, 'presence checkpoint written');
  engine.onLastSeenError = (err, jid) => log.error({ err, jid }, 'last seen not written');
  try {
    await engine.loadPublicity();
    for (const r of await engine.start()) log.info({ jid: r.jid, reason: r.reason, lastSeen: new Date(r.lastSeen.at).toISOString() }, 'session ended');
  } catch (e) {
    await bus.close();
    await store.close();
    throw e;
  }
  let control: ControlChannel;
  try {
    control = await startControlChannel(engine, config.data_dir, log);
  } catch (e) {
    await bus.close();
    await store.close();
    throw e;
  }

  let fastPath: FastPath | null = null;
  const http = Fastify({
    loggerInstance: log.child({ component: 'http' }) as FastifyBaseLogger,
    // Per-request logs would drown the log on a busy status endpoint; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request: with request logging off it only carried a request id, and making
    // it was a visible share of a status-endpoint request's cost.
    childLoggerFactory: (logger) => logger,
    // The status endpoint's hot path answers before Fastify routing when it can (see statusFastPath).
    serverFactory: (handler) => {
      const server = createHttpServer((req, res) => {
        if (fastPath === null || !fastPath(req, res)) handler(req, res);
      });
      server.keepAliveTimeout = 72_000;
      return server;
    },
    bodyLimit: 1024 * 1024,
    // A JID in a path may be 3071 characters, percent-encoded up to three times longer; the route
    // schemas then bound the decoded value (Fastify's default of 100 answered long JIDs with a bare 414).
    routerOptions: { maxParamLength: 10_000 },
    // req.ip feeds the login throttle; behind a proxy it must be the client's, not the proxy's.
    trustProxy: config.http_trust_proxy ? (_address: string, hop: number) => hop < 1 : false,
    // What Fastify refuses before routing (a malformed percent-escape in the path) gets our JSON error too.
    // Requests Node's HTTP parser refuses before Fastify sees them (headers or URL over 16 KB, a
    // malformed request line, a client too slow to send its request) get the same JSON error shape too.
    clientErrorHandler: writeClientError,
    frameworkErrors: (err, _req, reply) => {
      const status = err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 414 : 400;
      const message = err.code === 'FST_ERR_BAD_URL' ? 'malformed URL (bad percent-encoding in the path)' : err.message;
      void (reply as unknown as FastifyReply).code(status).send({ error: { code: 'bad-request', message } });
    },
    // Route schemas (src/protocols/http/schemas.ts) check what the client sent, as sent: no coercion of
    // a JSON number to a string or of a repeated query parameter's array to one value.
    ajv: { customOptions: { coerceTypes: false, allowUnionTypes: true } },
  });

  let native: NativeServer | null = null;
  let xmppServer: XmppServer | null = null;
  // One queue of login work for every front door: a storm on one does not get ahead of the other's.
  const loginTurns = new LoginTurns();
  const metrics = new Metrics(
    engine,
    () => ({ native: native?.connectionCount ?? 0, xmpp: xmppServer?.connectionCount ?? 0 }),
    () => xmppServer?.restingParserCount ?? 0,
  );
  if (log.isLevelEnabled('debug')) {
    engine.events.on('presence.changed', (e) => log.debug({ jid: e.jid, show: e.presence.show }, 'presence changed'));
  }

  http.setErrorHandler((err: FastifyError | Error, req, reply) => {
    if (isPresenceError(err)) {
      metrics.errors.inc({ code: err.code });
      if (err instanceof LoginThrottled) reply.header('retry-after', String(err.retryAfterSeconds));
      return reply.code(HTTP_STATUS[err.code]).send({ error: { code: err.code, message: err.message } });
    }
    const fe = err as FastifyError;
    if (typeof fe.statusCode === 'number' && fe.statusCode < 500) {
      metrics.errors.inc({ code: 'bad-request' });
      return reply.code(fe.statusCode).send({ error: { code: fe.statusCode === 413 ? 'too-large' : 'bad-request', message: fe.message } });
    }
    metrics.errors.inc({ code: 'internal' });
    req.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: { code: 'internal', message: 'internal error' } });
  });
  http.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: { code: 'not-found', message: `no route ${req.method} ${req.url.split('?')[0]}` } }),
  );
  // A synchronous hook (no promise per request) and one counter child per status code, looked up once.
  const byStatus = new Map<number, { inc(): void }>();
  const countHttp = (code: number): void => {
    let c = byStatus.get(code);
    if (c === undefined) {
      c = metrics.httpRequests.labels(String(code));
      byStatus.set(code, c);
    }
    c.inc();
  };
  http.addHook('onResponse', (_req, reply, done) => {
    countHttp(reply.statusCode);
    done();
  });

  let features: StartedFeatures;
  try {
    features = await startFeatures(opts.features ?? BUILT_IN_FEATURES, {
      config,
      ...(opts.rereadConfig ? { rereadConfig: opts.rereadConfig } : {}),
      engine,
      log,
      metrics,
      storage: store.featureStorage(),
      reservedRequestTypes: REQUEST_TYPES,
      reservedIqNamespaces: BUILT_IN_IQ_NAMESPACES,
    });
  } catch (e) {
    await control.close();
    await bus.close();
    await store.close();
    throw e;
  }
  if (features.names.length) log.info({ features: features.names }, 'features enabled');

  const health = new NodeHealth(store, bus);
  // 503 tells a load balancer to stop sending new clients here (docs/cluster.md, "Load balancer").
  http.get('/healthz', async (_req, reply) => {
    const reasons = await health.problems();
    const sessions = engine.localSessionCount();
    if (reasons.bus === undefined && reasons.store === undefined) return { status: 'ok', version: VERSION, sessions };
    return reply.code(503).send({ status: 'unavailable', version: VERSION, sessions, reasons });
  });
  http.get('/metrics', async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  await http.register(adminApi(engine, { adminToken: config.admin_token, tokenTtlSeconds: config.token_ttl_s }), { prefix: '/api/v1' });
  // Each feature's routes in their own encapsulated context: its hooks guard only its prefix.
  for (const h of features.http) await http.register(h.plugin, { prefix: h.prefix });
  if (config.demo) await http.register(demoPage());
  fastPath = await httpPresence(http, engine, { adminToken: config.admin_token, trustReqJid: config.trust_req_jid, batchMax: config.http_batch_max }, countHttp);
  if (config.trust_req_jid) log.warn('trust_req_jid is on: the HTTP status endpoint believes unproven req_jid values (UNSAFE outside a closed network)');

  native = new NativeServer(
    engine,
    {
      path: '/ws',
      maxFrameBytes: config.ws_max_frame_bytes,
      heartbeatIntervalMs: config.heartbeat_interval_ms,
      idleTimeoutMs: config.idle_timeout_ms,
      authTimeoutMs: config.auth_timeout_ms,
      maxConnections: config.max_connections,
      ...(opts.livenessClock ? { now: opts.livenessClock } : {}),
      loginTurns,
      rate: config.ws_rate_limit,
      burst: config.ws_rate_burst,
      maxStrikes: config.ws_flood_strikes,
      maxAuthFailures: config.max_auth_failures,
    },
    {
      onError: (code) => {
        metrics.errors.inc({ code });
        if (code === 'auth-failed') metrics.authFailures.inc();
      },
      onInternalError: (err) => log.error({ err }, 'native request failed'),
    },
    features.native,
  );
  native.attach(http.server);
  const xmpp = await startXmpp(config, engine, log, features, opts.livenessClock, loginTurns);
  xmppServer = xmpp;
  xmpp.attach(http.server);

  await http.listen({ host: config.host, port: config.http_port, backlog: config.listen_backlog });
  const addr = http.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.http_port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  log.info({ port, url, domains: config.domains, dataDir: config.data_dir }, `presenced ${VERSION} listening on ${url}`);
  if (config.admin_token === '') log.warn('admin API disabled (no admin_token); set PRESENCED_ADMIN_TOKEN to enable it');

  let stopping: Promise<void> | null = null;
  const stop = (reason = 'shutdown'): Promise<void> => {
    stopping ??= (async () => {
      log.info({ reason }, 'shutting down');
      await control.close();
      await engine.shutdown('shutdown');
      await native?.close();
      await xmpp.close();
      // Connections that never sent a request (or hold one open) must not hold the shutdown: streams
      // were told to end by their preClose hooks; after a short bound every connection left is cut.
      const cut = setTimeout(() => http.server.closeAllConnections(), HTTP_CLOSE_BOUND_MS);
      await http.close();
      clearTimeout(cut);
      await features.stop();
      await bus.close();
      await store.close();
      await passwords.close();
      log.info('stopped');
    })();
    return stopping;
  };
  return { engine, http, port, url, xmppPort: xmpp.port, xmppsPort: xmpp.tlsPort, log, stop };
}

async function startXmpp(
  config: Config,
  engine: PresenceEngine,
  log: Logger,
  features: StartedFeatures,
  clock: (() => number) | undefined,
  loginTurns: LoginTurns,
): Promise<XmppServer> {
  const xlog = log.child({ component: 'xmpp' });
  const files = certificateFiles({ certPath: config.tls_cert, keyPath: config.tls_key, dataDir: config.data_dir, domains: config.domains });
  if (files.generated) xlog.info({ cert: files.cert }, 'generated a self-signed TLS certificate for XMPP; set tls_cert/tls_key for a real one');
  const xmpp = new XmppServer(
    engine,
    {
      host: config.host,
      port: config.xmpp_port,
      tlsPort: config.xmpps_port,
      websocketPath: '/xmpp-websocket',
      maxConnections: config.max_connections,
      limits: { maxStanzaChars: config.xmpp_max_stanza_bytes, maxDepth: 32, maxAttributes: 64 },
      requireTls: config.xmpp_require_tls,
      registration: config.xmpp_registration === 'open' ? 'open' : 'closed',
      resourceConflict: config.xmpp_resource_conflict === 'new_resource' ? 'new_resource' : 'replace_old',
      maxAuthFailures: config.max_auth_failures,
      negotiationTimeoutMs: config.xmpp_negotiation_timeout_ms,
      stanzaTimeoutMs: config.xmpp_stanza_timeout_ms,
      parserRestMs: config.xmpp_parser_rest_ms,
      pingIntervalMs: config.heartbeat_interval_ms,
      idleTimeoutMs: config.idle_timeout_ms,
      maxOfflineMessages: config.xmpp_max_offline_messages,
      smResumeTimeoutMs: config.xmpp_sm_resume_timeout_ms,
      smMaxUnacked: config.xmpp_sm_max_unacked,
      smMaxUnackedChars: config.xmpp_sm_max_unacked_bytes,
      closeTimeoutMs: config.xmpp_close_timeout_ms,
      backlog: config.listen_backlog,
      maxOutputBytes: config.xmpp_max_output_bytes,
      outputTimeoutMs: config.xmpp_output_timeout_ms,
      serverVersion: VERSION,
      ...(clock ? { now: clock } : {}),
      loginTurns,
    },
    loadTls(files),
    xlog,
    features.xmpp,
  );
  await xmpp.listen();
  if (!config.xmpp_require_tls) xlog.warn('xmpp_require_tls is false: XMPP clients may log in without TLS, sending passwords in the clear with PLAIN');
  if (xmpp.port !== null || xmpp.tlsPort !== null) xlog.info({ port: xmpp.port, tlsPort: xmpp.tlsPort }, 'XMPP listening');
  return xmpp;
}

/** Answers a request the HTTP parser refused (Fastify's clientErrorHandler), in the API's JSON error shape. */
function writeClientError(err: NodeJS.ErrnoException, socket: import('node:stream').Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'too-large', 'request line or headers larger than 16 KB']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'timeout', 'the request was not received in time']
        : [400, 'bad-request', 'malformed HTTP request'];
  const body = JSON.stringify({ error: { code, message } });
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}
