import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { timeColumn } from '../../src/adapters/sql/dialect.js';
import { MIGRATIONS, type Migration } from '../../src/adapters/sql/migrations.js';
import { PostgresStore } from '../../src/adapters/postgres/postgres-store.js';
import { PresenceError } from '../../src/core/errors.js';
import { NONE } from '../../src/core/subscription-state.js';
import { runFeatureMigrations } from '../../src/features/migrations.js';
import type { AccountRecord } from '../../src/ports/store.js';
import { freePort, startPostgres, stopAllPrivateServices, type PrivatePostgres } from '../helpers/private-services.js';

/**
 * What only PostgreSQL has: several nodes (each a Store with its own pool) writing one database at
 * once, and a server that can go away and come back under a running Store.
 */

let pg: PrivatePostgres;
let n = 0;
const open: PostgresStore[] = [];

before(async () => {
  pg = await startPostgres();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});
after(() => stopAllPrivateServices());

function freshDatabase(): string {
  return pg.createDatabase(`pgstore_${process.pid}_${++n}`);
}

/** A node: its own Store and pool on the database. */
function node(url: string, name: string, poolSize = 4): PostgresStore {
  const s = PostgresStore.open({ url, node: name, poolSize });
  open.push(s);
  return s;
}

async function nodes(count: number): Promise<PostgresStore[]> {
  const url = freshDatabase();
  const all = Array.from({ length: count }, (_, i) => node(url, `node-${i}`));
  await all[0]!.migrate();
  return all;
}

function account(jid: string): AccountRecord {
  return { jid, passwordHash: `h-${jid}`, scramSha1: null, scramSha256: null, createdAt: 1_700_000_000_000 };
}

const isUnavailable = (e: unknown): boolean => {
  assert.ok(e instanceof PresenceError, `expected a PresenceError, got ${String(e)}`);
  assert.equal(e.code, 'unavailable');
  return true;
};

/** Polls `fn` until it resolves (the database is back), failing after `ms`. */
async function eventually<T>(fn: () => Promise<T>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe('PostgreSQL store: nodes writing at once', () => {
  test('the same account created on two nodes at once: exactly one wins, the other gets a conflict', async () => {
    const [a, b] = await nodes(2);
    const jids = Array.from({ length: 20 }, (_, i) => `race${i}@x.org`);
    const results = await Promise.all(jids.map((j) => Promise.allSettled([a!.createAccount(account(j)), b!.createAccount(account(j))])));
    for (const [i, pair] of results.entries()) {
      const won = pair.filter((r) => r.status === 'fulfilled');
      const lost = pair.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1, `${jids[i]}: one creation succeeds`);
      assert.equal(lost.length, 1);
      assert.ok(lost[0]!.reason instanceof PresenceError);
      assert.equal(lost[0]!.reason.code, 'conflict');
    }
    assert.equal(await a!.countAccounts(), jids.length);
  });

  test('roster versions: every change from every node counts once', async () => {
    const [a, b] = await nodes(2);
    const owner = 'o@x.org';
    const writes: Array<Promise<void>> = [];
    for (let i = 0; i < 30; i++) {
      const s = i % 2 === 0 ? a! : b!;
      writes.push(s.putRosterItems([{ owner, contact: `c${i}@x.org`, name: null, groups: [], state: { ...NONE, to: true } }]));
    }
    await Promise.all(writes);
    assert.equal(await a!.getRosterVersion(owner), 30);
    // Removals race too; each one that removed something bumps once.
    await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a! : b!).removeRosterItems([{ owner, contact: `c${i}@x.org` }])));
    assert.equal(await b!.getRosterVersion(owner), 40);
    assert.equal((await a!.getRoster(owner)).length, 20);
  });

  test('a subscription written from both ends on two nodes at once neither deadlocks nor loses a version', async () => {
    const [a, b] = await nodes(2);
    const x = 'x@x.org';
    const y = 'y@x.org';
    const both = { ...NONE, to: true, from: true };
    const rounds = 20;
    await Promise.all(
      Array.from({ length: rounds }, (_, i) =>
        i % 2 === 0
          ? a!.putRosterItems([{ owner: x, contact: y, name: `a${i}`, groups: [], state: both }, { owner: y, contact: x, name: `a${i}`, groups: [], state: both }])
          : b!.putRosterItems([{ owner: y, contact: x, name: `b${i}`, groups: [], state: both }, { owner: x, contact: y, name: `b${i}`, groups: [], state: both }]),
      ),
    );
    assert.equal(await a!.getRosterVersion(x), rounds);
    assert.equal(await a!.getRosterVersion(y), rounds);
  });

  test('the offline-message limit holds however many nodes store at once', async () => {
    const stores = await nodes(3);
    const max = 5;
    const tries = 40;
    const ids = await Promise.all(
      Array.from({ length: tries }, (_, i) =>
        stores[i % stores.length]!.addOfflineMessageIfRoom({ to: 'full@x.org', from: `s${i}@x.org`, xml: `<message><body>${i}</body></message>`, at: i }, max),
      ),
    );
    assert.equal(ids.filter((id) => id !== null).length, max);
    assert.equal(ids.filter((id) => id === null).length, tries - max);
    assert.equal(await stores[0]!.countOfflineMessages('full@x.org'), max);
  });

  test('settings patched on two nodes at once: no patch is lost', async () => {
    const [a, b] = await nodes(2);
    await Promise.all(Array.from({ length: 24 }, (_, i) => (i % 2 ? a! : b!).updateSettings('s@x.org', { [`k${i}`]: i })));
    const got = await a!.getSettings('s@x.org');
    assert.deepEqual(Object.keys(got).sort(), Array.from({ length: 24 }, (_, i) => `k${i}`).sort());
  });

  test('last seen written by two nodes: each write is whole, the database holds one of them', async () => {
    const [a, b] = await nodes(2);
    const entries = (tag: string) => Array.from({ length: 400 }, (_, i) => ({ jid: `u${i}@x.org`, lastSeen: { at: i, status: tag } }));
    await Promise.all([a!.setLastSeenMany(entries('a')), b!.setLastSeenMany(entries('b'))]);
    const got = await a!.getLastSeenMany(entries('a').map((e) => e.jid));
    assert.equal(got.size, 400);
    // One transaction each: the whole batch of one node is what the other overwrote, never a mix of
    // a row half from each.
    for (const [, v] of got) assert.ok(v.status === 'a' || v.status === 'b');
  });
});

