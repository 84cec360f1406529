/**
 * Push end to end: notifications through the real server's whole push path (notify API → policy →
 * durable queue `push_outbox` → worker → provider → the local APNs and FCM fakes). Measures pushes per
 * second reaching the fakes, the latency from the notify call to the provider's request, and the
 * server's CPU per push. By hand, never in CI:
 *
 *   npm run build
 *   taskset -c 1 npx tsx bench/push-e2e-bench.ts [--accounts 20000] [--devices 1] [--rate 1000] [--seconds 10] [--in-flight 64] [--repeat 3]
 *
 * The server runs as its own process pinned to core 0 (`taskset -c 0`); this process (the notify
 * client and both fakes) belongs on core 1. Set-up, per run, in a fresh data directory:
 *  1. N accounts are written straight into the database (as the other benches do);
 *  2. the server starts once, unpinned, so that the push feature creates its tables, and stops;
 *  3. `--devices` push registrations per account (1 by default; APNs and FCM in turn, resources
 *     `device0`, `device1`, ..., source native) are inserted into `push_registrations` while the server
 *     is stopped, as `push.register` would store them: registering 20,000 devices through the native
 *     protocol is not what is measured, and the server reads registrations from the table at each
 *     push exactly as it reads its own;
 *  4. the server starts again, pinned, with `push_providers` pointing at the fakes, everything else
 *     at its defaults (push_concurrency 256, 30 pushes per device per minute, info logs, here to a
 *     file). No client is connected: every account is offline, so every notify queues a push for
 *     each of the account's devices.
 * Then:
 *  - warm-up: `--warmup` seconds at `--rate` (JIT, connections, the provider tokens), not counted;
 *  - paced: `--rate` notify calls per second for `--seconds`, spread evenly over the accounts (each
 *    call is `POST /api/v1/accounts/{jid}/notify` with the admin token; its `data` carries a sequence
 *    number, which the push carries to the fake, so each push is timed against its own call);
 *  - max: `--in-flight` notify calls outstanding at all times for `--seconds`; pushes reaching the
 *    fakes per second over the window, the queue left when the calls stop, and the time to drain it.
 * Latency is given two ways, both in this process's clock: from the notify call sent (an upper bound of
 * "stored → provider request": it includes the HTTP request and the policy) and from its 202 received
 * (a lower bound: the push is durable before the 202 is sent, and may even reach the fake before the
 * 202 reaches us, which shows as a negative figure).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import Database from 'better-sqlite3';
import { SqliteStore } from '../src/adapters/sqlite/sqlite-store.js';
import { deriveCredentials } from '../src/engine/credentials.js';
import { ApnsFake, type ApnsReceived } from '../test/helpers/push-fakes/apns-fake.js';
import { makeP8, makeServiceAccount, makeTlsCert } from '../test/helpers/push-fakes/common.js';
import { FcmFake, type FcmReceived } from '../test/helpers/push-fakes/fcm-fake.js';
import { cpuTicks } from './proc-stats.js';

const { values: args } = parseArgs({
  options: {
    accounts: { type: 'string', default: '20000' },
    /** Registered devices per account (APNs and FCM in turn): one notify call queues this many pushes. */
    devices: { type: 'string', default: '1' },
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    'in-flight': { type: 'string', default: '64' },
    repeat: { type: 'string', default: '1' },
    /** Which scenarios: paced, max or both. */
    only: { type: 'string', default: 'paced,max' },
    'server-cpu': { type: 'string', default: '0' },
    /** Where the server under test is built (bin/presenced.js and dist/): another checkout, to compare versions. */
    'server-dir': { type: 'string', default: '.' },
    /** Extra node flags for the server under test, given with `=`: `--server-node-args='--cpu-prof --cpu-prof-dir=/tmp/prof'`. */
    'server-node-args': { type: 'string', default: '' },
    /** Extra environment for the server, as KEY=VALUE,KEY=VALUE (e.g. PRESENCED_PUSH_CONCURRENCY=512). */
    'server-env': { type: 'string', default: '' },
  },
});
if (availableParallelism() === 1) setFlagsFromString('--no-parallel-scavenge');

