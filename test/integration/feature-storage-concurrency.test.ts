import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { grantRepository } from '../../src/features/apps/grant-repository.js';
import { APP_MIGRATIONS } from '../../src/features/apps/migrations.js';
import { webhookStore, type LoggedUpdate, type NewOutboxRow, type WebhookStore } from '../../src/features/apps/webhooks/store.js';
import { runFeatureMigrations } from '../../src/features/migrations.js';
import { PUSH_MIGRATIONS } from '../../src/features/push/migrations.js';
import { pushRepository, TooManyRegistrations, type PushRepository, type QueuedPush } from '../../src/features/push/repository.js';
import { featureDb, postgresFeatureDb, sharedPostgres, type FeatureDb } from '../helpers/feature-db.js';
import { stopAllPrivateServices } from '../helpers/private-services.js';

/**
 * The features' storage on PostgreSQL with several nodes at once: each "node" is its own connection
 * pool on the same database, all running concurrently. What must hold: an app's log ids become
 * visible in order and each (app, user)'s seq is gapless and follows them, whoever appends; each
 * webhook row and each push is taken and delivered by exactly one worker; a push replaced while
 * another node leases it is not lost; a code or refresh token is used once; registrations and
 * migrations racing end in one consistent state.
 */

const LEASE = 60_000;
const NODES = 3;

after(() => stopAllPrivateServices());

async function addApp(d: FeatureDb, id: string): Promise<void> {
  await sql`INSERT INTO apps (id, owner, name, description, homepage, redirect_uris, webhook_format, client_secret_hash, webhook_secret, domain_key, created_at, updated_at)
    VALUES (${id}, 'admin', ${id}, '', 'https://x.example/', '[]', 'extended', 'x', 'x', 'x', 0, 0)`.execute(d.storage.db);
}

