/**
 * Idle-liveness benchmark: what the heartbeat costs. N sessions log in and then stay idle, answering
 * the server's pings (WebSocket pings on the native protocol, XEP-0199 over XMPP); over a window the
 * bench counts the pings the clients received (= pings the server sent) and the server's CPU time.
 * Run once per profile of liveness settings, so the figures sit side by side. By hand, never in CI:
 *
 *   ulimit -n 20000
 *   npx tsx bench/idle-bench.ts --sessions 10000 --seconds 60 --protocols native,xmpp
 *
 * The server runs as its own process (with its own `ulimit -n 20000`); accounts are written straight
 * into a fresh data directory, native clients log in with tokens and XMPP clients with SCRAM-SHA-1
 * (one salted password for all: the generator does not spend minutes hashing).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { SqliteStore } from '../src/adapters/sqlite/sqlite-store.js';
import { deriveCredentials } from '../src/engine/credentials.js';
import { accountGeneration, issueToken } from '../src/engine/tokens.js';
import { cpuCounters, cpuTicks, rssKb } from './proc-stats.js';

const { values: args } = parseArgs({
  options: {
    sessions: { type: 'string', default: '10000' },
    seconds: { type: 'string', default: '60' },
    protocols: { type: 'string', default: 'native,xmpp' },
    profiles: { type: 'string', default: 'old,new' },
  },
});
const N = Number(args.sessions);
const SECONDS = Number(args.seconds);
const SECRET = 'idle-bench-secret-idle-bench-secret-0123';
const PASSWORD = 'bench';
const DOMAIN = 'localhost';
const jidOf = (i: number): string => `u${i}@${DOMAIN}`;

/** Liveness settings compared: before issue 10, and its defaults. */
const PROFILES: Record<string, { heartbeat: number; idle: number; grace: number }> = {
  old: { heartbeat: 25_000, idle: 60_000, grace: 10_000 },
  new: { heartbeat: 10_000, idle: 15_000, grace: 5_000 },
};

/** Tokens are bound to the account's password hash (all bench accounts share one); set when the accounts are made. */
let accountGen = '';

async function prepareAccounts(dir: string): Promise<void> {
  const store = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await store.migrate();
  const creds = await deriveCredentials(PASSWORD);
  accountGen = accountGeneration(Buffer.from(SECRET), creds.passwordHash);
  const now = Date.now();
  for (let i = 0; i < N; i++) await store.createAccount({ jid: jidOf(i), ...creds, createdAt: now });
  await store.close();
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

async function startServer(dir: string, profile: { heartbeat: number; idle: number; grace: number }, xmppPort: number): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn('sh', ['-c', `ulimit -n 20000; exec "${process.execPath}" bin/presenced.js start`], {
    env: {
      ...process.env,
      PRESENCED_DATA_DIR: dir,
      PRESENCED_HTTP_PORT: '0',
      PRESENCED_TOKEN_SECRET: SECRET,
      PRESENCED_LOG_LEVEL: 'info',
      PRESENCED_XMPP_PORT: String(xmppPort),
      PRESENCED_XMPPS_PORT: '-1',
      PRESENCED_XMPP_REQUIRE_TLS: 'false',
      PRESENCED_HEARTBEAT_INTERVAL_MS: String(profile.heartbeat),
      PRESENCED_IDLE_TIMEOUT_MS: String(profile.idle),
      PRESENCED_GRACE_PERIOD_MS: String(profile.grace),
      PRESENCED_AUTH_TIMEOUT_MS: '600000',
      PRESENCED_XMPP_NEGOTIATION_TIMEOUT_MS: '600000',
      PRESENCED_WS_RATE_LIMIT: '100000',
      PRESENCED_WS_RATE_BURST: '100000',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) if (line.includes('listening on')) resolve(JSON.parse(line).port as number);
      if (buf.length > 100_000) buf = buf.slice(-1000);
    });
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { proc, port };
}

async function pool(count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) await fn(next++);
  }));
}

let pings = 0;

