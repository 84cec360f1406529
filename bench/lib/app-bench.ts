/**
 * What the third-party app benches (webhook-bench.ts, stream-bench.ts) share: the server as a child
 * process (pinned to a core for the measured run), accounts written into the database, apps registered
 * through the REST API with the admin token, grants inserted while the server is stopped, and real
 * native-protocol clients logged in with tokens. Linux only (/proc, taskset).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { WebSocket } from 'ws';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.js';
import { deriveCredentials } from '../../src/engine/credentials.js';
import { accountGeneration, issueToken } from '../../src/engine/tokens.js';

export const SECRET = 'webhook-bench-secret-webhook-bench-secret';
export const ADMIN = 'webhook-bench-admin-token';
export const DOMAIN = 'localhost';
export const jidOf = (i: number): string => `u${i}@${DOMAIN}`;

export interface ServerRun {
  /** The core the measured server is pinned to (`taskset -c`). */
  readonly cpu: string;
  /** Extra node flags for the measured server (e.g. --cpu-prof). */
  readonly nodeArgs: readonly string[];
}

/** Starts `bin/presenced.js start` on a data directory; `pinned` runs it under taskset with the run's node flags. */
export function startServer(dir: string, env: Record<string, string>, pinned: ServerRun | null): Promise<{ proc: ChildProcess; port: number }> {
  const cmd = [...(pinned !== null ? ['taskset', '-c', pinned.cpu] : []), process.execPath, ...(pinned?.nodeArgs ?? [])];
  const proc = spawn(cmd[0]!, [...cmd.slice(1), 'bin/presenced.js', 'start'], {
    env: {
      ...process.env,
      PRESENCED_DATA_DIR: dir,
      PRESENCED_HTTP_PORT: '0',
      PRESENCED_XMPP_PORT: '-1',
      PRESENCED_XMPPS_PORT: '-1',
      PRESENCED_TOKEN_SECRET: SECRET,
      PRESENCED_ADMIN_TOKEN: ADMIN,
      PRESENCED_LOG_LEVEL: 'info',
      PRESENCED_WS_RATE_LIMIT: '100000',
      PRESENCED_WS_RATE_BURST: '100000',
      PRESENCED_HEARTBEAT_INTERVAL_MS: '600000',
      PRESENCED_IDLE_TIMEOUT_MS: '3600000',
      PRESENCED_AUTH_TIMEOUT_MS: '600000',
      PRESENCED_WEBHOOKS_ALLOW_PRIVATE: 'true',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) if (line.includes('listening on')) resolve(JSON.parse(line).port as number);
      if (buf.length > 100_000) buf = buf.slice(-1000);
    });
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return port.then((p) => ({ proc, port: p }));
}

export async function stopServer(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}

export interface Prepared {
  /** The registered apps, in order, with the client secret the registration answered. */
  readonly apps: ReadonlyArray<{ readonly id: string; readonly clientSecret: string }>;
  /** The accounts' token generation, for login tokens. */
  readonly accountGen: string;
}

/**
 * A fresh data directory made ready: `accounts` accounts, `apps` apps registered by REST (body from
 * `appBody`), and every account's grant to every app (scopes presence presence.status) inserted while
 * the server is stopped (the consent flow is not what is measured; the server loads active grants at
 * start as in production). `inDb` runs in the same transaction as the grants, for set-up that needs
 * the apps' ids (e.g. a webhook URL naming the app).
 */
export async function prepare(dir: string, accounts: number, apps: number, appBody: (a: number) => object, inDb?: (db: Database.Database, appId: string) => void): Promise<Prepared> {
  const store = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await store.migrate();
  const creds = await deriveCredentials('bench');
  const accountGen = accountGeneration(Buffer.from(SECRET), creds.passwordHash);
  const now = Date.now();
  for (let i = 0; i < accounts; i++) await store.createAccount({ jid: jidOf(i), ...creds, createdAt: now });
  await store.close();
  // Registered through the API, with the server's own rules (ids, secrets).
  const { proc, port } = await startServer(dir, {}, null);
  const registered: Array<{ id: string; clientSecret: string }> = [];
  try {
    for (let a = 0; a < apps; a++) {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/apps`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify(appBody(a)),
      });
      if (res.status !== 201) throw new Error(`registering an app: ${res.status} ${await res.text()}`);
      const body = (await res.json()) as { id: string; clientSecret: string };
      registered.push({ id: body.id, clientSecret: body.clientSecret });
    }
  } finally {
    await stopServer(proc);
  }
  const db = new Database(join(dir, 'presenced.sqlite'));
  db.transaction(() => {
    const grant = db.prepare('INSERT INTO grants (app_id, account, scopes, granted_at) VALUES (?, ?, ?, ?)');
    for (const { id } of registered) {
      inDb?.(db, id);
      for (let i = 0; i < accounts; i++) grant.run(id, jidOf(i), 'presence presence.status', now);
    }
  })();
  db.close();
  return { apps: registered, accountGen };
}

export interface Client {
  ws: WebSocket;
  seq: number;
}

/** Logs `n` native-protocol clients in (tokens, 100 at a time), one per account. */
export async function connectAll(port: number, n: number, accountGen: string): Promise<Client[]> {
  const clients: Client[] = new Array(n);
  let next = 0;
  const one = async (i: number): Promise<void> => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { perMessageDeflate: false });
    const now = Date.now();
    const token = issueToken(Buffer.from(SECRET), { sub: jidOf(i), acc: accountGen, iat: now, exp: now + 3_600_000, scope: 'login' });
    await new Promise<void>((resolve, reject) => {
      ws.once('error', reject);
      ws.once('open', () => ws.send(JSON.stringify({ id: 1, type: 'auth', token, resource: 'bench' })));
      ws.once('message', (m) => (JSON.parse(m.toString()).type === 'result' ? resolve() : reject(new Error(`login ${i}: ${m.toString()}`))));
    });
    clients[i] = { ws, seq: 1 };
  };
  await Promise.all(Array.from({ length: 100 }, async () => {
    while (next < n) await one(next++);
  }));
  return clients;
}

/** Polls a condition with a deadline (what is awaited arrives asynchronously). */
export async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

/** Busy and total time of the whole machine (all CPUs, clock ticks): what other processes took is busy − server − this process. */
export function machineTicks(): { busy: number; total: number } {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] as string).trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - (f[3] ?? 0) - (f[4] ?? 0), total };
}

/** The p-th percentile of sorted samples. */
export const pct = (s: readonly number[], p: number): number => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
