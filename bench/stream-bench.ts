/**
 * App stream fan-out benchmark: presence changes made by real native-protocol clients, written by the
 * server to the apps' log and sent to every open presence stream of the apps the user granted. Measures
 * each stream line's latency from the client's change to the line's receipt, lines per second, the
 * server's CPU, streams cut for lag, and per stream that every user's seq grows by one (no gap, no
 * duplicate). By hand, never in CI:
 *
 *   npm run build
 *   ulimit -n 20000
 *   taskset -c 1 npx tsx bench/stream-bench.ts --accounts 1000 --apps 1,10 --streams 100 --rate 1000,2500,5000
 *
 * The server runs as its own process pinned to core 0 (`taskset -c 0`); this process (clients and
 * stream consumers) belongs on core 1. Set-up per run, in a fresh data directory (bench/lib/app-bench.ts):
 * accounts written into the database, M apps registered by REST without a webhook URL (so the stream is
 * measured alone), every account granted to every app, the server started pinned. `--streams` streams
 * are opened (`streams / M` per app, NDJSON, HTTP Basic APPID:SECRET) and read their snapshot, then
 * the 1,000 clients log in (one live line per user on every stream). Then the clients change their
 * status text, spread evenly, `--rate` changes
 * per second in all; each change carries the bench's clock, so every stream line is timed. With every
 * user granted to every app, one change is M log rows and `streams` lines whatever M is.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { connectAll, machineTicks, prepare, startServer, stopServer, until, type ServerRun } from './lib/app-bench.js';
import { cpuTicks } from './proc-stats.js';

const { values: args } = parseArgs({
  options: {
    accounts: { type: 'string', default: '1000' },
    apps: { type: 'string', default: '1,10' },
    /** Open streams in all, spread evenly over the apps. */
    streams: { type: 'string', default: '100' },
    /** Presence changes per second (all clients together), one run per value. */
    rate: { type: 'string', default: '1000,2500,5000' },
    seconds: { type: 'string', default: '12' },
    /** The first seconds of the window are not counted (JIT, the log's working size). */
    warmup: { type: 'string', default: '3' },
    /** Streams whose every line is read, ordered and timed; the rest only count their lines (see StreamReader). */
    'checked-streams': { type: 'string', default: '10' },
    'flush-ms': { type: 'string', default: '5' },
    'server-cpu': { type: 'string', default: '0' },
    /** Extra node flags for the server under test (e.g. --cpu-prof). */
    'server-node-args': { type: 'string', default: '' },
  },
});
if (availableParallelism() === 1) setFlagsFromString('--no-parallel-scavenge');

const N = Number(args.accounts);
const pinned: ServerRun = { cpu: args['server-cpu'] as string, nodeArgs: (args['server-node-args'] as string).split(' ').filter(Boolean) };

// ------------------------------------------------------------------------------------------ latency

/**
 * Latencies in 0.1 ms buckets up to 30 s (half a million lines a second would make a sample array of
 * millions), plus the exact maximum.
 */
class Histogram {
  readonly #b = new Uint32Array(300_000);
  count = 0;
  max = 0;

  add(ms: number): void {
    const i = Math.max(0, Math.min(this.#b.length - 1, Math.floor(ms * 10)));
    this.#b[i]!++;
    this.count++;
    if (ms > this.max) this.max = ms;
  }

  /** The bucket's upper bound at the p-th percentile. */
  pct(p: number): number {
    if (this.count === 0) return NaN;
    const target = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < this.#b.length; i++) {
      seen += this.#b[i]!;
      if (seen >= target) return (i + 1) / 10;
    }
    return this.max;
  }
}

// ------------------------------------------------------------------------------------------ streams

/** The clock the changes carry (µs since this process started), so a line is timed without a BigInt. */
const nowUs = (): number => Math.round(performance.now() * 1000);

/** The non-negative integer written at `at` (no substring, no parseInt: this runs half a million times a second). */
function digitsAt(text: string, at: number): number {
  let n = 0;
  for (let i = at; ; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return n;
    n = n * 10 + c;
  }
}

const shared = {
  measuring: false,
  /** µs of the first change of the window: lines of earlier changes are not timed. */
  windowFrom: Infinity,
  hist: new Histogram(),
};

class StreamReader {
  /** Per pairwise uid: the seq of its snapshot line, and the last seq seen. */
  readonly snapSeq = new Map<string, number>();
  readonly lastSeq = new Map<string, number>();
  snapshotLines = 0;
  liveLines = 0;
  gaps = 0;
  duplicates = 0;
  isLive = false;
  endReason: string | null = null;
  readonly #req: http.ClientRequest;

