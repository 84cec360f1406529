import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient } from 'redis';
import { RedisBus } from '../../src/adapters/redis/redis-bus.js';
import { INDEX, PUT } from '../../src/adapters/redis/scripts.js';
import { isPresenceError } from '../../src/core/errors.js';
import type { ClusterEvent, Delivery, LiveSession } from '../../src/ports/bus.js';
import { startRedis, stopAllPrivateServices, type PrivateRedis } from '../helpers/private-services.js';

/**
 * RedisBus instances side by side in one process on a private Redis, each a node of its own: the
 * registry, routing, leases and fencing, without servers on top (test/integration/cluster*.test.ts
 * has those).
 */

interface Node {
  readonly bus: RedisBus;
  readonly received: Array<{ to: string; d: Delivery; resource: string | null }>;
  readonly events: ClusterEvent[];
  /** What bus.health() said as each event was handed to the engine. */
  readonly healthAt: Array<[ClusterEvent['kind'], string | null]>;
}

let redis: PrivateRedis;
const admins: Array<{ destroy(): void }> = [];

async function adminClient() {
  const c = createClient({ url: redis.url });
  c.on('error', () => {});
  await c.connect();
  admins.push(c);
  return c;
}
let prefixN = 0;
const started: RedisBus[] = [];

async function node(name: string, prefix: string, leaseMs = 1_500): Promise<Node> {
  const bus = await RedisBus.start({ url: redis.url, node: name, leaseMs, prefix });
  started.push(bus);
  const received: Node['received'] = [];
  const events: ClusterEvent[] = [];
  const healthAt: Node['healthAt'] = [];
  bus.onDelivery((to, d, resource) => received.push({ to, d, resource }));
  bus.onCluster((e) => {
    events.push(e);
    healthAt.push([e.kind, bus.health()]);
  });
  return { bus, received, events, healthAt };
}

function live(node: string, resource: string, extra: Partial<LiveSession> = {}): LiveSession {
  return { resource, available: true, show: 'available', status: null, priority: 0, lastActive: 1, protocol: 'native', node, ...extra };
}

async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 8_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const presence = (from: string, n: number): Delivery => ({
  kind: 'presence',
  from,
  presence: { jid: from, online: true, show: 'available', status: `#${n}`, priority: 0, resource: 'r', lastSeen: null },
  session: null,
});

before(async () => {
  redis = await startRedis();
});

after(async () => {
  for (const b of started) await b.close().catch(() => {});
  for (const c of admins) c.destroy();
  await stopAllPrivateServices();
});

describe('registry', () => {
  test('every node sees every session, with versions that grow, and counts cluster-wide', async () => {
    const p = `t${prefixN++}`;
    const a = await node('a', p);
    const b = await node('b', p);
    const r1 = await a.bus.putSession('x@d', live('a', 'phone'));
    assert.deepEqual(r1.sessions, [live('a', 'phone')]);
    assert.ok(r1.version > 0);
    const r2 = await b.bus.putSession('x@d', live('b', 'laptop'));
    assert.deepEqual(new Set(r2.sessions.map((s) => `${s.node}/${s.resource}`)), new Set(['a/phone', 'b/laptop']));
    assert.ok(r2.version > r1.version);
    // B's change came back to A through the feed: A's replica has both, and A's engine heard of it.
    await until('A sees B', async () => (await a.bus.sessionsOf('x@d')).length === 2);
    assert.ok(a.events.some((e) => e.kind === 'sessions' && e.jid === 'x@d' && e.version === r2.version));
    assert.equal(b.events.filter((e) => e.kind === 'sessions' && e.version === r2.version).length, 0, 'a node is not told of its own change');
    assert.deepEqual(await a.bus.counts(), { sessions: 2, accounts: 1 });
    const many = await b.bus.sessionsOfMany(['x@d', 'nobody@d']);
    assert.equal(many.get('x@d')?.length, 2);
    assert.equal(many.has('nobody@d'), false);
    const r3 = await a.bus.removeSession('x@d', 'phone');
    assert.deepEqual(r3.sessions.map((s) => s.resource), ['laptop']);
    assert.ok(r3.version > r2.version);
    await until('B sees the removal', async () => (await b.bus.sessionsOf('x@d')).length === 1);
    assert.deepEqual(await a.bus.accountSessions('x@d'), { sessions: [live('b', 'laptop')], version: r3.version });
  });

  test('a node cannot remove a session another node took over; the old holder is told', async () => {
    const p = `t${prefixN++}`;
    const a = await node('a', p);
    const b = await node('b', p);
    await a.bus.putSession('y@d', live('a', 'desk'));
    await b.bus.putSession('y@d', live('b', 'desk'));
    await until('A told of the takeover', () => a.events.some((e) => e.kind === 'taken-over' && e.jid === 'y@d' && e.resource === 'desk'));
    const after = await a.bus.removeSession('y@d', 'desk');
    assert.deepEqual(after.sessions, [live('b', 'desk')], "A's goodbye leaves B's session alone");
  });
});

