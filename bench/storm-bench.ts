/**
 * Login and reconnect storms (issue 15): N clients come online at once by one way in, while sessions
 * already online keep changing presence at a paced rate; against presenced, Prosody and ejabberd in the
 * same run. Run by hand (see docs/benchmarks.md), never in CI:
 *
 *   npm run build
 *   ulimit -n 20000
 *   taskset -c 1 npx tsx bench/storm-bench.ts --servers presenced,prosody,ejabberd --clients 1000,10000
 *
 * Per server: start it pinned to core 0 (`taskset -c 0`) with --online accounts (each a mutual contact
 * of its --contacts ring neighbours) and the storm's accounts (no contacts) in its storage (ejabberd:
 * registered in band and rosters made over XMPP); log the --online sessions in and leave them online.
 * Then, per storm size and way in (--ways): the online sessions change presence so that --paced-rate
 * deliveries per second are due, each change carrying its send time; after --baseline-seconds the storm
 * goes: all N clients connect at once and log in (stream, SASL or XEP-0077 registration then PLAIN,
 * bind, session, roster, initial presence until the server echoes it; native: one auth request). The
 * figures: the time from the go until the last client was online, logins per second, and the latency
 * of the online sessions' deliveries sent while the storm ran (p50, p99, max) beside those sent before
 * it. Then the storm's clients leave and the next storm waits for the server to be idle.
 *
 * The storm's clients run in a child process (bench/lib/storm-clients.ts) at a lower priority than this
 * one on the same core: the bench reads the online sessions' deliveries, and its own delay in reading
 * them would count as the server's. Its event-loop delay during each storm is printed beside.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, getPriority, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { SqliteStore } from '../src/adapters/sqlite/sqlite-store.js';
import type { RosterItem } from '../src/core/roster.js';
import { deriveCredentials } from '../src/engine/credentials.js';
import { accountGeneration } from '../src/engine/tokens.js';
import { WAYS, type StormDone, type StormMessage, type StormRun, type Way } from './lib/storm-clients.js';
import { attr, XmppWire, type Mechanism } from './lib/xmpp-wire.js';
import {
  ensurePackages,
  freePort,
  prosodyAccountFile,
  prosodyRosterFile,
  serverQuiet,
  startEjabberd,
  startPresenced,
  startProsody,
  type RunningServer,
} from './lib/xmpp-servers.js';
import { cpuTicks } from './proc-stats.js';

const { values: args } = parseArgs({
  options: {
    servers: { type: 'string', default: 'presenced,prosody,ejabberd' },
    // Storm sizes, each run with every way.
    clients: { type: 'string', default: '1000,10000' },
    // plain-warm (plain's accounts again, after plain) is left out unless asked for.
    ways: { type: 'string', default: WAYS.filter((w) => w !== 'plain-warm').join(',') },
    // Registration costs every server a password hash per client; larger sizes of it are left out
    // unless asked for (presenced's scrypt alone is minutes at 10,000 on one core).
    'register-max': { type: 'string', default: '1000' },
    online: { type: 'string', default: '1000' },
    contacts: { type: 'string', default: '20' },
    // Deliveries per second due to the online sessions; per server with name=rate (e.g. 10000,prosody=2000):
    // a server that cannot keep up with the paced load queues it, and its storm then measures the queue.
    'paced-rate': { type: 'string', default: '10000' },
    'baseline-seconds': { type: 'string', default: '3' },
    // Paced changes go on this long after the last storm client is online.
    'tail-seconds': { type: 'string', default: '1' },
    'stall-seconds': { type: 'string', default: '120' },
    'server-cpu': { type: 'string', default: '0' },
    'server-node-args': { type: 'string', default: '' },
    // presenced settings for the run, e.g. --server-env PRESENCED_PASSWORD_POOL=libuv (comma-separated).
    'server-env': { type: 'string', default: '' },
    // How much lower than this process the storm's child runs (niceness, capped at 19).
    'storm-nice': { type: 'string', default: '10' },
    'keep-dirs': { type: 'boolean', default: false },
  },
});
if (availableParallelism() === 1) setFlagsFromString('--no-parallel-scavenge');

const SIZES = (args.clients as string).split(',').map(Number);
const WAYS_RUN = (args.ways as string).split(',').map((w) => w.trim()) as Way[];
for (const w of WAYS_RUN) if (!WAYS.includes(w)) throw new Error(`unknown way ${w} (${WAYS.join(', ')})`);
const REGISTER_MAX = Number(args['register-max']);
const ONLINE = Number(args.online);
const K = Number(args.contacts);
const PACED_RATES = new Map<string, number>();
let PACED_DEFAULT = 10_000;
for (const part of (args['paced-rate'] as string).split(',')) {
  const [name, rate] = part.includes('=') ? (part.split('=') as [string, string]) : [null, part];
  if (name === null) PACED_DEFAULT = Number(rate);
  else PACED_RATES.set(name.trim(), Number(rate));
}
const pacedRateOf = (server: string): number => PACED_RATES.get(server) ?? PACED_DEFAULT;
const BASELINE_MS = Number(args['baseline-seconds']) * 1000;
const TAIL_MS = Number(args['tail-seconds']) * 1000;
const STALL_MS = Number(args['stall-seconds']) * 1000;
const SERVER_CPU = args['server-cpu'] as string;
const DOMAIN = 'localhost';
const PASSWORD = 'bench';
const TOKEN_SECRET = 'storm-bench-secret-storm-bench-secret-0123';
const STORM_MAX = Math.max(...SIZES);
if (K % 2 !== 0 || K >= ONLINE) throw new Error('--contacts must be even and smaller than --online');

const watcherOf = (i: number): string => `w${i}`;
/**
 * Each way logs in accounts of its own, so that no storm finds what an earlier one left (presenced's
 * verified-password cache, a peer's own caches): every storm is a reconnect after a restart. plain-warm
 * logs plain's accounts in again, the reconnect after a network blip.
 */