  /**
   * `checked`: every line is read (seq order per user, latency). Otherwise presence lines are only
   * counted: reading every line of 100 streams (half a million a second) would take this process's
   * whole core, and its own delay would then be what the latencies measure.
   */
  constructor(port: number, appId: string, clientSecret: string, readonly checked: boolean) {
    const auth = `Basic ${Buffer.from(`${appId}:${clientSecret}`).toString('base64')}`;
    this.#req = http.get(`http://127.0.0.1:${port}/${appId}/presence.json`, { headers: { authorization: auth }, agent: false });
    this.#req.on('error', () => undefined);
    this.#req.once('response', (res) => {
      if (res.statusCode !== 200) {
        this.endReason = `HTTP ${res.statusCode}`;
        res.resume();
        return;
      }
      res.setEncoding('utf8');
      let rest = '';
      res.on('data', (chunk: string) => {
        // Every line of a chunk arrived now: one clock read per chunk.
        const now = nowUs();
        const text = rest + chunk;
        let from = 0;
        for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', from)) {
          // A live presence line, told by its prefix alone: {"type":"presence","uid":"…","seq":…
          if (!this.checked && this.isLive && text.charCodeAt(from + 9) === 112 && text.charCodeAt(from + 18) === 44) this.liveLines++;
          else this.#line(text, from, nl, now);
          from = nl + 1;
        }
        rest = text.slice(from);
      });
      res.on('end', () => {
        if (this.endReason === null) this.endReason = 'connection closed';
      });
    });
  }

  /**
   * One line, read by position in the server's fixed key order rather than JSON.parse (this process
   * reads half a million lines a second on one core). Any other shape is parsed in full.
   */
  #line(text: string, start: number, end: number, now: number): void {
    if (text.startsWith('{"type":"presence","uid":"', start)) {
      const uidFrom = start + 26;
      const uidTo = text.indexOf('"', uidFrom);
      const uid = text.slice(uidFrom, uidTo);
      const seqAt = text.indexOf('"seq":', uidTo) + 6;
      const seq = digitsAt(text, seqAt);
      const last = this.lastSeq.get(uid);
      if (last !== undefined) {
        if (seq <= last) this.duplicates++;
        else if (seq !== last + 1) this.gaps++;
      }
      if (last === undefined || seq > last) this.lastSeq.set(uid, seq);
      this.liveLines++;
      if (shared.measuring) {
        const t = text.indexOf('"statusText":"t', seqAt);
        if (t !== -1 && t < end) {
          const sent = digitsAt(text, t + 15);
          if (sent >= shared.windowFrom) {
            shared.hist.add((now - sent) / 1000);
          }
        }
      }
      return;
    }
    const line = JSON.parse(text.slice(start, end)) as { type: string; uid?: string; seq?: number; snapshot?: boolean; reason?: string };
    if (line.type === 'presence' && line.snapshot === true) {
      this.snapSeq.set(line.uid!, line.seq!);
      this.lastSeq.set(line.uid!, line.seq!);
      this.snapshotLines++;
    } else if (line.type === 'live') this.isLive = true;
    else if (line.type === 'end') this.endReason = line.reason ?? '?';
  }

  /** Updates received past the snapshot, summed over users (each user's last seq − its snapshot seq). */
  advanced(): number {
    let n = 0;
    for (const [uid, seq] of this.lastSeq) n += seq - (this.snapSeq.get(uid) ?? 0);
    return n;
  }

  close(): void {
    this.#req.destroy();
  }
}

/** The server's own view (prom-client's default metrics; the event loop's delay histogram restarts at each scrape). */
async function serverStats(port: number): Promise<{ lagStreamCuts: number; loopMaxMs: number; loopP99Ms: number; gcSeconds: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const one = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  let gc = 0;
  for (const m of text.matchAll(/^presenced_process_nodejs_gc_duration_seconds_sum\{[^}]*\} (\S+)$/gm)) gc += Number(m[1]);
  return {
    lagStreamCuts: one('presenced_app_stream_lag_cuts_total'),
    loopMaxMs: one('presenced_process_nodejs_eventloop_lag_max_seconds') * 1000,
    loopP99Ms: one('presenced_process_nodejs_eventloop_lag_p99_seconds') * 1000,
    gcSeconds: gc,
  };
}

