/**
 * The webhook outbox's own cost, without the server around it: CPU time per update spent in the
 * SQLite store (src/features/apps/webhooks/store.ts) for the calls the server makes, in the order it
 * makes them: an append per flush of the outbox (`--flush` rows spread over `--apps` apps and `--users`
 * users each) with a look at the backlog, and, once each app has a batch waiting, per app a claim, the
 * delivered (which logs the attempt and releases the lease in the same transaction; `--batch` rows per claim). CPU time (user + system of this
 * process), so that other work on the machine does not count. By hand:
 *
 *   taskset -c 1 npx tsx bench/webhook-store-bench.ts --apps 10 --batch 1000 --flush 1000
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import { SqliteStore } from '../src/adapters/sqlite/sqlite-store.js';
import { APP_MIGRATIONS } from '../src/features/apps/migrations.js';
import { SqliteWebhookStore } from '../src/features/apps/webhooks/store.js';
import { runFeatureMigrations } from '../src/features/migrations.js';

const { values: args } = parseArgs({
  options: {
    apps: { type: 'string', default: '10' },
    users: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '1000' },
    flush: { type: 'string', default: '1000' },
    updates: { type: 'string', default: '200000' },
  },
});
const APPS = Number(args.apps);
const USERS = Number(args.users);
const BATCH = Number(args.batch);
const FLUSH = Number(args.flush);

const dir = mkdtempSync(join(tmpdir(), 'presenced-store-bench-'));
const main = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
await main.migrate();
const { db } = main.featureStorage();
await runFeatureMigrations(db, 'apps', APP_MIGRATIONS);
const apps = Array.from({ length: APPS }, (_, i) => `app${i}`);
for (const a of apps) {
  await sql`INSERT INTO apps (id, owner, name, description, homepage, redirect_uris, webhook_format, client_secret_hash, webhook_secret, domain_key, created_at, updated_at)
    VALUES (${a}, 'admin', ${a}, '', 'https://bench.example/', '[]', 'extended', 'x', 'x', 'x', 0, 0)`.execute(db);
}
const store = new SqliteWebhookStore(db, { backlogCountCap: BATCH });
const cpuOf = new Map<string, number>();
async function timed<T>(what: string, f: () => Promise<T>): Promise<T> {
  const c = process.cpuUsage();
  try {
    return await f();
  } finally {
    const d = process.cpuUsage(c);
    cpuOf.set(what, (cpuOf.get(what) ?? 0) + d.user + d.system);
  }
}

let made = 0;
async function deliverAll(): Promise<void> {
  for (let any = true; any; ) {
    any = false;
    for (const a of apps) {
      const c = await timed('claim', () => store.claim(a, 'w', Date.now(), 40_000, BATCH));
      if (c === null) continue;
      any = true;
      const attempt = { appId: a, batchId: c.batchId, at: Date.now(), updates: c.rows.length, status: 204, latencyMs: 1, responseExcerpt: null, error: null };
      await timed('delivered', () => store.delivered(a, c, c.rows.map((r) => r.id), Date.now(), attempt));
      await timed('backlog', () => store.backlog(Date.now(), Date.now() - 50));
    }
  }
}
async function run(total: number): Promise<void> {
  for (let done = 0; done < total; done += FLUSH) {
    if (done % (APPS * BATCH) === 0) await deliverAll();
    const rows = Array.from({ length: FLUSH }, () => {
      const i = made++;
      const now = Date.now();
      return { appId: apps[i % APPS]!, uid: `user${Math.floor(i / APPS) % USERS}`.padEnd(22, 'x'), at: now, body: `{"status":"online","statusText":"t${process.hrtime.bigint()}"}`, dueAt: now };
    });
    await timed('append', () => store.append(rows, Date.now()));
    await timed('backlog', () => store.backlog(Date.now(), Date.now() - 50));
  }
  await deliverAll();
}

await run(Math.min(20_000, Number(args.updates))); // warm-up: JIT, statements prepared, tables of a working size
cpuOf.clear();
const N = Number(args.updates);
const c0 = process.cpuUsage();
await run(N);
const cpu = process.cpuUsage(c0);
console.log(
  `${APPS} apps × ${USERS} users, flush ${FLUSH}, batch ${BATCH}: ${((cpu.user + cpu.system) / N).toFixed(1)} µs CPU per update ` +
    `(user ${(cpu.user / N).toFixed(1)}, system ${(cpu.system / N).toFixed(1)}) = ${Math.round(N / ((cpu.user + cpu.system) / 1e6))} updates per CPU-second`,
);
console.log(`  per update: ${[...cpuOf].map(([k, v]) => `${k} ${(v / N).toFixed(1)} µs`).join(', ')}`);
await main.close();
rmSync(dir, { recursive: true, force: true });
