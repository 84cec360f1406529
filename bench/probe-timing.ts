/**
 * Cold-probe timing of the anonymous status endpoint (issue 10, finding 6): the first question about a
 * hidden account that is online must take as long as the first question about a JID that never existed.
 * Starts a server in-process, logs N hidden accounts in, then probes each hidden account and a fresh
 * unknown JID once, alternating, over one keep-alive connection, and prints both medians. Run by hand:
 *
 *   npx tsx bench/probe-timing.ts [N]
 *
 * Measured 2026-11-29 (N=150, loopback, shared 2-core machine): before the fix 0.222 ms (hidden, online)
 * against 0.391 ms (unknown); after it 0.246 ms against 0.248 ms. The suite checks the cause instead of
 * the time (test/integration/http-hardening.test.ts, finding 6: no account load for either).
 */
import { Agent, request } from 'node:http';
import { startTestServer } from '../test/helpers/server.js';
import { TestClient } from '../test/helpers/ws-client.js';

const N = Number(process.argv[2] ?? 150);
const t = await startTestServer();
const clients: TestClient[] = [];
for (let i = 0; i < N; i++) {
  await t.createAccount(`hidden${i}@localhost`);
  clients.push((await TestClient.login(t.wsUrl, `hidden${i}@localhost`)).client);
}
const agent = new Agent({ keepAlive: true, maxSockets: 1 });
const port = new URL(t.url).port;
const probe = (jid: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    request({ host: '127.0.0.1', port, path: `/plugins/presence/status?jid=${jid}&type=text`, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(Number(process.hrtime.bigint() - start) / 1e6));
    })
      .on('error', reject)
      .end();
  });
for (let i = 0; i < 20; i++) await probe(`warm-up-${i}@localhost`);
const hidden: number[] = [];
const unknown: number[] = [];
for (let i = 0; i < N; i++) {
  hidden.push(await probe(`hidden${i}@localhost`));
  unknown.push(await probe(`never-${i}@localhost`));
}
const median = (x: number[]): string => (x.sort((a, b) => a - b)[x.length >> 1] as number).toFixed(3);
console.log(`cold probes, median of ${N}: hidden and online ${median(hidden)} ms, never existed ${median(unknown)} ms`);
for (const c of clients) await c.close();
await t.destroy();
agent.destroy();