interface Row {
  apps: number;
  streams: number;
  rate: number;
  /** Changes sent per second over the window. */
  sentRate: number;
  linesPerSecond: number;
  p50: number;
  p99: number;
  max: number;
  serverCpu: number;
  benchCpu: number;
  /** CPU other processes used during the window (% of one core): the machine is shared, figures with a high value are not clean. */
  others: number;
  lagCuts: number;
  /** The server's event loop delay over the window (ms): how long a ready line could wait. */
  serverLoopP99: number;
  serverLoopMax: number;
  /** % of the window the server spent in GC. */
  serverGc: number;
  /** This process's event loop delay over the window (ms): a late reading here adds to every latency. */
  benchLoopP99: number;
  benchLoopMax: number;
  /** Streams that ended for any reason before the bench closed them. */
  ended: string[];
  drainSeconds: number;
  gaps: number;
  duplicates: number;
  /** Streams whose users' seqs did not advance by exactly the changes sent (unchecked streams: whose count of lines is not exactly that). */
  incomplete: number;
  /** Streams whose every line was read and timed; the others only count their lines. */
  checked: number;
}

async function run(apps: number, rate: number): Promise<Row> {
  const streamsPerApp = Math.max(1, Math.round(Number(args.streams) / apps));
  const dir = mkdtempSync(join(tmpdir(), 'presenced-stream-bench-'));
  Object.assign(shared, { measuring: false, windowFrom: Infinity, hist: new Histogram() });
  // No webhook URL: the apps' updates are only streamed.
  const prepared = await prepare(dir, N, apps, (a) => ({ name: `Stream bench ${a}`, homepage: 'https://bench.example/', redirectUris: ['https://bench.example/cb'] }));
  const { proc, port } = await startServer(dir, { PRESENCED_WEBHOOK_FLUSH_MS: args['flush-ms'] as string }, pinned);
  const readers: StreamReader[] = [];
  try {
    // Opened before the clients log in: the snapshot has everyone offline (told at start), then each
    // login is one live update per user, which tells that the stream follows before the changes start.
    const checkedPerApp = Math.max(1, Math.round(Number(args['checked-streams']) / apps));
    for (const app of prepared.apps) for (let s = 0; s < streamsPerApp; s++) readers.push(new StreamReader(port, app.id, app.clientSecret, s < checkedPerApp));
    if (!(await until(() => readers.every((r) => r.isLive || r.endReason !== null), 60_000))) throw new Error('streams did not reach live');
    const clients = await connectAll(port, N, prepared.accountGen);
    if (!(await until(() => readers.every((r) => r.endReason !== null || r.liveLines >= N), 60_000))) throw new Error('logins did not reach every stream');
    const failed = readers.filter((r) => r.endReason !== null || r.snapshotLines !== N);
    if (failed.length > 0) throw new Error(`a stream ended or had a short snapshot during the set-up: ${failed[0]!.endReason} ${failed[0]!.snapshotLines}`);
    const seconds = Number(args.seconds);
    const warmup = Number(args.warmup);
    let sent = 0;
    let sentAtWarm = 0;
    let who = 0;
    let atWarm = { t: 0, cpu: 0, bench: process.cpuUsage(), busy: machineTicks() };
    let linesAtWarm = 0;
    let warmStats: Promise<Awaited<ReturnType<typeof serverStats>>> | null = null;
    const benchLoop = monitorEventLoopDelay({ resolution: 5 });
    const start = Date.now();
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const elapsed = Date.now() - start;
        const due = Math.floor((Math.min(elapsed, seconds * 1000) * rate) / 1000);
        while (sent < due) {
          sent++;
          const c = clients[who]!;
          who = (who + 1) % N;
          c.ws.send(`{"id":${++c.seq},"type":"presence","status":"t${nowUs()}"}`);
        }
        // After this tick's changes: the window counts and times the changes made after it began.
        if (!shared.measuring && elapsed >= warmup * 1000) {
          shared.measuring = true;
          shared.windowFrom = nowUs();
          sentAtWarm = sent;
          atWarm = { t: performance.now(), cpu: cpuTicks(proc.pid!), bench: process.cpuUsage(), busy: machineTicks() };
          linesAtWarm = readers.reduce((n, r) => n + r.liveLines, 0);
          warmStats = serverStats(port);
          benchLoop.enable();
        }
        if (elapsed >= seconds * 1000) {
          clearInterval(timer);
          resolve();
        }
      }, 1);
    });
    // The window ends when the sending ends; lines still on their way count in the latencies, not in lines/s.
    const secs = (performance.now() - atWarm.t) / 1000;
    // Every stream's lines, the counted ones too (the checked streams alone time them).
    const windowLines = readers.reduce((n, r) => n + r.liveLines, 0) - linesAtWarm;
    const cpu = (cpuTicks(proc.pid!) - atWarm.cpu) / secs;
    const b = process.cpuUsage(atWarm.bench);
    const benchCpu = ((b.user + b.system) / 1e6 / secs) * 100;
    const busy = machineTicks();
    benchLoop.disable();
    const [atStart, atEnd] = [await warmStats!, await serverStats(port)];
    const drainStart = Date.now();
    // Every stream sees every change (every user granted every app).
    const drained = await until(() => readers.every((r) => r.endReason !== null || r.liveLines >= N + sent), 120_000);
    const drainSeconds = drained ? (Date.now() - drainStart) / 1000 : NaN;
    shared.measuring = false;
    const lagCuts = (await serverStats(port)).lagStreamCuts;
    const ended = readers.filter((r) => r.endReason !== null).map((r) => r.endReason!);
    for (const c of clients) c.ws.terminate();
    const h = shared.hist;
    return {
      apps,
      streams: readers.length,
      rate,
      sentRate: (sent - sentAtWarm) / secs,
      linesPerSecond: windowLines / secs,
      p50: h.pct(50),
      p99: h.pct(99),
      max: h.max,
      serverCpu: cpu,
      benchCpu,
      others: (busy.busy - atWarm.busy.busy) / secs - cpu - benchCpu,
      lagCuts,
      serverLoopP99: atEnd.loopP99Ms,
      serverLoopMax: atEnd.loopMaxMs,
      serverGc: ((atEnd.gcSeconds - atStart.gcSeconds) / secs) * 100,
      benchLoopP99: benchLoop.percentile(99) / 1e6,
      benchLoopMax: benchLoop.max / 1e6,
      ended,
      drainSeconds,
      gaps: readers.reduce((n, r) => n + r.gaps, 0),
      duplicates: readers.reduce((n, r) => n + r.duplicates, 0),
      incomplete: readers.filter((r) => r.endReason === null && (r.checked ? r.advanced() !== N + sent || r.lastSeq.size !== N : r.liveLines !== N + sent)).length,
      checked: readers.filter((r) => r.checked).length,
    };
  } finally {
    for (const r of readers) r.close();
    await stopServer(proc);
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows: Row[] = [];
for (const apps of (args.apps as string).split(',').map(Number)) {
  for (const rate of (args.rate as string).split(',').map(Number)) {
    const r = await run(apps, rate);
    console.log(JSON.stringify(r));
    rows.push(r);
  }
}
console.log(`\n${N} accounts, each granted to every app, ${args.streams} streams (${rows[0]?.checked ?? '?'} read line by line: latencies and seq checks; the others count their lines); each rate for ${args.seconds} s (first ${args.warmup} s not counted); webhook_flush_ms ${args['flush-ms']}; ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'})`);
console.log('| apps × streams | changes/s | lines/s | p50 | p99 | max | server CPU | bench CPU | other processes CPU | server loop delay p99 / max | server GC | bench loop delay p99 / max | lag cuts | drained in | seq gaps / dups / incomplete streams |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.apps} × ${r.streams / r.apps} | ${Math.round(r.sentRate)} | ${Math.round(r.linesPerSecond)} | ${r.p50.toFixed(1)} ms | ${r.p99.toFixed(1)} ms | ${r.max.toFixed(0)} ms | ${r.serverCpu.toFixed(0)} % | ${r.benchCpu.toFixed(0)} % | ${r.others.toFixed(0)} % | ${r.serverLoopP99.toFixed(0)} / ${r.serverLoopMax.toFixed(0)} ms | ${r.serverGc.toFixed(1)} % | ${r.benchLoopP99.toFixed(0)} / ${r.benchLoopMax.toFixed(0)} ms | ${r.lagCuts}${r.ended.length > 0 ? ` (${r.ended.length} ended: ${[...new Set(r.ended)].join(', ')})` : ''} | ${r.drainSeconds.toFixed(1)} s | ${r.gaps} / ${r.duplicates} / ${r.incomplete} |`,
  );
}
process.exit(0);