describe('deliveries', () => {
  test('reach the node holding the recipient, in order, one batch per destination per tick', async () => {
    const p = `t${prefixN++}`;
    const a = await node('a', p);
    const b = await node('b', p);
    const c = await node('c', p);
    for (let i = 0; i < 300; i++) await b.bus.putSession(`w${i}@d`, live('b', 'r'));
    await c.bus.putSession('v@d', live('c', 'r'));
    await until('A knows every watcher', async () => (await a.bus.counts()).sessions === 301);
    const before = a.bus.stats.batchesSent;
    // One fan-out (one delivery object, 300 recipients on B), then 50 updates to one recipient on C.
    const d = presence('x@d', 0);
    for (let i = 0; i < 300; i++) a.bus.deliver(`w${i}@d`, d);
    for (let n = 1; n <= 50; n++) a.bus.deliver('v@d', presence('x@d', n));
    await until('B got the fan-out', () => b.received.length >= 300);
    await until('C got the 50 updates', () => c.received.length >= 50);
    assert.equal(a.bus.stats.batchesSent - before, 2, 'one batch for B, one for C');
    assert.equal(b.received.length, 300);
    assert.ok(b.received.every((r) => r.d === b.received[0]!.d), 'one object per delivery on the receiving node too');
    assert.deepEqual(
      c.received.map((r) => (r.d as Extract<Delivery, { kind: 'presence' }>).presence.status),
      Array.from({ length: 50 }, (_, i) => `#${i + 1}`),
      'per-recipient order kept',
    );
    // The in-process path: A's deliver hands everything to A's own handler too (the engine keeps what is local).
    assert.equal(a.received.length, 350);
    assert.equal(b.bus.stats.deliveriesReceived, 300);
  });

  test('a delivery for one resource goes only to the node holding it', async () => {
    const p = `t${prefixN++}`;
    const a = await node('a', p);
    const b = await node('b', p);
    const c = await node('c', p);
    await b.bus.putSession('m@d', live('b', 'one'));
    await c.bus.putSession('m@d', live('c', 'two'));
    await until('A sees both', async () => (await a.bus.sessionsOf('m@d')).length === 2);
    a.bus.deliver('m@d', { kind: 'kick', reason: 'x' }, 'two');
    await until('C got it', () => c.received.length === 1);
    assert.equal(c.received[0]!.resource, 'two');
    // A barrier: something B surely gets after anything A sent before.
    a.bus.deliver('m@d', { kind: 'kick', reason: 'barrier' }, 'one');
    await until('B got the barrier', () => b.received.length === 1);
    assert.equal((b.received[0]!.d as { reason: string }).reason, 'barrier');
  });
});

