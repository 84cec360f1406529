import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql, type Kysely } from 'kysely';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.js';
import { APP_MIGRATIONS } from '../../src/features/apps/migrations.js';
import { SqliteWebhookStore, webhookStore, type AttemptRecord, type Claim, type NewOutboxRow, type WebhookStore } from '../../src/features/apps/webhooks/store.js';
import { runFeatureMigrations } from '../../src/features/migrations.js';
import { featureDb, type Dialect, type FeatureDb } from '../helpers/feature-db.js';
import { stopAllPrivateServices } from '../helpers/private-services.js';

/**
 * The webhook outbox's storage on a real database (APP_MIGRATIONS 7: a log written once, delivery as a
 * position per app): the paths the webhook integration tests reach only by timing, driven here call by
 * call, on SQLite and on PostgreSQL; then what only SQLite has (webhook_seq's checkpoint, the migration
 * of an outbox written by the previous schema).
 */

const LEASE = 60_000;
const FAIL = { nextAttemptAt: 0, error: 'HTTP 503', disabledReason: null };

interface Db {
  readonly main: SqliteStore;
  readonly db: Kysely<any>;
  readonly dir: string;
}

async function openDb(migrations = APP_MIGRATIONS): Promise<Db> {
  const dir = mkdtempSync(join(tmpdir(), 'presenced-webhook-store-'));
  const main = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await main.migrate();
  const { db } = main.featureStorage();
  await runFeatureMigrations(db, 'apps', migrations);
  return { main, db, dir };
}

async function addApp(db: Kysely<any>, id: string): Promise<void> {
  await sql`INSERT INTO apps (id, owner, name, description, homepage, redirect_uris, webhook_format, client_secret_hash, webhook_secret, domain_key, created_at, updated_at)
    VALUES (${id}, 'alice@localhost', ${id}, '', 'https://x.example/', '[]', 'extended', 'x', 'x', 'x', 0, 0)`.execute(db);
}

const row = (appId: string, uid: string, status: string, at: number): NewOutboxRow => ({ appId, uid, at, body: JSON.stringify({ status }), dueAt: at });
const attempt = (c: Claim, status: number): AttemptRecord => ({ appId: 'a', batchId: c.batchId, at: 0, updates: c.rows.length, status, latencyMs: 1, responseExcerpt: null, error: null });
const sent = (c: Claim | null): Array<[string, number, string]> => (c?.rows ?? []).map((r) => [r.uid, r.seq, (JSON.parse(r.body) as { status: string }).status]);
const ids = (c: Claim): number[] => c.rows.map((r) => r.id);

after(() => stopAllPrivateServices());