/** Native: token login; the ws library answers WebSocket pings by itself, as browsers do. */
async function connectNative(port: number): Promise<Array<{ close(): void }>> {
  const out: WebSocket[] = [];
  await pool(N, 200, async (i) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { perMessageDeflate: false });
    const now = Date.now();
    const token = issueToken(Buffer.from(SECRET), { sub: jidOf(i), acc: accountGen, iat: now, exp: now + 3_600_000, scope: 'login' });
    await new Promise<void>((resolve, reject) => {
      ws.once('error', reject);
      ws.once('open', () => ws.send(JSON.stringify({ id: 1, type: 'auth', token, resource: 'idle' })));
      ws.once('message', (m) => (JSON.parse(m.toString()).type === 'result' ? resolve() : reject(new Error(`login ${i}: ${m.toString()}`))));
    });
    ws.on('ping', () => pings++);
    out.push(ws);
  });
  return out.map((ws) => ({ close: () => ws.terminate() }));
}

const HEADER = `<?xml version='1.0'?><stream:stream to='${DOMAIN}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`;
const salted = new Map<string, Buffer>();

/** XMPP: SCRAM-SHA-1, bind, initial presence; then answers XEP-0199 pings and nothing else. */
async function xmppSession(port: number, i: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.setEncoding('utf8');
  let buf = '';
  let waiting: { re: RegExp; resolve(m: string): void; reject(e: Error): void } | null = null;
  let live = false;
  const check = () => {
    if (live) {
      // Idle phase: only pings come; answer each complete one.
      for (;;) {
        const m = /<iq [^>]*>\s*<ping xmlns='urn:xmpp:ping'\/><\/iq>/.exec(buf);
        if (!m) break;
        pings++;
        const id = /\sid='([^']*)'/.exec(m[0])?.[1] ?? '';
        socket.write(`<iq type='result' id='${id}' to='${DOMAIN}'/>`);
        buf = buf.slice(m.index + m[0].length);
      }
      if (buf.length > 10_000) buf = buf.slice(-2000);
      return;
    }
    const w = waiting;
    const m = w ? w.re.exec(buf) : null;
    if (w && m) {
      waiting = null;
      buf = buf.slice(m.index + m[0].length);
      w.resolve(m[0]);
    }
  };
  socket.on('data', (d: string) => {
    buf += d;
    check();
  });
  socket.on('error', (e) => waiting?.reject(e));
  const next = (re: RegExp) =>
    new Promise<string>((resolve, reject) => {
      waiting = { re, resolve, reject };
      check();
    });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write(HEADER);
  await next(/<\/stream:features>/);
  const nonce = randomBytes(12).toString('base64');
  const first = `n=u${i},r=${nonce}`;
  socket.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>${Buffer.from(`n,,${first}`).toString('base64')}</auth>`);
  const ch = await next(/<challenge[^>]*>[^<]*<\/challenge>/);
  const serverFirst = Buffer.from(ch.slice(ch.indexOf('>') + 1, ch.lastIndexOf('<')), 'base64').toString();
  const f = new Map(serverFirst.split(',').map((x) => [x.slice(0, 1), x.slice(2)] as const));
  const key = `${f.get('s')}/${f.get('i')}`;
  let salt = salted.get(key);
  if (!salt) {
    salt = pbkdf2Sync(PASSWORD, Buffer.from(f.get('s') ?? '', 'base64'), Number(f.get('i')), 20, 'sha1');
    salted.set(key, salt);
  }
  const withoutProof = `c=biws,r=${f.get('r')}`;
  const clientKey = createHmac('sha1', salt).update('Client Key').digest();
  const signature = createHmac('sha1', createHash('sha1').update(clientKey).digest()).update(`${first},${serverFirst},${withoutProof}`).digest();
  for (let k = 0; k < clientKey.length; k++) clientKey[k] = (clientKey[k] as number) ^ (signature[k] as number);
  socket.write(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(`${withoutProof},p=${clientKey.toString('base64')}`).toString('base64')}</response>`);
  await next(/<success[^>]*>[^<]*<\/success>|<success[^>]*\/>/);
  socket.write(HEADER);
  await next(/<\/stream:features>/);
  socket.write(`<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>idle</resource></bind></iq>`);
  await next(/<\/iq>/);
  socket.write('<presence/>');
  await next(/<presence[^>]*(?:\/>|<\/presence>)/);
  live = true;
  buf = '';
  return socket;
}