describe('leases and fencing', () => {
  test('a lapsed lease: exactly one node declares the dead node offline; the fenced node cannot write back and joins again', async () => {
    const p = `t${prefixN++}`;
    const a = await node('a', p);
    const b = await node('b', p);
    const c = await node('c', p);
    await c.bus.putSession('u1@d', live('c', 'r'));
    await c.bus.putSession('u2@d', live('c', 'r'));
    await a.bus.putSession('u2@d', live('a', 'other'));
    await until('A sees C', async () => (await a.bus.counts()).sessions === 3);
    // C's lease lapses as if C were paused: its key goes, and C's next renewal is late.
    const admin = await adminClient();
    const ctl = `${p}:{${p}:ctl}`;
    const oldEpoch = ((await admin.hGet(`${ctl}:nodes`, 'c')) ?? '').split(':')[0]!;
    await admin.del(`${ctl}:lease:c`);
    const downs = (n: Node): Array<Extract<ClusterEvent, { kind: 'node-down' }>> => n.events.filter((e): e is Extract<ClusterEvent, { kind: 'node-down' }> => e.kind === 'node-down');
    await until('declared', () => downs(a).length + downs(b).length >= 2);
    const all = [...downs(a), ...downs(b)];
    assert.deepEqual(all.map((e) => e.jid).sort(), ['u1@d', 'u2@d'], 'each account once, by one node');
    assert.ok(downs(a).length === 0 || downs(b).length === 0, 'one node declared');
    const u2 = all.find((e) => e.jid === 'u2@d')!;
    assert.deepEqual(u2.remaining, [live('a', 'other')]);
    assert.deepEqual(u2.removed.map((s) => s.node), ['c']);
    assert.deepEqual(await a.bus.sessionsOf('u1@d'), []);
    // C finds out, drops everything (the engine closes its connections) and joins again under a new epoch.
    await until('C fenced', () => c.events.some((e) => e.kind === 'fenced'));
    await until('C joined again', () => c.events.some((e) => e.kind === 'resynced'), 10_000);
    assert.equal(c.bus.stats.fenced, 1);
    // Its health check said so while it dropped its sessions (a load balancer stops sending it clients), and is good again.
    assert.match(c.healthAt.find(([k]) => k === 'fenced')?.[1] ?? '', /declared down/);
    assert.equal(c.healthAt.find(([k]) => k === 'resynced')?.[1], null);
    assert.equal(c.bus.health(), null);
    const newEpoch = ((await admin.hGet(`${ctl}:nodes`, 'c')) ?? '').split(':')[0]!;
    assert.ok(Number(newEpoch) > Number(oldEpoch));
    // A write still carrying the dead epoch (a late one from the paused process) is refused by the
    // scripts themselves: the account's fence and the index's lease check.
    const entry = JSON.stringify({ ...live('c', 'r'), epoch: Number(oldEpoch) });
    const put = await admin.sendCommand(['EVAL', PUT, '2', `${p}:a:{u1@d}:s`, `${p}:a:{u1@d}:m`, 'c', oldEpoch, 'r', entry, 'u1@d', `${p}:feed`, '60000', 'update']);
    assert.deepEqual(put, [-1]);
    const indexed = await admin.sendCommand(['EVAL', INDEX, '2', `${ctl}:lease:c`, `${ctl}:idx:c|${oldEpoch}`, oldEpoch, 'u9@d', 'add']);
    assert.equal(indexed, 0);
    assert.deepEqual(await b.bus.sessionsOf('u1@d'), []);
    // Under its new epoch C works as any node.
    await c.bus.putSession('u3@d', live('c', 'new'));
    await until('A sees the new session', async () => (await a.bus.sessionsOf('u3@d')).length === 1);
  });

  test('a graceful close removes the node at once: nobody declares it down', async () => {
    const p = `t${prefixN++}`;
    const a = await node('a', p);
    const b = await node('b', p, 600);
    await b.bus.putSession('g@d', live('b', 'r'));
    await b.bus.removeSession('g@d', 'r');
    await b.bus.close();
    const admin = await adminClient();
    assert.equal(await admin.exists(`${p}:{${p}:ctl}:lease:b`), 0);
    assert.equal(await admin.hExists(`${p}:{${p}:ctl}:nodes`, 'b'), 0);
    // Two of its lease periods later, still nobody declared it.
    const t = Date.now();
    await until('time passes', () => Date.now() - t > 1_300);
    assert.equal(a.events.filter((e) => e.kind === 'node-down').length, 0);
  });

  test('two processes with one node_id: the second is refused with a clear error', async () => {
    const p = `t${prefixN++}`;
    await node('same', p, 400);
    await assert.rejects(RedisBus.start({ url: redis.url, node: 'same', leaseMs: 400, prefix: p }), /node_id "same" is held by a live node/);
  });
});

