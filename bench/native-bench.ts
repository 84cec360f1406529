/**
 * Native-protocol benchmark: N clients, each a mutual contact of its K ring neighbours, changing
 * presence; measures deliveries per second in a burst, delivery latency at a paced rate, and the
 * server's memory per idle session. Run by hand (see docs/benchmarks.md), never in CI:
 *
 *   ulimit -n 20000
 *   taskset -c 1 npx tsx bench/native-bench.ts --clients 1000 --contacts 20
 *
 * The server runs as its own process pinned to core 0 (`taskset -c 0`); this generator should run on
 * the other core. Accounts and rosters are written straight into a fresh data directory before the
 * server starts, and clients log in with tokens signed with the same secret, so setup does not spend
 * minutes hashing passwords.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { WebSocket } from 'ws';
import { SqliteStore } from '../src/adapters/sqlite/sqlite-store.js';
import type { RosterItem } from '../src/core/roster.js';
import { deriveCredentials } from '../src/engine/credentials.js';
import { accountGeneration, issueToken } from '../src/engine/tokens.js';

/** Tokens are bound to the account's password hash (all bench accounts share one); set when the accounts are made. */
let accountGen = '';

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '1000' },
    contacts: { type: 'string', default: '20' },
    'burst-changes': { type: 'string', default: '5' },
    'paced-rate': { type: 'string', default: '10000' },
    'paced-seconds': { type: 'string', default: '10' },
    'memory-sessions': { type: 'string', default: '10000' },
    'server-cpu': { type: 'string', default: '0' },
    'server-node-args': { type: 'string', default: '' },
    'idle-seconds': { type: 'string', default: '30' },
    'memory-only': { type: 'boolean', default: false },
    // An extension loaded in the server (docs/extensions.md): none, fast (returns at once) or slow (sleeps 100 ms per event).
    extension: { type: 'string', default: 'none' },
  },
});
// The generator is the measuring instrument: pinned to one core, its own parallel-scavenge pauses would
// be counted as delivery latency (the server turns the same flag off for itself, see runtime-tuning.ts).
if (availableParallelism() === 1) setFlagsFromString('--no-parallel-scavenge');

const N = Number(args.clients);
const K = Number(args.contacts);
const SECRET = 'bench-secret-bench-secret-bench-secret';
const domain = 'localhost';
const jidOf = (i: number): string => `u${i}@${domain}`;

async function prepareData(dir: string, accounts: number, contacts: number): Promise<void> {
  const store = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await store.migrate();
  const creds = await deriveCredentials('bench');
  accountGen = accountGeneration(Buffer.from(SECRET), creds.passwordHash);
  const now = Date.now();
  for (let i = 0; i < accounts; i++) await store.createAccount({ jid: jidOf(i), ...creds, createdAt: now });
  const both = { to: true, from: true, pendingOut: false, pendingIn: false, preApproved: false };
  let batch: RosterItem[] = [];
  for (let i = 0; i < accounts; i++) {
    for (let d = 1; d <= contacts / 2; d++) {
      for (const j of [(i + d) % accounts, (i - d + accounts) % accounts]) {
        batch.push({ owner: jidOf(i), contact: jidOf(j), name: null, groups: [], state: both });
      }
    }
    if (batch.length >= 5000) {
      await store.putRosterItems(batch);
      batch = [];
    }
  }
  if (batch.length) await store.putRosterItems(batch);
  await store.close();
}

const EXTENSIONS: Record<string, string | null> = {
  none: null,
  fast: `export default { name: 'bench', onUserPresence() {}, onSessionClosed() {} };\n`,
  slow: `export default { name: 'bench', onUserPresence() { return new Promise((r) => setTimeout(r, 100)); }, onSessionClosed() {} };\n`,
};
if (!Object.hasOwn(EXTENSIONS, args.extension as string)) throw new Error('--extension must be none, fast or slow');