const PREFIX: Record<Exclude<Way, 'register'>, string> = { 'scram-sha-256': 'a', 'scram-sha-1': 'b', plain: 'c', 'plain-warm': 'c', 'native-password': 'd', 'native-token': 'e' };
const stormUserOf = (way: Exclude<Way, 'register'>, i: number): string => `${PREFIX[way]}${i}`;
/** The storm accounts to create: each prefix the ways of the run use, STORM_MAX of each. */
const STORM_USERS: string[] = [...new Set(WAYS_RUN.filter((w): w is Exclude<Way, 'register'> => w !== 'register').map((w) => PREFIX[w]))].flatMap((p) =>
  Array.from({ length: STORM_MAX }, (_, i) => `${p}${i}`),
);
const jidOf = (user: string): string => `${user}@${DOMAIN}`;
function neighbours(i: number): number[] {
  const out: number[] = [];
  for (let d = 1; d <= K / 2; d++) out.push((i + d) % ONLINE, (i - d + ONLINE) % ONLINE);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Servers

interface StormServer extends RunningServer {
  readonly httpPort: number;
  /** The cheapest way the online sessions log in (not measured). */
  readonly setupMechanism: Mechanism;
}

interface ServerKind {
  readonly name: string;
  start(dir: string, port: number): Promise<StormServer>;
}

/** presenced's tokens are bound to the accounts' password hash, which all bench accounts share. */
let presencedAccountGeneration = '';

async function preparePresenced(dir: string): Promise<void> {
  const store = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await store.migrate();
  const creds = await deriveCredentials(PASSWORD);
  presencedAccountGeneration = accountGeneration(Buffer.from(TOKEN_SECRET), creds.passwordHash);
  const now = Date.now();
  for (let i = 0; i < ONLINE; i++) await store.createAccount({ jid: jidOf(watcherOf(i)), ...creds, createdAt: now });
  for (const u of STORM_USERS) await store.createAccount({ jid: jidOf(u), ...creds, createdAt: now });
  const both = { to: true, from: true, pendingOut: false, pendingIn: false, preApproved: false };
  const batch: RosterItem[] = [];
  for (let i = 0; i < ONLINE; i++) {
    for (const j of neighbours(i)) batch.push({ owner: jidOf(watcherOf(i)), contact: jidOf(watcherOf(j)), name: null, groups: [], state: both });
  }
  await store.putRosterItems(batch);
  await store.close();
}

function serverEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of (args['server-env'] as string).split(',').filter(Boolean)) {
    const eq = kv.indexOf('=');
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return env;
}