/** Deterministic pseudo-random numbers, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('webhook log on PostgreSQL, several nodes appending and delivering at once', () => {
  let d: FeatureDb;
  let stores: WebhookStore[];
  const APPS = ['app-a', 'app-b', 'app-c'];
  const USERS = ['u1', 'u2', 'u3', 'u4'];

  before(async () => {
    d = await featureDb('postgres', [['apps', APP_MIGRATIONS]]);
    for (const a of APPS) await addApp(d, a);
    stores = Array.from({ length: NODES }, (_, i) => webhookStore(i === 0 ? d.storage : d.node()));
  });
  after(() => d.close());

  test('appends from every node: ids visible in order per app (a follower misses none), seq gapless per user, each row delivered once in order', async () => {
    const ROUNDS = 40;
    const written: LoggedUpdate[] = [];
    let appending = true;

    // Each node appends batches that mix apps and repeat users (several rows of one user in a batch).
    const appenders = stores.map(async (store, n) => {
      const rand = rng(n + 1);
      for (let round = 0; round < ROUNDS; round++) {
        const batch: NewOutboxRow[] = [];
        const size = 1 + Math.floor(rand() * 8);
        for (let i = 0; i < size; i++) {
          const at = Date.now();
          batch.push({ appId: APPS[Math.floor(rand() * APPS.length)]!, uid: USERS[Math.floor(rand() * USERS.length)]!, at, body: JSON.stringify({ node: n, round, i }), dueAt: at });
        }
        const logged = await store.append(batch, Date.now());
        assert.deepEqual(logged.map((l) => [l.appId, l.uid, l.body]), batch.map((b) => [b.appId, b.uid, b.body]));
        written.push(...logged);
      }
    });

    // A stream's follower on each app, reading after its cursor from any node while appends run: if an
    // id became visible before a smaller one of the same app, the cursor would pass the smaller one.
    const followed = new Map<string, number[]>(APPS.map((a) => [a, []]));
    const followers = APPS.map(async (appId, i) => {
      const store = stores[i % NODES]!;
      let cursor = 0;
      for (;;) {
        const wasAppending = appending;
        const page = await store.since(appId, cursor, 7);
        for (const u of page) {
          followed.get(appId)!.push(u.id);
          cursor = u.id;
        }
        if (page.length === 0 && !wasAppending) return;
      }
    });

    // Workers on every node claim, deliver, and sometimes fail (a retry of the same rows); a lease held
    // twice at once, or a row delivered twice, is a failure.
    const holder = new Map<string, string>();
    const delivered = new Map<string, Array<{ ids: number[]; worker: string }>>(APPS.map((a) => [a, []]));
    const violations: string[] = [];
    const workers = stores.flatMap((store, n) =>
      [0, 1].map(async (k) => {
        const worker = `w${n}.${k}`;
        const rand = rng(100 + n * 10 + k);
        for (;;) {
          const wasAppending = appending;
          let got = 0;
          for (const appId of APPS) {
            const c = await store.claim(appId, worker, Date.now(), LEASE, 5);
            if (c === null) continue;
            got++;
            if (holder.has(appId)) violations.push(`${worker} claimed ${appId} held by ${holder.get(appId)}`);
            holder.set(appId, worker);
            const ids = c.rows.map((r) => r.id);
            // Released before the call that commits the release: nobody can claim before that commit.
            holder.delete(appId);
            if (rand() < 0.2) {
              await store.failed(appId, c, ids, Date.now(), { nextAttemptAt: 0, error: 'HTTP 503', disabledReason: null }, { appId, batchId: c.batchId, at: Date.now(), updates: ids.length, status: 503, latencyMs: 1, responseExcerpt: null, error: null });
            } else {
              delivered.get(appId)!.push({ ids, worker });
              await store.delivered(appId, c, ids, Date.now(), { appId, batchId: c.batchId, at: Date.now(), updates: ids.length, status: 200, latencyMs: 1, responseExcerpt: null, error: null });
            }
          }
          if (got === 0 && !wasAppending && (await store.pendingCount(null)) === 0) return;
        }
      }),
    );

    await Promise.all(appenders);
    appending = false;
    await Promise.all([...followers, ...workers]);

    assert.deepEqual(violations, []);
    for (const appId of APPS) {
      const log = await stores[0]!.since(appId, 0, 100_000);
      const mine = written.filter((w) => w.appId === appId).sort((a, b) => a.id - b.id);
      assert.deepEqual(log.map((l) => [l.id, l.uid, l.seq, l.body]), mine.map((l) => [l.id, l.uid, l.seq, l.body]), 'the log is what append returned');
      assert.deepEqual(followed.get(appId), log.map((l) => l.id), `${appId}: the follower saw every id, once, in order`);
      for (const uid of USERS) {
        const seqs = log.filter((l) => l.uid === uid).map((l) => l.seq);
        assert.deepEqual(seqs, seqs.map((_, i) => i + 1), `${appId}/${uid}: seq gapless and in id order`);
      }
      // Every row delivered once; batches cover the log in order (no row of a batch is older than one
      // delivered before it). With no collapsing here (no failing endpoint... until one failed: then
      // older rows of a user are superseded, never sent): rows sent plus rows superseded = the log.
      const batches = delivered.get(appId)!;
      const sentIds = batches.flatMap((b) => b.ids);
      assert.equal(new Set(sentIds).size, sentIds.length, `${appId}: no row delivered twice`);
      const { rows: sup } = await sql<{ id: number }>`SELECT id FROM webhook_log WHERE app_id = ${appId} AND superseded = 1`.execute(d.storage.db);
      assert.deepEqual([...sentIds, ...sup.map((r) => r.id)].sort((a, b) => a - b), log.map((l) => l.id), `${appId}: every row delivered or superseded, none both`);
      const sorted = [...batches].sort((x, y) => x.ids[0]! - y.ids[0]!);
      for (let i = 1; i < sorted.length; i++) assert.ok(Math.max(...sorted[i - 1]!.ids) < Math.min(...sorted[i]!.ids), `${appId}: batches in log order`);
      // The newest update per user, as any node reads it, is the log's last row of that user.
      const { cursor, users } = await stores[NODES - 1]!.newestOfApp(appId);
      assert.equal(cursor, log.at(-1)!.id);
      assert.deepEqual(
        users.map((u) => [u.uid, u.id, u.seq, u.body]).sort(),
        USERS.map((uid) => log.filter((l) => l.uid === uid).at(-1)).filter((l) => l !== undefined).map((l) => [l!.uid, l!.id, l!.seq, l!.body]).sort(),
      );
    }
    assert.equal(await stores[1]!.maxId(), Math.max(...written.map((w) => w.id)));
  });

  test('many workers on many nodes race for one app\'s lease: exactly one gets it', async () => {
    await stores[0]!.append([{ appId: 'app-a', uid: 'u1', at: 1, body: '{}', dueAt: 1 }], Date.now());
    const now = Date.now();
    const claims = await Promise.all(Array.from({ length: 12 }, (_, i) => stores[i % NODES]!.claim('app-a', `racer-${i}`, now, LEASE, 10)));
    const winners = claims.filter((c) => c !== null);
    assert.equal(winners.length, 1);
    const { rows } = await sql<{ claimed_by: string }>`SELECT claimed_by FROM webhook_endpoints WHERE app_id = 'app-a'`.execute(d.storage.db);
    assert.match(rows[0]!.claimed_by, /^racer-/);
  });
});

describe('push queue on PostgreSQL, several nodes enqueueing and sending at once', () => {
  let d: FeatureDb;
  let repos: PushRepository[];
  before(async () => {
    d = await featureDb('postgres', [['push', PUSH_MIGRATIONS]]);
    repos = Array.from({ length: NODES }, (_, i) => pushRepository(i === 0 ? d.storage : d.node()));
  });
  after(() => d.close());

  test('workers on every node claim with SKIP LOCKED: each push sent once, one at a time per device, in each device\'s order', async () => {
    const DEVICES = 9;
    const PER_DEVICE = 15;
    const regs: string[] = [];
    for (let i = 0; i < DEVICES; i++) regs.push((await repos[0]!.register({ account: `user${i}@x`, provider: 'gw', token: `tok${i}`, source: 'native' }, 10, Date.now())).registration.id);
    let enqueueing = true;
    // Device i's pushes come from node i % NODES only, so their order is that node's order.
    const enqueuers = repos.map(async (repo, n) => {
      for (let k = 0; k < PER_DEVICE; k++) {
        const mine = regs.filter((_, i) => i % NODES === n);
        await Promise.all(
          mine.map((id) => repo.enqueue([{ registrationId: id, account: 'x', trigger: 'test', pushId: `${id}#${k}`, message: { reason: 'notify', count: k, collapseKey: `k${k}`, urgency: 'normal', ttlSeconds: 60 } }], Date.now())),
        );
      }
    });
    const inFlight = new Map<string, string>();
    const claimedBy = new Map<string, string[]>();
    const order = new Map<string, number[]>();
    const violations: string[] = [];
    const workers = repos.flatMap((repo, n) =>
      [0, 1].map(async (k) => {
        const worker = `w${n}.${k}`;
        let sent: QueuedPush[] = [];
        for (;;) {
          const wasEnqueueing = enqueueing;
          // Marked sent in the claim's transaction, as the worker does: released here, before that commit.
          for (const p of sent) inFlight.delete(p.registrationId);
          const got = await repo.claimDue(worker, Date.now(), LEASE, 4, [], sent);
          for (const p of got) {
            if (inFlight.has(p.registrationId)) violations.push(`${worker} got a push of ${p.registrationId} while ${inFlight.get(p.registrationId)} sends one`);
            inFlight.set(p.registrationId, worker);
            claimedBy.set(p.pushId, [...(claimedBy.get(p.pushId) ?? []), worker]);
            order.set(p.registrationId, [...(order.get(p.registrationId) ?? []), p.message.count]);
          }
          sent = got;
          if (got.length === 0 && !wasEnqueueing && (await repo.pendingCount()) === 0) return;
        }
      }),
    );
    await Promise.all(enqueuers);
    enqueueing = false;
    await Promise.all(workers);
    assert.deepEqual(violations, []);
    assert.equal(claimedBy.size, DEVICES * PER_DEVICE, 'every push was sent');
    for (const [pushId, by] of claimedBy) assert.equal(by.length, 1, `${pushId} sent by ${by.join(', ')}`);
    for (const id of regs) assert.deepEqual(order.get(id), Array.from({ length: PER_DEVICE }, (_, k) => k), `${id}: in order`);
    assert.equal(await repos[0]!.pendingCount(), 0);
  });

  test('a push replacing the waiting one while another node leases it is not lost: the newest is always sent', async () => {
    const reg = (await repos[0]!.register({ account: 'coal@x', provider: 'gw', token: 'coal', source: 'native' }, 10, Date.now())).registration.id;
    const N = 60;
    let enqueueing = true;
    const enqueuer = (async () => {
      for (let k = 1; k <= N; k++) {
        await repos[k % NODES]!.enqueue([{ registrationId: reg, account: 'coal@x', trigger: 'test', pushId: `c${k}`, message: { reason: 'message', count: k, collapseKey: 'same', urgency: 'high', ttlSeconds: 60 } }], Date.now());
      }
    })();
    const seen: number[] = [];
    const workers = repos.map(async (repo, n) => {
      let sent: QueuedPush[] = [];
      for (;;) {
        const wasEnqueueing = enqueueing;
        const got = await repo.claimDue(`cw${n}`, Date.now(), LEASE, 1, [], sent);
        for (const p of got) seen.push(p.message.count);
        sent = got;
        if (got.length === 0 && !wasEnqueueing && (await repo.pendingCount()) === 0) return;
      }
    });
    await enqueuer;
    enqueueing = false;
    await Promise.all(workers);
    assert.equal(seen.at(-1), N, `the last push was sent (sent: ${seen.join(',')})`);
    assert.equal(new Set(seen).size, seen.length, 'none sent twice');
    assert.deepEqual(seen, [...seen].sort((a, b) => a - b), 'never an older one after a newer one');
  });

  test('a lease committed by another node while a newer push waits to replace the row: the newer push gets a row of its own', async () => {
    const reg = (await repos[0]!.register({ account: 'lease@x', provider: 'gw', token: 'lease', source: 'native' }, 10, Date.now())).registration.id;
    const message = (count: number) => ({ reason: 'message' as const, count, collapseKey: 'same', urgency: 'high' as const, ttlSeconds: 60 });
    await repos[0]!.enqueue([{ registrationId: reg, account: 'lease@x', trigger: 'test', pushId: 'first', message: message(1) }], Date.now());
    const { rows: before } = await sql<{ id: number }>`SELECT id FROM push_outbox WHERE registration_id = ${reg}`.execute(d.storage.db);
    const rowId = before[0]!.id;
    // Another node's claim, held open: its lease is written, not committed yet.
    const other = d.node();
    let commit!: () => void;
    const committed = new Promise<void>((r) => (commit = r));
    let leased!: () => void;
    const isLeased = new Promise<void>((r) => (leased = r));
    const claim = other.db.transaction().execute(async (trx) => {
      await sql`UPDATE push_outbox SET claimed_by = 'other', claimed_until = ${Date.now() + LEASE}::bigint, due_at = ${Date.now() + LEASE}::bigint WHERE id = ${rowId}`.execute(trx);
      leased();
      await committed;
    });
    await isLeased;
    try {
      // The newer push: its UPDATE saw the row free, and now waits for the other node's row lock.
      const newer = repos[1]!.enqueue([{ registrationId: reg, account: 'lease@x', trigger: 'test', pushId: 'second', message: message(2) }], Date.now());
      const deadline = Date.now() + 10_000;
      for (;;) {
        const { rows } = await sql<{ n: number }>`SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE push_outbox SET message_json%' AND pid <> pg_backend_pid()`.execute(d.storage.db);
        if (rows[0]!.n > 0) break;
        assert.ok(Date.now() < deadline, 'the enqueue never waited for the lease\'s lock');
        await new Promise((r) => setImmediate(r));
      }
      commit();
      await claim;
      await newer;
      const { rows: after } = await sql<{ id: number; message_json: string; claimed_by: string | null }>`SELECT id, message_json, claimed_by FROM push_outbox WHERE registration_id = ${reg} ORDER BY id`.execute(d.storage.db);
      assert.deepEqual(
        after.map((r) => [r.id === rowId, (JSON.parse(r.message_json) as { count: number }).count, r.claimed_by]),
        [[true, 1, 'other'], [false, 2, null]],
        'the leased row keeps what is being sent; the newer push waits in its own row',
      );
    } finally {
      commit();
      await claim.catch(() => undefined);
      await other.db.destroy();
    }
  });

  test('registrations racing on two nodes: one row per token, and the per-account limit holds', async () => {
    for (let i = 0; i < 10; i++) {
      const results = await Promise.all(
        repos.map((repo, n) => repo.register({ account: `racer${n}@x`, provider: 'gw', token: `shared${i}`, source: 'native' }, 10, Date.now())),
      );
      assert.equal(new Set(results.map((r) => r.registration.id)).size, 1, 'the token has one row, whoever registered it');
      const { rows } = await sql<{ n: number }>`SELECT count(*) AS n FROM push_registrations WHERE token = ${`shared${i}`}`.execute(d.storage.db);
      assert.equal(rows[0]!.n, 1);
    }
    const outcomes = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => repos[i % NODES]!.register({ account: 'limited@x', provider: 'gw', token: `lim${i}`, source: 'native' }, 3, Date.now())),
    );
    assert.equal(outcomes.filter((o) => o.status === 'fulfilled').length, 3);
    assert.ok(outcomes.every((o) => o.status === 'fulfilled' || o.reason instanceof TooManyRegistrations));
    assert.equal((await repos[0]!.list('limited@x')).length, 3);
  });
});

describe('grants on PostgreSQL: codes and refresh tokens used from several nodes at once', () => {
  let d: FeatureDb;
  before(async () => {
    d = await featureDb('postgres', [['apps', APP_MIGRATIONS]]);
    await addApp(d, 'g');
  });
  after(() => d.close());

  test('each code and each refresh token has exactly one winner', async () => {
    const repos = Array.from({ length: NODES }, (_, i) => grantRepository(i === 0 ? d.storage : d.node()));
    const now = Date.now();
    for (let i = 0; i < 25; i++) {
      await repos[0]!.saveCode({ codeHash: `code${i}`, appId: 'g', account: 'ann@x', scopes: ['presence'], redirectUri: 'https://x/cb', codeChallenge: 'c', codeChallengeMethod: 'S256', expiresAt: now + 60_000, usedAt: null });
      await repos[0]!.saveTokens([{ tokenHash: `rt${i}`, kind: 'refresh', appId: 'g', account: 'ann@x', scopes: ['presence'], family: `code${i}`, expiresAt: now + 60_000, usedAt: null }]);
    }
    const codeWins = await Promise.all(Array.from({ length: 25 }, (_, i) => Promise.all(repos.flatMap((r) => [r.useCode(`code${i}`, now), r.useCode(`code${i}`, now)]))));
    const tokenWins = await Promise.all(Array.from({ length: 25 }, (_, i) => Promise.all(repos.flatMap((r) => [r.useToken(`rt${i}`, now), r.useToken(`rt${i}`, now)]))));
    for (const wins of [...codeWins, ...tokenWins]) assert.equal(wins.filter((w) => w).length, 1);
  });
});

describe('feature migrations on PostgreSQL: nodes starting at once', () => {
  test('every node migrates the same fresh database at once: all succeed, each version recorded once', async () => {
    const d = await postgresFeatureDb(await sharedPostgres());
    try {
      const nodes = [d.storage, d.node(), d.node(), d.node()];
      await Promise.all(nodes.flatMap((s) => [runFeatureMigrations(s.db, 'apps', APP_MIGRATIONS), runFeatureMigrations(s.db, 'push', PUSH_MIGRATIONS)]));
      const { rows } = await sql<{ feature: string; version: number; n: number }>`
        SELECT feature, version, count(*) AS n FROM feature_migrations GROUP BY feature, version ORDER BY feature, version`.execute(d.storage.db);
      assert.deepEqual(rows.map((r) => [r.feature, r.version, r.n]), [
        ...APP_MIGRATIONS.map((m) => ['apps', m.version, 1]),
        ...PUSH_MIGRATIONS.map((m) => ['push', m.version, 1]),
      ]);
    } finally {
      await d.close();
    }
  });
});
