import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import { sql, type Kysely } from 'kysely';
import { EMBEDDED_NODE, MIGRATIONS, runMigrations } from '../../src/adapters/sql/migrations.js';
import type { SqlStore } from '../../src/adapters/sql/sql-store.js';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.js';
import { PresenceError } from '../../src/core/errors.js';
import type { RosterItem } from '../../src/core/roster.js';
import { NONE, type SubState } from '../../src/core/subscription-state.js';
import type { AccountRecord } from '../../src/ports/store.js';
import { BACKENDS, sqliteBackend, type Backend, type Place } from '../helpers/store-backends.js';

/**
 * The Store's contract, run on SQLite and on PostgreSQL alike (one private PostgreSQL server for the
 * file, a fresh database per test). What only one database has (SQLite's file, WAL and :memory:;
 * PostgreSQL's concurrent writers and restarts) is tested at the end and in postgres-store.test.ts.
 */

async function openMigrated(place: Place, node?: string): Promise<SqlStore> {
  const s = place.open(node);
  await s.migrate();
  return s;
}

function account(jid: string, extra: Partial<AccountRecord> = {}): AccountRecord {
  return {
    jid,
    passwordHash: `$scrypt$${jid}`,
    scramSha1: { salt: 'c2FsdA==', iterations: 4096, storedKey: 'c3Rv', serverKey: 'c2Vy' },
    scramSha256: null,
    createdAt: 1_700_000_000_000,
    ...extra,
  };
}

function item(owner: string, contact: string, state: Partial<SubState> = {}, extra: Partial<RosterItem> = {}): RosterItem {
  return { owner, contact, name: null, groups: [], state: { ...NONE, ...state }, ...extra };
}

const LATEST = MIGRATIONS.at(-1)?.version ?? 0;