for (const dialect of ['sqlite', 'postgres'] as const satisfies readonly Dialect[]) {
  describe(`webhook store (${dialect}): a position per app instead of a state per row`, () => {
    let d: FeatureDb;
    let store: WebhookStore;
    before(async () => {
      d = await featureDb(dialect, [['apps', APP_MIGRATIONS]]);
      await addApp(d.storage.db, 'a');
      await addApp(d.storage.db, 'b');
      store = webhookStore(d.storage);
    });
    after(() => d.close());

    test('delivered rows stop being pending but stay in the log; other apps are untouched', async () => {
      const logged = await store.append([row('a', 'u1', 'online', 1), row('b', 'u1', 'online', 1), row('a', 'u2', 'away', 2), row('a', 'u1', 'away', 3)], 10);
      assert.deepEqual(logged.map((l) => [l.appId, l.uid, l.seq]), [['a', 'u1', 1], ['b', 'u1', 1], ['a', 'u2', 1], ['a', 'u1', 2]]);
      assert.ok(logged.every((l, i) => i === 0 || l.id > logged[i - 1]!.id));
      assert.equal(await store.pendingCount('a'), 3);
      assert.equal(await store.pendingCount(null), 4);
      const c = (await store.claim('a', 'w', 100, LEASE, 2))!;
      assert.deepEqual(sent(c), [['u1', 1, 'online'], ['u2', 1, 'away']]);
      // Held by w: nobody else gets it.
      assert.equal(await store.claim('a', 'w2', 100, LEASE, 2), null);
      await store.delivered('a', c, ids(c), 110, attempt(c, 200));
      assert.equal(await store.pendingCount('a'), 1);
      assert.deepEqual((await store.since('a', 0, 100)).map((l) => [l.uid, l.seq]), [['u1', 1], ['u2', 1], ['u1', 2]]);
      const c2 = (await store.claim('a', 'w2', 120, LEASE, 10))!;
      assert.deepEqual(sent(c2), [['u1', 2, 'away']]);
      assert.notEqual(c2.batchId, c.batchId);
      await store.delivered('a', c2, ids(c2), 130, attempt(c2, 200));
      assert.equal(await store.pendingCount('a'), 0);
      assert.equal(await store.claim('a', 'w', 140, LEASE, 10), null);
      assert.equal(await store.pendingCount('b'), 1);
      assert.equal((await store.attempts('a', 0, 10)).length, 2);
    });

    test('a retry keeps its webhook-id only for exactly the same rows; collapsing while failing changes the set', async () => {
      await store.append([row('a', 'c1', 'online', 200), row('a', 'c2', 'online', 200)], 200);
      const first = (await store.claim('a', 'w', 200, LEASE, 10))!;
      await store.failed('a', first, ids(first), 201, FAIL, attempt(first, 503));
      assert.equal((await store.endpoint('a')).failures, 1);
      // Nothing new: the same rows, the same id (collapsing changes nothing, one row per user).
      const again = (await store.claim('a', 'w', 202, LEASE, 10))!;
      assert.deepEqual(ids(again), ids(first));
      assert.equal(again.batchId, first.batchId);
      await store.failed('a', again, ids(again), 203, FAIL, attempt(again, 503));
      // A newer update of c1 while failing: c1's older row collapses into it, so the batch differs, and so does its id.
      await store.append([row('a', 'c1', 'away', 204)], 204);
      const collapsed = (await store.claim('a', 'w', 205, LEASE, 10))!;
      assert.deepEqual(sent(collapsed), [['c2', 1, 'online'], ['c1', 2, 'away']]);
      assert.notEqual(collapsed.batchId, first.batchId);
      assert.equal(await store.pendingCount('a'), 2, 'the collapsed row is no longer pending');
      await store.failed('a', collapsed, ids(collapsed), 206, FAIL, attempt(collapsed, 503));
      const retry = (await store.claim('a', 'w', 207, LEASE, 10))!;
      assert.equal(retry.batchId, collapsed.batchId);
      await store.delivered('a', retry, ids(retry), 208, attempt(retry, 200));
      assert.equal((await store.endpoint('a')).failingSince, null);
      assert.equal(await store.pendingCount('a'), 0);
      // The collapsed row is still in the log (streams read it), as superseded: a replay leaves it out.
      assert.deepEqual((await store.since('a', retry.rows[0]!.id - 10, 100)).filter((l) => l.uid === 'c1').map((l) => l.seq), [1, 2]);
      assert.equal(await store.replay('a', 200, 204, 209), 2);
      const replayed = (await store.claim('a', 'w', 210, LEASE, 10))!;
      assert.deepEqual(sent(replayed), [['c2', 1, 'online'], ['c1', 2, 'away']]);
      // Replayed rows were delivered once: the replay is a new request, with a new id.
      assert.notEqual(replayed.batchId, retry.batchId);
      await store.delivered('a', replayed, ids(replayed), 211, attempt(replayed, 200));
      assert.equal(await store.pendingCount('a'), 0);
    });

    test('replay after the position moved on: replayed rows first with their seq, then the live ones; purge keeps them until sent', async () => {
      await store.append([row('a', 'r1', 'online', 1000), row('a', 'r1', 'away', 1001)], 1000);
      let c = (await store.claim('a', 'w', 1002, LEASE, 10))!;
      await store.delivered('a', c, ids(c), 1003, attempt(c, 200));
      await store.append([row('a', 'r1', 'dnd', 2000)], 2000);
      c = (await store.claim('a', 'w', 2001, LEASE, 10))!;
      await store.delivered('a', c, ids(c), 2002, attempt(c, 200));
      // Live, pending: r1's fourth update. Replayed: the first two (the range of their times).
      await store.append([row('a', 'r1', 'offline', 3000)], 3000);
      assert.equal(await store.replay('a', 1000, 1001, 3001), 2);
      assert.equal(await store.replay('a', 1000, 1001, 3001), 0, 'already waiting to be replayed');
      assert.equal(await store.pendingCount('a'), 3);
      // Old enough to purge, but still to be replayed (and the live row is pending): nothing of theirs goes.
      await store.purge(10_000);
      assert.equal(await store.pendingCount('a'), 3);
      const b = await store.backlog(3002, 0);
      assert.deepEqual(b.filter((x) => x.appId === 'a').map((x) => [x.oldestDue, x.count]), [[3000, 3]]);
      c = (await store.claim('a', 'w', 3002, LEASE, 2))!;
      assert.deepEqual(sent(c), [['r1', 1, 'online'], ['r1', 2, 'away']]);
      assert.deepEqual(c.replayed, ids(c));
      await store.delivered('a', c, ids(c), 3003, attempt(c, 200));
      c = (await store.claim('a', 'w', 3004, LEASE, 2))!;
      assert.deepEqual(sent(c), [['r1', 4, 'offline']]);
      await store.delivered('a', c, ids(c), 3005, attempt(c, 200));
      assert.equal(await store.pendingCount('a'), 0);
      assert.equal((await store.backlog(3006, 0)).filter((x) => x.appId === 'a').length, 0);
    });

    test('rows of a revoked user are dropped: discarded, or left out of a delivered request; neither is replayed', async () => {
      await store.append([row('a', 'k1', 'online', 5000), row('a', 'gone', 'online', 5000), row('a', 'late', 'online', 5000)], 5000);
      const c = (await store.claim('a', 'w', 5001, LEASE, 10))!;
      const [k1, gone, late] = ids(c);
      await store.discard('a', c, [gone!], 5002);
      assert.equal(await store.pendingCount('a'), 2);
      // `late` was revoked as the request went: only k1 was sent.
      await store.delivered('a', c, [k1!], 5003, attempt(c, 200));
      assert.equal(await store.pendingCount('a'), 0);
      assert.equal(await store.replay('a', 5000, 5000, 5004), 1);
      const r = (await store.claim('a', 'w', 5005, LEASE, 10))!;
      assert.deepEqual(ids(r), [k1]);
      assert.ok(late !== undefined);
      await store.discard('a', r, ids(r), 5006);
      // A discard leaves the lease to the worker's release.
      assert.equal(await store.claim('a', 'w2', 5007, LEASE, 10), null);
      await store.release('a', 'w');
      assert.equal(await store.pendingCount('a'), 0);
    });

    test('a batch whose worker died mid-request goes again as it was, under its webhook-id; rows logged since follow it', async () => {
      await store.append([row('a', 'd1', 'online', 6000), row('a', 'd2', 'online', 6000)], 6000);
      const first = (await store.claim('a', 'dead', 6001, LEASE, 10))!;
      // Its worker dies with the request out; more is logged meanwhile. Once the lease ran out:
      await store.append([row('a', 'd1', 'away', 6002), row('a', 'd3', 'online', 6002)], 6002);
      assert.equal(await store.claim('a', 'w', 6003, LEASE, 10), null, 'not before the lease ran out');
      const again = (await store.claim('a', 'w', 6001 + LEASE, LEASE, 10))!;
      assert.deepEqual(ids(again), ids(first));
      assert.equal(again.batchId, first.batchId, 'the same webhook-id: the receiver can tell a repeat');
      await store.delivered('a', again, ids(again), 6002 + LEASE, attempt(again, 200));
      const next = (await store.claim('a', 'w', 6003 + LEASE, LEASE, 10))!;
      assert.deepEqual(sent(next), [['d1', 2, 'away'], ['d3', 1, 'online']]);
      assert.notEqual(next.batchId, first.batchId);
      await store.delivered('a', next, ids(next), 6004 + LEASE, attempt(next, 200));
      assert.equal(await store.pendingCount('a'), 0);
    });

    test('a worker that lost its lease records nothing: the worker holding it now keeps its claim and the position', async () => {
      await store.append([row('a', 'p1', 'online', 7000), row('a', 'p2', 'online', 7000)], 7000);
      const paused = (await store.claim('a', 'paused', 7001, LEASE, 10))!;
      const before = await store.endpoint('a');
      // Paused past its lease; another worker takes the same batch.
      const taker = (await store.claim('a', 'taker', 7001 + LEASE, LEASE, 10))!;
      assert.deepEqual(ids(taker), ids(paused));
      // The paused one wakes up and tries to record its outcome, each way: all refused, nothing changed.
      assert.equal(await store.delivered('a', paused, ids(paused), 7002 + LEASE, attempt(paused, 200)), false);
      assert.equal(await store.failed('a', paused, ids(paused), 7002 + LEASE, FAIL, attempt(paused, 503)), false);
      assert.equal(await store.discard('a', paused, ids(paused), 7002 + LEASE), false);
      assert.deepEqual(await store.endpoint('a'), before, 'no success, failure or error recorded');
      assert.equal(await store.claim('a', 'third', 7003 + LEASE, LEASE, 10), null, "the taker's lease still holds");
      assert.equal(await store.pendingCount('a'), 2);
      assert.equal(await store.delivered('a', taker, ids(taker), 7003 + LEASE, attempt(taker, 200)), true);
      assert.equal(await store.pendingCount('a'), 0);
    });

    test('purge removes done rows older than the retention only, and everything of deleted apps; ids are never reused', async () => {
      const before = await store.maxId();
      await store.append([row('a', 'y', 'online', 8500)], 8500);
      const young = (await store.claim('a', 'w', 8501, LEASE, 10))!;
      await store.delivered('a', young, ids(young), 8502, attempt(young, 200));
      await store.append([row('b', 'p1', 'online', 9000)], 9000);
      const pendingB = await store.pendingCount('b');
      await store.purge(8000);
      // Every done row of app a older than 8000 is gone, the younger one stays; pending rows of b stay, however old.
      assert.deepEqual((await store.since('a', 0, 1000)).map((l) => [l.uid, l.createdAt]), [['y', 8500]]);
      assert.equal(await store.pendingCount('b'), pendingB);
      assert.equal((await store.since('b', 0, 10)).length, 2);
      await sql`DELETE FROM apps WHERE id = 'b'`.execute(d.storage.db);
      await store.purge(0);
      assert.deepEqual(await store.since('b', 0, 10), []);
      assert.equal(await store.pendingCount(null), 0);
      const [next] = await store.append([row('a', 'p2', 'online', 9100)], 9100);
      assert.equal(next!.id, before + 3, 'ids go on after the purged ones');
      assert.equal(await store.maxId(), before + 3);
    });
  });
}