const N = Number(args.accounts);
const D = Number(args.devices);
const SECRET = 'push-e2e-bench-secret-push-e2e-bench-secret';
const ADMIN = 'push-e2e-bench-admin-token';
const DOMAIN = 'localhost';
const jidOf = (i: number): string => `u${i}@${DOMAIN}`;
const KEY_ID = 'BENCHKEY01';
const TEAM_ID = 'BENCHTEAM1';
const TOPIC = 'im.presenced.bench';

// ------------------------------------------------------------------------------------------ timing

/** Per notify call (by sequence number): when it was sent and when its 202 came back (performance.now()). */
const sentAt: number[] = [];
const answeredAt: number[] = [];
/** Per notify call: when its last push reached a fake, and how many have. */
const arrivedAt: number[] = [];
const arrivedCount: number[] = [];
const pushTimes: number[][] = [];
let arrivals = 0;
let duplicates = 0;
let strays = 0;

function arrived(seq: unknown): void {
  const s = typeof seq === 'string' ? Number(seq) : NaN;
  if (!Number.isInteger(s) || s < 0 || s >= sentAt.length) {
    strays++;
    return;
  }
  const n = (arrivedCount[s] ?? 0) + 1;
  arrivedCount[s] = n;
  if (n > D) duplicates++;
  // Each of the call's pushes is timed.
  (pushTimes[s] ??= []).push(performance.now());
  if (n === D) arrivedAt[s] = performance.now();
  arrivals++;
}

/** The fakes as the tests use them, also telling the bench which call each push belongs to. */
class TimedApns extends ApnsFake {
  protected override record(r: ApnsReceived): void {
    arrived(r.payload.bench);
    super.record(r);
  }
}
class TimedFcm extends FcmFake {
  protected override record(r: FcmReceived): void {
    arrived(r.message.data?.bench);
    super.record(r);
  }
}

// ------------------------------------------------------------------------------------------ server