for (const makeBackend of BACKENDS) {
  const backend: Backend = makeBackend();

  describe(`on ${backend.dialect}`, () => {
    before(() => backend.setUp());
    after(() => backend.tearDown());

    describe('Store', () => {
      let place: Place;
      let store: SqlStore;

      beforeEach(async () => {
        place = await backend.fresh();
        store = await openMigrated(place);
      });
      afterEach(async () => {
        await store.close();
      });

      describe('accounts', () => {
        test('create then get round-trips every field', async () => {
          const a = account('alice@example.com', {
            scramSha256: { salt: 'AAAA', iterations: 8192, storedKey: 'BBBB', serverKey: 'CCCC' },
          });
          await store.createAccount(a);
          assert.deepEqual(await store.getAccount('alice@example.com'), a);
          assert.equal(await store.getAccount('bob@example.com'), undefined);
        });

        test('a duplicate account is a conflict and leaves the first untouched', async () => {
          await store.createAccount(account('alice@example.com'));
          await assert.rejects(store.createAccount(account('alice@example.com', { passwordHash: 'other' })), (e: unknown) => {
            assert.ok(e instanceof PresenceError);
            assert.equal(e.code, 'conflict');
            return true;
          });
          assert.equal((await store.getAccount('alice@example.com'))?.passwordHash, '$scrypt$alice@example.com');
          assert.equal(await store.countAccounts(), 1);
        });

        test('setCredentials replaces the hashes, and is false for an unknown account', async () => {
          await store.createAccount(account('alice@example.com'));
          const creds = {
            passwordHash: 'new-hash',
            scramSha1: null,
            scramSha256: { salt: 'x', iterations: 1, storedKey: 'y', serverKey: 'z' },
          };
          assert.equal(await store.setCredentials('alice@example.com', creds), true);
          const got = await store.getAccount('alice@example.com');
          assert.equal(got?.passwordHash, 'new-hash');
          assert.equal(got?.scramSha1, null);
          assert.deepEqual(got?.scramSha256, creds.scramSha256);
          assert.equal(got?.createdAt, 1_700_000_000_000);
          assert.equal(await store.setCredentials('nobody@example.com', creds), false);
          assert.equal(await store.getAccount('nobody@example.com'), undefined);
        });

        test('countAccounts', async () => {
          assert.equal(await store.countAccounts(), 0);
          for (const j of ['a@x.org', 'b@x.org', 'c@y.org']) await store.createAccount(account(j));
          assert.equal(await store.countAccounts(), 3);
        });

        test('deleteAccount removes everything the account owns, but not items of others pointing at it', async () => {
          const alice = 'alice@example.com';
          const bob = 'bob@example.com';
          await store.createAccount(account(alice));
          await store.createAccount(account(bob));
          await store.putRosterItems([
            item(alice, bob, { to: true, from: true }),
            item(bob, alice, { to: true, from: true }),
          ]);
          await store.addBlock(alice, 'spam@example.net');
          await store.addBlock(bob, alice);
          await store.updateSettings(alice, { publicPresence: true });
          await store.setLastSeen(alice, { at: 5, status: 'bye' });
          assert.equal(await store.getRosterVersion(alice), 1);

          assert.equal(await store.deleteAccount(alice), true);

          assert.equal(await store.getAccount(alice), undefined);
          assert.deepEqual(await store.getRoster(alice), []);
          assert.equal(await store.getRosterVersion(alice), 0);
          assert.deepEqual(await store.getBlocks(alice), []);
          assert.deepEqual(await store.getSettings(alice), {});
          assert.equal(await store.getLastSeen(alice), null);
          // The engine removes these itself so it can notify the owners.
          assert.deepEqual(await store.getItemsPointingAt(alice), [item(bob, alice, { to: true, from: true })]);
          assert.deepEqual(await store.getBlocks(bob), [alice]);
          assert.ok(await store.getAccount(bob));

          assert.equal(await store.deleteAccount(alice), false);
        });
      });

      describe('listAccounts', () => {
        const jids = [
          ...Array.from({ length: 12 }, (_, i) => `user${String(i).padStart(2, '0')}@example.com`),
          ...Array.from({ length: 5 }, (_, i) => `u${i}@other.org`),
          'a@xexample.com', // the domain as a mere suffix must not match
          'b@sub_example.com', // '_' must be literal, not a LIKE wildcard
          'c@subXexample.com',
        ];

        beforeEach(async () => {
          // Inserted out of order so the sort is the store's doing.
          for (const j of [...jids].reverse()) await store.createAccount(account(j));
        });

        test('pages through everything in order with an exclusive `after`', async () => {
          const seen: string[] = [];
          let after: string | undefined;
          let pages = 0;
          do {
            const page = await store.listAccounts({ limit: 7, ...(after !== undefined ? { after } : {}) });
            assert.ok(page.jids.length <= 7);
            if (page.next !== null) assert.equal(page.next, page.jids.at(-1));
            seen.push(...page.jids);
            after = page.next ?? undefined;
            pages++;
          } while (after !== undefined);
          assert.deepEqual(seen, [...jids].sort());
          assert.equal(pages, 3);
        });

        test('next is null when the page ends exactly at the last account', async () => {
          const all = await store.listAccounts({ limit: jids.length });
          assert.equal(all.jids.length, jids.length);
          assert.equal(all.next, null);
          const short = await store.listAccounts({ limit: jids.length - 1 });
          assert.equal(short.next, short.jids.at(-1));
          const rest = await store.listAccounts({ limit: 5, after: short.next! });
          assert.deepEqual(rest, { jids: [[...jids].sort().at(-1)!], next: null });
        });

        test('`after` need not be an existing jid', async () => {
          const page = await store.listAccounts({ limit: 100, after: 'user05@example.comzzz' });
          assert.deepEqual(page.jids.slice(0, 2), ['user06@example.com', 'user07@example.com']);
        });

        test('domain filter matches the exact domain only', async () => {
          const page = await store.listAccounts({ domain: 'example.com', limit: 100 });
          assert.deepEqual(page.jids, jids.slice(0, 12));
          assert.equal(page.next, null);

          const first = await store.listAccounts({ domain: 'other.org', limit: 3 });
          assert.deepEqual(first, { jids: ['u0@other.org', 'u1@other.org', 'u2@other.org'], next: 'u2@other.org' });
          const second = await store.listAccounts({ domain: 'other.org', limit: 3, after: first.next! });
          assert.deepEqual(second, { jids: ['u3@other.org', 'u4@other.org'], next: null });

          assert.deepEqual((await store.listAccounts({ domain: 'sub_example.com', limit: 10 })).jids, ['b@sub_example.com']);
          assert.deepEqual(await store.listAccounts({ domain: 'nowhere.net', limit: 10 }), { jids: [], next: null });
        });

        test('rejects a non-positive limit', async () => {
          await assert.rejects(store.listAccounts({ limit: 0 }), RangeError);
        });
      });

      describe('settings', () => {
        test('unknown account has empty settings', async () => {
          assert.deepEqual(await store.getSettings('ghost@example.com'), {});
        });

        test('merges patches and removes keys set to null', async () => {
          const j = 'alice@example.com';
          await store.createAccount(account(j));
          assert.deepEqual(await store.updateSettings(j, { publicPresence: true, theme: 'dark' }), {
            publicPresence: true,
            theme: 'dark',
          });
          assert.deepEqual(await store.updateSettings(j, { tokensNotBefore: 42, theme: null, missing: null }), {
            publicPresence: true,
            tokensNotBefore: 42,
          });
          assert.deepEqual(await store.updateSettings(j, { nested: { a: [1, 2] }, publicPresence: false }), {
            publicPresence: false,
            tokensNotBefore: 42,
            nested: { a: [1, 2] },
          });
          assert.deepEqual(await store.getSettings(j), { publicPresence: false, tokensNotBefore: 42, nested: { a: [1, 2] } });
        });

        test('a "__proto__" key is stored as data, not as a prototype', async () => {
          const j = 'alice@example.com';
          const patch = JSON.parse('{"__proto__": {"polluted": true}}') as Record<string, unknown>;
          const s = await store.updateSettings(j, patch);
          assert.equal(Object.getPrototypeOf(s), Object.prototype);
          assert.equal((s as Record<string, unknown>).polluted, undefined);
          assert.deepEqual(Object.keys(s), ['__proto__']);
        });
      });

      describe('roster', () => {
        const a = 'alice@example.com';
        const b = 'bob@example.com';
        const c = 'carol@example.com';

        test('put, get and upsert', async () => {
          assert.deepEqual(await store.getRoster(a), []);
          assert.equal(await store.getRosterVersion(a), 0);

          const first = item(a, b, { pendingOut: true }, { name: 'Bob', groups: ['Friends', 'Work'] });
          await store.putRosterItems([first]);
          assert.deepEqual(await store.getRosterItem(a, b), first);
          assert.equal(await store.getRosterItem(a, c), undefined);

          const updated = item(a, b, { to: true }, { name: null, groups: [] });
          await store.putRosterItems([updated]);
          assert.deepEqual(await store.getRoster(a), [updated]);
        });

        test('every subscription flag maps to its own column and back', async () => {
          const flags = ['to', 'from', 'pendingOut', 'pendingIn', 'preApproved'] as const;
          const items = flags.map((f, i) => item(a, `c${i}@example.com`, { [f]: true }));
          items.push(item(a, 'none@example.com'));
          await store.putRosterItems(items);
          const got = await store.getRoster(a);
          assert.deepEqual(
            got,
            [...items].sort((x, y) => (x.contact < y.contact ? -1 : 1)),
          );
          const cols = await place.raw<Record<string, number>>(
            "select sub_to, sub_from, pending_out, pending_in, pre_approved from roster_items where contact = 'c2@example.com'",
          );
          assert.deepEqual({ ...cols[0] }, { sub_to: 0, sub_from: 0, pending_out: 1, pending_in: 0, pre_approved: 0 });
        });

        test('each call bumps the version of each owner concerned exactly once', async () => {
          await store.putRosterItems([item(a, b), item(a, c), item(b, a)]);
          assert.equal(await store.getRosterVersion(a), 1);
          assert.equal(await store.getRosterVersion(b), 1);
          assert.equal(await store.getRosterVersion(c), 0);

          await store.putRosterItems([item(a, b, { to: true })]);
          assert.equal(await store.getRosterVersion(a), 2);
          assert.equal(await store.getRosterVersion(b), 1);

          await store.removeRosterItems([
            { owner: a, contact: b },
            { owner: a, contact: c },
            { owner: b, contact: a },
          ]);
          assert.equal(await store.getRosterVersion(a), 3);
          assert.equal(await store.getRosterVersion(b), 2);
          assert.deepEqual(await store.getRoster(a), []);
          assert.deepEqual(await store.getRoster(b), []);
        });

        test('removing absent items is a no-op that does not change the version', async () => {
          await store.putRosterItems([item(a, b)]);
          await store.removeRosterItems([{ owner: a, contact: c }, { owner: c, contact: a }]);
          await store.removeRosterItems([]);
          await store.putRosterItems([]);
          assert.equal(await store.getRosterVersion(a), 1);
          assert.equal(await store.getRosterVersion(c), 0);
          assert.deepEqual(await store.getRoster(a), [item(a, b)]);
        });

        test('putRosterItems is all or nothing', async () => {
          await store.putRosterItems([item(a, b, { to: true })]);
          const bad = item(null as unknown as string, a);
          await assert.rejects(store.putRosterItems([item(a, b, { from: true }), item(c, a), bad]));
          assert.deepEqual(await store.getRoster(a), [item(a, b, { to: true })]);
          assert.deepEqual(await store.getRoster(c), []);
          assert.equal(await store.getRosterVersion(a), 1);
          assert.equal(await store.getRosterVersion(c), 0);
          assert.deepEqual(await place.raw('select cast(count(*) as integer) as n from roster_items'), [{ n: 1 }]);
          // The store is still usable after the rollback.
          await store.putRosterItems([item(c, a)]);
          assert.equal(await store.getRosterVersion(c), 1);
        });

        test('updateRosterPair: two stores (two nodes) changing the same pairs at once lose no change', async () => {
          // Each side sets its own flag from what it read; without the pair taken in turn, both read
          // the same old item and the later write undoes the earlier one's flag. Two connections on
          // PostgreSQL; on SQLite (one process, one writer) the same store for both.
          const other = backend.dialect === 'postgres' ? await openMigrated(place) : store;
          try {
            const contacts = Array.from({ length: 40 }, (_, i) => `p${i}@example.com`);
            const set = (st: SqlStore, contact: string, flag: 'to' | 'from') =>
              st.updateRosterPair(a, contact, (mine, theirs) => {
                const next = item(a, contact, { ...(mine?.state ?? {}), [flag]: true });
                return { put: [next], result: theirs };
              });
            await Promise.all(contacts.flatMap((c) => [set(store, c, 'to'), set(other, c, 'from')]));
            for (const c of contacts) {
              const got = await store.getRosterItem(a, c);
              assert.equal(got?.state.to && got.state.from, true, `${c}: both changes kept, got ${JSON.stringify(got?.state)}`);
            }
            assert.equal(await store.getRosterVersion(a), 80, 'each write bumped the version once');
          } finally {
            if (other !== store) await other.close();
          }
        });

        test('updateRosterPair reads both directions and writes only what decide returns', async () => {
          await store.putRosterItems([item(a, b, { to: true }, { name: 'Bob', groups: ['G'] }), item(b, a, { from: true })]);
          const seen = await store.updateRosterPair(a, b, (mine, theirs) => ({ put: [], result: [mine, theirs] }));
          assert.deepEqual(seen, [item(a, b, { to: true }, { name: 'Bob', groups: ['G'] }), item(b, a, { from: true })]);
          assert.equal(await store.getRosterVersion(a), 1, 'nothing written, no new version');
          const none = await store.updateRosterPair(a, c, (mine, theirs) => ({ put: [item(c, a, { pendingIn: true })], result: [mine, theirs] }));
          assert.deepEqual(none, [undefined, undefined]);
          assert.deepEqual(await store.getRoster(c), [item(c, a, { pendingIn: true })]);
        });

        test('getItemsPointingAt finds the contact in every roster', async () => {
          await store.putRosterItems([item(b, a, { from: true }), item(c, a), item(a, b), item(c, b)]);
          assert.deepEqual(await store.getItemsPointingAt(a), [item(b, a, { from: true }), item(c, a)]);
          assert.deepEqual(await store.getItemsPointingAt('nobody@example.com'), []);
        });
      });

      describe('blocks', () => {
        test('add, list sorted, remove', async () => {
          const o = 'alice@example.com';
          assert.deepEqual(await store.getBlocks(o), []);
          assert.equal(await store.addBlock(o, 'zed@example.com'), true);
          assert.equal(await store.addBlock(o, 'bob@example.com'), true);
          assert.equal(await store.addBlock(o, 'bob@example.com'), false);
          assert.deepEqual(await store.getBlocks(o), ['bob@example.com', 'zed@example.com']);
          assert.deepEqual(await store.getBlocks('bob@example.com'), []);
          assert.equal(await store.removeBlock(o, 'bob@example.com'), true);
          assert.equal(await store.removeBlock(o, 'bob@example.com'), false);
          assert.deepEqual(await store.getBlocks(o), ['zed@example.com']);
        });
      });

      describe('last seen', () => {
        test('single set and get, overwrite, null status', async () => {
          assert.equal(await store.getLastSeen('a@x.org'), null);
          await store.setLastSeen('a@x.org', { at: 100, status: 'gone fishing' });
          assert.deepEqual(await store.getLastSeen('a@x.org'), { at: 100, status: 'gone fishing' });
          await store.setLastSeen('a@x.org', { at: 200, status: null });
          assert.deepEqual(await store.getLastSeen('a@x.org'), { at: 200, status: null });
        });

        test('many: more jids than SQLite allows as parameters of one statement', async () => {
          const count = 40_001;
          const entries = Array.from({ length: count }, (_, i) => ({
            jid: `u${i}@x.org`,
            lastSeen: { at: 1_000 + i, status: i % 3 === 0 ? null : `s${i}` },
          }));
          await store.setLastSeenMany(entries);
          await store.setLastSeenMany([]);

          const asked = [...entries.map((e) => e.jid), 'missing@x.org', 'u7@x.org', 'u7@x.org'];
          const got = await store.getLastSeenMany(asked);
          assert.equal(got.size, count);
          assert.deepEqual(got.get('u0@x.org'), { at: 1_000, status: null });
          assert.deepEqual(got.get('u7@x.org'), { at: 1_007, status: 's7' });
          assert.deepEqual(got.get(`u${count - 1}@x.org`), { at: 1_000 + count - 1, status: `s${count - 1}` });
          assert.equal(got.has('missing@x.org'), false);
          assert.equal((await store.getLastSeenMany([])).size, 0);
        });

        test('many: a jid given twice in one batch keeps the later entry', async () => {
          await store.setLastSeen('a@x.org', { at: 1, status: 'old' });
          await store.setLastSeenMany([
            { jid: 'a@x.org', lastSeen: { at: 2, status: 'first' } },
            { jid: 'b@x.org', lastSeen: { at: 3, status: null } },
            { jid: 'a@x.org', lastSeen: { at: 4, status: 'second' } },
          ]);
          const got = await store.getLastSeenMany(['a@x.org', 'b@x.org']);
          assert.deepEqual([...got], [
            ['a@x.org', { at: 4, status: 'second' }],
            ['b@x.org', { at: 3, status: null }],
          ]);
        });
      });

      describe('public presence choices', () => {
        test('lists exactly the accounts whose settings hold a boolean publicPresence', async () => {
          await store.updateSettings('yes@x.org', { publicPresence: true });
          await store.updateSettings('no@x.org', { publicPresence: false, theme: 'dark' });
          await store.updateSettings('other@x.org', { theme: 'publicPresence' });
          await store.updateSettings('odd@x.org', { publicPresence: 'yes' });
          await store.updateSettings('gone@x.org', { publicPresence: true });
          await store.updateSettings('gone@x.org', { publicPresence: null });
          const got = await store.listPublicPresenceChoices();
          assert.deepEqual([...got].sort(), [['no@x.org', false], ['yes@x.org', true]]);
        });
      });

      describe('offline delivery lease', () => {
        const to = 'olga@example.com';

        test('one holder at a time; the holder takes it again; it lapses; only the holder gives it back', async () => {
          assert.equal(await store.claimOfflineDelivery(to, 'node-a:1', 1_000, 60_000), true);
          assert.equal(await store.claimOfflineDelivery(to, 'node-b:1', 2_000, 60_000), false, 'another holder waits');
          assert.equal(await store.claimOfflineDelivery(to, 'node-a:1', 30_000, 60_000), true, 'the holder renews it');
          assert.equal(await store.claimOfflineDelivery(to, 'node-b:1', 70_000, 60_000), false, 'renewed: still held at 70 s');
          await store.releaseOfflineDelivery(to, 'node-b:1');
          assert.equal(await store.claimOfflineDelivery(to, 'node-b:1', 80_000, 60_000), false, 'a release by another holder does nothing');
          assert.equal(await store.claimOfflineDelivery(to, 'node-b:1', 90_001, 60_000), true, 'lapsed: a holder that died loses it');
          await store.releaseOfflineDelivery(to, 'node-b:1');
          assert.equal(await store.claimOfflineDelivery(to, 'node-c:1', 90_002, 60_000), true, 'given back: free at once');
          assert.equal(await store.claimOfflineDelivery('other@example.com', 'node-a:2', 90_002, 60_000), true, 'per account');
        });
      });

      describe('offline messages', () => {
        const msg = (to: string, n: number) => ({ to, from: `s${n}@x.org/r`, xml: `<message to='${to}'><body>${n}</body></message>`, at: 1_700_000_000_000 + n });

        test('stored oldest first, counted, read in pages and deleted by id', async () => {
          const ids: number[] = [];
          for (let i = 0; i < 5; i++) ids.push(await store.addOfflineMessage(msg('a@x.org', i)));
          await store.addOfflineMessage(msg('b@x.org', 9));
          assert.equal(new Set(ids).size, 5);
          assert.deepEqual([...ids].sort((x, y) => x - y), ids, 'ids increase');
          assert.equal(await store.countOfflineMessages('a@x.org'), 5);
          const page = await store.getOfflineMessages('a@x.org', 3);
          assert.deepEqual(page, [0, 1, 2].map((i) => ({ id: ids[i], ...msg('a@x.org', i) })));
          await store.deleteOfflineMessages([ids[0]!, ids[2]!, 999_999]);
          assert.deepEqual((await store.getOfflineMessages('a@x.org', 10)).map((m) => m.id), [ids[1], ids[3], ids[4]]);
          await store.deleteOfflineMessages([]);
          assert.equal(await store.countOfflineMessages('b@x.org'), 1);
          assert.equal(await store.countOfflineMessages('nobody@x.org'), 0);
        });

        test('addOfflineMessageIfRoom stores up to the limit, then answers null and stores nothing', async () => {
          await store.addOfflineMessage(msg('a@x.org', 0));
          assert.equal(typeof (await store.addOfflineMessageIfRoom(msg('a@x.org', 1), 3)), 'number');
          assert.equal(typeof (await store.addOfflineMessageIfRoom(msg('a@x.org', 2), 3)), 'number');
          assert.equal(await store.addOfflineMessageIfRoom(msg('a@x.org', 3), 3), null);
          assert.equal(await store.addOfflineMessageIfRoom(msg('a@x.org', 4), 0), null);
          assert.deepEqual((await store.getOfflineMessages('a@x.org', 10)).map((m) => m.xml), [0, 1, 2].map((i) => msg('a@x.org', i).xml));
          // Another recipient has its own room.
          assert.equal(typeof (await store.addOfflineMessageIfRoom(msg('b@x.org', 5), 1)), 'number');
          // Room again once delivered.
          const [first] = await store.getOfflineMessages('a@x.org', 1);
          await store.deleteOfflineMessages([first!.id]);
          assert.equal(typeof (await store.addOfflineMessageIfRoom(msg('a@x.org', 6), 3)), 'number');
          assert.equal(await store.countOfflineMessages('a@x.org'), 3);
        });

        test('deleteAccount drops the messages waiting for it', async () => {
          await store.createAccount(account('a@x.org'));
          await store.addOfflineMessage(msg('a@x.org', 1));
          await store.addOfflineMessage(msg('b@x.org', 2));
          await store.deleteAccount('a@x.org');
          assert.equal(await store.countOfflineMessages('a@x.org'), 0);
          assert.equal(await store.countOfflineMessages('b@x.org'), 1);
        });
      });

      describe('presence checkpoint', () => {
        const row = (jid: string, n: number, status: string | null = null) => ({ jid, onlineSince: 1_700_000_000_000 + n, lastHeard: 1_700_000_100_000 + n, status });

        test('upserts and removes in one call, reads sorted, clears', async () => {
          assert.deepEqual(await store.getPresenceCheckpoints(), []);
          await store.writePresenceCheckpoints([row('b@x.org', 1), row('a@x.org', 2, 'here')], []);
          assert.deepEqual(await store.getPresenceCheckpoints(), [row('a@x.org', 2, 'here'), row('b@x.org', 1)]);
          await store.writePresenceCheckpoints([row('a@x.org', 3), row('c@x.org', 4)], ['b@x.org', 'never@x.org']);
          assert.deepEqual(await store.getPresenceCheckpoints(), [row('a@x.org', 3), row('c@x.org', 4)]);
          await store.writePresenceCheckpoints([], []);
          await store.clearPresenceCheckpoints();
          assert.deepEqual(await store.getPresenceCheckpoints(), []);
        });

        test('a jid given twice in one batch keeps the later row, in batches past the row chunk', async () => {
          const many = Array.from({ length: 450 }, (_, i) => row(`u${String(i).padStart(3, '0')}@x.org`, i));
          await store.writePresenceCheckpoints([...many, row('u007@x.org', 999, 'later')], many.slice(400).map((r) => r.jid));
          const got = await store.getPresenceCheckpoints();
          assert.equal(got.length, 400);
          assert.deepEqual(got[7], row('u007@x.org', 999, 'later'));
        });

        test('each node reads, writes and clears only its own rows; the embedded node is the default', async () => {
          const other = await openMigrated(place, 'node-b');
          try {
            assert.equal(store.node, EMBEDDED_NODE);
            await store.writePresenceCheckpoints([row('a@x.org', 1, 'on a'), row('both@x.org', 2, 'on a')], []);
            await other.writePresenceCheckpoints([row('both@x.org', 3, 'on b'), row('b@x.org', 4)], []);
            assert.deepEqual(await store.getPresenceCheckpoints(), [row('a@x.org', 1, 'on a'), row('both@x.org', 2, 'on a')]);
            assert.deepEqual(await other.getPresenceCheckpoints(), [row('b@x.org', 4), row('both@x.org', 3, 'on b')]);
            // A node that takes over a dead one's recovery names it.
            assert.deepEqual(await store.getPresenceCheckpoints('node-b'), await other.getPresenceCheckpoints());
            await other.writePresenceCheckpoints([], ['both@x.org']);
            assert.deepEqual((await store.getPresenceCheckpoints()).map((r) => r.jid), ['a@x.org', 'both@x.org']);
            await store.clearPresenceCheckpoints();
            assert.deepEqual(await other.getPresenceCheckpoints(), [row('b@x.org', 4)]);
            await store.clearPresenceCheckpoints('node-b');
            assert.deepEqual(await other.getPresenceCheckpoints(), []);
          } finally {
            await other.close();
          }
        });

        test('deleteAccount removes the account\'s rows of every node', async () => {
          const other = await openMigrated(place, 'node-b');
          try {
            await store.createAccount(account('a@x.org'));
            await store.writePresenceCheckpoints([row('a@x.org', 1), row('z@x.org', 2)], []);
            await other.writePresenceCheckpoints([row('a@x.org', 3)], []);
            await store.deleteAccount('a@x.org');
            assert.deepEqual(await store.getPresenceCheckpoints(), [row('z@x.org', 2)]);
            assert.deepEqual(await other.getPresenceCheckpoints(), []);
          } finally {
            await other.close();
          }
        });
      });
    });

    describe('Store lifecycle and migrations', () => {
      test('data survives close and reopen', async () => {
        const place = await backend.fresh();
        const s1 = await openMigrated(place);
        await s1.createAccount(account('alice@example.com'));
        await s1.putRosterItems([item('alice@example.com', 'bob@example.com', { to: true }, { groups: ['G'] })]);
        await s1.addBlock('alice@example.com', 'spam@example.net');
        await s1.updateSettings('alice@example.com', { publicPresence: true });
        await s1.setLastSeen('alice@example.com', { at: 9, status: 'later' });
        await s1.close();
        await s1.close(); // idempotent

        const s2 = await openMigrated(place);
        try {
          assert.deepEqual(await s2.getAccount('alice@example.com'), account('alice@example.com'));
          assert.deepEqual(await s2.getRoster('alice@example.com'), [
            item('alice@example.com', 'bob@example.com', { to: true }, { groups: ['G'] }),
          ]);
          assert.equal(await s2.getRosterVersion('alice@example.com'), 1);
          assert.deepEqual(await s2.getBlocks('alice@example.com'), ['spam@example.net']);
          assert.deepEqual(await s2.getSettings('alice@example.com'), { publicPresence: true });
          assert.deepEqual(await s2.getLastSeen('alice@example.com'), { at: 9, status: 'later' });
        } finally {
          await s2.close();
        }
      });

      test('millisecond times past 2^31 (and 2^32) round-trip as numbers', async () => {
        const place = await backend.fresh();
        const s = await openMigrated(place);
        try {
          const far = 8_640_000_000_000; // year 2243
          await s.createAccount(account('a@x.org', { createdAt: far }));
          await s.setLastSeen('a@x.org', { at: far + 1, status: null });
          const id = await s.addOfflineMessage({ to: 'a@x.org', from: 'b@x.org', xml: '<message/>', at: far + 2 });
          assert.equal((await s.getAccount('a@x.org'))?.createdAt, far);
          assert.deepEqual(await s.getLastSeen('a@x.org'), { at: far + 1, status: null });
          assert.deepEqual(await s.getOfflineMessages('a@x.org', 1), [{ id, to: 'a@x.org', from: 'b@x.org', xml: '<message/>', at: far + 2 }]);
          assert.equal(typeof (await s.countAccounts()), 'number');
        } finally {
          await s.close();
        }
      });

      test('migrate is idempotent, within one open and across reopens', async () => {
        const place = await backend.fresh();
        const s1 = await openMigrated(place);
        await s1.migrate();
        await s1.createAccount(account('alice@example.com'));
        await s1.close();
        const s2 = await openMigrated(place);
        await s2.migrate();
        assert.equal(await s2.countAccounts(), 1);
        await s2.close();

        const rows = await place.raw<{ version: number; name: string; applied_at: number }>(
          'select version, name, applied_at from schema_migrations order by version',
        );
        assert.deepEqual(
          rows.map((r) => r.version),
          MIGRATIONS.map((m) => m.version),
        );
        assert.equal(rows[0]?.name, MIGRATIONS[0]?.name);
        assert.ok(Number(rows[0]?.applied_at ?? 0) > 0);
      });

      test('refuses a database from the future', async () => {
        const place = await backend.fresh();
        const s1 = await openMigrated(place);
        await s1.createAccount(account('alice@example.com'));
        await s1.close();

        await place.raw('insert into schema_migrations (version, name, applied_at) values (999, ?, ?)', ['from the future', Date.now()]);

        const s2 = place.open();
        try {
          await assert.rejects(s2.migrate(), (e: unknown) => {
            assert.ok(e instanceof Error);
            assert.match(e.message, /version 999/);
            assert.match(e.message, new RegExp(`only knows up to ${LATEST}\\b`));
            return true;
          });
        } finally {
          await s2.close();
        }
        // Refusing must not have touched the data.
        assert.deepEqual(await place.raw('select jid from accounts'), [{ jid: 'alice@example.com' }]);
      });

      test('a failing migration is rolled back and not recorded', async () => {
        const place = await backend.fresh();
        const db = place.kysely();
        try {
          await runMigrations(db);
          const broken = [
            ...MIGRATIONS,
            {
              version: LATEST + 1,
              name: 'half done',
              async up(k: Kysely<any>) {
                await k.schema.createTable('half').addColumn('x', 'integer').execute();
                throw new Error('boom');
              },
            },
          ];
          await assert.rejects(runMigrations(db, broken), /boom/);
          assert.equal(await place.tableExists('half'), false);
          const versions = await db.selectFrom('schema_migrations').select('version').orderBy('version').execute();
          assert.deepEqual(versions, MIGRATIONS.map((m) => ({ version: m.version })));
        } finally {
          await db.destroy();
        }
      });

      test('rejects migrations that are not in increasing order', async () => {
        const place = await backend.fresh();
        const db = place.kysely();
        try {
          const noop = async () => {};
          await assert.rejects(
            runMigrations(db, [
              { version: 2, name: 'b', up: noop },
              { version: 1, name: 'a', up: noop },
            ]),
            /increasing/,
          );
        } finally {
          await db.destroy();
        }
      });

      test('a migration is told its dialect', async () => {
        const place = await backend.fresh();
        const db = place.kysely();
        try {
          const told: string[] = [];
          await runMigrations(db, [{ version: 1, name: 'probe', up: async (_k, dialect) => void told.push(dialect) }]);
          assert.deepEqual(told, [backend.dialect]);
        } finally {
          await db.destroy();
        }
      });

      test('upgrading to per-node checkpoints keeps the rows of a crash just before the upgrade, as the embedded node\'s', async () => {
        const place = await backend.fresh();
        const db = place.kysely();
        try {
          await runMigrations(db, MIGRATIONS.filter((m) => m.version <= 3));
          await sql`insert into presence_checkpoint (jid, online_since, last_heard, status) values ('a@x.org', 10, 20, 'busy')`.execute(db);
        } finally {
          await db.destroy();
        }
        const s = await openMigrated(place);
        try {
          assert.deepEqual(await s.getPresenceCheckpoints(EMBEDDED_NODE), [{ jid: 'a@x.org', onlineSince: 10, lastHeard: 20, status: 'busy' }]);
          // The new key lets one account have a row per node.
          const b = await openMigrated(place, 'node-b');
          await b.writePresenceCheckpoints([{ jid: 'a@x.org', onlineSince: 1, lastHeard: 2, status: null }], []);
          await b.close();
          assert.equal((await s.getPresenceCheckpoints(EMBEDDED_NODE)).length, 1);
        } finally {
          await s.close();
        }
      });

      test('two stores on one database (server and CLI, or two nodes) see each other’s writes', async () => {
        const place = await backend.fresh();
        const server = await openMigrated(place);
        const cli = await openMigrated(place);
        try {
          await cli.createAccount(account('alice@example.com'));
          assert.ok(await server.getAccount('alice@example.com'));
          await server.updateSettings('alice@example.com', { publicPresence: true });
          await cli.updateSettings('alice@example.com', { tokensNotBefore: 1 });
          assert.deepEqual(await server.getSettings('alice@example.com'), { publicPresence: true, tokensNotBefore: 1 });
          await assert.rejects(server.createAccount(account('alice@example.com')), { code: 'conflict' });
        } finally {
          await cli.close();
          await server.close();
        }
      });

      test('closing a store that never ran a query', async () => {
        const place = await backend.fresh();
        const s = place.open();
        await s.close();
        await s.close();
      });

      test('featureStorage names the dialect and shares the database', async () => {
        const place = await backend.fresh();
        const s = await openMigrated(place);
        try {
          const storage = s.featureStorage();
          assert.equal(storage.dialect, backend.dialect);
          await s.createAccount(account('a@x.org'));
          assert.deepEqual(await storage.db.selectFrom('accounts').select('jid').execute(), [{ jid: 'a@x.org' }]);
        } finally {
          await s.close();
        }
      });
    });
  });
}