describe('webhook store: sequence numbers and newest updates between checkpoints', () => {
  let d: Db;
  before(async () => {
    d = await openDb();
    await addApp(d.db, 'a');
  });
  after(async () => {
    await d.main.close();
    rmSync(d.dir, { recursive: true, force: true });
  });

  test('a store opened after a crash reads back what the last one wrote after its checkpoint', async () => {
    const first = new SqliteWebhookStore(d.db);
    // The first write checkpoints; the next ones, within the checkpoint interval, are only in the log.
    await first.append([row('a', 'u', 'online', 1), row('a', 'v', 'online', 1)], 100_000);
    await first.append([row('a', 'u', 'away', 2)], 100_001);
    await first.append([row('a', 'u', 'dnd', 3), row('a', 'w', 'online', 3)], 100_002);
    const { rows: h } = await sql<{ last_id: number; seq_through: number }>`SELECT last_id, seq_through FROM webhook_log_head`.execute(d.db);
    assert.ok(h[0]!.seq_through < h[0]!.last_id, 'webhook_seq is behind the log: the case under test');
    const view = (us: ReadonlyArray<{ uid: string; seq: number; body: string }>) => us.map((u) => [u.uid, u.seq, (JSON.parse(u.body) as { status: string }).status]);
    const expected = [['v', 1, 'online'], ['u', 3, 'dnd'], ['w', 1, 'online']];
    assert.deepEqual(view((await first.newestOfApp('a')).users), expected);
    // As after a kill -9: a new store on the same database, nothing in memory.
    const second = new SqliteWebhookStore(d.db);
    const { cursor, users } = await second.newestOfApp('a');
    assert.equal(cursor, h[0]!.last_id);
    assert.deepEqual(view(users), expected);
    assert.deepEqual(view(await second.newestOfUsers('a', ['u', 'x'])), [['u', 3, 'dnd']]);
    assert.deepEqual((await second.newestBodies()).map((b) => [b.uid, JSON.parse(b.body).status]), [['v', 'online'], ['u', 'dnd'], ['w', 'online']]);
    const next = await second.append([row('a', 'u', 'online', 4), row('a', 'w', 'away', 4)], 100_003);
    assert.deepEqual(next.map((l) => [l.uid, l.seq]), [['u', 4], ['w', 2]]);
    // That write checkpointed: webhook_seq holds it all now.
    const { rows: seqs } = await sql<{ uid: string; seq: number }>`SELECT uid, seq FROM webhook_seq WHERE app_id = 'a' ORDER BY uid`.execute(d.db);
    assert.deepEqual(seqs.map((r) => [r.uid, r.seq]), [['u', 4], ['v', 1], ['w', 2]]);
  });
});

