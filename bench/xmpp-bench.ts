/**
 * XMPP benchmark: the native-bench workload (N clients, each a mutual contact of its K ring neighbours,
 * changing presence) over XMPP c2s, run against presenced, Prosody and ejabberd on the same machine in
 * the same run, printed side by side. Run by hand (see docs/benchmarks.md), never in CI:
 *
 *   npm run build
 *   ulimit -n 20000
 *   taskset -c 1 npx tsx bench/xmpp-bench.ts --servers presenced,prosody,ejabberd
 *
 * Every server runs as its own process pinned to core 0 (`taskset -c 0`); this generator should run on
 * the other core. The generator is a minimal XMPP client over plain TCP written for this purpose (no
 * XML parser: incoming stanzas are found with indexOf), so that 1,000 clients and tens of thousands
 * of stanzas per second fit in one core and the instrument costs little next to the servers.
 *
 * Latency pass, per server: start it in a temp directory on a free loopback port; create the accounts
 * and rosters (presenced and Prosody: written into their storage before start; ejabberd: XEP-0077
 * in-band registration, then every client subscribes to its ring neighbours and approves theirs until
 * every roster holds K contacts with subscription both, then a restart); a warm-up login storm of N/10
 * clients that leave (compiled code and grown heaps belong to the baseline); memory with 0 sessions;
 * log N clients in (timed); memory with N idle sessions; burst; paced latency in rounds, each once the
 * server has gone quiet; stop.
 *
 * Memory pass, per server, after all latency passes: the same preparation with --memory-sessions
 * accounts (10,000 by default), then memory with 0 and with that many idle sessions. At 1,000 sessions
 * a server's whole difference is a few MB, within the swing of its idle RSS from run to run.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { SqliteStore } from '../src/adapters/sqlite/sqlite-store.js';
import type { RosterItem } from '../src/core/roster.js';
import { deriveCredentials } from '../src/engine/credentials.js';
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
import { attr, elementEnd } from './lib/xmpp-wire.js';
import { cpuCounters, rssKb } from './proc-stats.js';

const { values: args } = parseArgs({
  options: {
    servers: { type: 'string', default: 'presenced,prosody,ejabberd' },
    clients: { type: 'string', default: '1000' },
    contacts: { type: 'string', default: '20' },
    'burst-changes': { type: 'string', default: '5' },
    'paced-rate': { type: 'string', default: '10000' },
    'paced-seconds': { type: 'string', default: '10' },
    // The paced phase is run this many times back to back; the table gives the median round's p50 and
    // p99, so one round spoilt by the machine (a neighbour's burst, stolen CPU) does not decide the run.
    rounds: { type: 'string', default: '3' },
    // A round during which the hypervisor took more than this share of the machine's CPU (percent) is
    // measured again, up to as many extra rounds as --rounds; it says more about the host than the server.
    'max-steal': { type: 'string', default: '1' },
    // A second pass per server for memory alone: this many idle sessions (0 skips it). At 1,000 sessions
    // a server's whole difference is a few MB, within the run-to-run swing of its idle RSS.
    'memory-sessions': { type: 'string', default: '10000' },
    'memory-idle-seconds': { type: 'string', default: '25' },
    // V8 gives a login storm's garbage back only after some seconds without allocation; too short a
    // window charges it to the sessions (or to the baseline, giving negative figures).
    'idle-seconds': { type: 'string', default: '20' },
    'stall-seconds': { type: 'string', default: '30' },
    'server-cpu': { type: 'string', default: '0' },
    // Extra node flags for presenced only (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof).
    'server-node-args': { type: 'string', default: '' },
    // Writes each paced delivery's send time (epoch ms) and latency to FILE.<server>, for finding
    // what the slow ones have in common.
    'latency-log': { type: 'string' },
    // Leaves each server's temp directory (configs, logs) in place for a post-mortem.
    'keep-dirs': { type: 'boolean', default: false },
    // PLAIN against presenced costs one scrypt (N=2^15, ~50-120 ms of CPU here) per login; SCRAM-SHA-1
    // costs the server a few HMACs, and the generator computes the salted password once (every bench
    // account shares it). 'auto' uses SCRAM for presenced and PLAIN for the peers.
    sasl: { type: 'string', default: 'auto' },
  },
});
// The generator is the measuring instrument: pinned to one core, its own parallel-scavenge pauses would
// be counted as delivery latency.
if (availableParallelism() === 1) setFlagsFromString('--no-parallel-scavenge');

// With --latency-log, the generator's own collections too: a delivery it was late to read is not the server's.
const generatorGc: string[] = [];
if (args['latency-log']) {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) generatorGc.push(`${(performance.timeOrigin + e.startTime).toFixed(1)} ${e.duration.toFixed(2)} gen`);
  }).observe({ entryTypes: ['gc'] });
}

/**
 * The population of the pass being run: the latency pass's clients, then the memory pass's sessions.
 * Account names, ring neighbours and prepared data all follow it.
 */
