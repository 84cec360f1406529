/**
 * Rough figures behind the routing choice of the Redis bus (docs/cluster.md, "Live state and routing
 * on Redis"), on a private Redis: fan-out through the in-process bus, the same fan-out from one Redis
 * bus node to another (replicated registry, one stream entry per destination per tick), what the same
 * fan-out would cost with a Redis round trip per recipient to find its node, and the latency of a
 * registry write (script + the change coming back through the feed). Run by hand:
 *
 *   npx tsx bench/cluster-bus-bench.ts --watchers 2000 --rounds 100
 */
import { parseArgs } from 'node:util';
import { createClient } from 'redis';
import { MemoryBus } from '../src/adapters/memory/memory-bus.js';
import { RedisBus } from '../src/adapters/redis/redis-bus.js';
import type { Delivery, LiveSession } from '../src/ports/bus.js';
import { startRedis, stopAllPrivateServices } from '../test/helpers/private-services.js';

const { values: args } = parseArgs({
  options: {
    watchers: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '100' },
    writes: { type: 'string', default: '2000' },
  },
});
const WATCHERS = Number(args.watchers);
const ROUNDS = Number(args.rounds);
const WRITES = Number(args.writes);

const live = (node: string, resource: string): LiveSession => ({ resource, available: true, show: 'available', status: null, priority: 0, lastActive: 1, protocol: 'native', node });
const delivery = (n: number): Delivery => ({
  kind: 'presence',
  from: 'someone@d',
  presence: { jid: 'someone@d', online: true, show: 'available', status: `#${n}`, priority: 0, resource: 'r', lastSeen: null },
  session: null,
});
const rate = (n: number, ms: number): string => `${Math.round((n / ms) * 1000).toLocaleString('en')}/s`;

async function main(): Promise<void> {
  const redis = await startRedis();
  const watchers = Array.from({ length: WATCHERS }, (_, i) => `w${i}@d`);
  try {
    // 1. In-process.
    const mem = new MemoryBus();
    let memGot = 0;
    mem.onDelivery(() => memGot++);
    for (const w of watchers) await mem.putSession(w, live('local', 'r'));
    let t = performance.now();
    for (let r = 0; r < ROUNDS; r++) {
      const d = delivery(r);
      for (const w of watchers) mem.deliver(w, d);
    }
    const memMs = performance.now() - t;
    console.log(`in-process bus: ${memGot} deliveries in ${memMs.toFixed(0)} ms = ${rate(memGot, memMs)}`);

    // 2. Node A fans out to watchers whose sessions are on node B.
    const a = await RedisBus.start({ url: redis.url, node: 'a', leaseMs: 5_000, prefix: 'bench' });
    const b = await RedisBus.start({ url: redis.url, node: 'b', leaseMs: 5_000, prefix: 'bench' });
    let got = 0;
    let done: () => void = () => {};
    b.onDelivery(() => {
      if (++got === WATCHERS * ROUNDS) done();
    });
    a.onDelivery(() => {});
    const wt = performance.now();
    for (const w of watchers) await b.putSession(w, live('b', 'r'));
    const writeMs = performance.now() - wt;
    while ((await a.counts()).sessions < WATCHERS) await new Promise((r) => setTimeout(r, 10));
    const all = new Promise<void>((resolve) => (done = resolve));
    t = performance.now();
    for (let r = 0; r < ROUNDS; r++) {
      const d = delivery(r);
      for (const w of watchers) a.deliver(w, d);
      // One fan-out per tick, as changes arrive from clients.
      await new Promise((resolve) => setImmediate(resolve));
    }
    await all;
    const crossMs = performance.now() - t;
    console.log(`cross-node (A -> B): ${got} deliveries in ${crossMs.toFixed(0)} ms = ${rate(got, crossMs)}; ${a.stats.batchesSent} batches`);
    console.log(`registry writes (script + echo), one at a time: ${WATCHERS} in ${writeMs.toFixed(0)} ms = ${(writeMs / WATCHERS).toFixed(3)} ms each`);

    // 3. The alternative: ask Redis where each recipient is, one round trip per recipient.
    const c = createClient({ url: redis.url });
    await c.connect();
    t = performance.now();
    const rounds = Math.max(1, Math.floor(ROUNDS / 20));
    for (let r = 0; r < rounds; r++) for (const w of watchers) await c.hGetAll(`bench:a:{${w}}:s`);
    const rtMs = (performance.now() - t) / rounds;
    console.log(`a round trip per recipient: one fan-out to ${WATCHERS} takes ${rtMs.toFixed(0)} ms (${rate(WATCHERS, rtMs)}), before anything is delivered`);
    t = performance.now();
    for (let r = 0; r < rounds; r++) await Promise.all(watchers.map((w) => c.hGetAll(`bench:a:{${w}}:s`)));
    const plMs = (performance.now() - t) / rounds;
    console.log(`the same lookups pipelined: one fan-out to ${WATCHERS} takes ${plMs.toFixed(0)} ms of Redis work`);
    c.destroy();

    // 4. Registry writes in parallel (many sessions changing at once).
    t = performance.now();
    await Promise.all(Array.from({ length: WRITES }, (_, i) => a.putSession(`p${i}@d`, live('a', 'r'))));
    const parMs = performance.now() - t;
    console.log(`registry writes in parallel: ${WRITES} in ${parMs.toFixed(0)} ms = ${rate(WRITES, parMs)}`);
    await a.close();
    await b.close();
  } finally {
    await stopAllPrivateServices();
  }
}

await main();
