import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { MemoryBus } from '../../src/adapters/memory/memory-bus.js';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.js';
import type { LeaveReason, PresenceEvents } from '../../src/core/events.js';
import { PresenceEngine, type SessionSink } from '../../src/engine/engine.js';
import type { Delivery } from '../../src/ports/bus.js';

/**
 * The engine's presence truth, driven through its public API with a real SQLite store and the
 * in-process bus: last seen is when a client was last heard, an unavailable status is the last status,
 * every query answers from one rule, and a crash leaves enough behind to tell the truth after it.
 * The sink below is a protocol front door reduced to what the engine sees of one: it is the test's client.
 */

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'presenced-truth-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;

class Sink implements SessionSink {
  readonly deliveries: Delivery[] = [];
  readonly closed: string[] = [];
  constructor(public lastReceived: number) {}
  deliver(d: Delivery): void {
    this.deliveries.push(d);
  }
  close(reason: string): void {
    this.closed.push(reason);
  }
}

interface Rig {
  engine: PresenceEngine;
  store: SqliteStore;
  file: string;
  clock: { now: number };
}

async function rig(opts: { file?: string; gracePeriodMs?: number; accounts?: string[] } = {}): Promise<Rig> {
  const file = opts.file ?? path.join(root, `${++n}.sqlite`);
  const store = SqliteStore.open({ path: file });
  await store.migrate();
  const clock = { now: 1_000_000 };
  const engine = new PresenceEngine(store, new MemoryBus(), {
    domains: ['localhost'],
    gracePeriodMs: opts.gracePeriodMs ?? 0,
    defaultPublicPresence: true,
    tokenSecret: Buffer.alloc(32, 7),
    checkpointMs: 0, // checkpoints are taken by hand with checkpointNow()
    now: () => clock.now,
  });
  for (const jid of opts.accounts ?? []) {
    if (!(await store.getAccount(jid))) await store.createAccount({ jid, passwordHash: 'x', scramSha1: null, scramSha256: null, createdAt: 1 });
  }
  return { engine, store, file, clock };
}

function next<K extends keyof PresenceEvents>(engine: PresenceEngine, event: K, pred: (e: PresenceEvents[K]) => boolean = () => true): Promise<PresenceEvents[K]> {
  return new Promise((resolve) => {
    const off = engine.events.on(event, (e) => {
      if (!pred(e)) return;
      off();
      resolve(e);
    });
  });
}

const offline = (engine: PresenceEngine, jid: string) => next(engine, 'presence.changed', (e) => e.jid === jid && !e.presence.online);

describe('last seen is when the client was last heard', () => {
  test('a lost connection: last seen is its last frame, not the moment the loss was noticed', async () => {
    const { engine, store, clock } = await rig({ accounts: ['a@localhost'] });
    const sink = new Sink(clock.now);
    const s = await engine.openSession('a@localhost', 'phone', 'native', sink, { status: 'here' });
    sink.lastReceived = clock.now + 2_000; // its last frame
    clock.now += 60_000; // the idle sweep notices a minute later
    const closed = next(engine, 'session.closed');
    const off = offline(engine, 'a@localhost');
    engine.detach(s, sink, { grace: true, reason: 'timeout' });
    assert.equal((await closed).reason, 'timeout');
    const p = (await off).presence;
    assert.equal(p.lastSeen, 1_002_000);
    assert.equal(p.status, 'here');
    assert.deepEqual(await store.getLastSeen('a@localhost'), { at: 1_002_000, status: 'here' });
  });

  test('a goodbye: last seen is the time of the goodbye', async () => {
    const { engine, clock } = await rig({ accounts: ['a@localhost'] });
    const sink = new Sink(clock.now);
    const s = await engine.openSession('a@localhost', 'phone', 'native', sink, {});
    clock.now += 30_000;
    const off = offline(engine, 'a@localhost');
    const closed = next(engine, 'session.closed');
    engine.detach(s, sink, { grace: false, reason: 'graceful' });
    assert.equal((await off).presence.lastSeen, 1_030_000);
    assert.equal((await closed).reason, 'graceful');
  });

  test('several sessions: the account was last seen when any of them was last heard', async () => {
    const { engine, clock } = await rig({ accounts: ['a@localhost'] });
    const laptop = new Sink(clock.now);
    const phone = new Sink(clock.now);
    const sl = await engine.openSession('a@localhost', 'laptop', 'native', laptop, {});
    const sp = await engine.openSession('a@localhost', 'phone', 'native', phone, {});
    laptop.lastReceived = clock.now + 3_000;
    phone.lastReceived = clock.now + 1_500;
    clock.now += 20_000;
    const laptopGone = next(engine, 'session.closed', (e) => e.session.resource === 'laptop');
    engine.detach(sl, laptop, { grace: true, reason: 'timeout' });
    await laptopGone;
    assert.equal((await engine.presenceOf('a@localhost')).online, true);
    clock.now += 20_000;
    const off = offline(engine, 'a@localhost');
    engine.detach(sp, phone, { grace: true, reason: 'timeout' });
    assert.equal((await off).presence.lastSeen, 1_003_000);
  });

  test('a contact going offline because its last session ended is told why', async () => {
    const { engine, clock } = await rig({ accounts: ['a@localhost', 'w@localhost'] });
    await engine.subscription('w@localhost', 'a@localhost', 'subscribe');
    await engine.subscription('a@localhost', 'w@localhost', 'subscribed');
    const watcher = new Sink(clock.now);
    await engine.openSession('w@localhost', 'desk', 'native', watcher, {});
    const sink = new Sink(clock.now);
    const s = await engine.openSession('a@localhost', 'phone', 'native', sink, {});
    await engine.setPresence(s, { show: 'away' });
    const off = offline(engine, 'a@localhost');
    engine.detach(s, sink, { grace: true, reason: 'timeout' });
    await off;
    const pushes = watcher.deliveries.filter((d) => d.kind === 'presence' && d.from === 'a@localhost');
    const last = pushes.at(-1);
    assert.ok(last && last.kind === 'presence');
    assert.equal(last.presence.online, false);
    assert.equal(last.reason, 'timeout');
    // Changes while online carry no reason.
    assert.ok(pushes.slice(0, -1).every((d) => d.kind === 'presence' && d.reason === undefined));
  });
});