const presenced: ServerKind = {
  name: 'presenced',
  async start(dir, port) {
    await preparePresenced(dir);
    const s = await startPresenced({
      dir,
      port,
      cpu: SERVER_CPU,
      nodeArgs: args['server-node-args'] as string,
      env: {
        PRESENCED_XMPP_REGISTRATION: 'open',
        PRESENCED_TOKEN_SECRET: TOKEN_SECRET,
        PRESENCED_AUTH_TIMEOUT_MS: '600000',
        PRESENCED_WS_RATE_LIMIT: '100000',
        PRESENCED_WS_RATE_BURST: '100000',
        ...serverEnv(),
      },
    });
    return { ...s, setupMechanism: 'SCRAM-SHA-1' };
  },
};

const prosody: ServerKind = {
  name: 'prosody',
  async start(dir, port) {
    const host = join(dir, 'data', DOMAIN);
    for (const d of ['accounts', 'roster']) mkdirSync(join(host, d), { recursive: true });
    const account = prosodyAccountFile(PASSWORD);
    for (let i = 0; i < ONLINE; i++) {
      writeFileSync(join(host, 'accounts', `${watcherOf(i)}.dat`), account);
      writeFileSync(join(host, 'roster', `${watcherOf(i)}.dat`), prosodyRosterFile(neighbours(i).map((j) => jidOf(watcherOf(j)))));
    }
    for (const u of STORM_USERS) writeFileSync(join(host, 'accounts', `${u}.dat`), account);
    const s = await startProsody({ dir, port, cpu: SERVER_CPU, domain: DOMAIN, backlog: 4096 });
    return { ...s, httpPort: 0, setupMechanism: 'SCRAM-SHA-1' };
  },
};

