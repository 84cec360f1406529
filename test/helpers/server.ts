import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config.js';
import { startServer, type RunningServer, type StartOptions } from '../../src/server.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface TestServer {
  readonly server: RunningServer;
  readonly config: Config;
  readonly dataDir: string;
  readonly url: string;
  readonly wsUrl: string;
  admin(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  createAccount(jid: string, password?: string): Promise<void>;
  stop(): Promise<void>;
  /** Stops the server and removes its data directory. */
  destroy(): Promise<void>;
}

/** Starts the real server in-process on a free port with its own temporary data directory. */
export async function startTestServer(overrides: Partial<Config> = {}, dataDir?: string, opts: StartOptions = {}): Promise<TestServer> {
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
  return {
    server,
    config,
    dataDir: dir,
    url: server.url,
    wsUrl: server.url.replace(/^http/, 'ws') + '/ws',
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
}