describe('an unavailable presence and a connected-but-unavailable account', () => {
  test('the unavailable status is the last status (RFC 6121, XEP-0012 §3), not the previous available one', async () => {
    const { engine, store, clock } = await rig({ accounts: ['a@localhost'] });
    const sink = new Sink(clock.now);
    const s = await engine.openSession('a@localhost', 'r', 'xmpp', sink, { status: 'working' });
    clock.now += 5_000;
    const off = offline(engine, 'a@localhost');
    await engine.setUnavailable(s, 'gone for the weekend');
    const p = (await off).presence;
    assert.deepEqual([p.status, p.lastSeen], ['gone for the weekend', 1_005_000]);
    assert.deepEqual(await store.getLastSeen('a@localhost'), { at: 1_005_000, status: 'gone for the weekend' });
  });

  test('an unavailable presence without status leaves no status', async () => {
    const { engine, clock } = await rig({ accounts: ['a@localhost'] });
    const s = await engine.openSession('a@localhost', 'r', 'xmpp', new Sink(clock.now), { status: 'working' });
    await engine.setUnavailable(s, null);
    assert.equal((await engine.presenceOf('a@localhost')).status, null);
  });

  test('every query gives the same last seen and status for an account whose only session is unavailable', async () => {
    const { engine, clock } = await rig({ accounts: ['a@localhost', 'b@localhost'] });
    const s = await engine.openSession('a@localhost', 'r', 'xmpp', new Sink(clock.now), { status: 'working' });
    clock.now += 7_000;
    await engine.setUnavailable(s, 'brb');
    const admin = await engine.presenceOf('a@localhost');
    assert.deepEqual([admin.online, admin.status, admin.lastSeen], [false, 'brb', 1_007_000]);
    // The HTTP presence API reads the engine's cached state; the admin API, snapshots and XEP-0012 presenceOf.
    assert.deepEqual(await engine.visiblePresence(null, 'a@localhost'), admin);
    assert.deepEqual((await engine.presenceOfMany(['a@localhost', 'b@localhost'])).get('a@localhost'), admin);
  });

  test('an account that connects unavailable shows its stored last seen (state not cached before)', async () => {
    const first = await rig({ accounts: ['a@localhost'] });
    await first.store.setLastSeen('a@localhost', { at: 42_000, status: 'earlier' });
    const sink = new Sink(first.clock.now);
    await first.engine.openSession('a@localhost', 'r', 'native', sink, null);
    const p = await first.engine.presenceOf('a@localhost');
    assert.deepEqual([p.online, p.status, p.lastSeen], [false, 'earlier', 42_000]);
    assert.deepEqual(await first.engine.visiblePresence(null, 'a@localhost'), p);
  });
});