const ejabberd: ServerKind = {
  name: 'ejabberd',
  async start(dir, port) {
    const s = await startEjabberd({ dir, port, cpu: SERVER_CPU, domain: DOMAIN, backlog: 4096 });
    const server = { ...s, httpPort: 0, setupMechanism: 'PLAIN' as const };
    // Accounts in band; the online sessions' rosters over XMPP (subscribe, approve) when they log in.
    const t0 = Date.now();
    const users = [...Array.from({ length: ONLINE }, (_, i) => watcherOf(i)), ...STORM_USERS];
    await pool(users.length, 50, async (i) => {
      const w = new XmppWire(users[i] as string, port, DOMAIN);
      await w.startStream();
      await w.register(users[i] as string, PASSWORD);
      await w.close();
    });
    console.log(`[ejabberd] registered ${users.length} accounts in band in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return server;
  },
};

const KINDS: Record<string, ServerKind> = { presenced, prosody, ejabberd };

async function pool(count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await fn(next++);
    }),
  );
}

// ---------------------------------------------------------------------------------------------------
// The online sessions

/** Deliveries of paced changes: send time (performance.now()) and latency, in ms. */
let pacedSent: number[] = [];
let pacedLatency: number[] = [];
/** Roster setup (ejabberd): contacts with subscription both, per online session. */
let settingUp: Array<Set<string>> | null = null;

function onlineScanner(index: number, wire: XmppWire) {
  return (el: string, now: number): void => {
    if (el.startsWith('<presence')) {
      const s = el.indexOf('<status>t');
      if (s >= 0) {
        const dot = el.indexOf('.', s);
        const sender = Number(el.slice(s + 9, dot));
        // A change echoed to the sender's own resource is not a delivery to a contact.
        if (sender !== index) {
          const sentAt = Number(el.slice(dot + 1, el.indexOf('</status>', dot)));
          pacedSent.push(sentAt);
          pacedLatency.push(now - sentAt);
        }
        return;
      }
      if (settingUp && attr(el, 'type') === 'subscribe') {
        const from = attr(el, 'from');
        if (from !== null) wire.send(`<presence to='${from}' type='subscribed'/>`);
      }
      return;
    }
    if (el.startsWith('<iq') && el.includes('jabber:iq:roster')) {
      if (settingUp) learnRoster(settingUp[index] as Set<string>, el);
      if (attr(el, 'type') === 'set') wire.send(`<iq type='result' id='${attr(el, 'id')}'/>`);
    }
  };
}

function learnRoster(both: Set<string>, el: string): void {
  let pos = 0;
  for (;;) {
    const i = el.indexOf('<item', pos);
    if (i < 0) break;
    const gt = el.indexOf('>', i);
    const tag = el.slice(i, gt + 1);
    const jid = attr(tag, 'jid');
    if (jid !== null) {
      if (attr(tag, 'subscription') === 'both') both.add(jid);
      else both.delete(jid);
    }
    pos = gt + 1;
  }
}

async function loginOnline(server: StormServer, withRosterSetup: boolean): Promise<XmppWire[]> {
  const out: XmppWire[] = new Array(ONLINE);
  if (withRosterSetup) settingUp = Array.from({ length: ONLINE }, () => new Set<string>());
  await pool(ONLINE, 100, async (i) => {
    const user = watcherOf(i);
    const w = new XmppWire(user, server.port, DOMAIN);
    const features = await w.startStream();
    await w.authenticate(features, server.setupMechanism, user, PASSWORD);
    const roster = await w.bindAndAnnounce('online', 'online', jidOf(user));
    if (settingUp) learnRoster(settingUp[i] as Set<string>, roster);
    w.scanWith(onlineScanner(i, w));
    out[i] = w;
  });
  if (withRosterSetup) {
    for (let i = 0; i < ONLINE; i++) for (const j of neighbours(i)) (out[i] as XmppWire).send(`<presence to='${jidOf(watcherOf(j))}' type='subscribe'/>`);
    await waitUntil('roster setup', () => (settingUp as Array<Set<string>>).every((s) => s.size >= K), 600_000);
    settingUp = null;
  }
  return out;
}

/** Polls a condition counted by the clients' own handlers (5 ms): what the bench waits on is in this process. */
function waitUntil(what: string, done: () => boolean, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const until = Date.now() + timeoutMs;
    const t = setInterval(() => {
      if (done()) {
        clearInterval(t);
        resolve();
      } else if (Date.now() > until) {
        clearInterval(t);
        reject(new Error(`${what}: not done after ${timeoutMs / 1000} s`));
      }
    }, 5);
  });
}

/** Paced presence changes of the online sessions, round robin, until stopped; resolves with how many were sent. */
function pace(online: XmppWire[], rate: number): { stop(): Promise<number> } {
  const changesPerSec = rate / K;
  let sent = 0;
  let who = 0;
  const start = performance.now();
  const timer = setInterval(() => {
    // Catch up on ticks the timer missed, so the offered rate is what was asked.
    const due = Math.floor(((performance.now() - start) * changesPerSec) / 1000);
    while (sent < due) {
      sent++;
      const sender = who;
      who = (who + 1) % ONLINE;
      (online[sender] as XmppWire).send(`<presence><show>away</show><status>t${sender}.${performance.now().toFixed(3)}</status></presence>`);
    }
  }, 1);
  return {
    async stop() {
      clearInterval(timer);
      return sent;
    },
  };
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? NaN : (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number);
}

interface Latency {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

function latencyOf(from: number, to: number): Latency {
  const picked: number[] = [];
  for (let i = 0; i < pacedSent.length; i++) {
    const t = pacedSent[i] as number;
    if (t >= from && t < to) picked.push(pacedLatency[i] as number);
  }
  const sorted = Float64Array.from(picked).sort();
  return { count: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.length ? (sorted[sorted.length - 1] as number) : NaN };
}

// ---------------------------------------------------------------------------------------------------
// One storm

interface StormResult {
  way: Way;
  size: number;
  skipped?: string;
  error?: string;
  seconds?: number;
  loginsPerSecond?: number;
  online?: number;
  failed?: number;
  p50Login?: number;
  before?: Latency;
  during?: Latency;
  serverCpuSeconds?: number;
  benchLoopP99?: number;
  errors?: string[];
}

let registrationRound = 0;

function startChild(): { child: ChildProcess; next(type: StormMessage['type']): Promise<StormMessage>; progress: { online: number; failed: number } } {
  const child = spawn(process.execPath, ['--import', 'tsx', join('bench', 'lib', 'storm-clients.ts')], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    setPriority(child.pid as number, Math.min(19, getPriority() + Number(args['storm-nice'])));
  } catch {
    // not allowed to lower it: it runs at ours
  }
  const progress = { online: 0, failed: 0 };
  const waiting = new Map<string, (m: StormMessage) => void>();
  child.on('message', (m: StormMessage) => {
    if (m.type === 'progress') Object.assign(progress, { online: m.online, failed: m.failed });
    waiting.get(m.type)?.(m);
    waiting.delete(m.type);
  });
  return {
    child,
    progress,
    next: (type) =>
      new Promise((resolve, reject) => {
        waiting.set(type, resolve);
        child.once('exit', (code) => reject(new Error(`storm process exited (${code}) before ${type}`)));
      }),
  };
}

async function storm(kind: ServerKind, server: StormServer, online: XmppWire[], way: Way, size: number): Promise<StormResult> {
  const result: StormResult = { way, size };
  if (way.startsWith('native') && kind.name !== 'presenced') return { ...result, skipped: 'no native protocol' };
  if (way === 'register' && size > REGISTER_MAX) return { ...result, skipped: `over --register-max ${REGISTER_MAX}` };
  const users = way === 'register' ? Array.from({ length: size }, (_, i) => `r${registrationRound}x${i}`) : Array.from({ length: size }, (_, i) => stormUserOf(way, i));
  if (way === 'register') registrationRound++;
  const run: StormRun = {
    cmd: 'run',
    way,
    xmppPort: server.port,
    httpPort: server.httpPort,
    domain: DOMAIN,
    users,
    password: PASSWORD,
    tokenSecret: TOKEN_SECRET,
    accountGeneration: presencedAccountGeneration,
    stallMs: STALL_MS,
  };
  const c = startChild();
  try {
    const ready = c.next('ready');
    c.child.send(run);
    await ready;
    pacedSent = [];
    pacedLatency = [];
    const pacer = pace(online, pacedRateOf(kind.name));
    const pacedStart = performance.now();
    await new Promise((r) => setTimeout(r, BASELINE_MS)); // the paced baseline before the storm: measurement
    const baseline = latencyOf(pacedStart, performance.now() - 1000);
    if (!(baseline.p50 < 1000)) {
      console.log(`[${kind.name}] does not keep up with ${pacedRateOf(kind.name)} deliveries/s (baseline p50 ${baseline.p50.toFixed(0)} ms): lower --paced-rate for it`);
    }
    const loop = monitorEventLoopDelay({ resolution: 5 });
    loop.enable();
    const cpu0 = cpuTicks(server.memPid);
    const stormStart = performance.now();
    const done = c.next('done') as Promise<StormDone>;
    c.child.send({ cmd: 'go' });
    const d = await done;
    const stormEnd = stormStart + (d.finishedAt - d.startedAt);
    result.serverCpuSeconds = (cpuTicks(server.memPid) - cpu0) / 100;
    loop.disable();
    result.benchLoopP99 = loop.percentile(99) / 1e6;
    await new Promise((r) => setTimeout(r, TAIL_MS)); // paced changes after the storm: measurement
    const sent = await pacer.stop();
    // Deliveries still in flight arrive; at most the stall limit.
    await waitUntil('paced deliveries', () => pacedSent.length >= sent * K, 10_000).catch(() => {});
    result.before = latencyOf(pacedStart, stormStart);
    result.during = latencyOf(stormStart, stormEnd);
    result.online = d.online;
    result.failed = d.failed;
    result.errors = d.errors;
    if (d.notOffered === size) return { ...result, skipped: `mechanism not offered` };
    result.seconds = (d.finishedAt - d.startedAt) / 1000;
    result.loginsPerSecond = d.online / result.seconds;
    result.p50Login = d.times[Math.floor(d.times.length / 2)];
    console.log(
      `[${kind.name}] ${way} x ${size}: ${d.online} online, ${d.failed} failed, last online after ${result.seconds.toFixed(2)} s ` +
        `(${Math.round(result.loginsPerSecond)} logins/s, median client ${((result.p50Login ?? NaN) / 1000).toFixed(2)} s), server CPU ${result.serverCpuSeconds.toFixed(1)} s; ` +
        `online sessions' deliveries p50/p99/max before ${fmtLatency(result.before)}, during ${fmtLatency(result.during)} ms; bench loop delay p99 ${result.benchLoopP99.toFixed(1)} ms` +
        (d.errors.length ? `\n  errors: ${d.errors.join(' | ')}` : ''),
    );
  } catch (e) {
    result.error = e instanceof Error ? e.message : String(e);
    console.log(`[${kind.name}] ${way} x ${size} FAILED: ${result.error}`);
  } finally {
    const closed = c.next('closed').catch(() => undefined);
    if (c.child.connected) c.child.send({ cmd: 'close' });
    await Promise.race([closed, new Promise((r) => setTimeout(r, 20_000))]);
    c.child.kill('SIGKILL');
    await serverQuiet(server.memPid, STALL_MS);
  }
  return result;
}