describe('PostgreSQL store: migrations run by several nodes starting together', () => {
  test('every node migrates a fresh database at once; each version is applied once', async () => {
    const url = freshDatabase();
    const stores = Array.from({ length: 4 }, (_, i) => node(url, `n${i}`, 2));
    await Promise.all(stores.map((s) => s.migrate()));
    const rows = await sql<{ version: number }>`select version from schema_migrations order by version`.execute(stores[0]!.featureStorage().db);
    assert.deepEqual(rows.rows.map((r) => r.version), MIGRATIONS.map((m) => m.version));
    await stores[1]!.createAccount(account('a@x.org'));
    assert.equal(await stores[3]!.countAccounts(), 1);
  });

  test('feature migrations too, with their time columns as bigint', async () => {
    const url = freshDatabase();
    const stores = Array.from({ length: 4 }, (_, i) => node(url, `n${i}`, 2));
    await stores[0]!.migrate();
    let applied = 0;
    const probe: Migration[] = [
      {
        version: 1,
        name: 'probe table',
        async up(db, dialect) {
          applied++;
          await db.schema.createTable('probe').addColumn('id', 'text', (c) => c.primaryKey()).addColumn('at', timeColumn(dialect), (c) => c.notNull()).execute();
        },
      },
      {
        version: 2,
        name: 'probe index',
        async up(db) {
          applied++;
          await db.schema.createIndex('probe_at').on('probe').column('at').execute();
        },
      },
    ];
    await Promise.all(stores.map((s) => runFeatureMigrations(s.featureStorage().db, 'probe', probe)));
    assert.equal(applied, 2);
    const db = stores[2]!.featureStorage().db;
    const recorded = await sql<{ version: number }>`select version from feature_migrations where feature = 'probe' order by version`.execute(db);
    assert.deepEqual(recorded.rows.map((r) => r.version), [1, 2]);
    const far = 8_640_000_000_000;
    await db.insertInto('probe').values({ id: 'x', at: far }).execute();
    assert.deepEqual(await db.selectFrom('probe').selectAll().execute(), [{ id: 'x', at: far }]);
    const type = await sql<{ t: string }>`select data_type as t from information_schema.columns where table_name = 'feature_migrations' and column_name = 'applied_at'`.execute(db);
    assert.equal(type.rows[0]?.t, 'bigint');
  });
});