function startServer(dir: string, env: Record<string, string>, pinned: boolean): Promise<{ proc: ChildProcess; port: number }> {
  const nodeArgs = pinned ? (args['server-node-args'] as string).split(' ').filter(Boolean) : [];
  const cmd = [...(pinned ? ['taskset', '-c', args['server-cpu'] as string] : []), process.execPath, ...nodeArgs];
  const extra = Object.fromEntries((args['server-env'] as string).split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  // The log goes to a file, not a pipe into this process: reading two lines per push here would take
  // the core the fakes and the client need.
  const logFile = join(dir, `server-${Date.now()}.log`);
  const out = openSync(logFile, 'w');
  const proc = spawn(cmd[0]!, [...cmd.slice(1), join(args['server-dir'] as string, 'bin/presenced.js'), 'start'], {
    env: {
      ...process.env,
      PRESENCED_DATA_DIR: dir,
      PRESENCED_HTTP_PORT: '0',
      PRESENCED_XMPP_PORT: '-1',
      PRESENCED_XMPPS_PORT: '-1',
      PRESENCED_TOKEN_SECRET: SECRET,
      PRESENCED_ADMIN_TOKEN: ADMIN,
      PRESENCED_LOG_LEVEL: 'info',
      ...env,
      ...extra,
    },
    stdio: ['ignore', out, 'inherit'],
  });
  closeSync(out);
  let exited = false;
  proc.once('exit', () => (exited = true));
  return (async () => {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const text = readFileSync(logFile, 'utf8');
      const line = text.split('\n').find((l) => l.includes('listening on'));
      if (line !== undefined) return { proc, port: JSON.parse(line).port as number };
      if (exited) throw new Error(`server exited with ${proc.exitCode}: ${text.slice(-2000)}`);
      if (Date.now() > deadline) throw new Error('server did not start within 120 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
}

async function stopServer(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}

async function prepare(dir: string, providers: string): Promise<void> {
  const store = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await store.migrate();
  const creds = await deriveCredentials('bench');
  const now = Date.now();
  for (let i = 0; i < N; i++) await store.createAccount({ jid: jidOf(i), ...creds, createdAt: now });
  await store.close();
  // The push feature creates its tables at its first start.
  const { proc } = await startServer(dir, { PRESENCED_PUSH_PROVIDERS: providers }, false);
  await stopServer(proc);
  const db = new Database(join(dir, 'presenced.sqlite'));
  const insert = db.prepare(`
    INSERT INTO push_registrations (id, account, provider, token, resource, source, node, away, created_at, updated_at, failures)
    VALUES (?, ?, ?, ?, ?, 'native', ?, 0, ?, ?, 0)`);
  db.transaction(() => {
    for (let i = 0; i < N; i++) {
      for (let d = 0; d < D; d++) {
        const ios = (i + d) % 2 === 0;
        const token = ios ? randomBytes(32).toString('hex') : `fcm-${randomBytes(60).toString('base64url')}`;
        insert.run(`pr_${randomBytes(12).toString('base64url')}`, jidOf(i), ios ? 'ios' : 'android', token, `device${d}`, randomBytes(12).toString('base64url'), now, now);
      }
    }
  })();
  db.close();
}

// ------------------------------------------------------------------------------------------ client

const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
let notifyErrors = 0;
let next = 0;

/** One notify call for the next account in turn; resolves at its answer. */
function notify(port: number): Promise<void> {
  const seq = next++;
  const account = jidOf(seq % N);
  const body = `{"body":"bench notification","data":{"bench":"${seq}"}}`;
  sentAt[seq] = performance.now();
  return new Promise<void>((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: 'POST', path: `/api/v1/accounts/${encodeURIComponent(account)}/notify`, agent, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => {
          answeredAt[seq] = performance.now();
          if (res.statusCode !== 202 || !text.includes(`"pushed":${D}`)) {
            notifyErrors++;
            if (notifyErrors <= 5) process.stderr.write(`notify ${seq}: ${res.statusCode} ${text}\n`);
          }
          resolve();
        });
      },
    );
    req.on('error', (e) => {
      notifyErrors++;
      if (notifyErrors <= 5) process.stderr.write(`notify ${seq}: ${e.message}\n`);
      resolve();
    });
    req.end(body);
  });
}

/** `rate` calls per second for `seconds`; resolves when every call has its answer. Returns the first and last sequence numbers. */
async function paced(port: number, rate: number, seconds: number): Promise<[number, number]> {
  const first = next;
  const total = Math.round(rate * seconds);
  const pending: Array<Promise<void>> = [];
  const start = performance.now();
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
      while (next - first < due) pending.push(notify(port));
      if (next - first >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await Promise.all(pending);
  return [first, next];
}

/** `inFlight` calls outstanding at all times for `seconds`. */
async function closedLoop(port: number, inFlight: number, seconds: number): Promise<[number, number]> {
  const first = next;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) await notify(port);
    }),
  );
  return [first, next];
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

async function pendingOf(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = /^presenced_push_pending (\S+)$/m.exec(text);
  return m ? Number(m[1]) : NaN;
}

/** The server's own account of its provider requests: total seconds waited for answers and requests, per provider. */
async function providerLatency(port: number): Promise<Record<string, { sum: number; count: number }>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Record<string, { sum: number; count: number }> = {};
  for (const m of text.matchAll(/^presenced_push_latency_seconds_(sum|count)\{provider="([^"]+)"\} (\S+)$/gm)) {
    const e = (out[m[2]!] ??= { sum: 0, count: 0 });
    e[m[1] as 'sum' | 'count'] = Number(m[3]);
  }
  return out;
}