function fmtLatency(l: Latency | undefined): string {
  return l === undefined || l.count === 0 ? '-' : `${l.p50.toFixed(2)}/${l.p99.toFixed(2)}/${l.max.toFixed(1)}`;
}

// ---------------------------------------------------------------------------------------------------
// One server

async function measure(kind: ServerKind): Promise<StormResult[]> {
  const dir = mkdtempSync(join(tmpdir(), `storm-bench-${kind.name}-`));
  const results: StormResult[] = [];
  let server: StormServer | null = null;
  let online: XmppWire[] = [];
  try {
    const port = await freePort();
    server = await kind.start(dir, port);
    console.log(`[${kind.name}] ${server.version} listening on 127.0.0.1:${port} (pid ${server.memPid})`);
    const t0 = Date.now();
    online = await loginOnline(server, kind.name === 'ejabberd');
    console.log(`[${kind.name}] ${ONLINE} sessions online (${K} mutual contacts each) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await serverQuiet(server.memPid, STALL_MS);
    for (const size of SIZES) for (const way of WAYS_RUN) results.push(await storm(kind, server, online, way, size));
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e);
    console.log(`[${kind.name}] FAILED: ${error}`);
    for (const size of SIZES) for (const way of WAYS_RUN) if (!results.some((r) => r.way === way && r.size === size)) results.push({ way, size, error });
  } finally {
    await Promise.race([Promise.allSettled(online.filter(Boolean).map((w) => w.close())), new Promise((r) => setTimeout(r, 10_000))]);
    await server?.stop();
    if (args['keep-dirs']) console.log(`[${kind.name}] kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

// ---------------------------------------------------------------------------------------------------

const names = (args.servers as string).split(',').map((s) => s.trim()).filter(Boolean);
for (const n of names) if (!KINDS[n]) throw new Error(`unknown server ${n} (presenced, prosody, ejabberd)`);
ensurePackages(names);
console.log(
  `storms of ${SIZES.join(', ')} clients (${WAYS_RUN.join(', ')}) while ${ONLINE} sessions online (${K} mutual contacts each) ` +
    `get ${names.map((n) => `${n} ${pacedRateOf(n)}`).join(', ')} deliveries/s; servers on CPU ${SERVER_CPU}${args['server-env'] ? `; presenced with ${args['server-env']}` : ''}`,
);
const all = new Map<string, StormResult[]>();
for (const n of names) all.set(n, await measure(KINDS[n] as ServerKind));

const cell = (r: StormResult | undefined): string => {
  if (!r) return '-';
  if (r.skipped) return `n/a (${r.skipped})`;
  if (r.error) return `failed: ${r.error.slice(0, 80)}`;
  const failed = r.failed ? `, ${r.failed} failed` : '';
  return `${r.seconds?.toFixed(2)} s, ${Math.round(r.loginsPerSecond ?? 0).toLocaleString('en-US')}/s${failed}; p99 ${r.during?.p99.toFixed(2)} ms (before ${r.before?.p99.toFixed(2)})`;
};
console.log(`\nTime until the last client is online, logins/s; p99 of the ${ONLINE} online sessions' deliveries during the storm (before it)\n`);
console.log(`| storm | ${names.join(' | ')} |`);
console.log(`|---|${names.map(() => '---').join('|')}|`);
for (const size of SIZES) {
  for (const way of WAYS_RUN) {
    console.log(`| ${way} x ${size.toLocaleString('en-US')} | ${names.map((n) => cell(all.get(n)?.find((r) => r.way === way && r.size === size))).join(' | ')} |`);
  }
}
process.exit(0);