describe('PostgreSQL store: a NUL character', () => {
  test('in a looked-up or stored value is the client\'s error (bad-request), not an internal fault', async () => {
    const [s] = await nodes(1);
    const store = s!;
    // PostgreSQL keeps no NUL in text (SQLite does): an id with one can name nothing, and cannot be stored.
    const badRequest = (e: unknown): boolean => {
      assert.ok(e instanceof PresenceError, `expected a PresenceError, got ${String(e)}`);
      assert.equal(e.code, 'bad-request');
      assert.match(e.message, /NUL/);
      return true;
    };
    await assert.rejects(store.getAccount('a\u0000b@localhost'), badRequest);
    await assert.rejects(store.createAccount(account('nul\u0000@localhost')), badRequest);
    await assert.rejects(sql`select ${'{"a":"\\u0000"}'}::jsonb`.execute(store.featureStorage().db), badRequest);
    // The connection is not harmed by it.
    assert.equal(await store.getAccount('a@localhost'), undefined);
  });
});

describe('PostgreSQL store: the server going away', () => {
  test('at start: migrate names the server it cannot reach, never the password', async () => {
    const port = await freePort();
    const s = PostgresStore.open({ url: `postgres://presenced:sekret-pw@127.0.0.1:${port}/nowhere`, node: 'n' });
    open.push(s);
    await assert.rejects(s.migrate(), (e: unknown) => {
      isUnavailable(e);
      const msg = (e as Error).message;
      assert.match(msg, new RegExp(`cannot reach PostgreSQL at postgres://presenced:\\*\\*\\*@127\\.0\\.0\\.1:${port}/nowhere: .*ECONNREFUSED`));
      assert.doesNotMatch(msg, /sekret/);
      return true;
    });
  });

  test('at start: a database that does not exist is a configuration error that says so', async () => {
    const s = PostgresStore.open({ url: pg.urlOf('no_such_db'), node: 'n' });
    open.push(s);
    await assert.rejects(s.migrate(), /PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:\d+\/no_such_db refused presenced: database "no_such_db" does not exist/);
  });

  test('while stopped every call fails as unavailable; once it is back the same Store works, data intact', async () => {
    const [s] = await nodes(1);
    await s!.createAccount(account('before@x.org'));
    // A query in flight when the server shuts down is cut: unavailable, not an internal error.
    const inFlight = sql`select pg_sleep(30)`.execute(s!.featureStorage().db);
    const cut = assert.rejects(inFlight, isUnavailable);
    await eventually(async () => {
      const r = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where query like 'select pg_sleep%' and state = 'active'`.execute(s!.featureStorage().db);
      assert.equal(r.rows[0]?.n, 1);
    });
    await pg.stop();
    try {
      await cut;
      await assert.rejects(s!.getAccount('before@x.org'), isUnavailable);
      await assert.rejects(s!.createAccount(account('during@x.org')), isUnavailable);
      await assert.rejects(s!.putRosterItems([{ owner: 'before@x.org', contact: 'c@x.org', name: null, groups: [], state: NONE }]), isUnavailable);
      await assert.rejects(s!.addOfflineMessageIfRoom({ to: 'before@x.org', from: 'f@x.org', xml: '<m/>', at: 1 }, 10), isUnavailable);
    } finally {
      await pg.start();
    }
    await eventually(() => s!.getAccount('before@x.org'));
    assert.ok(await s!.getAccount('before@x.org'));
    assert.equal(await s!.getAccount('during@x.org'), undefined);
    await s!.createAccount(account('after@x.org'));
    assert.equal(await s!.countAccounts(), 2);
  });

  test('a connection cut while checked out (a transaction between two statements) fails that transaction, not the process', async () => {
    const [s] = await nodes(1);
    const db = s!.featureStorage().db;
    let entered!: () => void;
    let resume!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const held = new Promise<void>((r) => (resume = r));
    const trx = db.transaction().execute(async (t) => {
      await sql`select 1`.execute(t);
      entered();
      await held;
      await sql`select 2`.execute(t);
    });
    await inside;
    // The server ends the connection while no query runs on it: pg emits 'error' on the checked-out client.
    await pg.restart();
    resume();
    await assert.rejects(trx, isUnavailable);
    await eventually(() => s!.countAccounts());
  });

  test('a restart under a pool of idle connections: the pool replaces them by itself', async () => {
    const [s] = await nodes(1);
    // Fill the pool with idle connections that the restart will cut.
    await Promise.all(Array.from({ length: 4 }, (_, i) => s!.createAccount(account(`u${i}@x.org`))));
    await pg.restart();
    await eventually(() => s!.countAccounts());
    // Then every call works, however many at once.
    const counts = await Promise.all(Array.from({ length: 12 }, () => s!.countAccounts()));
    assert.deepEqual(counts, Array(12).fill(4));
    await s!.updateSettings('u0@x.org', { publicPresence: true });
    assert.deepEqual(await s!.getSettings('u0@x.org'), { publicPresence: true });
  });
});
