/**
 * Webhook throughput benchmark: presence changes made by real native-protocol clients, turned by the
 * server into one update per granted app, written to the outbox and POSTed (batched, signed) to a
 * local receiver. Measures the updates per second reaching the receiver, the latency from the
 * client's change to the receipt, the server's CPU, and what is left in the outbox. By hand, never in CI:
 *
 *   npm run build
 *   ulimit -n 20000
 *   taskset -c 1 npx tsx bench/webhook-bench.ts --accounts 1000 --apps 1,10 --batch-max 100,1000 --rate 60000
 *
 * The server runs as its own process pinned to core 0 (`taskset -c 0`); this process (clients and
 * receiver) belongs on core 1. Set-up, per run, in a fresh data directory:
 *  1. accounts are written straight into the database (as the other benches do);
 *  2. the server starts once so that the apps feature creates its tables, and the apps are registered
 *     through the REST API (admin token), their webhook URL pointing at the receiver;
 *  3. the server is stopped and every account's grant to every app (scopes presence presence.status) is
 *     inserted into the grants table: the consent flow (OAuth in a browser) is not what is measured, and
 *     the server loads active grants at start exactly as it does in production;
 *  4. the server starts again (pinned) with the settings of the run; at start it tells every app every
 *     user's presence (nothing was ever told), then each client's login sends one update per app.
 * Then each client changes its status text, at a total rate of `--rate` updates per second (`rate / apps`
 * changes per second); every change carries the generator's clock so the receiver can time it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { Webhook } from 'standardwebhooks';
import { connectAll, machineTicks, pct, prepare as prepareApps, startServer, stopServer, until, type ServerRun } from './lib/app-bench.js';
import { cpuCounters, cpuTicks } from './proc-stats.js';

const { values: args } = parseArgs({
  options: {
    accounts: { type: 'string', default: '1000' },
    apps: { type: 'string', default: '1,10' },
    'batch-max': { type: 'string', default: '100,1000' },
    /** Offered updates per second (all apps together). */
    rate: { type: 'string', default: '60000' },
    seconds: { type: 'string', default: '12' },
    /** The first seconds of the window are not counted (JIT, the outbox growing its working size). */
    warmup: { type: 'string', default: '3' },
    'flush-ms': { type: 'string', default: '5' },
    'batch-ms': { type: 'string', default: '50' },
    'server-cpu': { type: 'string', default: '0' },
    /** Extra node flags for the server under test (e.g. --cpu-prof). */
    'server-node-args': { type: 'string', default: '' },
    /** Verify the signature of one request in this many (standardwebhooks package). */
    'verify-every': { type: 'string', default: '20' },
  },
});
if (availableParallelism() === 1) setFlagsFromString('--no-parallel-scavenge');

const N = Number(args.accounts);
const pinned: ServerRun = { cpu: args['server-cpu'] as string, nodeArgs: (args['server-node-args'] as string).split(' ').filter(Boolean) };

// ------------------------------------------------------------------------------------------ receiver

interface AppRx {
  readonly verifier: Webhook;
  requests: number;
  /** Per pairwise id: the last seq seen, to check that each user's updates arrive in order and once. */
  readonly lastSeq: Map<string, number>;
}

const rx = {
  apps: new Map<string, AppRx>(),
  updates: 0,
  requests: 0,
  verified: 0,
  badSignatures: 0,
  outOfOrder: 0,
  /** Latencies (ms) of the updates of the measured window, change made → update received. */
  latencies: [] as number[],
  measuring: false,
  /** hrtime (ns) of the first change of the measured window: updates of earlier changes are not timed. */
  windowFrom: 0n,
};
const verifyEvery = Number(args['verify-every']);