let N = Number(args.clients);
const K = Number(args.contacts);
const B = Number(args['burst-changes']);
const PACED_RATE = Number(args['paced-rate']);
const PACED_SECONDS = Number(args['paced-seconds']);
const IDLE_SECONDS = Number(args['idle-seconds']);
const ROUNDS = Math.max(1, Number(args.rounds));
const MAX_STEAL = Number(args['max-steal']);
const MEMORY_SESSIONS = Number(args['memory-sessions']);
const MEMORY_IDLE_SECONDS = Number(args['memory-idle-seconds']);
const STALL_MS = Number(args['stall-seconds']) * 1000;
const SERVER_CPU = args['server-cpu'] as string;
const DOMAIN = 'localhost';
const PASSWORD = 'bench';
const RESOURCE = 'bench';
if (K % 2 !== 0 || K >= N) throw new Error('--contacts must be even and smaller than --clients');
if (MEMORY_SESSIONS > 0 && K >= MEMORY_SESSIONS) throw new Error('--contacts must be smaller than --memory-sessions');

const userOf = (i: number): string => `u${i}`;
const jidOf = (i: number): string => `u${i}@${DOMAIN}`;
function neighbours(i: number): number[] {
  const out: number[] = [];
  for (let d = 1; d <= K / 2; d++) out.push((i + d) % N, (i - d + N) % N);
  return out;
}

type Mechanism = 'PLAIN' | 'SCRAM-SHA-1';

// ---------------------------------------------------------------------------------------------------
// Servers

interface BenchServer extends RunningServer {
  mechanism: Mechanism;
}

interface ServerKind {
  name: string;
  /** Accounts and rosters exist before start (presenced) or are made over XMPP afterwards. */
  preparedAccounts: boolean;
  start(dir: string, port: number): Promise<BenchServer>;
}

async function prepareData(dir: string, accounts: number): Promise<void> {
  const store = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await store.migrate();
  const creds = await deriveCredentials(PASSWORD);
  const now = Date.now();
  for (let i = 0; i < accounts; i++) await store.createAccount({ jid: jidOf(i), ...creds, createdAt: now });
  // RFC 6121 "both": the XMPP side derives subscription='both' from to && from.
  const both = { to: true, from: true, pendingOut: false, pendingIn: false, preApproved: false };
  let batch: RosterItem[] = [];
  for (let i = 0; i < accounts; i++) {
    for (const j of neighbours(i)) batch.push({ owner: jidOf(i), contact: jidOf(j), name: null, groups: [], state: both });
    if (batch.length >= 5000) {
      await store.putRosterItems(batch);
      batch = [];
    }
  }
  if (batch.length) await store.putRosterItems(batch);
  await store.close();
}

const presenced: ServerKind = {
  name: 'presenced',
  preparedAccounts: true,
  async start(dir, port) {
    await prepareData(dir, N);
    const s = await startPresenced({ dir, port, cpu: SERVER_CPU, nodeArgs: args['server-node-args'] as string, env: {} });
    return { ...s, mechanism: 'SCRAM-SHA-1' };
  },
};

/**
 * Prosody's accounts and rosters written into its `internal` file storage before start. Over XMPP the
 * roster setup alone took over 5 minutes for 1,000 users here: Prosody rewrites a user's whole roster
 * file on every change, and each mutual pair goes through four changes per side.
 */
function prepareProsodyData(dataDir: string): void {
  const host = join(dataDir, DOMAIN);
  for (const d of ['accounts', 'roster']) mkdirSync(join(host, d), { recursive: true });
  const account = prosodyAccountFile(PASSWORD);
  for (let i = 0; i < N; i++) {
    writeFileSync(join(host, 'accounts', `${userOf(i)}.dat`), account);
    writeFileSync(join(host, 'roster', `${userOf(i)}.dat`), prosodyRosterFile(neighbours(i).map(jidOf)));
  }
}

const prosody: ServerKind = {
  name: 'prosody',
  preparedAccounts: true,
  async start(dir, port) {
    prepareProsodyData(join(dir, 'data'));
    return { ...(await startProsody({ dir, port, cpu: SERVER_CPU, domain: DOMAIN })), mechanism: 'PLAIN' };
  },
};

const ejabberd: ServerKind = {
  name: 'ejabberd',
  preparedAccounts: false,
  async start(dir, port) {
    return { ...(await startEjabberd({ dir, port, cpu: SERVER_CPU, domain: DOMAIN })), mechanism: 'PLAIN' };
  },
};

const KINDS: Record<string, ServerKind> = { presenced, prosody, ejabberd };

// ---------------------------------------------------------------------------------------------------
// The raw XMPP client

const STREAM_HEADER = `<?xml version='1.0'?><stream:stream to='${DOMAIN}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`;