async function startServer(dir: string): Promise<{ proc: ChildProcess; port: number }> {
  const ext = EXTENSIONS[args.extension as string];
  if (ext) {
    mkdirSync(join(dir, 'extensions'), { recursive: true });
    writeFileSync(join(dir, 'extensions', 'bench.mjs'), ext);
  }
  const nodeArgs = (args['server-node-args'] as string).split(' ').filter(Boolean);
  const proc = spawn('taskset', ['-c', args['server-cpu'] as string, process.execPath, ...nodeArgs, 'bin/presenced.js', 'start'], {
    env: {
      ...process.env,
      PRESENCED_DATA_DIR: dir,
      PRESENCED_HTTP_PORT: '0',
      PRESENCED_TOKEN_SECRET: SECRET,
      PRESENCED_LOG_LEVEL: 'info',
      PRESENCED_WS_RATE_LIMIT: '100000',
      PRESENCED_WS_RATE_BURST: '100000',
      PRESENCED_HEARTBEAT_INTERVAL_MS: '600000',
      PRESENCED_IDLE_TIMEOUT_MS: '3600000',
      PRESENCED_AUTH_TIMEOUT_MS: '600000',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) {
        if (line.includes('listening on')) resolve(JSON.parse(line).port as number);
      }
    });
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { proc, port };
}

/** RSS sampled once a second over an idle window: measurement, not synchronisation. */
async function lowestRss(pid: number, seconds: number): Promise<number> {
  let low = rssKb(pid);
  for (let s = 0; s < seconds; s++) {
    await new Promise((r) => setTimeout(r, 1000));
    low = Math.min(low, rssKb(pid));
  }
  return low;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

interface Client {
  ws: WebSocket;
  seq: number;
}

let received = 0;
let onReceive: (frame: string) => void = () => {};

async function connectAll(port: number, count: number, resourcePrefix = 'bench'): Promise<Client[]> {
  const clients: Client[] = new Array(count);
  const url = `ws://127.0.0.1:${port}/ws`;
  const CONCURRENCY = 200;
  let next = 0;
  const one = async (i: number): Promise<void> => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const now = Date.now();
    const token = issueToken(Buffer.from(SECRET), { sub: jidOf(i), acc: accountGen, iat: now, exp: now + 3_600_000, scope: 'login' });
    await new Promise<void>((resolve, reject) => {
      ws.once('error', reject);
      ws.once('open', () => ws.send(JSON.stringify({ id: 1, type: 'auth', token, resource: resourcePrefix })));
      ws.once('message', (m) => {
        const msg = JSON.parse(m.toString());
        if (msg.type !== 'result') reject(new Error(`login of ${jidOf(i)} failed: ${m.toString()}`));
        else resolve();
      });
    });
    ws.on('message', (m) => {
      received++;
      onReceive(m.toString());
    });
    clients[i] = { ws, seq: 0 };
  };
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) await one(next++);
    }),
  );
  return clients;
}