describe('crash truth: the presence checkpoint', () => {
  test('a checkpoint writes the online accounts, then only what changed, and forgets accounts gone offline', async () => {
    const { engine, store, clock } = await rig({ accounts: ['a@localhost', 'b@localhost'] });
    await engine.start();
    const counts: Array<[number, number]> = [];
    engine.onCheckpoint = (w, d) => counts.push([w, d]);
    const a = new Sink(clock.now + 10);
    const b = new Sink(clock.now + 20);
    await engine.openSession('a@localhost', 'r', 'native', a, { status: 'A' });
    const sb = await engine.openSession('b@localhost', 'r', 'native', b, { status: 'B' });
    await engine.openSession('a@localhost', 'idle', 'native', new Sink(0), null); // unavailable: not heard as online
    await engine.checkpointNow();
    assert.deepEqual(await store.getPresenceCheckpoints(), [
      { jid: 'a@localhost', onlineSince: 1_000_000, lastHeard: 1_000_010, status: 'A' },
      { jid: 'b@localhost', onlineSince: 1_000_000, lastHeard: 1_000_020, status: 'B' },
    ]);
    await engine.checkpointNow();
    a.lastReceived += 5_000;
    await engine.checkpointNow();
    const off = offline(engine, 'b@localhost');
    engine.detach(sb, b, { grace: false, reason: 'graceful' });
    await off;
    await engine.checkpointNow();
    assert.deepEqual(counts, [[2, 0], [1, 0], [0, 1]], 'nothing is written when nothing changed');
    assert.deepEqual(await store.getPresenceCheckpoints(), [{ jid: 'a@localhost', onlineSince: 1_000_000, lastHeard: 1_005_010, status: 'A' }]);
  });

  test('after an unclean stop, accounts online at the crash get their last activity as last seen, with their last status', async () => {
    const before = await rig({ accounts: ['old@localhost', 'new@localhost', 'left@localhost'] });
    await before.engine.start();
    await before.store.setLastSeen('old@localhost', { at: 5_000, status: 'a while ago' });
    const old = new Sink(before.clock.now);
    const fresh = new Sink(before.clock.now);
    const left = new Sink(before.clock.now);
    await before.engine.openSession('old@localhost', 'r', 'native', old, { status: 'old one' });
    await before.engine.openSession('new@localhost', 'r', 'native', fresh, { show: 'dnd', status: 'first time' });
    const sl = await before.engine.openSession('left@localhost', 'r', 'native', left, {});
    old.lastReceived = before.clock.now + 4_000;
    fresh.lastReceived = before.clock.now + 6_000;
    await before.engine.checkpointNow();
    // `left` goes offline after the checkpoint: its row is stale, its last seen already the truth.
    before.clock.now += 9_000;
    const off = offline(before.engine, 'left@localhost');
    before.engine.detach(sl, left, { grace: false, reason: 'graceful' });
    await off;
    // The process dies here: no shutdown. A new process opens the same file.
    const after = await rig({ file: before.file });
    after.clock.now = before.clock.now + 60_000;
    const recovered = await after.engine.start();
    assert.deepEqual(
      recovered.map((r) => [r.jid, r.lastSeen.at, r.lastSeen.status, r.reason]),
      [
        ['new@localhost', 1_006_000, 'first time', 'crash-recovery'],
        ['old@localhost', 1_004_000, 'old one', 'crash-recovery'],
      ],
    );
    const p = await after.engine.presenceOfMany(['old@localhost', 'new@localhost', 'left@localhost']);
    assert.deepEqual([p.get('old@localhost')?.online, p.get('old@localhost')?.lastSeen, p.get('old@localhost')?.status], [false, 1_004_000, 'old one']);
    assert.deepEqual([p.get('new@localhost')?.online, p.get('new@localhost')?.lastSeen, p.get('new@localhost')?.status], [false, 1_006_000, 'first time']);
    assert.equal(p.get('left@localhost')?.lastSeen, 1_009_000);
    assert.deepEqual(await after.store.getPresenceCheckpoints(), []);
    assert.deepEqual(await after.engine.start(), [], 'start runs once');
  });

  test('a clean shutdown writes last seen, ends sessions with reason shutdown, and leaves no checkpoint', async () => {
    const { engine, store, clock } = await rig({ accounts: ['a@localhost'] });
    await engine.start();
    const sink = new Sink(clock.now);
    await engine.openSession('a@localhost', 'r', 'native', sink, { status: 'on' });
    await engine.checkpointNow();
    assert.equal((await store.getPresenceCheckpoints()).length, 1);
    const reasons: string[] = [];
    engine.events.on('session.closed', (e) => reasons.push(e.reason));
    clock.now += 1_000;
    await engine.shutdown();
    assert.deepEqual(reasons, ['shutdown']);
    assert.deepEqual(sink.closed, ['shutdown']);
    assert.deepEqual(await store.getLastSeen('a@localhost'), { at: 1_001_000, status: 'on' });
    assert.deepEqual(await store.getPresenceCheckpoints(), []);
  });

  test('deleting an account removes its checkpoint row, so a re-created account inherits nothing', async () => {
    const { engine, store, clock } = await rig({ accounts: ['a@localhost'] });
    await engine.start();
    await engine.openSession('a@localhost', 'r', 'native', new Sink(clock.now), {});
    await engine.checkpointNow();
    assert.equal(await engine.deleteAccount('a@localhost'), true);
    assert.deepEqual(await store.getPresenceCheckpoints(), []);
  });
});