const saltedCache = new Map<string, Buffer>();

/** Measurement sinks, swapped per phase; the client only parses the status text. */
interface Sinks {
  /** A presence with a status of ours: kind letter, sender index, rest; `now` is the chunk's arrival. */
  onStatus(kind: number, sender: number, text: string, statusStart: number, statusEnd: number, now: number, receiver: number): void;
}
let sinks: Sinks = { onStatus: () => {} };
let stanzasReceived = 0;

class Client {
  private socket: Socket;
  private buf = '';
  private bound = false;
  private waiter: { names: string[]; resolve: (el: string) => void; reject: (e: Error) => void } | null = null;
  private closedResolve: (() => void) | null = null;
  closed = false;
  /** Roster contacts with subscription both, learned from roster results and pushes (setup only). */
  both: Set<string> | null = null;
  onBothChange: (() => void) | null = null;
  private iqId = 0;

  constructor(
    readonly index: number,
    port: number,
  ) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.setNoDelay(true);
    this.socket.on('data', (d: Buffer) => this.onData(d.toString('utf8')));
    this.socket.on('error', (e) => this.fail(e));
    this.socket.on('close', () => {
      this.closed = true;
      this.fail(new Error('connection closed'));
      this.closedResolve?.();
    });
  }

  send(text: string): void {
    if (!this.closed) this.socket.write(text);
  }

  private fail(e: Error): void {
    const w = this.waiter;
    this.waiter = null;
    w?.reject(new Error(`client ${this.index}: ${e.message}`));
  }

  /** The next top-level element named one of `names` (negotiation only). */
  private next(names: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error(`client ${this.index}: connection closed`));
      this.waiter = { names, resolve, reject };
      this.pump();
    });
  }

  private onData(chunk: string): void {
    this.buf = this.buf.length === 0 ? chunk : this.buf + chunk;
    if (this.bound) this.scan(performance.now());
    else this.pump();
  }

  /** Negotiation: hands the waiter the first element it asked for, skipping the stream header. */
  private pump(): void {
    const w = this.waiter;
    if (!w) return;
    let pos = 0;
    for (;;) {
      const lt = this.buf.indexOf('<', pos);
      if (lt < 0) {
        this.buf = '';
        return;
      }
      if (this.buf.startsWith('<?xml', lt)) {
        const e = this.buf.indexOf('?>', lt);
        if (e < 0) break;
        pos = e + 2;
        continue;
      }
      if (this.buf.startsWith('<stream:stream', lt)) {
        const e = this.buf.indexOf('>', lt);
        if (e < 0) break;
        pos = e + 1;
        continue;
      }
      if (this.buf.startsWith('<stream:error', lt) || this.buf.startsWith('</stream:stream', lt)) {
        this.waiter = null;
        w.reject(new Error(`client ${this.index}: stream ended: ${this.buf.slice(lt, lt + 300)}`));
        return;
      }
      const end = elementEnd(this.buf, lt);
      if (end < 0) break;
      const el = this.buf.slice(lt, end);
      pos = end;
      if (w.names.some((n) => el.startsWith(`<${n}`) && !/[\w:-]/.test(el.charAt(n.length + 1)))) {
        this.buf = this.buf.slice(pos);
        this.waiter = null;
        w.resolve(el);
        return;
      }
    }
    this.buf = this.buf.slice(pos);
  }

  async iq(type: 'get' | 'set', payload: string): Promise<string> {
    const id = `q${++this.iqId}`;
    this.send(`<iq type='${type}' id='${id}'>${payload}</iq>`);
    for (;;) {
      const el = await this.next(['iq']);
      if (attr(el, 'id') === id) return el;
    }
  }

  private async startStream(): Promise<string> {
    this.send(STREAM_HEADER);
    return this.next(['stream:features']);
  }

  /** XEP-0077 in-band registration of this client's account; an existing account is fine. */
  async register(): Promise<void> {
    await this.startStream();
    const r = await this.iq('set', `<query xmlns='jabber:iq:register'><username>${userOf(this.index)}</username><password>${PASSWORD}</password></query>`);
    if (attr(r, 'type') !== 'result' && !r.includes('<conflict')) throw new Error(`registration of ${userOf(this.index)} failed: ${r.slice(0, 300)}`);
    await this.close();
  }

  /** Authenticates, binds, establishes the session, fetches the roster and sends initial presence. */
  async login(mechanism: Mechanism): Promise<void> {
    const features = await this.startStream();
    if (!features.includes(`>${mechanism}<`)) throw new Error(`client ${this.index}: ${mechanism} not offered: ${features.slice(0, 400)}`);
    if (mechanism === 'PLAIN') {
      const creds = Buffer.from(`\0${userOf(this.index)}\0${PASSWORD}`).toString('base64');
      this.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${creds}</auth>`);
    } else {
      await this.scramSha1();
    }
    const outcome = await this.next(['success', 'failure']);
    if (!outcome.startsWith('<success')) throw new Error(`client ${this.index}: authentication failed: ${outcome.slice(0, 300)}`);
    const features2 = await this.startStream();
    const bind = await this.iq('set', `<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${RESOURCE}</resource></bind>`);
    if (attr(bind, 'type') !== 'result') throw new Error(`client ${this.index}: bind failed: ${bind.slice(0, 300)}`);
    if (features2.includes('urn:ietf:params:xml:ns:xmpp-session')) {
      const s = await this.iq('set', `<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>`);
      if (attr(s, 'type') !== 'result') throw new Error(`client ${this.index}: session failed: ${s.slice(0, 300)}`);
    }
    const roster = await this.iq('get', `<query xmlns='jabber:iq:roster'/>`);
    if (this.both) this.learnRoster(roster);
    // From here on incoming data is scanned for presence, not negotiated.
    this.bound = true;
    this.send('<presence/>');
    if (this.buf.length > 0) this.scan(performance.now());
  }

  private async scramSha1(): Promise<void> {
    const nonce = randomBytes(12).toString('base64');
    const first = `n=${userOf(this.index)},r=${nonce}`;
    this.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>${Buffer.from(`n,,${first}`).toString('base64')}</auth>`);
    const ch = await this.next(['challenge', 'failure']);
    if (!ch.startsWith('<challenge')) throw new Error(`client ${this.index}: SCRAM refused: ${ch.slice(0, 300)}`);
    const serverFirst = Buffer.from(ch.slice(ch.indexOf('>') + 1, ch.lastIndexOf('<')), 'base64').toString();
    const fields = new Map(serverFirst.split(',').map((f) => [f.slice(0, 1), f.slice(2)] as const));
    const r = fields.get('r') ?? '';
    const s = fields.get('s') ?? '';
    const iterations = Number(fields.get('i'));
    let salted = saltedCache.get(`${s}/${iterations}`);
    if (!salted) {
      salted = pbkdf2Sync(PASSWORD, Buffer.from(s, 'base64'), iterations, 20, 'sha1');
      saltedCache.set(`${s}/${iterations}`, salted);
    }
    const withoutProof = `c=biws,r=${r}`;
    const authMessage = `${first},${serverFirst},${withoutProof}`;
    const clientKey = createHmac('sha1', salted).update('Client Key').digest();
    const signature = createHmac('sha1', createHash('sha1').update(clientKey).digest()).update(authMessage).digest();
    for (let i = 0; i < clientKey.length; i++) clientKey[i] = (clientKey[i] as number) ^ (signature[i] as number);
    const final = `${withoutProof},p=${clientKey.toString('base64')}`;
    this.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(final).toString('base64')}</response>`);
  }

  /** Bound stream: find complete top-level stanzas cheaply; only presence carries measurements. */
  private scan(now: number): void {
    const buf = this.buf;
    let pos = 0;
    for (;;) {
      const lt = buf.indexOf('<', pos);
      if (lt < 0) {
        pos = buf.length;
        break;
      }
      const end = elementEnd(buf, lt);
      if (end < 0) break;
      stanzasReceived++;
      if (buf.startsWith('<presence', lt)) this.presence(buf, lt, end, now);
      else if (buf.startsWith('<iq', lt)) this.iqIn(buf.slice(lt, end));
      pos = end;
    }
    this.buf = pos >= buf.length ? '' : buf.slice(pos);
  }

  private presence(buf: string, start: number, end: number, now: number): void {
    const s = buf.indexOf('<status>', start);
    if (s >= 0 && s < end) {
      const textStart = s + 8;
      const textEnd = buf.indexOf('</status>', textStart);
      const dot = buf.indexOf('.', textStart);
      const sender = Number(buf.slice(textStart + 1, dot));
      // The server echoes a change to the sender's own resource: not a delivery to a contact.
      if (sender !== this.index) sinks.onStatus(buf.charCodeAt(textStart), sender, buf, dot + 1, textEnd, now, this.index);
      return;
    }
    if (this.both === null) return;
    // Roster setup: approve every subscription request (from ring neighbours only, in this bench).
    const el = buf.slice(start, end);
    if (attr(el, 'type') === 'subscribe') {
      const from = attr(el, 'from');
      if (from !== null) this.send(`<presence to='${from}' type='subscribed'/>`);
    }
  }

  private iqIn(el: string): void {
    const type = attr(el, 'type');
    if (type === 'get' && el.includes('urn:xmpp:ping')) {
      this.send(`<iq type='result' id='${attr(el, 'id')}'${attr(el, 'from') !== null ? ` to='${attr(el, 'from')}'` : ''}/>`);
      return;
    }
    if (type === 'set' && el.includes('jabber:iq:roster')) {
      if (this.both) this.learnRoster(el);
      this.send(`<iq type='result' id='${attr(el, 'id')}'/>`);
    }
  }

  private learnRoster(el: string): void {
    const both = this.both as Set<string>;
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
    this.onBothChange?.();
  }

  /** Ends the stream and waits for the server to close the connection. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.closedResolve = resolve;
      this.bound = false;
      this.send('</stream:stream>');
      this.socket.end();
    });
  }
}

async function pool<T>(count: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

async function loginAll(port: number, mechanism: Mechanism, withRosterSetup = false, count = N): Promise<Client[]> {
  return pool(count, 100, async (i) => {
    const c = new Client(i, port);
    if (withRosterSetup) c.both = new Set();
    await c.login(mechanism);
    return c;
  });
}

async function closeAll(clients: Client[]): Promise<void> {
  await pool(clients.length, 200, (i) => (clients[i] as Client).close());
}

/**
 * Resolves when `done()` holds, checked whenever `progress()` may have moved; fails when nothing moved
 * for the stall limit. The 5 ms poll only notices events already counted by the clients.
 */
function waitUntil(what: string, done: () => boolean, progress: () => number): Promise<void> {
  return new Promise((resolve, reject) => {
    let last = progress();
    let lastAt = Date.now();
    const t = setInterval(() => {
      if (done()) {
        clearInterval(t);
        resolve();
        return;
      }
      const p = progress();
      if (p !== last) {
        last = p;
        lastAt = Date.now();
      } else if (Date.now() - lastAt > STALL_MS) {
        clearInterval(t);
        reject(new Error(`${what}: no progress for ${STALL_MS / 1000} s (at ${p})`));
      }
    }, 5);
  });
}

/** Every client subscribes to its ring neighbours and approves theirs, until all rosters are mutual. */
async function setupRosters(clients: Client[]): Promise<void> {
  let complete = 0;
  const counted = new Set<number>();
  for (const c of clients) {
    c.onBothChange = () => {
      if (!counted.has(c.index) && (c.both as Set<string>).size >= K) {
        counted.add(c.index);
        complete++;
      }
    };
    c.onBothChange();
  }
  for (const c of clients) for (const j of neighbours(c.index)) c.send(`<presence to='${jidOf(j)}' type='subscribe'/>`);
  await waitUntil('roster setup', () => complete === clients.length, () => stanzasReceived);
  for (const c of clients) {
    c.both = null;
    c.onBothChange = null;
  }
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/**
 * Idle RSS: the lowest of one sample a second. Sampling is the measurement here, hence the timer: right
 * after a login storm the heaps still hold garbage that the runtimes give back once allocation stops.
 */
async function idleRss(pid: number, seconds: number): Promise<number> {
  let low = rssKb(pid);
  for (let s = 0; s < seconds; s++) {
    await new Promise((r) => setTimeout(r, 1000)); // RSS sampled once a second: measurement, not synchronisation
    low = Math.min(low, rssKb(pid));
  }
  return low;
}

interface Round {
  delivered: number;
  expected: number;
  p50: number;
  p99: number;
  max: number;
  /** Share of the machine's CPU time the hypervisor took during the round (both cores). */
  stealPercent: number;
}

/**
 * One paced round: changes spread evenly so that PACED_RATE deliveries per second are due; each carries
 * its send time, read back at receipt by the contacts (same clock, this process).
 */
async function pacedRound(clients: Client[], label: string): Promise<Round> {
  const changesPerSec = PACED_RATE / K;
  const latencies = new Float64Array(Math.ceil(PACED_RATE * PACED_SECONDS * 1.01) + K);
  const sentAt = args['latency-log'] ? new Float64Array(latencies.length) : null;
  let got = 0;
  sinks = {
    onStatus(kindChar, _sender, text, s, e, now) {
      if (kindChar !== 116 /* t */ || got >= latencies.length) return;
      const t = Number(text.slice(s, e));
      if (sentAt) sentAt[got] = t;
      latencies[got++] = now - t;
    },
  };
  const totalMs = PACED_SECONDS * 1000;
  let sent = 0;
  let who = 0;
  const cpu0 = cpuCounters();
  const pacedStart = performance.now();
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      // Catch up on ticks the timer missed, so the offered rate is what was asked.
      const elapsed = Math.min(totalMs, performance.now() - pacedStart);
      const due = Math.floor((elapsed * changesPerSec) / 1000);
      while (sent < due) {
        sent++;
        const c = clients[who] as Client;
        who = (who + 1) % N;
        c.send(`<presence><show>away</show><status>t${c.index}.${performance.now().toFixed(3)}</status></presence>`);
      }
      if (elapsed >= totalMs) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  const cpu1 = cpuCounters();
  const expected = sent * K;
  await waitUntil('paced', () => got >= expected, () => got).catch((e: Error) => console.log(`[${label}] ${e.message}`));
  sinks = { onStatus: () => {} };
  if (sentAt) {
    // Epoch milliseconds, comparable with a server's own timestamps (a GC trace, say).
    const lines: string[] = [];
    for (let i = 0; i < got; i++) lines.push(`${(performance.timeOrigin + (sentAt[i] as number)).toFixed(3)} ${(latencies[i] as number).toFixed(3)}`);
    writeFileSync(`${args['latency-log']}.${label}`, lines.join('\n') + '\n');
    writeFileSync(`${args['latency-log']}.generator-gc`, generatorGc.join('\n') + '\n');
  }
  const sorted = latencies.subarray(0, got).sort();
  return {
    delivered: got,
    expected,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? NaN,
    stealPercent: cpu1.total > cpu0.total ? (100 * (cpu1.steal - cpu0.steal)) / (cpu1.total - cpu0.total) : 0,
  };
}

// ---------------------------------------------------------------------------------------------------
// One server

interface Result {
  server: string;
  version: string;
  error?: string;
  mechanism?: Mechanism;
  setupSeconds?: number;
  loginSeconds?: number;
  burstRate?: number;
  burstDelivered?: number;
  burstGeneratorCpu?: number;
  pacedDelivered?: number;
  pacedExpected?: number;
  p50?: number;
  p99?: number;
  max?: number;
  rssIdleKb?: number;
  rssSessionsKb?: number;
  perSessionKb?: number;
  rounds?: Round[];
}

/** What a pass holds that must be released whatever happens: the server process and the clients. */
interface Held {
  server: BenchServer | null;
  clients: Client[];
}

/**
 * Starts `kind` with N accounts, each a mutual contact of its K ring neighbours, and brings it to the
 * state its baseline is measured in: presenced and Prosody have their data written before start and
 * get a warm-up login storm of N/10 that leaves; ejabberd registers in band, sets its rosters up over
 * XMPP, is restarted on the same spool and gets the same warm-up.
 */
async function startPrepared(kind: ServerKind, dir: string, port: number, held: Held, result: Result): Promise<Mechanism> {
  let server = await kind.start(dir, port);
  held.server = server;
  result.version = server.version;
  const mech: Mechanism = args.sasl === 'plain' ? 'PLAIN' : args.sasl === 'scram-sha-1' ? 'SCRAM-SHA-1' : server.mechanism;
  result.mechanism = mech;
  console.log(`[${kind.name}] ${server.version} listening on 127.0.0.1:${port} (pid ${server.memPid}), SASL ${mech}, ${N} accounts`);

  const t0 = Date.now();
  if (!kind.preparedAccounts) {
    await pool(N, 50, (i) => new Client(i, port).register());
    console.log(`[${kind.name}] registered ${N} accounts in band in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  // The warm-up is a tenth of N: an allocator that keeps freed memory (Lua's, glibc's) would otherwise
  // serve the measured sessions from what a storm of the same size left, showing ~0 per session.
  held.clients = await loginAll(port, mech, !kind.preparedAccounts, kind.preparedAccounts ? Math.max(1, Math.floor(N / 10)) : N);
  if (!kind.preparedAccounts) await setupRosters(held.clients);
  await closeAll(held.clients);
  held.clients = [];
  result.setupSeconds = (Date.now() - t0) / 1000;
  console.log(`[${kind.name}] ${kind.preparedAccounts ? 'warm-up login storm' : `rosters of ${K} mutual contacts`} done in ${result.setupSeconds.toFixed(1)} s`);
  if (!kind.preparedAccounts) {
    // The setup was a storm of N sessions, which the BEAM keeps: measured from there, the measured
    // sessions reuse what it left and show nothing. A fresh process on the same spool, after the same
    // warm-up of N/10 as the others, gives a baseline of the same kind as theirs.
    await server.stop();
    held.server = null;
    server = await kind.start(dir, port);
    held.server = server;
    console.log(`[${kind.name}] restarted after the setup (pid ${server.memPid})`);
    held.clients = await loginAll(port, mech, false, Math.max(1, Math.floor(N / 10)));
    await closeAll(held.clients);
    held.clients = [];
  }
  return mech;
}

