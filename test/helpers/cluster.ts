import { cpSync, lstatSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { Config } from '../../src/config.js';
import { CONTROL_SOCKET } from '../../src/control-channel.js';
import type { StartOptions } from '../../src/server.js';
import { startPostgres, startRedis, type PrivatePostgres, type PrivateRedis } from './private-services.js';
import { startSingleTestServer, type TestServer } from './server.js';
import { startServerProcess, type ServerProcess } from './server-process.js';
import { TcpBalancer } from './tcp-balancer.js';
import { TestClient } from './ws-client.js';

/**
 * Clusters for tests: presenced nodes sharing a private PostgreSQL database (the store) and a private
 * Redis (the bus), as docs/cluster.md deploys them.
 *
 * One PostgreSQL server per test process, started on first use, with a fresh database per cluster;
 * one Redis per cluster (the bus's keys and channels are not separable per database). Both are
 * unref'd: a test file that never stops them still exits, and private-services' exit hook ends them.
 */
export const CLUSTER_TOKEN_SECRET = 'cluster-test-token-secret-0123456789abcdef';

let postgres: Promise<PrivatePostgres> | null = null;
let databases = 0;

async function sharedPostgres(): Promise<PrivatePostgres> {
  const current = postgres === null ? null : await postgres;
  // A file's after() may have stopped every private service (stopAllPrivateServices).
  if (current === null || current.pid === undefined) {
    postgres = startPostgres().then((pg) => {
      pg.unref();
      return pg;
    });
  }
  return postgres as Promise<PrivatePostgres>;
}

/** A fresh, empty database for one cluster: its `store` URL. */
export async function freshClusterDatabase(): Promise<string> {
  return (await sharedPostgres()).createDatabase(`cluster_${++databases}`);
}

/** A cluster's shared services: its database (`store`), its Redis (`redis.url`), and its nodes' data directories. */
export class ClusterServices {
  private readonly root = mkdtempSync(join(tmpdir(), 'presenced-cluster-'));

  private constructor(
    readonly store: string,
    readonly redis: PrivateRedis,
    /** The PostgreSQL server (shared by every cluster of this test process) holding `store`. */
    readonly postgres: PrivatePostgres,
  ) {}

  static async start(): Promise<ClusterServices> {
    const store = await freshClusterDatabase();
    const redis = await startRedis();
    redis.unref();
    return new ClusterServices(store, redis, await sharedPostgres());
  }

  /** A fresh data directory for one node (removed by remove()). */
  dataDir(name: string): string {
    const dir = join(this.root, name);
    mkdirSync(dir, { recursive: true });
    return dir;
  }

  /** What makes a node a member of this cluster (its own `node_id`; lease short, so that deaths are seen quickly). */
  nodeConfig(nodeId: string, leaseMs = 1_500): Partial<Config> {
    return { store: this.store, bus: this.redis.url, node_id: nodeId, node_lease_ms: leaseMs, token_secret: CLUSTER_TOKEN_SECRET, store_pool_size: 4 };
  }

  /** The same as PRESENCED_* variables, for a node run as a child process (server-process.ts). */
  processEnv(nodeId: string, leaseMs = 1_500): Record<string, string> {
    return {
      PRESENCED_STORE: this.store,
      PRESENCED_BUS: this.redis.url,
      PRESENCED_NODE_ID: nodeId,
      PRESENCED_NODE_LEASE_MS: String(leaseMs),
      PRESENCED_TOKEN_SECRET: CLUSTER_TOKEN_SECRET,
      PRESENCED_STORE_POOL_SIZE: '4',
    };
  }

  /** Stops the Redis and removes the nodes' data directories (the database goes with the PostgreSQL server). */
  async remove(): Promise<void> {
    await this.redis.destroy();
    rmSync(this.root, { recursive: true, force: true });
  }
}

/**
 * Starts a node in-process (see startTestServer) joined to the cluster, with its own data directory.
 * While it runs, TestClient.barrier() also waits for deliveries between it and the other nodes.
 */
export async function startClusterNode(services: ClusterServices, nodeId: string, overrides: Partial<Config> = {}): Promise<TestServer> {
  const n = await startSingleTestServer({ ...services.nodeConfig(nodeId), ...overrides }, services.dataDir(nodeId));
  liveNodes.add(n);
  TestClient.settle = settleClusters;
  const database = new URL(services.store).pathname.slice(1);
  return {
    ...n,
    nodes: [n],
    sql: (text, ...args) => services.postgres.query(database, text, args),
    async stop() {
      liveNodes.delete(n);
      await n.stop();
    },
    async destroy() {
      liveNodes.delete(n);
      await n.destroy();
    },
  };
}

/**
 * Starts a node as a child process (bin/presenced.js, which runs dist/: build it first), for tests that
 * kill -9 or SIGSTOP a node. A fresh data directory each time: a node restarted under the same id is
 * a new machine that kept its name.
 */
let processDirs = 0;
export function startClusterProcess(services: ClusterServices, nodeId: string, leaseMs = 1_500): Promise<ServerProcess> {
  return startServerProcess(services.dataDir(`${nodeId}-${++processDirs}`), services.processEnv(nodeId, leaseMs));
}

// ------------------------------------------------------------------ the suites' cluster mode

/** TEST_CLUSTER=N (N > 1): startTestServer starts N nodes behind a balancer instead of one server. */
export function testClusterSize(): number {
  const raw = process.env.TEST_CLUSTER;
  if (raw === undefined || raw === '' || raw === '1') return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 9) throw new Error(`TEST_CLUSTER must be a node count from 1 to 9, got ${JSON.stringify(raw)}`);
  return n;
}

