/**
 * XMPP benchmark: N clients over plain TCP with SASL PLAIN, each a mutual contact of its K ring
 * neighbours, changing presence; measures login time, presence deliveries per second in a burst, and
 * delivery latency at a paced rate. The same shape as bench/native-bench.ts, and it speaks only
 * standard XMPP, so it runs against Prosody and ejabberd too (see /work/shared/PEERS.md). By hand:
 *
 *   ulimit -n 20000
 *   taskset -c 1 npx tsx bench/xmpp-bench.ts --clients 1000 --contacts 20            # spawns presenced
 *   taskset -c 1 npx tsx bench/xmpp-bench.ts --port 15222 --register --subscribe     # a running peer
 *
 * With no --port, presenced is started pinned to --server-cpu with accounts and rosters written into a
 * fresh data directory. Against another server, --register creates the accounts (XEP-0077) and
 * --subscribe makes the ring contacts through subscription stanzas.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SqliteStore } from '../src/adapters/sqlite/sqlite-store.js';
import type { RosterItem } from '../src/core/roster.js';
import { deriveCredentials } from '../src/engine/credentials.js';

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '1000' },
    contacts: { type: 'string', default: '20' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '' },
    domain: { type: 'string', default: 'localhost' },
    password: { type: 'string', default: 'bench' },
    register: { type: 'boolean', default: false },
    subscribe: { type: 'boolean', default: false },
    'burst-changes': { type: 'string', default: '5' },
    'paced-rate': { type: 'string', default: '10000' },
    'paced-seconds': { type: 'string', default: '10' },
    'server-cpu': { type: 'string', default: '0' },
  },
});

const N = Number(args.clients);
const K = Number(args.contacts);
const DOMAIN = args.domain as string;
const PASSWORD = args.password as string;
const user = (i: number): string => `u${i}`;
const jidOf = (i: number): string => `${user(i)}@${DOMAIN}`;
const neighbours = (i: number): number[] => {
  const out: number[] = [];
  for (let d = 1; d <= K / 2; d++) out.push((i + d) % N, (i - d + N) % N);
  return out;
};

async function prepareData(dir: string): Promise<void> {
  const store = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await store.migrate();
  const creds = await deriveCredentials(PASSWORD);
  const now = Date.now();
  for (let i = 0; i < N; i++) await store.createAccount({ jid: jidOf(i), ...creds, createdAt: now });
  const both = { to: true, from: true, pendingOut: false, pendingIn: false, preApproved: false };
  let batch: RosterItem[] = [];
  for (let i = 0; i < N; i++) {
    for (const j of neighbours(i)) batch.push({ owner: jidOf(i), contact: jidOf(j), name: null, groups: [], state: both });
    if (batch.length >= 5000) {
      await store.putRosterItems(batch);
      batch = [];
    }
  }
  if (batch.length) await store.putRosterItems(batch);
  await store.close();
}

async function spawnPresenced(dir: string): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn('taskset', ['-c', args['server-cpu'] as string, process.execPath, 'bin/presenced.js', 'start'], {
    env: {
      ...process.env,
      PRESENCED_DATA_DIR: dir,
      PRESENCED_HTTP_PORT: '0',
      PRESENCED_XMPP_PORT: '0',
      PRESENCED_XMPPS_PORT: '-1',
      PRESENCED_XMPP_REQUIRE_TLS: 'false',
      PRESENCED_LOG_LEVEL: 'info',
      PRESENCED_HEARTBEAT_INTERVAL_MS: '600000',
      PRESENCED_IDLE_TIMEOUT_MS: '3600000',
      PRESENCED_XMPP_NEGOTIATION_TIMEOUT_MS: '600000',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) if (line.includes('"XMPP listening"')) resolve(JSON.parse(line).port as number);
    });
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { proc, port };
}

const HEADER = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='${DOMAIN}' version='1.0'>`;

/** A minimal XMPP client: regex-level parsing is enough for a load generator that knows what it sent. */
class BenchClient {
  private buf = '';
  private waiter: { re: RegExp; resolve(m: string): void } | null = null;
  onStanza: (text: string) => void = () => {};
  online = false;

