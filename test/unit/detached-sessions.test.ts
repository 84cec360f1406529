import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { MemoryBus } from '../../src/adapters/memory/memory-bus.js';
import { encodeEntry, liveOf, toSessions } from '../../src/adapters/redis/wire.js';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.js';
import { PresenceEngine, type SessionSink } from '../../src/engine/engine.js';
import type { Delivery, LiveSession } from '../../src/ports/bus.js';

/**
 * A session whose connection is lost but which waits out its grace period is marked `detached` in the
 * registry (LiveSession.detached): other nodes of a cluster cannot look at the connection, and the push
 * policy must not take such a session as reachable. Coming back clears it; watchers see nothing of either.
 */

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'presenced-detached-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

class Sink implements SessionSink {
  readonly deliveries: Delivery[] = [];
  lastReceived = Date.now();
  deliver(d: Delivery): void {
    this.deliveries.push(d);
  }
  close(): void {}
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('detached sessions in the registry', () => {
  test('a lost connection marks its session detached while it lingers; coming back clears it; watchers see nothing', async () => {
    const store = SqliteStore.open({ path: path.join(root, 'detached.sqlite') });
    await store.migrate();
    const bus = new MemoryBus();
    const engine = new PresenceEngine(store, bus, { domains: ['localhost'], gracePeriodMs: 60_000, defaultPublicPresence: true, tokenSecret: Buffer.alloc(32, 7), checkpointMs: 0 });
    for (const jid of ['u@localhost', 'w@localhost']) await store.createAccount({ jid, passwordHash: 'x', scramSha1: null, scramSha256: null, createdAt: 1 });
    await engine.subscription('w@localhost', 'u@localhost', 'subscribe');
    await engine.subscription('u@localhost', 'w@localhost', 'subscribed');
    const watcher = new Sink();
    await engine.openSession('w@localhost', 'w', 'native', watcher, { show: 'available' });
    const phone = new Sink();
    const session = await engine.openSession('u@localhost', 'phone', 'native', phone, { show: 'chat', status: 'here' });
    await engine.openSession('u@localhost', 'laptop', 'native', new Sink(), { show: 'available' });
    const detachedOf = async (resource: string) => (await bus.sessionsOf('u@localhost')).find((s) => s.resource === resource)?.detached;
    assert.equal(await detachedOf('phone'), undefined);
    const seen = watcher.deliveries.length;

    engine.detach(session, phone, { grace: true, reason: 'timeout' });
    await until('the phone marked detached', async () => (await detachedOf('phone')) === true);
    assert.equal(await detachedOf('laptop'), undefined, 'the other session is untouched');
    assert.equal((await engine.presenceOf('u@localhost')).online, true, 'still online while it lingers');

    const back = new Sink();
    await engine.openSession('u@localhost', 'phone', 'native', back, null);
    assert.equal(await detachedOf('phone'), undefined, 'cleared when the client came back');
    await engine.idle();
    assert.equal(watcher.deliveries.length, seen, 'watchers were told nothing');
    await engine.shutdown();
    store.close();
  });

  test('the flag crosses Redis in the registry entry, and a malformed one is skipped', () => {
    const s: LiveSession = { resource: 'r', available: true, show: 'away', status: null, priority: 0, lastActive: 5, protocol: 'xmpp', node: 'n1', detached: true };
    const { detached: _, ...plain } = s;
    assert.deepEqual(toSessions([encodeEntry(s, '7')]).map(liveOf), [s]);
    assert.deepEqual(toSessions([encodeEntry(plain, '7')]).map(liveOf), [plain]);
    assert.equal('detached' in (liveOf(toSessions([encodeEntry(plain, '7')])[0]!)), false);
    const bad = JSON.stringify({ ...JSON.parse(encodeEntry(plain, '7')), detached: 'yes' });
    assert.deepEqual(toSessions([bad]), []);
  });
});