/** The database of a cluster started on a data directory, so that a restart on that directory finds its data. */
const databaseOf = new Map<string, string>();

/** In-process nodes of every test cluster running in this process (for settleClusters). */
const liveNodes = new Set<TestServer>();

interface FeedBarrier {
  feedBarrier?(): Promise<void>;
}

/**
 * Resolves once what in-process cluster nodes sent one another before the call has been applied: work
 * each engine had started finished (PresenceEngine.idle: a connection's close, a subscription change),
 * the feed (registry changes, cache notes) handled by every node (RedisBus.feedBarrier), then every
 * delivery a node handed to the bus for another node received there (and so written to its clients). A barrier
 * across the cluster that only a test can have (the nodes' counters are read directly); it gives up
 * after `deadlineMs` (Redis down, a node stopped with deliveries queued for it).
 */
export async function settleNodes(nodes: Iterable<TestServer>, deadlineMs = 5_000): Promise<void> {
  const list = [...nodes];
  const deadline = Date.now() + deadlineMs;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs)));
  // Work the nodes had started (a connection's close, a subscription) finishes first: it may write to
  // the store and publish on the feed; then the feed, then the deliveries.
  await Promise.race([
    (async () => {
      await Promise.allSettled(list.map((n) => n.server.engine.idle()));
      await Promise.allSettled(list.map((n) => (n.server.engine.bus as FeedBarrier).feedBarrier?.()));
    })(),
    late,
  ]);
  clearTimeout(timer);
  for (;;) {
    let queued = 0;
    let received = 0;
    for (const n of list) {
      const stats = n.server.engine.bus.stats;
      queued += stats?.remoteQueued ?? 0;
      received += stats?.deliveriesReceived ?? 0;
    }
    if (received >= queued || Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** settleNodes over every cluster node running in this process: TestClient.barrier() calls it. */
export function settleClusters(): Promise<void> {
  return settleNodes(liveNodes);
}

const isWebSocketUpgrade = (head: Buffer | null): boolean => head !== null && /\r\nupgrade:[ \t]*websocket/i.test(head.toString('latin1'));

/**
 * TEST_CLUSTER mode of startTestServer: `size` nodes in this process on one fresh database and one
 * Redis, behind TCP balancers (HTTP and, when enabled, XMPP), returned in the shape of one server:
 *
 * - `url`, `wsUrl`, `server.port`, `server.xmppPort`, `server.xmppsPort` are the balancers'. Each new
 *   WebSocket or XMPP connection goes to the next node in turn (one turn for both), each new plain HTTP
 *   connection to the next node on a turn of its own; so a suite's clients are spread over the nodes.
 *   `http_port`/`xmpp_port`/`xmpps_port` overrides name the balancers' ports (a restart on the same
 *   port works); the nodes listen on free ports.
 * - `admin()` and `createAccount()` go to the next node in turn, directly.
 * - What a client sends (each chunk, through the balancers) and each admin() request reaches its node
 *   once the cluster has settled (TcpBalancer.quiet, settleNodes): connections of clients that went
 *   away are closed at the nodes, and everything earlier changes caused on other nodes (store writes,
 *   cache notes, registry changes, deliveries) has arrived. So a suite's "change, then read or assert that
 *   nothing came" means what it means on one server, and the cluster's propagation delay (milliseconds,
 *   docs/cluster.md) is not what these suites test; everything else (routing, fan-out, caches that follow
 *   changes made elsewhere, shared storage) is.
 * - `server.engine`, `server.http`, `config`, `dataDir` are node 0's (a test reaching into one node's
 *   internals sees node 0), except `server.http.server`: the HTTP balancer's listener, whose
 *   'connection' sockets are the ones clients connect to, and `config`'s store, bus and node_id, which
 *   are left as the test set them (a restart on `dataDir` finds the cluster's database again).
 * - `nodes` gives each node as a server of its own, for tests that need to know about the cluster.
 *
 * Node 0 starts first (it migrates the database and creates the data directory's secrets); the files of
 * its data directory (token secret, apps secret, VAPID keys, TLS certificate, extensions) are then copied
 * into the others', as an operator gives every node the same secrets.
 */
export async function startTestCluster(size: number, overrides: Partial<Config>, dataDir: string | undefined, opts: StartOptions): Promise<TestServer> {
  const dir0 = dataDir ?? mkdtempSync(join(tmpdir(), 'presenced-test-'));
  const dirs = [dir0, ...Array.from({ length: size - 1 }, (_, i) => `${dir0}.node${i + 1}`)];
  for (const d of dirs) mkdirSync(d, { recursive: true });
  let store = databaseOf.get(dir0);
  if (store === undefined) {
    store = await freshClusterDatabase();
    databaseOf.set(dir0, store);
  }
  const redis = await startRedis();
  redis.unref();
  const listenerPort = (v: number | undefined): number => (v === undefined || v === -1 ? -1 : 0);
  const nodeOverrides = (i: number): Partial<Config> => ({
    // In-process nodes share one event loop: a long synchronous stretch (a fuzz burst) must not get one
    // fenced by the others. Nothing in these suites waits for a lease (nodes stop gracefully).
    node_lease_ms: 10_000,
    store_pool_size: 4,
    ...overrides,
    store: store as string,
    bus: redis.url,
    node_id: `node-${i}`,
    http_port: 0,
    xmpp_port: listenerPort(overrides.xmpp_port),
    xmpps_port: listenerPort(overrides.xmpps_port),
  });

  const nodes: TestServer[] = [];
  const down = new Set<number>();
  let lb: { http: TcpBalancer; xmpp: TcpBalancer | null; xmpps: TcpBalancer | null } | null = null;
  const stopAll = async (): Promise<void> => {
    for (const n of nodes) liveNodes.delete(n);
    await Promise.all(nodes.map((n) => n.stop()));
    await lb?.http.close();
    await lb?.xmpp?.close();
    await lb?.xmpps?.close();
    await redis.destroy();
  };
  try {
    nodes.push(await startSingleTestServer(nodeOverrides(0), dir0, opts));
    for (const d of dirs.slice(1)) copyDataDirFiles(dir0, d);
    nodes.push(...(await Promise.all(dirs.slice(1).map((d, i) => startSingleTestServer(nodeOverrides(i + 1), d, opts)))));
    for (const n of nodes) liveNodes.add(n);
    TestClient.settle = settleClusters;
    const turn = { clients: 0, http: 0 };
    const next = (kind: 'clients' | 'http'): TestServer | null => {
      const live = nodes.filter((_, i) => !down.has(i));
      return live.length === 0 ? null : (live[turn[kind]++ % live.length] as TestServer);
    };
    // The balancers are made just below; the gate runs only once a client sends.
    const gate = async (): Promise<void> => {
      await Promise.all([lb?.http.quiet(), lb?.xmpp?.quiet(), lb?.xmpps?.quiet()]);
      await settleNodes(nodes.filter((_, i) => !down.has(i)));
    };
    const http = await TcpBalancer.listen(overrides.http_port ?? 0, (head) => next(isWebSocketUpgrade(head) ? 'clients' : 'http')?.server.port ?? null, true, gate);
    lb = { http, xmpp: null, xmpps: null };
    const node0 = nodes[0] as TestServer;
    if (node0.server.xmppPort !== null) lb.xmpp = await TcpBalancer.listen(overrides.xmpp_port ?? 0, () => next('clients')?.server.xmppPort ?? null, false, gate);
    if (node0.server.xmppsPort !== null) lb.xmpps = await TcpBalancer.listen(overrides.xmpps_port ?? 0, () => next('clients')?.server.xmppsPort ?? null, false, gate);
  } catch (e) {
    await stopAll().catch(() => {});
    throw e;
  }

  const postgres = await sharedPostgres();
  const database = new URL(store).pathname.slice(1);
  const sql: TestServer['sql'] = (text, ...args) => postgres.query(database, text, args);
  // Each node as seen by cluster-aware tests: its stop/destroy also takes it out of the balancers' turns.
  const members: TestServer[] = nodes.map((n, i) => {
    const m: TestServer = {
      ...n,
      sql,
      get nodes() {
        return [m];
      },
      async stop() {
        down.add(i);
        liveNodes.delete(n);
        await n.stop();
      },
      async destroy() {
        down.add(i);
        liveNodes.delete(n);
        await n.destroy();
      },
    };
    return m;
  });
  const node0 = nodes[0] as TestServer;
  const balancers = lb as NonNullable<typeof lb>;
  const url = `http://127.0.0.1:${balancers.http.port}`;
  let adminTurn = 0;
  const admin: TestServer['admin'] = async (method, path, body) => {
    const live = members.filter((_, i) => !down.has(i));
    const target = live[adminTurn++ % Math.max(1, live.length)] ?? node0;
    // As the balancers do for every client: the request arrives once the cluster has settled.
    await Promise.all([balancers.http.quiet(), balancers.xmpp?.quiet(), balancers.xmpps?.quiet()]);
    await settleNodes(nodes.filter((_, i) => !down.has(i)));
    return target.admin(method, path, body);
  };
  let stopped: Promise<void> | null = null;
  const stop = (): Promise<void> => (stopped ??= stopAll());
  const httpView = Object.create(node0.server.http, { server: { value: balancers.http.server } }) as typeof node0.server.http;
  return {
    sql,
    server: {
      ...node0.server,
      http: httpView,
      port: balancers.http.port,
      url,
      xmppPort: balancers.xmpp?.port ?? null,
      xmppsPort: balancers.xmpps?.port ?? null,
      stop,
    },
    // As the test configured its one server: without the cluster's own keys, so that a test restarting
    // "the server" with this configuration (and data directory) gets the same cluster back.
    config: { ...node0.config, store: '', bus: '', node_id: '' },
    dataDir: dir0,
    url,
    wsUrl: `ws://127.0.0.1:${balancers.http.port}/ws`,
    nodes: members,
    admin,
    async createAccount(jid: string, password = 'secret-pw') {
      const r = await admin('POST', '/accounts', { jid, password });
      if (r.status !== 201) throw new Error(`createAccount ${jid}: ${r.status} ${JSON.stringify(r.body)}`);
    },
    stop,
    async destroy() {
      await stop();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
      databaseOf.delete(dir0);
    },
  };
}

/** Copies a node's data directory files to another node's (not its database file nor its control socket). */
function copyDataDirFiles(from: string, to: string): void {
  cpSync(from, to, {
    recursive: true,
    force: true,
    filter: (src) => {
      const name = basename(src);
      if (src !== from && (name === CONTROL_SOCKET || name.startsWith('presenced.sqlite'))) return false;
      return !lstatSync(src).isSocket();
    },
  });
}

// ------------------------------------------------------------------ what the cluster tests look at

/** What a native client was last told of `jid`: the newest presence push, else its login snapshot. */
export function viewOf(client: TestClient, auth: { contacts?: Array<Record<string, unknown>> } | null, jid: string): Record<string, unknown> | null {
  for (let i = client.all.length - 1; i >= 0; i--) {
    const m = client.all[i] as Record<string, unknown>;
    if (m.type === 'presence' && m.jid === jid) return m;
  }
  return auth?.contacts?.find((c) => c.jid === jid) ?? null;
}

/** Every presence push the client got about `jid`, in order. */
export function pushesAbout(client: TestClient, jid: string): Array<Record<string, unknown>> {
  return client.all.filter((m) => (m as Record<string, unknown>).type === 'presence' && (m as Record<string, unknown>).jid === jid) as Array<Record<string, unknown>>;
}

export async function until<T>(what: string, fn: () => T | undefined | null | false | Promise<T | undefined | null | false>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