describe('webhook store: migrating an outbox written before APP_MIGRATIONS 7', () => {
  let d: Db;
  before(async () => {
    d = await openDb(APP_MIGRATIONS.filter((m) => m.version <= 6));
    await addApp(d.db, 'm');
    await addApp(d.db, 'n');
  });
  after(async () => {
    await d.main.close();
    rmSync(d.dir, { recursive: true, force: true });
  });

  test('pending rows stay pending in order, a claimed batch keeps its webhook-id, delivered and superseded ones do not come back', async () => {
    const old = (id: number, app: string, uid: string, seq: number, state: string, batch: string | null) =>
      sql`INSERT INTO webhook_outbox (id, app_id, uid, seq, at, body_json, state, attempts, next_attempt_at, batch_id, created_at, delivered_at)
        VALUES (${id}, ${app}, ${uid}, ${seq}, ${id}, ${JSON.stringify({ status: `s${seq}` })}, ${state}, 0, ${id}, ${batch}, ${id}, ${state === 'pending' ? null : id})`.execute(d.db);
    // App m: 1 delivered; 2 pending (replayed, before a delivered row); 3 delivered; 4 superseded;
    // 5 and 6 pending. App n: 8 delivered; 9 and 10 pending, claimed together as msg_old (a failed attempt).
    await old(1, 'm', 'x', 1, 'delivered', 'msg_1');
    await old(2, 'm', 'y', 1, 'pending', null);
    await old(3, 'm', 'x', 2, 'delivered', 'msg_3');
    await old(4, 'm', 'y', 2, 'superseded', null);
    await old(5, 'm', 'x', 3, 'pending', 'msg_5');
    await old(6, 'm', 'y', 3, 'pending', null);
    await old(8, 'n', 'z', 1, 'delivered', 'msg_n');
    await old(9, 'n', 'z', 2, 'pending', 'msg_old');
    await old(10, 'n', 'v', 1, 'pending', 'msg_old');
    // A purged row had the largest id so far: ids must go on after it.
    await old(20, 'n', 'z', 3, 'delivered', 'msg_n2');
    await sql`DELETE FROM webhook_outbox WHERE id = 20`.execute(d.db);
    await sql`INSERT INTO webhook_seq (app_id, uid, seq, last_id, last_at, last_body) VALUES ('m', 'x', 3, 5, 5, '{}'), ('m', 'y', 3, 6, 6, '{}'), ('n', 'z', 3, 20, 20, '{}'), ('n', 'v', 1, 10, 10, '{}')`.execute(d.db);
    await runFeatureMigrations(d.db, 'apps', APP_MIGRATIONS);
    const store = new SqliteWebhookStore(d.db);
    assert.equal(await store.maxId(), 20);
    assert.equal(await store.pendingCount('m'), 3);
    assert.equal(await store.pendingCount('n'), 2);
    const n = (await store.claim('n', 'w', 100, LEASE, 10))!;
    assert.deepEqual(n.rows.map((r) => [r.id, r.uid, r.seq]), [[9, 'z', 2], [10, 'v', 1]]);
    assert.equal(n.batchId, 'msg_old', 'the retry of the claimed batch keeps its webhook-id');
    assert.deepEqual((await store.since('m', 0, 100)).map((l) => l.id), [1, 2, 3, 4, 5, 6]);
    // The rows pending before the migration go in their old order (id), the replayed one first.
    const c1 = (await store.claim('m', 'w', 100, LEASE, 1))!;
    assert.deepEqual(c1.rows.map((r) => r.id), [2]);
    await store.delivered('m', c1, ids(c1), 101, attempt(c1, 200));
    const c2 = (await store.claim('m', 'w', 102, LEASE, 10))!;
    assert.deepEqual(c2.rows.map((r) => [r.id, r.uid, r.seq]), [[5, 'x', 3], [6, 'y', 3]]);
    await store.delivered('m', c2, ids(c2), 103, attempt(c2, 200));
    assert.equal(await store.pendingCount('m'), 0);
    // Delivered rows replay, the superseded one does not.
    assert.equal(await store.replay('m', 0, 10, 104), 5);
    const [next] = await store.append([row('m', 'x', 'online', 200)], 200);
    assert.deepEqual([next!.id, next!.seq], [21, 4]);
  });
});