function machineTicks(): number {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] as string).trim().split(/\s+/).slice(1, 9).map(Number);
  return f.reduce((a, b) => a + b, 0) - (f[3] ?? 0) - (f[4] ?? 0);
}

const pct = (s: number[], p: number): number => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;

interface Row {
  run: number;
  scenario: string;
  calls: number;
  callsPerSec: number;
  pushesPerSec: number;
  /** From the notify call sent: p50, p99, max (ms). */
  fromCall: [number, number, number];
  /** From its 202 received. */
  from202: [number, number, number];
  /** The notify call's round trip: p50, p99. */
  rtt: [number, number];
  /** Mean time the server waited for the provider's answer (its own histogram), APNs / FCM, ms. */
  providerMs: [number, number];
  serverCpu: number;
  cpuMsPerPush: number;
  others: number;
  pendingAtStop: number;
  drainSeconds: number;
  lost: number;
}

/** Measures a scenario: the calls it makes (sequence numbers [first, last)) and the server's CPU over it. */
async function measure(run: number, scenario: string, proc: ChildProcess, port: number, drive: () => Promise<[number, number]>): Promise<Row> {
  const cpu0 = cpuTicks(proc.pid!);
  const gen0 = process.cpuUsage();
  const busy0 = machineTicks();
  const arrivals0 = arrivals;
  const lat0 = await providerLatency(port);
  const t0 = performance.now();
  const [first, last] = await drive();
  const t1 = performance.now();
  const secs = (t1 - t0) / 1000;
  const inWindow = arrivals - arrivals0;
  const pendingAtStop = await pendingOf(port);
  const drainStart = performance.now();
  const drained = await until(() => {
    for (let s = first; s < last; s++) if (arrivedAt[s] === undefined) return false;
    return true;
  }, 120_000);
  const drainSeconds = drained ? (performance.now() - drainStart) / 1000 : NaN;
  const lat1 = await providerLatency(port);
  const meanMs = (name: string): number => {
    const a = lat1[name] ?? { sum: 0, count: 0 };
    const b = lat0[name] ?? { sum: 0, count: 0 };
    return ((a.sum - b.sum) / Math.max(1, a.count - b.count)) * 1000;
  };
  const totalSecs = (performance.now() - t0) / 1000;
  // CPU over the whole scenario including the drain, per push sent in it: the steady figure.
  const cpuTicksUsed = cpuTicks(proc.pid!) - cpu0;
  const gen = process.cpuUsage(gen0);
  const busy = machineTicks() - busy0;
  const fromCall: number[] = [];
  const from202: number[] = [];
  const rtt: number[] = [];
  let lost = 0;
  for (let s = first; s < last; s++) {
    const times = pushTimes[s] ?? [];
    lost += D - Math.min(D, times.length);
    for (const a of times) {
      fromCall.push(a - sentAt[s]!);
      if (answeredAt[s] !== undefined) from202.push(a - answeredAt[s]!);
    }
    if (answeredAt[s] !== undefined) rtt.push(answeredAt[s]! - sentAt[s]!);
  }
  for (const l of [fromCall, from202, rtt]) l.sort((a, b) => a - b);
  const tri = (l: number[]): [number, number, number] => [pct(l, 50), pct(l, 99), l.at(-1) ?? NaN];
  const calls = last - first;
  return {
    run,
    scenario,
    calls,
    callsPerSec: calls / secs,
    pushesPerSec: inWindow / secs,
    fromCall: tri(fromCall),
    from202: tri(from202),
    rtt: [pct(rtt, 50), pct(rtt, 99)],
    providerMs: [meanMs('ios'), meanMs('android')],
    serverCpu: cpuTicksUsed / totalSecs,
    cpuMsPerPush: (cpuTicksUsed * 10) / Math.max(1, calls * D - lost),
    others: busy / totalSecs - cpuTicksUsed / totalSecs - ((gen.user + gen.system) / 1e6 / totalSecs) * 100,
    pendingAtStop,
    drainSeconds,
    lost,
  };
}