function startReceiver(): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const appId = (req.url ?? '').slice(1);
      const app = rx.apps.get(appId);
      const body = Buffer.concat(chunks).toString('utf8');
      rx.requests++;
      if (app === undefined) {
        res.writeHead(404).end();
        return;
      }
      if (app.requests++ % verifyEvery === 0) {
        try {
          app.verifier.verify(body, req.headers as Record<string, string>);
          rx.verified++;
        } catch {
          rx.badSignatures++;
        }
      }
      const now = process.hrtime.bigint();
      const list = JSON.parse(body) as Array<{ uid: string; seq: number; statusText?: string }>;
      for (const u of list) {
        const last = app.lastSeq.get(u.uid);
        if (last !== undefined && u.seq !== last + 1) rx.outOfOrder++;
        app.lastSeq.set(u.uid, u.seq);
        const t = u.statusText;
        if (rx.measuring && t !== undefined && t.charCodeAt(0) === 116 /* t */) {
          const sent = BigInt(t.slice(1));
          if (sent >= rx.windowFrom) rx.latencies.push(Number(now - sent) / 1e6);
        }
      }
      rx.updates += list.length;
      res.writeHead(204).end();
    });
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port })));
}

// ------------------------------------------------------------------------------------------ server

async function prepare(dir: string, apps: number, rxPort: number): Promise<{ accountGen: string; apps: Array<{ id: string; secret: string }> }> {
  const out: Array<{ id: string; secret: string }> = [];
  const p = await prepareApps(
    dir,
    N,
    apps,
    (a) => ({ name: `Bench ${a}`, homepage: 'https://bench.example/', redirectUris: ['https://bench.example/cb'], webhookUrl: `http://127.0.0.1:${rxPort}/pending`, webhookFormat: 'extended' }),
    // The receiver learns each app's id from the URL path.
    (db, id) => {
      db.prepare('UPDATE apps SET webhook_url = ? WHERE id = ?').run(`http://127.0.0.1:${rxPort}/${id}`, id);
      out.push({ id, secret: (db.prepare('SELECT webhook_secret AS s FROM apps WHERE id = ?').get(id) as { s: string }).s });
    },
  );
  return { accountGen: p.accountGen, apps: out };
}

// ------------------------------------------------------------------------------------------ clients

async function pendingOf(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = /^presenced_webhook_pending (\S+)$/m.exec(text);
  return m ? Number(m[1]) : NaN;
}

interface Row {
  apps: number;
  batchMax: number;
  offered: number;
  delivered: number;
  p50: number;
  p99: number;
  max: number;
  serverCpu: number;
  genCpu: number;
  steal: number;
  /** CPU other processes used during the window (% of one core): the machine is shared, figures with a high value are not clean. */
  others: number;
  pendingAtStop: number;
  drainSeconds: number;
  pendingAfter: number;
  requestsPerSecond: number;
  outOfOrder: number;
  verified: number;
  badSignatures: number;
}

