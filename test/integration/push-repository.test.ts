import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PUSH_MIGRATIONS } from '../../src/features/push/migrations.js';
import type { PushMessage } from '../../src/features/push/providers/provider.js';
import { pushRepository, TooManyRegistrations, type NewPush, type PushRepository, type QueuedPush } from '../../src/features/push/repository.js';
import { featureDb, type Dialect, type FeatureDb } from '../helpers/feature-db.js';
import { stopAllPrivateServices } from '../helpers/private-services.js';

/**
 * The push feature's storage port, call by call, on SQLite and on PostgreSQL: registrations (replacing
 * a token, a device's rotated token, the per-account limit) and the durable queue (coalescing, one push
 * at a time per device, leases, retries, failures that disable).
 */

const LEASE = 60_000;
const msg = (body: string, collapseKey = 'messages'): PushMessage => ({ reason: 'message', count: 1, body, collapseKey, urgency: 'high', ttlSeconds: 60 });
const push = (registrationId: string, account: string, body: string, collapseKey?: string): NewPush => ({
  registrationId,
  account,
  trigger: 'test',
  message: msg(body, collapseKey),
  pushId: `p_${body}`,
});

after(() => stopAllPrivateServices());

for (const dialect of ['sqlite', 'postgres'] as const satisfies readonly Dialect[]) {
  describe(`push repository (${dialect})`, () => {
    let d: FeatureDb;
    let repo: PushRepository;
    before(async () => {
      d = await featureDb(dialect, [['push', PUSH_MIGRATIONS]]);
      repo = pushRepository(d.storage);
    });
    after(() => d.close());

    test('registrations: the same token replaces its row (also for another account), a device\'s new token replaces its old one, the limit holds', async () => {
      const a = await repo.register({ account: 'ann@x', provider: 'fcm', token: 't1', source: 'native', resource: 'phone' }, 3, 1_700_000_000_000);
      assert.equal(a.replaced, false);
      assert.equal(a.registration.createdAt, 1_700_000_000_000, 'a millisecond time survives the round trip');
      // The same device, a rotated token: the row is kept, with the new token.
      const rotated = await repo.register({ account: 'ann@x', provider: 'fcm', token: 't2', source: 'native', resource: 'phone' }, 3, 1_700_000_000_001);
      assert.equal(rotated.replaced, true);
      assert.equal(rotated.registration.id, a.registration.id);
      assert.equal(rotated.registration.token, 't2');
      // The token changes hands: bob's now, its waiting pushes dropped.
      await repo.enqueue([push(a.registration.id, 'ann@x', 'for-ann')], 1);
      const moved = await repo.register({ account: 'bob@x', provider: 'fcm', token: 't2', source: 'xmpp', xmppJid: 'push.x', away: true, options: { secret: 's' } }, 3, 2);
      assert.equal(moved.replaced, true);
      assert.equal(moved.registration.account, 'bob@x');
      assert.deepEqual([moved.registration.away, moved.registration.options, moved.registration.xmppJid], [true, { secret: 's' }, 'push.x']);
      assert.equal(await repo.pendingCount(), 0);
      assert.deepEqual(await repo.list('ann@x'), []);
      assert.equal((await repo.byNode(moved.registration.node))?.id, moved.registration.id);
      for (const t of ['b2', 'b3']) await repo.register({ account: 'bob@x', provider: 'fcm', token: t, source: 'native' }, 3, 3);
      await assert.rejects(repo.register({ account: 'bob@x', provider: 'fcm', token: 'b4', source: 'native' }, 3, 4), TooManyRegistrations);
      const updated = await repo.updateXmpp(moved.registration.id, { away: false, options: null }, 5);
      assert.deepEqual([updated?.away, updated?.options, updated?.updatedAt], [false, null, 5]);
      assert.equal((await repo.getMany([moved.registration.id, 'pr_nothing'])).length, 1);
      assert.deepEqual((await repo.accounts()).sort(), ['bob@x']);
      assert.equal(await repo.unregister('bob@x', { token: 'b3' }), 1);
      assert.equal(await repo.unregister('ann@x', { token: 'b2' }), 0, 'only the account\'s own registrations');
      assert.equal(await repo.removeAccount('bob@x'), 2);
      assert.deepEqual(await repo.list('bob@x'), []);
    });

    test('queue: coalescing into the waiting push, one push at a time per device in order, leases, retry and failures', async () => {
      const r1 = (await repo.register({ account: 'cat@x', provider: 'fcm', token: 'c1', source: 'native' }, 5, 10)).registration;
      const r2 = (await repo.register({ account: 'cat@x', provider: 'fcm', token: 'c2', source: 'native' }, 5, 10)).registration;
      await repo.enqueue([push(r1.id, 'cat@x', 'one'), push(r1.id, 'cat@x', 'two', 'other'), push(r2.id, 'cat@x', 'x')], 100);
      // A newer push with the same collapse key replaces the waiting one, keeping its place and push id.
      await repo.enqueue([push(r1.id, 'cat@x', 'one-newer')], 101);
      assert.equal(await repo.pendingCount(), 3);
      const first = await repo.claimDue('w', 200, LEASE, 10, []);
      assert.deepEqual(first.map((p) => [p.registrationId, p.message.body, p.pushId]), [[r1.id, 'one-newer', 'p_one'], [r2.id, 'x', 'p_x']]);
      // Leased: not due again, and a push with the same key does not replace one under way.
      assert.deepEqual(await repo.claimDue('w2', 201, LEASE, 10, []), []);
      await repo.enqueue([push(r1.id, 'cat@x', 'one-after')], 202);
      assert.equal(await repo.pendingCount(), 4);
      assert.equal(await repo.nextDue(300), 200 + LEASE, 'the earliest due time is a lease\'s end');
      // Sent in the same transaction as the next claim: r1's next pushes come one at a time, in order.
      const next = await repo.claimDue('w', 400, LEASE, 10, [], first);
      assert.deepEqual(next.map((p) => p.message.body), ['two']);
      await repo.retryLater(next[0]!, 500, 'HTTP 503', true);
      assert.deepEqual(await repo.claimDue('w', 499, LEASE, 10, []), [], 'not before its retry time');
      assert.deepEqual(await repo.claimDue('w', 500, LEASE, 10, [r1.id]), [], 'excluded (rate-limited) registrations are left');
      const retried = await repo.claimDue('w', 500, LEASE, 10, []);
      assert.deepEqual(retried.map((p) => [p.message.body, p.attempts]), [['two', 1]]);
      const state = await repo.failed(retried[0]!, 'HTTP 400', 2, 600);
      assert.deepEqual(state, { failures: 1, disabled: false });
      const last = await repo.claimDue('w', 700, LEASE, 10, []);
      assert.deepEqual(last.map((p) => p.message.body), ['one-after']);
      const disabled = await repo.failed(last[0]!, 'HTTP 400', 2, 800);
      assert.deepEqual(disabled, { failures: 2, disabled: true });
      const reg = await repo.get(r1.id);
      assert.equal(reg?.disabledAt, 800);
      assert.match(reg?.disabledReason ?? '', /2 pushes in a row failed/);
      assert.equal(await repo.pendingCount(), 0);
      await repo.sent([], 900);
      await repo.enqueue([push(r2.id, 'cat@x', 'y')], 1000);
      const [y] = await repo.claimDue('w', 1000, LEASE, 10, []);
      await repo.drop(y!.rowId);
      await repo.enqueue([push(r2.id, 'cat@x', 'z')], 1001);
      assert.equal((await repo.prune(r2.id))?.token, 'c2');
      assert.equal(await repo.pendingCount(), 0);
      assert.equal(await repo.get(r2.id), undefined);
    });

    test('fresh collapse keys: pushes queued in one turn keep their order, whether fresh or coalesced', async () => {
      const r = (await repo.register({ account: 'dan@x', provider: 'fcm', token: 'd1', source: 'native' }, 5, 10)).registration;
      const fresh = (body: string): NewPush => ({ ...push(r.id, 'dan@x', body, `notify-${body}`), freshCollapseKey: true });
      // One turn: one transaction; fresh pushes are only inserted, the others may coalesce.
      await Promise.all([
        repo.enqueue([fresh('a'), fresh('b')], 100),
        repo.enqueue([push(r.id, 'dan@x', 'c')], 100),
        repo.enqueue([fresh('d')], 100),
        repo.enqueue([push(r.id, 'dan@x', 'e')], 101),
        repo.enqueue([fresh('f')], 101),
      ]);
      assert.equal(await repo.pendingCount(), 5, 'e coalesced into c');
      const bodies: string[] = [];
      let last: readonly QueuedPush[] = [];
      for (let i = 0; i < 6; i++) {
        last = await repo.claimDue('w', 200 + i, LEASE, 10, [], last);
        assert.ok(last.length <= 1, 'one push at a time for the device');
        bodies.push(...last.map((p) => `${p.message.body}@${p.message.collapseKey}`));
      }
      assert.deepEqual(bodies, ['a@notify-a', 'b@notify-b', 'e@messages', 'd@notify-d', 'f@notify-f']);
      assert.equal(await repo.pendingCount(), 0);
    });

    test('a success resets the failures; the last success time is rewritten once a minute at most', async () => {
      const r = (await repo.register({ account: 'hal@x', provider: 'fcm', token: 'h1', source: 'native' }, 5, 10)).registration;
      const one = async (body: string, at: number) => {
        await repo.enqueue([push(r.id, 'hal@x', body)], at);
        const [p] = await repo.claimDue('w', at, LEASE, 10, []);
        assert.ok(p, `push ${body} leased`);
        return p;
      };
      await repo.sent([await one('s1', 1_000)], 1_000);
      assert.equal((await repo.get(r.id))?.lastSuccessAt, 1_000);
      await repo.sent([await one('s2', 30_000)], 30_000);
      assert.equal((await repo.get(r.id))?.lastSuccessAt, 1_000, 'within the minute: not rewritten');
      await repo.failed(await one('f1', 40_000), 'HTTP 500', 5, 40_000);
      assert.deepEqual([(await repo.get(r.id))?.failures, (await repo.get(r.id))?.lastError], [1, 'HTTP 500']);
      await repo.sent([await one('s3', 45_000)], 45_000);
      const after = await repo.get(r.id);
      assert.deepEqual([after?.failures, after?.lastError, after?.lastSuccessAt], [0, null, 45_000], 'a success after a failure is written at once');
      await repo.sent([await one('s4', 105_000)], 105_000);
      assert.equal((await repo.get(r.id))?.lastSuccessAt, 105_000, 'a minute later: rewritten');
    });

    test('two claims at once lease a push once, even when both read it before either leased it', async () => {
      const r = (await repo.register({ account: 'joe@x', provider: 'fcm', token: 'j1', source: 'native' }, 5, 10)).registration;
      await repo.enqueue([push(r.id, 'joe@x', 'only')], 100);
      // Hold the database, queue both claims behind it, then let go: on SQLite both read the row before
      // either writes its lease.
      let release!: () => void;
      const held = new Promise<void>((res) => (release = res));
      let holding!: () => void;
      const isHeld = new Promise<void>((res) => (holding = res));
      const hold = d.storage.db.transaction().execute(async () => {
        holding();
        await held;
      });
      await isHeld;
      const claims = Promise.all([repo.claimDue('w1', 200, LEASE, 10, []), repo.claimDue('w2', 200, LEASE, 10, [])]);
      release();
      await hold;
      const [a, b] = await claims;
      assert.deepEqual([...a, ...b].map((p) => p.message.body), ['only'], 'leased by one worker only');
      await repo.prune(r.id);
    });

    test('a claim riding in the enqueue transaction leases what was just queued and takes the sent pushes out, in the same commit', async () => {
      const r1 = (await repo.register({ account: 'ivy@x', provider: 'fcm', token: 'i1', source: 'native' }, 5, 10)).registration;
      const r2 = (await repo.register({ account: 'ivy@x', provider: 'fcm', token: 'i2', source: 'native' }, 5, 10)).registration;
      const results: Array<QueuedPush[] | string> = [];
      let sent: QueuedPush[] = [];
      repo.setClaimRider({
        request: () => ({ worker: 'w', now: 100, leaseMs: LEASE, limit: 10, exclude: [], sent }),
        done: (r) => results.push('claimed' in r ? r.claimed : String(r.error)),
      });
      try {
        await repo.enqueue([push(r1.id, 'ivy@x', 'one'), push(r2.id, 'ivy@x', 'two')], 100);
        assert.equal(results.length, 1, 'the rider was asked once, in the transaction');
        const first = results[0] as QueuedPush[];
        assert.deepEqual(first.map((p) => p.message.body), ['one', 'two']);
        assert.deepEqual(await repo.claimDue('w2', 100, LEASE, 10, []), [], 'leased already');
        // r1 has a push in flight: its next one waits; once `one` is sent, it is leased in the same transaction.
        await repo.enqueue([push(r1.id, 'ivy@x', 'three')], 100);
        assert.deepEqual(results[1], [], 'one push at a time per device');
        sent = [first[0]!];
        await repo.enqueue([push(r2.id, 'ivy@x', 'four', 'other')], 100);
        assert.deepEqual((results[2] as QueuedPush[]).map((p) => p.message.body), ['three']);
        assert.equal(await repo.pendingCount(), 3, '`one` left the queue; two, three and four remain');
      } finally {
        repo.setClaimRider(null);
      }
      for (const id of [r1.id, r2.id]) await repo.prune(id);
    });

    test('with registrations kept in memory, the push path sees every change made through the repository', async () => {
      const cached = pushRepository(d.storage, { cacheAccounts: 2 });
      const tokens = async (account: string) => (await cached.targets(account)).map((r) => `${r.token}${r.away ? ' away' : ''}${r.disabledAt !== null ? ' disabled' : ''}`);
      const e1 = (await cached.register({ account: 'eve@x', provider: 'fcm', token: 'e1', source: 'native' }, 5, 10)).registration;
      assert.deepEqual(await tokens('eve@x'), ['e1']);
      const e2 = (await cached.register({ account: 'eve@x', provider: 'fcm', token: 'e2', source: 'xmpp' }, 5, 11)).registration;
      assert.deepEqual(await tokens('eve@x'), ['e1', 'e2'], 'a new registration');
      assert.deepEqual(await tokens('fay@x'), []);
      await cached.register({ account: 'fay@x', provider: 'fcm', token: 'e1', source: 'native' }, 5, 12);
      assert.deepEqual([await tokens('eve@x'), await tokens('fay@x')], [['e2'], ['e1']], 'a token changing hands leaves its old account');
      await cached.updateXmpp(e2.id, { away: true }, 13);
      assert.deepEqual(await tokens('eve@x'), ['e2 away'], 'an XMPP enable');
      // The worker's read: by the pushes' accounts, from memory or in one query.
      await cached.enqueue([push(e2.id, 'eve@x', 'p1'), push(e1.id, 'fay@x', 'p2')], 20);
      const leased = await cached.claimDue('w', 30, LEASE, 10, []);
      assert.deepEqual((await cached.registrationsOf(leased)).map((r) => r.token).sort(), ['e1', 'e2']);
      const gone = leased.find((p) => p.registrationId === e2.id)!;
      assert.deepEqual(await cached.failed(gone, 'HTTP 400', 1, 40), { failures: 1, disabled: true });
      assert.deepEqual(await tokens('eve@x'), ['e2 away disabled'], 'a registration disabled by its failures');
      await cached.register({ account: 'eve@x', provider: 'fcm', token: 'e2', source: 'xmpp' }, 5, 41);
      assert.deepEqual(await tokens('eve@x'), ['e2'], 'registered again: enabled');
      assert.equal(await cached.unregister('fay@x', { token: 'e1' }), 1);
      assert.deepEqual(await tokens('fay@x'), [], 'unregistered');
      assert.deepEqual((await cached.registrationsOf(leased)).map((r) => r.token), ['e2'], 'the worker no longer finds an unregistered device');
      await cached.prune(e2.id);
      assert.deepEqual(await tokens('eve@x'), [], 'pruned');
      await cached.register({ account: 'gus@x', provider: 'fcm', token: 'g1', source: 'native' }, 5, 50);
      assert.deepEqual(await tokens('gus@x'), ['g1']);
      assert.equal(await cached.removeAccount('gus@x'), 1);
      assert.deepEqual(await tokens('gus@x'), [], 'the account removed');
      assert.equal(await cached.pendingCount(), 0);
    });
  });
}
