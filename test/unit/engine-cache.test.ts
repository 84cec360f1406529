import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { MemoryBus } from '../../src/adapters/memory/memory-bus.js';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.js';
import { PresenceEngine, type SessionSink } from '../../src/engine/engine.js';
import type { Delivery } from '../../src/ports/bus.js';

/**
 * The engine keeps at most `cacheSize` account states that have no session here. A login storm with
 * more accounts than that must not evict a state between its loading and its session being added:
 * the session would live on an orphaned copy and every later change would answer "session has ended".
 */

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'presenced-cache-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

class Sink implements SessionSink {
  readonly deliveries: Delivery[] = [];
  lastReceived = Date.now();
  deliver(d: Delivery): void {
    this.deliveries.push(d);
  }
  close(): void {}
}

describe('engine account cache', () => {
  test('a login storm larger than the cache leaves every session usable', async () => {
    const store = SqliteStore.open({ path: path.join(root, 'storm.sqlite') });
    await store.migrate();
    const engine = new PresenceEngine(store, new MemoryBus(), {
      domains: ['localhost'],
      gracePeriodMs: 0,
      defaultPublicPresence: true,
      tokenSecret: Buffer.alloc(32, 7),
      checkpointMs: 0,
      cacheSize: 5,
    });
    const jids = Array.from({ length: 60 }, (_, i) => `u${i}@localhost`);
    for (const jid of jids) await store.createAccount({ jid, passwordHash: 'x', scramSha1: null, scramSha256: null, createdAt: 1 });

    const sessions = await Promise.all(jids.map((jid) => engine.openSession(jid, 'r', 'native', new Sink(), { show: 'available' })));
    const results = await Promise.allSettled(sessions.map((s) => engine.setPresence(s, { show: 'away', status: 'later' })));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [`${jids[i]}: ${String(r.reason)}`] : []));
    assert.deepEqual(failed, [], 'every session opened in the storm can change its presence');
    for (const jid of jids) {
      const p = await engine.presenceOf(jid);
      assert.equal(p.show, 'away', `${jid} is away as its session said`);
    }
    await engine.shutdown();
    store.close();
  });
});