function waitFor(cond: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const t = setInterval(() => {
      if (cond()) {
        clearInterval(t);
        resolve();
      }
    }, 1);
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function throughputAndLatency(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'presenced-bench-'));
  await prepareData(dir, N, K);
  const { proc, port } = await startServer(dir);
  try {
    const t0 = Date.now();
    const clients = await connectAll(port, N);
    console.log(`logged in ${N} clients in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    // Let login fan-out (each login tells up to K online contacts) drain before measuring.
    const expectedLogin = received;
    await waitFor(() => received >= expectedLogin);

    // Burst: every client changes its status B times back to back.
    const B = Number(args['burst-changes']);
    const expected = N * B * K;
    received = 0;
    onReceive = () => {};
    const start = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < N; i++) {
        const c = clients[i]!;
        c.ws.send(`{"id":${++c.seq},"type":"presence","status":"b${b}"}`);
      }
    }
    await waitFor(() => received >= expected + N * B); // deliveries plus each request's result
    const secs = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    console.log(
      `burst: ${expected} deliveries in ${secs.toFixed(3)} s = ${Math.round(expected / secs)} deliveries/s ` +
        `(load generator busy ${Math.round(((cpu.user + cpu.system) / 1e6 / secs) * 100)}% of one core)`,
    );

    // Paced: changes spread evenly to give `rate` deliveries per second; latency per delivery.
    const rate = Number(args['paced-rate']);
    const seconds = Number(args['paced-seconds']);
    const changesPerSec = rate / K;
    const latencies: number[] = [];
    onReceive = (frame) => {
      // Only presence pushes: the request's own result also echoes the status back to its sender.
      if (!frame.startsWith('{"type":"presence"')) return;
      const i = frame.indexOf('"status":"t');
      if (i < 0) return;
      const sent = Number(frame.slice(i + 11, frame.indexOf('"', i + 11)));
      latencies.push(Number(process.hrtime.bigint() - BigInt(sent)) / 1e6);
    };
    const tickMs = 1;
    const totalTicks = (seconds * 1000) / tickMs;
    let ticks = 0;
    let sent = 0;
    let who = 0;
    const pacedStart = Date.now();
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        // Catch up on ticks the timer missed, so the offered rate is what was asked.
        ticks = Math.min(totalTicks, Math.floor((Date.now() - pacedStart) / tickMs));
        const due = Math.floor((ticks * tickMs * changesPerSec) / 1000);
        while (sent < due) {
          sent++;
          const c = clients[who]!;
          who = (who + 1) % N;
          c.ws.send(`{"id":${++c.seq},"type":"presence","status":"t${process.hrtime.bigint()}"}`);
        }
        if (ticks >= totalTicks) {
          clearInterval(timer);
          resolve();
        }
      }, tickMs);
    });
    const expectedPaced = sent * K;
    await waitFor(() => latencies.length >= expectedPaced);
    latencies.sort((a, b) => a - b);
    console.log(
      `paced ${rate} deliveries/s for ${seconds} s: ${latencies.length} deliveries, ` +
        `p50 ${percentile(latencies, 50).toFixed(2)} ms, p99 ${percentile(latencies, 99).toFixed(2)} ms, max ${latencies[latencies.length - 1]?.toFixed(2)} ms`,
    );
    for (const c of clients) c.ws.terminate();
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

async function memory(): Promise<void> {
  const M = Number(args['memory-sessions']);
  const dir = mkdtempSync(join(tmpdir(), 'presenced-bench-mem-'));
  await prepareData(dir, M, K);
  const { proc, port } = await startServer(dir);
  try {
    // Warm up with a login storm of 1,000 sessions that then leave: the baseline then includes compiled
    // code and a young generation grown to its working size, costs that do not grow with sessions.
    const warm = await connectAll(port, Math.min(1000, M), 'warm');
    for (const c of warm) c.ws.close(1000);
    await waitFor(() => warm.every((c) => c.ws.readyState === WebSocket.CLOSED));
    // Both figures are the lowest RSS over an idle window of the same length, so both are taken in the
    // state a quiet server settles in (after its idle collection, see src/idle-collector.ts), and
    // neither charges the garbage of a login storm to the sessions.
    const idleSeconds = Number(args['idle-seconds']);
    const before = await lowestRss(proc.pid!, idleSeconds);
    const clients = await connectAll(port, M);
    const early = rssKb(proc.pid!);
    const after = await lowestRss(proc.pid!, idleSeconds);
    console.log(`memory: RSS right after the logins ${(early / 1024).toFixed(1)} MB (${(((early - before) * 1024) / M / 1024).toFixed(2)} KB per session)`);
    console.log(
      `memory: lowest RSS over ${idleSeconds} s idle: ${(before / 1024).toFixed(1)} MB with 0 sessions, ${(after / 1024).toFixed(1)} MB with ${M} idle sessions ` +
        `(${K} contacts each): ${(((after - before) * 1024) / M / 1024).toFixed(2)} KB per session`,
    );
    for (const c of clients) c.ws.terminate();
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (!args['memory-only']) await throughputAndLatency();
if (Number(args['memory-sessions']) > 0) await memory();
process.exit(0);