describe('Redis outages', () => {
  test('while Redis is down new sessions are refused and goodbyes are kept; after a restart (empty) every node registers again', async () => {
    const p = `t${prefixN++}`;
    const a = await node('a', p, 3_000);
    const b = await node('b', p, 3_000);
    await a.bus.putSession('o1@d', live('a', 'r'));
    await a.bus.putSession('o2@d', live('a', 'r'));
    await b.bus.putSession('o3@d', live('b', 'r'));
    await until('B sees A', async () => (await b.bus.counts()).sessions === 3);
    await redis.stop();
    await until('A noticed', () => a.bus.stats.connected === 0);
    assert.match(a.bus.health() ?? '', /Redis is unreachable/);
    await a.bus.putSession('new@d', live('a', 'r')).then(
      () => assert.fail('registered a new session without Redis'),
      (e: unknown) => assert.ok(isPresenceError(e) && e.code === 'unavailable', String(e)),
    );
    // A goodbye while Redis is down: applied here at once, registered when Redis is back.
    const gone = await a.bus.removeSession('o2@d', 'r');
    assert.deepEqual(gone.sessions, []);
    await redis.start();
    await until('A rebuilt', () => a.events.some((e) => e.kind === 'resynced'), 15_000);
    await until('B rebuilt', () => b.events.some((e) => e.kind === 'resynced'), 15_000);
    assert.equal(a.bus.health(), null);
    const resynced = a.events.find((e): e is Extract<ClusterEvent, { kind: 'resynced' }> => e.kind === 'resynced')!;
    assert.ok(resynced.refresh.includes('o2@d'), 'the account changed during the outage is announced again');
    // Redis came back empty: both nodes registered their sessions again; the goodbye holds.
    for (const n of [a, b]) {
      await until('registry rebuilt', async () => (await n.bus.counts()).sessions === 2);
      assert.deepEqual((await n.bus.sessionsOf('o1@d')).map((s) => s.node), ['a']);
      assert.deepEqual((await n.bus.sessionsOf('o3@d')).map((s) => s.node), ['b']);
      assert.deepEqual(await n.bus.sessionsOf('o2@d'), []);
    }
    // And nobody was declared dead: the nodes kept their epochs.
    assert.equal([...a.events, ...b.events].filter((e) => e.kind === 'node-down' || e.kind === 'fenced').length, 0);
    await a.bus.putSession('new@d', live('a', 'r'));
  });

  test('a node that dies while Redis is down and comes back empty: its sessions are still declared offline, once', async () => {
    const p = `t${prefixN++}`;
    const a = await node('a', p, 1_500);
    const b = await node('b', p, 1_500);
    const c = await node('c', p, 1_500);
    await c.bus.putSession('lost1@d', live('c', 'r'));
    await c.bus.putSession('lost2@d', live('c', 'r'));
    await a.bus.putSession('lost2@d', live('a', 'kept'));
    await until('A and B see C', async () => (await a.bus.counts()).sessions === 3 && (await b.bus.counts()).sessions === 3);
    await redis.stop();
    // C dies during the outage (no goodbye reaches Redis), and Redis comes back without any data.
    await c.bus.close();
    await redis.start();
    // Done when the incarnation is recorded as reaped (then no node adopts it again).
    const admin = await adminClient();
    await until('reaped', async () => (await admin.zCard(`${p}:{${p}:ctl}:reaped`)) === 1, 15_000);
    const downs = [...a.events, ...b.events].filter((e): e is Extract<ClusterEvent, { kind: 'node-down' }> => e.kind === 'node-down');
    assert.deepEqual(downs.map((e) => e.jid).sort(), ['lost1@d', 'lost2@d'], 'each account once');
    assert.ok(downs.every((e) => e.removed.length === 1 && e.removed[0]!.node === 'c'));
    assert.deepEqual(downs.find((e) => e.jid === 'lost2@d')!.remaining.map((s) => s.resource), ['kept']);
    assert.ok(
      a.events.filter((e) => e.kind === 'node-down').length === 0 || b.events.filter((e) => e.kind === 'node-down').length === 0,
      'one node declared',
    );
    assert.deepEqual(await b.bus.sessionsOf('lost1@d'), []);
  });
});