/**
 * Memory per idle session: the lowest RSS over an idle window with no sessions, then N clients log in
 * (timed) and the lowest RSS over a window of the same length. Both are taken in the state a quiet
 * server settles in, so neither charges a login storm's garbage to the sessions. The clients stay.
 */
async function sessionMemory(kind: ServerKind, port: number, mech: Mechanism, held: Held, result: Result, idleSeconds: number): Promise<void> {
  const pid = (held.server as BenchServer).memPid;
  result.rssIdleKb = await idleRss(pid, idleSeconds);
  const t1 = Date.now();
  held.clients = await loginAll(port, mech);
  result.loginSeconds = (Date.now() - t1) / 1000;
  result.rssSessionsKb = await idleRss(pid, idleSeconds);
  result.perSessionKb = (result.rssSessionsKb - result.rssIdleKb) / N;
  console.log(
    `[${kind.name}] logged in ${N} clients in ${result.loginSeconds.toFixed(1)} s; RSS ${(result.rssIdleKb / 1024).toFixed(1)} MB idle, ` +
      `${(result.rssSessionsKb / 1024).toFixed(1)} MB with ${N} sessions: ${result.perSessionKb.toFixed(1)} KB per session`,
  );
}

/** Ends a pass: clients closed (a peer that never closes must not hang the run), server stopped, directory removed. */
async function release(kind: ServerKind, held: Held, dir: string): Promise<void> {
  sinks = { onStatus: () => {} };
  await Promise.race([closeAll(held.clients.filter((c) => c !== undefined)), new Promise((r) => setTimeout(r, 10_000))]);
  await held.server?.stop();
  if (args['keep-dirs']) console.log(`[${kind.name}] kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}

/** The memory pass: N = --memory-sessions accounts and idle sessions, nothing else. */
async function measureMemory(kind: ServerKind): Promise<Result> {
  const result: Result = { server: kind.name, version: '?' };
  const dir = mkdtempSync(join(tmpdir(), `xmpp-bench-mem-${kind.name}-`));
  const held: Held = { server: null, clients: [] };
  try {
    const port = await freePort();
    const mech = await startPrepared(kind, dir, port, held, result);
    await sessionMemory(kind, port, mech, held, result, MEMORY_IDLE_SECONDS);
  } catch (e) {
    result.error = e instanceof Error ? e.message : String(e);
    console.log(`[${kind.name}] memory pass FAILED: ${result.error}`);
  } finally {
    await release(kind, held, dir);
  }
  return result;
}

/** The latency pass: N clients; memory at N sessions, burst, paced rounds. */
async function measure(kind: ServerKind): Promise<Result> {
  const result: Result = { server: kind.name, version: '?' };
  const dir = mkdtempSync(join(tmpdir(), `xmpp-bench-${kind.name}-`));
  const held: Held = { server: null, clients: [] };
  try {
    const port = await freePort();
    const mech = await startPrepared(kind, dir, port, held, result);
    // Idle sessions: the quiet period also lets the login fan-out drain before the burst.
    await sessionMemory(kind, port, mech, held, result, IDLE_SECONDS);
    const clients = held.clients;
    const server = held.server as BenchServer;

    // Burst: every client changes show and status B times back to back.
    const shows = ['away', 'dnd', 'xa', 'chat'];
    const expected = N * B * K;
    let burstGot = 0;
    let lastAt = 0;
    sinks = {
      onStatus(kindChar, _sender, _text, _s, _e, now) {
        if (kindChar !== 98 /* b */) return;
        burstGot++;
        lastAt = now;
      },
    };
    const cpu0 = process.cpuUsage();
    const start = performance.now();
    for (let b = 0; b < B; b++) {
      const show = shows[b % shows.length] as string;
      for (const c of clients) c.send(`<presence><show>${show}</show><status>b${c.index}.${b}</status></presence>`);
    }
    await waitUntil('burst', () => burstGot >= expected, () => burstGot).catch((e: Error) => console.log(`[${kind.name}] ${e.message}`));
    const secs = (lastAt - start) / 1000;
    const cpu = process.cpuUsage(cpu0);
    result.burstDelivered = burstGot;
    result.burstRate = Math.round(burstGot / secs);
    result.burstGeneratorCpu = Math.round(((cpu.user + cpu.system) / 1e6 / ((performance.now() - start) / 1000)) * 100);
    console.log(
      `[${kind.name}] burst: ${burstGot}/${expected} deliveries in ${secs.toFixed(3)} s = ${result.burstRate} deliveries/s ` +
        `(generator busy ${result.burstGeneratorCpu}% of one core)`,
    );

    // Paced: ROUNDS rounds, each after the server has gone quiet; the median round's figures stand.
    // Rounds with more than MAX_STEAL % stolen are run again (at most ROUNDS extra) and left out of the
    // median unless too few clean ones remain.
    const rounds: Round[] = [];
    for (let r = 0; r < 2 * ROUNDS && rounds.filter((x) => x.stealPercent <= MAX_STEAL).length < ROUNDS; r++) {
      await serverQuiet(server.memPid, STALL_MS);
      const round = await pacedRound(clients, `${kind.name}.${r + 1}`);
      rounds.push(round);
      console.log(
        `[${kind.name}] paced round ${r + 1}: ${PACED_RATE} deliveries/s for ${PACED_SECONDS} s: ${round.delivered}/${round.expected} deliveries, ` +
          `p50 ${round.p50.toFixed(2)} ms, p99 ${round.p99.toFixed(2)} ms, max ${round.max.toFixed(2)} ms; CPU stolen by the hypervisor ${round.stealPercent.toFixed(1)}%` +
          (round.stealPercent > MAX_STEAL ? ` (over ${MAX_STEAL}%: run again)` : ''),
      );
    }
    result.rounds = rounds;
    const clean = rounds.filter((x) => x.stealPercent <= MAX_STEAL);
    const counted = clean.length > 0 ? clean : rounds;
    const median = [...counted].sort((x, y) => x.p99 - y.p99)[Math.floor((counted.length - 1) / 2)] as Round;
    result.p50 = median.p50;
    result.p99 = median.p99;
    result.max = median.max;
    result.pacedDelivered = rounds.reduce((n, x) => n + x.delivered, 0);
    result.pacedExpected = rounds.reduce((n, x) => n + x.expected, 0);
  } catch (e) {
    result.error = e instanceof Error ? e.message : String(e);
    console.log(`[${kind.name}] FAILED: ${result.error}`);
  } finally {
    await release(kind, held, dir);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------

const names = (args.servers as string).split(',').map((s) => s.trim()).filter(Boolean);
for (const n of names) if (!KINDS[n]) throw new Error(`unknown server ${n} (presenced, prosody, ejabberd)`);
ensurePackages(names);
const CLIENTS = N;
console.log(
  `${N} clients x ${K} mutual ring contacts, burst ${B} changes each, paced ${PACED_RATE} deliveries/s for ${PACED_SECONDS} s x ${ROUNDS} rounds; ` +
    `memory pass with ${MEMORY_SESSIONS || 'no'} sessions; servers on CPU ${SERVER_CPU}`,
);
const results: Result[] = [];
for (const n of names) results.push(await measure(KINDS[n] as ServerKind));
const memory = new Map<string, Result>();
if (MEMORY_SESSIONS > 0) {
  N = MEMORY_SESSIONS;
  for (const n of names) memory.set(n, await measureMemory(KINDS[n] as ServerKind));
}

const fmt = (v: number | undefined, digits = 0): string => (v === undefined || Number.isNaN(v) ? '-' : v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const mb = (kb: number | undefined): string => fmt(kb === undefined ? undefined : kb / 1024, 1);
const mem = (r: Result): Result | undefined => memory.get(r.server);
const rows: Array<[string, (r: Result) => string]> = [
  ['version', (r) => r.version],
  ['SASL', (r) => r.mechanism ?? '-'],
  [`accounts/rosters or warm-up (s)`, (r) => fmt(r.setupSeconds, 1)],
  [`login of ${CLIENTS} (s)`, (r) => fmt(r.loginSeconds, 1)],
  ['burst deliveries/s', (r) => fmt(r.burstRate)],
  ['burst delivered', (r) => (r.burstDelivered === undefined ? '-' : `${r.burstDelivered}/${CLIENTS * B * K}`)],
  [`paced ${PACED_RATE}/s p50 (ms), median round (of those under ${MAX_STEAL}% stolen)`, (r) => fmt(r.p50, 2)],
  ['paced p99 (ms), median round', (r) => fmt(r.p99, 2)],
  ['paced max (ms), median round', (r) => fmt(r.max, 2)],
  ['paced p99 of each round (ms)', (r) => (r.rounds ?? []).map((x) => fmt(x.p99, 2)).join(', ') || '-'],
  ['CPU stolen in each round (%)', (r) => (r.rounds ?? []).map((x) => fmt(x.stealPercent, 1)).join(', ') || '-'],
  ['paced delivered', (r) => (r.pacedDelivered === undefined ? '-' : `${r.pacedDelivered}/${r.pacedExpected}`)],
  [`RSS idle / ${CLIENTS} sessions (MB)`, (r) => `${mb(r.rssIdleKb)} / ${mb(r.rssSessionsKb)}`],
  [`KB per session (${CLIENTS})`, (r) => fmt(r.perSessionKb, 1)],
];
if (MEMORY_SESSIONS > 0) {
  rows.push(
    [`memory pass: setup (s)`, (r) => fmt(mem(r)?.setupSeconds, 1)],
    [`memory pass: login of ${MEMORY_SESSIONS} (s)`, (r) => fmt(mem(r)?.loginSeconds, 1)],
    [`RSS idle / ${MEMORY_SESSIONS} sessions (MB)`, (r) => `${mb(mem(r)?.rssIdleKb)} / ${mb(mem(r)?.rssSessionsKb)}`],
    [`KB per session (${MEMORY_SESSIONS})`, (r) => fmt(mem(r)?.perSessionKb, 1)],
  );
}
rows.push(['error', (r) => [r.error, mem(r)?.error].filter(Boolean).join('; ')]);
console.log(`\n| | ${results.map((r) => r.server).join(' | ')} |`);
console.log(`|---|${results.map(() => '---').join('|')}|`);
for (const [label, f] of rows) {
  if (label === 'error' && results.every((r) => !r.error && !mem(r)?.error)) continue;
  console.log(`| ${label} | ${results.map(f).join(' | ')} |`);
}
process.exit(0);
