import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../../src/config.js';
import { startTestServer, type TestServer } from './server.js';
import { TestClient } from './ws-client.js';

/**
 * A cluster for tests: several presenced nodes sharing one Redis (bus) and one store.
 *
 * Until the PostgreSQL store lands, the nodes share one SQLite file (WAL mode, busy_timeout set): each
 * node has its own data directory (its control socket marks it in use), in which presenced.sqlite is a
 * symbolic link to the shared file. TEMPORARY: replace by `store: postgres://...` when it exists.
 */
export const CLUSTER_TOKEN_SECRET = 'cluster-test-token-secret-0123456789abcdef';

export class SharedStoreDirs {
  readonly root = mkdtempSync(join(tmpdir(), 'presenced-cluster-'));
  private readonly shared = join(this.root, 'shared.sqlite');

  /** A fresh data directory for one node whose store is the shared file. */
  dataDir(name: string): string {
    const dir = join(this.root, name);
    mkdirSync(dir, { recursive: true });
    symlinkSync(this.shared, join(dir, 'presenced.sqlite'));
    return dir;
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Starts a node in-process (see startTestServer) joined to the cluster on `redisUrl`. */
export function startClusterNode(dirs: SharedStoreDirs, redisUrl: string, name: string, overrides: Partial<Config> = {}): Promise<TestServer> {
  return startTestServer(
    {
      bus: redisUrl,
      node_id: name,
      node_lease_ms: 1_500,
      token_secret: CLUSTER_TOKEN_SECRET,
      // The crash checkpoint is per process and would be read by every node of a shared store (the
      // cluster declares a dead node's sessions offline itself): off until the store keeps it per node.
      presence_checkpoint_ms: 0,
      ...overrides,
    },
    dirs.dataDir(name),
  );
}

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
