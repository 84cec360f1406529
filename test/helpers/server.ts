import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config.js';
import { startServer, type RunningServer, type StartOptions } from '../../src/server.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export type SqlValue = string | number | null;

export interface TestServer {
  readonly server: RunningServer;
  readonly config: Config;
  readonly dataDir: string;
  readonly url: string;
  readonly wsUrl: string;
  /**
   * Every node serving this test: this server alone, or under TEST_CLUSTER the cluster's nodes, each
   * as a server of its own (direct URLs, its own engine), for tests that need to know which is which.
   */
  readonly nodes: readonly TestServer[];
  admin(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  /**
   * Runs one SQL statement on the server's database, synchronously, for tests that look at stored rows:
   * the SQLite file in data_dir, or under TEST_CLUSTER the cluster's PostgreSQL database. `?` are
   * parameters. Resolves a query's rows (none for other statements). Keep to SQL both databases speak.
   */
  sql(text: string, ...args: SqlValue[]): Array<Record<string, any>>;
  createAccount(jid: string, password?: string): Promise<void>;
  stop(): Promise<void>;
  /** Stops the server and removes its data directory. */
  destroy(): Promise<void>;
}

/**
 * Starts the real server in-process on a free port with its own temporary data directory; with
 * TEST_CLUSTER=N in the environment, a cluster of N such servers on a private PostgreSQL and Redis
 * behind a balancer, in the same shape (test/helpers/cluster.ts, startTestCluster).
 */
export async function startTestServer(overrides: Partial<Config> = {}, dataDir?: string, opts: StartOptions = {}): Promise<TestServer> {
  // Imported here, not at the top: cluster.ts builds on this module.
  const { startTestCluster, testClusterSize } = await import('./cluster.js');
  // A test naming its own store or bus tests that deployment, whatever TEST_CLUSTER says.
  const size = overrides.store !== undefined || overrides.bus !== undefined ? 1 : testClusterSize();
  return size > 1 ? startTestCluster(size, overrides, dataDir, opts) : startSingleTestServer(overrides, dataDir, opts);
}

/** Whether startTestServer starts clusters in this process (TEST_CLUSTER), for tests that cannot work in one. */
export function inTestCluster(): boolean {
  const raw = process.env.TEST_CLUSTER;
  return raw !== undefined && raw !== '' && raw !== '1';
}

/** One server in-process, whatever TEST_CLUSTER says (cluster nodes are made of these). */
export async function startSingleTestServer(overrides: Partial<Config> = {}, dataDir?: string, opts: StartOptions = {}): Promise<TestServer> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'presenced-test-'));
  const config = loadConfig({
    env: {},
    overrides: {
      http_port: 0,
      data_dir: dir,
      log_level: 'silent',
      admin_token: ADMIN_TOKEN,
      grace_period_ms: 300,
      // Several test servers run at once; XMPP listeners are opt-in per test (port 0 picks a free one).
      xmpp_port: -1,
      xmpps_port: -1,
      ...overrides,
    },
  });
  const server = await startServer(config, undefined, opts);
  const admin = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${server.url}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await server.stop();
  };
  const t: TestServer = {
    server,
    config,
    dataDir: dir,
    sql(text, ...args) {
      const db = new Database(join(dir, 'presenced.sqlite'), { fileMustExist: true });
      try {
        const st = db.prepare(text);
        if (st.reader) return st.all(...args) as Array<Record<string, any>>;
        st.run(...args);
        return [];
      } finally {
        db.close();
      }
    },
    url: server.url,
    wsUrl: server.url.replace(/^http/, 'ws') + '/ws',
    get nodes() {
      return [t];
    },
    admin,
    async createAccount(jid: string, password = 'secret-pw') {
      const r = await admin('POST', '/accounts', { jid, password });
      if (r.status !== 201) throw new Error(`createAccount ${jid}: ${r.status} ${JSON.stringify(r.body)}`);
    },
    stop,
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}

/**
 * The value of one metric series (`name` or `name{labels}`, as /metrics writes it), summed over the
 * server's nodes: one server's own value, or under TEST_CLUSTER the cluster's total (what a suite
 * counts happened on whichever node served it). 0 when no node exports the series yet.
 */
export async function metricSum(t: TestServer, series: string): Promise<number> {
  let sum = 0;
  for (const n of t.nodes) {
    const text = await (await fetch(`${n.url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    if (line !== undefined) sum += Number(line.slice(series.length + 1));
  }
  return sum;
}