  constructor(
    readonly i: number,
    readonly socket: Socket,
  ) {
    socket.setEncoding('utf8');
    socket.setNoDelay(true);
    socket.on('data', (d: string) => this.data(d));
    socket.on('error', () => {});
  }

  private data(d: string): void {
    this.buf += d;
    if (!this.online) {
      const w = this.waiter;
      const m = w && w.re.exec(this.buf);
      if (w && m) {
        this.buf = this.buf.slice(m.index + m[0].length);
        this.waiter = null;
        w.resolve(m[0]);
      }
      return;
    }
    // Stanzas of interest are complete elements; cut the buffer at each presence end.
    let end: number;
    while ((end = this.nextEnd()) >= 0) {
      const stanza = this.buf.slice(0, end);
      this.buf = this.buf.slice(end);
      this.onStanza(stanza);
    }
  }

  private nextEnd(): number {
    const m = /<\/presence>|<presence[^>]*\/>|<\/iq>|<iq[^>]*\/>|<\/message>|<r xmlns[^>]*\/>|<a [^>]*\/>/.exec(this.buf);
    return m ? m.index + m[0].length : -1;
  }

  expect(re: RegExp): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${jidOf(this.i)}: no ${re} in ${this.buf.slice(0, 300)}`)), Number(process.env.BENCH_EXPECT_MS ?? 60_000));
      this.waiter = {
        re,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      this.data('');
    });
  }

  send(s: string): void {
    this.socket.write(s);
  }

  async login(register: boolean): Promise<void> {
    this.send(HEADER);
    await this.expect(/<\/stream:features>/);
    if (register) {
      this.send(`<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>${user(this.i)}</username><password>${PASSWORD}</password></query></iq>`);
      await this.expect(/<iq[^>]*id=["']reg["'][^>]*>|<iq[^>]*id=["']reg["'][^>]*\/>/);
    }
    this.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user(this.i)}\0${PASSWORD}`).toString('base64')}</auth>`);
    const r = await this.expect(/<success[^>]*\/>|<success[^>]*>[^<]*<\/success>|<failure[\s\S]*?<\/failure>/);
    if (r.startsWith('<failure')) throw new Error(`login of ${jidOf(this.i)} failed: ${r}`);
    this.send(HEADER);
    await this.expect(/<\/stream:features>/);
    this.send(`<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>`);
    await this.expect(/<\/iq>/);
    this.send(`<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>`);
    await this.expect(/<iq[^>]*id=["']sess["'][^>]*\/>|<iq[^>]*id=["']sess["'][^>]*>[\s\S]*?<\/iq>/);
    this.online = true;
  }
}

async function connectAll(port: number): Promise<BenchClient[]> {
  const clients: BenchClient[] = new Array(N);
  let next = 0;
  const CONCURRENCY = 50;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < N) {
        const i = next++;
        const socket = connect(port, args.host as string);
        await new Promise<void>((resolve, reject) => {
          socket.once('connect', resolve);
          socket.once('error', reject);
        });
        const c = new BenchClient(i, socket);
        await c.login(args.register as boolean);
        clients[i] = c;
      }
    }),
  );
  return clients;
}

function waitUntil(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const started = Date.now();
    const t = setInterval(() => {
      if (cond() || Date.now() - started > timeoutMs) {
        clearInterval(t);
        resolve(cond());
      }
    }, 5);
  });
}

function pct(sorted: number[], p: number): number {
  return sorted.length ? (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number) : NaN;
}

async function main(): Promise<void> {
  let proc: ChildProcess | null = null;
  let dir: string | null = null;
  let port = Number(args.port);
  if (!args.port) {
    dir = mkdtempSync(join(tmpdir(), 'presenced-xmpp-bench-'));
    console.log(`preparing ${N} accounts with ${K} contacts each ...`);
    await prepareData(dir);
    ({ proc, port } = await spawnPresenced(dir));
  }
  try {
    const t0 = Date.now();
    console.log(`server on ${port}, logging in ...`);
    const clients = await connectAll(port);
    const loginMs = Date.now() - t0;
    console.log(`login of ${N} clients: ${(loginMs / 1000).toFixed(1)} s`);

    if (args.subscribe) {
      let subscribed = 0;
      for (const c of clients) {
        c.onStanza = (s) => {
          const m = /<presence[^>]*type=["']subscribe["'][^>]*from=["']([^"'/]+)|<presence[^>]*from=["']([^"'/]+)["'][^>]*type=["']subscribe["']/.exec(s);
          const from = m?.[1] ?? m?.[2];
          if (from) c.send(`<presence to='${from}' type='subscribed'/>`);
          if (/type=["']subscribed["']/.test(s)) subscribed++;
        };
      }
      for (const c of clients) for (const j of neighbours(c.i)) if (j > c.i || c.i - j > K / 2) c.send(`<presence to='${jidOf(j)}' type='subscribe'/>`);
      await waitUntil(() => subscribed >= (N * K) / 2, 120_000);
      console.log(`subscriptions: ${subscribed} answered`);
    }

    // Everyone becomes available; wait until the initial presence storm has passed.
    let received = 0;
    let burstReceived = 0;
    let latencies: number[] = [];
    for (const c of clients) {
      const own = `from='${jidOf(c.i)}/`;
      const ownDq = `from="${jidOf(c.i)}/`;
      c.onStanza = (s) => {
        // The server echoes each client's own presence back to it: that is not a delivery to a contact.
        if (!s.startsWith('<presence') || s.includes(own) || s.includes(ownDq)) return;
        if (s.includes('<status>b')) burstReceived++;
        received++;
        const m = /<status>t(\d+(?:\.\d+)?)<\/status>/.exec(s);
        if (m) latencies.push(performance.now() - Number(m[1]));
      };
    }
    for (const c of clients) c.send('<presence/>');
    await waitUntil(() => received >= N * K, 60_000);
    received = 0;

    const changes = Number(args['burst-changes']);
    const expected = N * changes * K;
    const b0 = performance.now();
    for (let r = 0; r < changes; r++) for (const c of clients) c.send(`<presence><show>${r % 2 ? 'away' : 'dnd'}</show><status>b${r}</status></presence>`);
    const complete = await waitUntil(() => burstReceived >= expected, 120_000);
    const burstS = (performance.now() - b0) / 1000;
    received = burstReceived;
    console.log(`burst: ${received} of ${expected} presence deliveries in ${burstS.toFixed(2)} s = ${Math.round(received / burstS)} /s${complete ? '' : ' (incomplete)'}`);

    const rate = Number(args['paced-rate']);
    const seconds = Number(args['paced-seconds']);
    const changesPerSecond = rate / K;
    latencies = [];
    const p0 = performance.now();
    let sent = 0;
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const due = Math.floor(((performance.now() - p0) / 1000) * changesPerSecond);
        while (sent < due) {
          const c = clients[sent % N] as BenchClient;
          c.send(`<presence><show>${sent % 2 ? 'away' : 'xa'}</show><status>t${performance.now().toFixed(3)}</status></presence>`);
          sent++;
        }
        if (performance.now() - p0 > seconds * 1000) {
          clearInterval(tick);
          resolve();
        }
      }, 2);
    });
    await waitUntil(() => latencies.length >= sent * K, 10_000);
    latencies.sort((a, b) => a - b);
    console.log(`paced ${rate} deliveries/s for ${seconds} s: ${latencies.length} deliveries, p50 ${pct(latencies, 50).toFixed(1)} ms, p99 ${pct(latencies, 99).toFixed(1)} ms`);
    for (const c of clients) c.socket.destroy();
  } finally {
    proc?.kill('SIGTERM');
    if (proc) await new Promise((r) => proc!.once('exit', r));
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