describe('SqliteStore: the file', () => {
  const backend = sqliteBackend();
  before(() => backend.setUp());
  after(() => backend.tearDown());

  test('opens in WAL mode', async () => {
    const place = await backend.fresh();
    const s = await openMigrated(place);
    await s.close();
    assert.deepEqual(await place.raw('pragma journal_mode'), [{ journal_mode: 'wal' }]);
  });

  test(':memory: works', async () => {
    const s = SqliteStore.open({ path: ':memory:' });
    await s.migrate();
    try {
      await s.createAccount(account('alice@example.com'));
      assert.equal(await s.countAccounts(), 1);
    } finally {
      await s.close();
    }
  });

  // The reads a login makes run on prepared statements directly when the connection is free
  // (sqlite-store.ts HotReads); they must still see every write issued before them, and nothing a
  // transaction has not committed.
  test('a read issued right after a write, without waiting for it, sees the write', async () => {
    const s = await openMigrated(await backend.fresh());
    try {
      const jid = 'alice@example.com';
      const created = s.createAccount(account(jid));
      const gotAccount = s.getAccount(jid);
      await created;
      assert.equal((await gotAccount)?.jid, jid);
      const put = s.putRosterItems([item(jid, 'bob@example.com', { to: true })]);
      const [gotRoster, gotVersion] = [s.getRoster(jid), s.getRosterVersion(jid)];
      await put;
      assert.deepEqual((await gotRoster).map((i) => i.contact), ['bob@example.com']);
      assert.equal(await gotVersion, 1);
      const blocked = s.addBlock(jid, 'mallory@example.com');
      const gotBlocks = s.getBlocks(jid);
      await blocked;
      assert.deepEqual(await gotBlocks, ['mallory@example.com']);
      const settled = s.updateSettings(jid, { publicPresence: true });
      const gotSettings = s.getSettings(jid);
      await settled;
      assert.deepEqual(await gotSettings, { publicPresence: true });
      const seen = s.setLastSeen(jid, { at: 5, status: 'gone' });
      const gotSeen = s.getLastSeen(jid);
      await seen;
      assert.deepEqual(await gotSeen, { at: 5, status: 'gone' });
      const stored = s.addOfflineMessage({ to: jid, from: 'bob@example.com', xml: '<message/>', at: 6 });
      const gotOffline = s.getOfflineMessages(jid, 10);
      await stored;
      assert.deepEqual((await gotOffline).map((m) => m.xml), ['<message/>']);
    } finally {
      await s.close();
    }
  });

  test('a read during a transaction waits for it and never sees what it rolled back', async () => {
    const s = await openMigrated(await backend.fresh());
    try {
      const jid = 'alice@example.com';
      let read: Promise<AccountRecord | undefined> | null = null;
      const db = s.featureStorage().db;
      await assert.rejects(
        db.transaction().execute(async (trx) => {
          await trx
            .insertInto('accounts')
            .values({ jid, password_hash: 'x', scram_sha1: null, scram_sha256: null, created_at: 1 })
            .execute();
          read = s.getAccount(jid);
          throw new Error('roll back');
        }),
        /roll back/,
      );
      assert.equal(await (read as unknown as Promise<AccountRecord | undefined>), undefined);
    } finally {
      await s.close();
    }
  });

  test('closing a store that never ran a query releases the file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'presenced-sqlite-'));
    const s = SqliteStore.open({ path: path.join(dir, 'presenced.sqlite') });
    await s.close();
    fs.rmSync(dir, { recursive: true });
    assert.equal(fs.existsSync(dir), false);
  });
});