async function connectXmpp(port: number): Promise<Array<{ close(): void }>> {
  const out: Socket[] = [];
  await pool(N, 100, async (i) => {
    out.push(await xmppSession(port, i));
  });
  return out.map((s) => ({ close: () => s.destroy() }));
}

interface Row {
  protocol: string;
  profile: string;
  pingsPerSecond: number;
  cpuPercent: number;
  stealPercent: number;
  rssMb: number;
  heapMb: number;
}

/** The server's live JavaScript heap, from its own metrics (RSS also counts garbage not yet collected). */
async function heapUsedMb(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = /^presenced_process_nodejs_heap_size_used_bytes (\S+)$/m.exec(text);
  return m ? Number(m[1]) / 1024 / 1024 : NaN;
}

async function measure(protocol: string, profileName: string): Promise<Row> {
  const profile = PROFILES[profileName];
  if (!profile) throw new Error(`unknown profile ${profileName}`);
  const dir = mkdtempSync(join(tmpdir(), 'presenced-idle-'));
  await prepareAccounts(dir);
  const xmppPort = protocol === 'xmpp' ? await freePort() : -1;
  const { proc, port } = await startServer(dir, profile, xmppPort);
  try {
    const t0 = Date.now();
    const clients = protocol === 'xmpp' ? await connectXmpp(xmppPort) : await connectNative(port);
    console.log(`${protocol}/${profileName}: ${N} sessions logged in in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    // One heartbeat interval first, so that the window sees pings in their steady rhythm, not the login wave.
    await new Promise((r) => setTimeout(r, Math.min(profile.heartbeat, 15_000))); // measurement window, not synchronisation
    pings = 0;
    const c0 = cpuTicks(proc.pid!);
    const m0 = cpuCounters();
    const start = Date.now();
    // The heap is sampled through the window and its lowest value kept: heap used right after a major
    // collection is what the sessions really hold; any single reading also counts garbage not yet collected.
    let heapMb = Infinity;
    while (Date.now() - start < SECONDS * 1000) {
      await new Promise((r) => setTimeout(r, 2_000)); // sampling interval of the measurement window
      heapMb = Math.min(heapMb, await heapUsedMb(port));
    }
    const secs = (Date.now() - start) / 1000;
    const c1 = cpuTicks(proc.pid!);
    const m1 = cpuCounters();
    const row: Row = {
      protocol,
      profile: profileName,
      pingsPerSecond: pings / secs,
      cpuPercent: (c1 - c0) / secs, // ticks of 10 ms per second = % of one core
      stealPercent: (100 * (m1.steal - m0.steal)) / Math.max(1, m1.total - m0.total),
      rssMb: rssKb(proc.pid!) / 1024,
      heapMb,
    };
    for (const c of clients) c.close();
    return row;
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows: Row[] = [];
for (const protocol of (args.protocols as string).split(',')) {
  for (const profile of (args.profiles as string).split(',')) rows.push(await measure(protocol, profile));
}
console.log(`\n${N} idle sessions, ${SECONDS} s window, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'})`);
console.log('| protocol | profile (heartbeat / idle / grace) | pings/s sent | server CPU (% of one core) | steal | server RSS | lowest heap used |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  const p = PROFILES[r.profile]!;
  console.log(`| ${r.protocol} | ${r.profile} (${p.heartbeat / 1000} s / ${p.idle / 1000} s / ${p.grace / 1000} s) | ${r.pingsPerSecond.toFixed(0)} | ${r.cpuPercent.toFixed(1)} % | ${r.stealPercent.toFixed(1)} % | ${r.rssMb.toFixed(0)} MB | ${r.heapMb.toFixed(0)} MB |`);
}
process.exit(0);