async function run(apps: number, batchMax: number): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'presenced-webhook-bench-'));
  const { server: receiver, port: rxPort } = await startReceiver();
  rx.apps.clear();
  Object.assign(rx, { updates: 0, requests: 0, verified: 0, badSignatures: 0, outOfOrder: 0, latencies: [], measuring: false, windowFrom: 0n });
  const { accountGen, apps: registered } = await prepare(dir, apps, rxPort);
  for (const a of registered) rx.apps.set(a.id, { verifier: new Webhook(a.secret), requests: 0, lastSeq: new Map() });
  const { proc, port } = await startServer(dir, {
    PRESENCED_WEBHOOK_BATCH_MAX: String(batchMax),
    PRESENCED_WEBHOOK_FLUSH_MS: args['flush-ms'] as string,
    PRESENCED_WEBHOOK_BATCH_MS: args['batch-ms'] as string,
  }, pinned);
  try {
    // At start every user's presence (offline) goes to every app; then each login.
    const clients = await connectAll(port, N, accountGen);
    if (!(await until(() => rx.updates >= 2 * N * apps, 60_000))) throw new Error(`set-up updates: ${rx.updates} of ${2 * N * apps}`);
    const offered = Number(args.rate);
    const changesPerSec = offered / apps;
    const seconds = Number(args.seconds);
    const warmup = Number(args.warmup);
    let sent = 0;
    let who = 0;
    const base = rx.updates;
    let atWarm = { updates: 0, t: 0n, cpu: 0, gen: process.cpuUsage(), machine: cpuCounters(), busy: machineTicks(), requests: 0 };
    const start = Date.now();
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const elapsed = Date.now() - start;
        const due = Math.floor((Math.min(elapsed, seconds * 1000) * changesPerSec) / 1000);
        if (!rx.measuring && elapsed >= warmup * 1000) {
          rx.measuring = true;
          rx.windowFrom = process.hrtime.bigint();
          atWarm = { updates: rx.updates, t: process.hrtime.bigint(), cpu: cpuTicks(proc.pid!), gen: process.cpuUsage(), machine: cpuCounters(), busy: machineTicks(), requests: rx.requests };
        }
        while (sent < due) {
          sent++;
          const c = clients[who]!;
          who = (who + 1) % N;
          c.ws.send(`{"id":${++c.seq},"type":"presence","status":"t${process.hrtime.bigint()}"}`);
        }
        if (elapsed >= seconds * 1000) {
          clearInterval(timer);
          resolve();
        }
      }, 1);
    });
    // The window ends when the sending ends: what arrived by then over the window's length.
    const endT = process.hrtime.bigint();
    const secs = Number(endT - atWarm.t) / 1e9;
    const deliveredInWindow = rx.updates - atWarm.updates;
    const cpu = (cpuTicks(proc.pid!) - atWarm.cpu) / secs;
    const gen = process.cpuUsage(atWarm.gen);
    const machine = cpuCounters();
    const busy = machineTicks();
    const requests = rx.requests - atWarm.requests;
    const pendingAtStop = await pendingOf(port);
    const drainStart = Date.now();
    const expected = base + sent * apps;
    const drained = await until(() => rx.updates >= expected, 120_000);
    const drainSeconds = drained ? (Date.now() - drainStart) / 1000 : NaN;
    // Rows are marked delivered after the answer is read: poll the server's own count until it is 0 (or 5 s).
    let pendingAfter = await pendingOf(port);
    for (const deadline = Date.now() + 5_000; pendingAfter > 0 && Date.now() < deadline; ) pendingAfter = await pendingOf(port);
    for (const c of clients) c.ws.terminate();
    const lat = rx.latencies.sort((a, b) => a - b);
    return {
      apps,
      batchMax,
      offered,
      delivered: deliveredInWindow / secs,
      p50: pct(lat, 50),
      p99: pct(lat, 99),
      max: lat[lat.length - 1] ?? NaN,
      serverCpu: cpu,
      genCpu: ((gen.user + gen.system) / 1e6 / secs) * 100,
      others: (busy.busy - atWarm.busy.busy) / secs - cpu - ((gen.user + gen.system) / 1e6 / secs) * 100,
      steal: (100 * (machine.steal - atWarm.machine.steal)) / Math.max(1, machine.total - atWarm.machine.total),
      pendingAtStop,
      drainSeconds,
      pendingAfter,
      requestsPerSecond: requests / secs,
      outOfOrder: rx.outOfOrder,
      verified: rx.verified,
      badSignatures: rx.badSignatures,
    };
  } finally {
    await stopServer(proc);
    receiver.closeAllConnections();
    await new Promise((r) => receiver.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows: Row[] = [];
for (const apps of (args.apps as string).split(',').map(Number)) {
  for (const batchMax of (args['batch-max'] as string).split(',').map(Number)) {
    const r = await run(apps, batchMax);
    console.log(JSON.stringify(r));
    rows.push(r);
  }
}
console.log(`\n${N} accounts, each granted to every app; offered ${args.rate} updates/s for ${args.seconds} s (first ${args.warmup} s not counted); ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'})`);
console.log('| apps | batch max | offered updates/s | delivered updates/s | requests/s | p50 | p99 | max | server CPU | generator CPU | other processes CPU | pending at stop | drained in | left | order errors | signatures checked (bad) |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.apps} | ${r.batchMax} | ${r.offered} | ${Math.round(r.delivered)} | ${Math.round(r.requestsPerSecond)} | ${r.p50.toFixed(1)} ms | ${r.p99.toFixed(1)} ms | ${r.max.toFixed(0)} ms | ${r.serverCpu.toFixed(0)} % | ${r.genCpu.toFixed(0)} % | ${r.others.toFixed(0)} % | ${r.pendingAtStop} | ${r.drainSeconds.toFixed(1)} s | ${r.pendingAfter} | ${r.outOfOrder} | ${r.verified} (${r.badSignatures}) |`,
  );
}
process.exit(0);