async function runOnce(run: number): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), 'presenced-push-e2e-'));
  const key = makeP8(dir);
  const tls = makeTlsCert(dir);
  const apns = new TimedApns({ key: tls.key, cert: tls.cert, publicKey: key.publicKey, keyId: KEY_ID, teamId: TEAM_ID, topic: TOPIC });
  apns.keep = false;
  await apns.listen();
  const fcm = new TimedFcm();
  fcm.keep = false;
  await fcm.listen();
  const sa = makeServiceAccount(dir, fcm.tokenUri, 'presenced-bench');
  fcm.trust(sa);
  const providers = JSON.stringify({
    ios: { type: 'apns', keyFile: key.file, keyId: KEY_ID, teamId: TEAM_ID, topic: TOPIC, environment: 'sandbox', endpoint: apns.endpoint, caFile: tls.certFile },
    android: { type: 'fcm', serviceAccountFile: sa.file, endpoint: fcm.base },
  });
  const rows: Row[] = [];
  let proc: ChildProcess | undefined;
  try {
    await prepare(dir, providers);
    const started = await startServer(dir, { PRESENCED_PUSH_PROVIDERS: providers }, true);
    proc = started.proc;
    const port = started.port;
    const rate = Number(args.rate);
    const seconds = Number(args.seconds);
    const [wf, wl] = await paced(port, rate, Number(args.warmup));
    await until(() => {
      for (let s = wf; s < wl; s++) if (arrivedAt[s] === undefined) return false;
      return true;
    }, 60_000);
    const only = new Set((args.only as string).split(','));
    if (only.has('paced')) rows.push(await measure(run, `paced ${rate}/s`, proc, port, () => paced(port, rate, seconds)));
    if (only.has('max')) rows.push(await measure(run, `max (${args['in-flight']} calls in flight)`, proc, port, () => closedLoop(port, Number(args['in-flight']), seconds)));
    if (apns.bad.length || fcm.bad.length) throw new Error(`the fakes refused requests: ${[...apns.bad, ...fcm.bad].slice(0, 5).join('; ')}`);
    console.error(`run ${run}: APNs fake ${apns.count} pushes on ${apns.sessionsOpened} connection(s), at most ${apns.maxInFlight} streams at once; FCM fake ${fcm.count} pushes, ${fcm.tokenRequests.length} token request(s); notify errors ${notifyErrors}, duplicates ${duplicates}, strays ${strays}`);
  } finally {
    if (proc) await stopServer(proc);
    agent.destroy();
    await apns.close();
    await fcm.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

const ms = (v: number): string => (Math.abs(v) < 10 ? v.toFixed(2) : v.toFixed(0));
const all: Row[] = [];
for (let run = 1; run <= Number(args.repeat); run++) {
  for (const r of await runOnce(run)) {
    console.log(JSON.stringify(r));
    all.push(r);
  }
}
console.log(`\n${N} offline accounts, ${D} device(s) each (half APNs, half FCM); ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'})`);
console.log('| run | scenario | calls/s | pushes/s at the fakes | call → push p50 / p99 / max | 202 → push p50 / p99 / max | call → 202 p50 / p99 | provider answer mean (APNs / FCM) | server CPU | CPU per push | other processes | pending at stop | drained in | lost |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of all) {
  console.log(
    `| ${r.run} | ${r.scenario} | ${Math.round(r.callsPerSec)} | ${Math.round(r.pushesPerSec)} | ${r.fromCall.map(ms).join(' / ')} ms | ${r.from202.map(ms).join(' / ')} ms | ${r.rtt.map(ms).join(' / ')} ms | ${r.providerMs.map(ms).join(' / ')} ms | ${r.serverCpu.toFixed(0)} % | ${r.cpuMsPerPush.toFixed(3)} ms | ${r.others.toFixed(0)} % | ${r.pendingAtStop} | ${r.drainSeconds.toFixed(1)} s | ${r.lost} |`,
  );
}
process.exit(0);
