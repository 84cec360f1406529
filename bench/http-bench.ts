/**
 * HTTP presence benchmark: requests per second of the status endpoint (`type=text` and `type=image`)
 * against 10,000 accounts, beside ejabberd's and Prosody's web presence modules in the same run. Run by
 * hand (see docs/benchmarks.md), never in CI:
 *
 *   npm run build
 *   taskset -c 1 npx tsx bench/http-bench.ts [--accounts 10000] [--online 1000] [--duration 10] [--repeat 3] [--peers ejabberd,prosody]
 *
 * Every server is pinned to core 0 (`taskset -c 0`), wrk to core 1 (`wrk -t1 -c50`). Each wrk run asks
 * for the accounts in turn (a Lua script walks u0..u9999), so no server answers one hot key. The same
 * `--online` accounts are logged in on every server (native protocol for presenced, XMPP over TCP for
 * the peers) with a mix of shows, so part of the answers are online ones.
 *
 * Peers follow ../shared/PEERS.md: Debian packages (installed with apt-get when missing), unusual
 * loopback ports, temporary directories, stopped by PID afterwards.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { SqliteStore } from '../src/adapters/sqlite/sqlite-store.js';
import { deriveCredentials } from '../src/engine/credentials.js';
import { accountGeneration, issueToken } from '../src/engine/tokens.js';

/** Tokens are bound to the account's password hash (all bench accounts share one); set when the accounts are made. */
let accountGen = '';

const { values: args } = parseArgs({
  options: {
    accounts: { type: 'string', default: '10000' },
    online: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '10' },
    repeat: { type: 'string', default: '3' },
    connections: { type: 'string', default: '50' },
    peers: { type: 'string', default: 'ejabberd,prosody' },
    'server-cpu': { type: 'string', default: '0' },
    'wrk-cpu': { type: 'string', default: '1' },
  },
});
const N = Number(args.accounts);
const ONLINE = Math.min(N, Number(args.online));
const DURATION = Number(args.duration);
const REPEAT = Number(args.repeat);
const SECRET = 'bench-secret-bench-secret-bench-secret';
const PASSWORD = 'bench';
const SHOWS = ['available', 'chat', 'away', 'xa', 'dnd'] as const;
const user = (i: number): string => `u${i}`;
const CPU = args['server-cpu'] as string;

interface Target {
  readonly name: string;
  /** URL path of account i is prefix + i + suffix, for the text and the image form. */
  readonly text: readonly [string, string];
  readonly image: readonly [string, string];
  readonly port: number;
}

// ------------------------------------------------------------------------------------------ wrk

function luaScript(prefix: string, suffix: string): string {
  const file = join(tmpdir(), `http-bench-${process.pid}-${Math.random().toString(36).slice(2)}.lua`);
  writeFileSync(
    file,
    `local i = 0\nrequest = function()\n  i = i + 1\n  if i >= ${N} then i = 0 end\n` +
      `  return wrk.format("GET", "${prefix}" .. i .. "${suffix}")\nend\n`,
  );
  return file;
}

function wrk(port: number, [prefix, suffix]: readonly [string, string], seconds: number): { rps: number; non2xx: number } {
  const script = luaScript(prefix, suffix);
  try {
    const out = execFileSync('taskset', ['-c', args['wrk-cpu'] as string, 'wrk', '-t1', `-c${args.connections}`, `-d${seconds}s`, '-s', script, `http://127.0.0.1:${port}/`], {
      encoding: 'utf8',
    });
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
    const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
    return { rps, non2xx };
  } finally {
    rmSync(script, { force: true });
  }
}

async function measure(t: Target): Promise<Record<'text' | 'image', number[]>> {
  const res = { text: [] as number[], image: [] as number[] };
  // Warm-up, not counted: every account asked once in both forms (server caches, JIT), then a short wrk run.
  await pool(N, 50, async (i) => {
    for (const kind of ['text', 'image'] as const) await (await fetch(`http://127.0.0.1:${t.port}${t[kind][0]}${i}${t[kind][1]}`)).arrayBuffer();
  });
  for (const kind of ['text', 'image'] as const) {
    wrk(t.port, t[kind], 3);
    for (let r = 0; r < REPEAT; r++) {
      const { rps, non2xx } = wrk(t.port, t[kind], DURATION);
      if (non2xx > 0) console.log(`  ${t.name} ${kind}: ${non2xx} non-2xx answers`);
      console.log(`  ${t.name} ${kind} run ${r + 1}: ${Math.round(rps)} requests/s`);
      res[kind].push(rps);
    }
  }
  return res;
}

// --------------------------------------------------------------------------------- presenced

async function presenced(): Promise<{ target: Target; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'presenced-http-bench-'));
  const store = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await store.migrate();
  const creds = await deriveCredentials(PASSWORD);
  accountGen = accountGeneration(Buffer.from(SECRET), creds.passwordHash);
  const now = Date.now();
  for (let i = 0; i < N; i++) await store.createAccount({ jid: `${user(i)}@localhost`, ...creds, createdAt: now });
  await store.close();

  const proc = spawn('taskset', ['-c', CPU, process.execPath, 'bin/presenced.js', 'start'], {
    env: {
      ...process.env,
      PRESENCED_DATA_DIR: dir,
      PRESENCED_HTTP_PORT: '0',
      PRESENCED_TOKEN_SECRET: SECRET,
      PRESENCED_LOG_LEVEL: 'info',
      // Anonymous requests, as from a public web page: every account shows its presence.
      PRESENCED_PUBLIC_PRESENCE_DEFAULT: 'true',
      PRESENCED_WS_RATE_LIMIT: '100000',
      PRESENCED_WS_RATE_BURST: '100000',
      PRESENCED_HEARTBEAT_INTERVAL_MS: '600000',
      PRESENCED_IDLE_TIMEOUT_MS: '3600000',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => l.includes('listening on'));
      if (line) resolve(JSON.parse(line).port as number);
    });
    proc.once('exit', (code) => reject(new Error(`presenced exited with ${code}`)));
  });
  const sockets: WebSocket[] = [];
  await pool(ONLINE, 100, async (i) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { perMessageDeflate: false });
    const token = issueToken(Buffer.from(SECRET), { sub: `${user(i)}@localhost`, acc: accountGen, iat: Date.now(), exp: Date.now() + 3_600_000, scope: 'login' });
    await new Promise<void>((resolve, reject) => {
      ws.once('error', reject);
      ws.once('open', () => ws.send(JSON.stringify({ id: 1, type: 'auth', token, presence: { show: SHOWS[i % SHOWS.length] } })));
      ws.once('message', (m) => (JSON.parse(m.toString()).type === 'result' ? resolve() : reject(new Error(m.toString()))));
    });
    sockets.push(ws);
  });
  return {
    target: {
      name: 'presenced',
      port,
      text: ['/plugins/presence/status?type=text&jid=u', '%40localhost'],
      image: ['/plugins/presence/status?jid=u', '%40localhost'],
    },
    stop: async () => {
      for (const s of sockets) s.terminate();
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------------ XMPP (for the peers)

async function pool(count: number, concurrency: number, one: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) await one(next++);
  }));
}

/** The few steps of an XMPP client this needs: open a stream, register, or log in with PLAIN and send presence. */
class Xmpp {
  private buf = '';
  private waiter: { re: RegExp; resolve: () => void; reject: (e: Error) => void } | null = null;
  private constructor(readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      this.check();
    });
    sock.on('error', (e) => this.waiter?.reject(e));
  }
  static open(port: number): Promise<Xmpp> {
    return new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => resolve(new Xmpp(s)));
      s.once('error', reject);
    });
  }
  private check(): void {
    if (this.waiter && this.waiter.re.test(this.buf)) {
      const w = this.waiter;
      this.waiter = null;
      this.buf = '';
      w.resolve();
    } else if (this.waiter && /<(stream:error|failure)/.test(this.buf)) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(new Error(`XMPP error: ${this.buf.slice(0, 300)}`));
    }
  }
  send(xml: string, until: RegExp): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiter = { re: until, resolve, reject };
      this.sock.write(xml);
      this.check();
    });
  }
  stream(): Promise<void> {
    return this.send(
      "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
      /<\/stream:features>/,
    );
  }
}

async function xmppRegister(port: number, name: string): Promise<void> {
  const x = await Xmpp.open(port);
  await x.stream();
  await x.send(`<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>${name}</username><password>${PASSWORD}</password></query></iq>`, /id=['"]reg['"]/);
  x.sock.end('</stream:stream>');
}

async function xmppLogin(port: number, name: string, show: string): Promise<Socket> {
  const x = await Xmpp.open(port);
  await x.stream();
  const plain = Buffer.from(`\0${name}\0${PASSWORD}`).toString('base64');
  await x.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${plain}</auth>`, /<success/);
  await x.stream();
  await x.send(`<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>`, /id=['"]bind['"]/);
  const showEl = show === 'available' ? '' : `<show>${show}</show>`;
  x.sock.write(`<presence>${showEl}<status>bench</status></presence>`);
  return x.sock;
}

async function waitForPort(port: number, proc: ChildProcess, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100)); // polling a port of an external process, nothing to wait on instead
  }
  throw new Error(`${what} did not open port ${port}`);
}

function ensurePackages(pkgs: string[], probe: string): void {
  if (existsSync(probe)) return;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { stdio: 'inherit', env });
}

async function loginAll(c2s: number): Promise<Socket[]> {
  const socks: Socket[] = [];
  await pool(ONLINE, 50, async (i) => {
    socks.push(await xmppLogin(c2s, user(i), SHOWS[i % SHOWS.length] as string));
  });
  return socks;
}

// --------------------------------------------------------------------------------- ejabberd

async function ejabberd(): Promise<{ target: Target; stop: () => Promise<void> }> {
  ensurePackages(['ejabberd', 'ejabberd-mod-webpresence'], '/usr/sbin/ejabberdctl');
  const C2S = 25_322;
  const HTTP = 25_380;
  const d = mkdtempSync(join(tmpdir(), 'ejabberd-bench-'));
  chmodSync(d, 0o755);
  writeFileSync(
    join(d, 'ejabberd.yml'),
    `hosts: [localhost]
loglevel: warning
listen:
  - port: ${C2S}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: false
    max_stanza_size: 65536
  - port: ${HTTP}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /presence: mod_webpresence
auth_method: internal
registration_timeout: infinity
acl:
  local:
    user_regexp: ""
access_rules:
  register:
    allow: all
  local:
    allow: local
  c2s:
    allow: all
  webpresence_auto:
    allow: local
shaper_rules:
  c2s_shaper: none
modules:
  mod_register:
    access: register
    ip_access: all
  mod_roster: {}
  mod_offline: {}
  mod_webpresence:
    pixmaps_path: /usr/share/ejabberd-mod-webpresence/pixmaps
`,
  );
  writeFileSync(
    join(d, 'ejabberdctl.cfg'),
    'ERL_OPTIONS="+S 1:1"\nERLANG_NODE=httpbench@localhost\nINET_DIST_INTERFACE=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\n',
  );
  cpSync('/etc/ejabberd/inetrc', join(d, 'inetrc'));
  mkdirSync(join(d, 'logs'));
  mkdirSync(join(d, 'db'));
  execFileSync('chown', ['-R', 'ejabberd:ejabberd', d]);
  const cmd =
    `ulimit -n 20000; exec taskset -c ${CPU} setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME=/var/lib/ejabberd USER=ejabberd ` +
    `ejabberdctl --config-dir ${d} --config ${d}/ejabberd.yml --ctl-config ${d}/ejabberdctl.cfg --logs ${d}/logs --spool ${d}/db foreground`;
  const proc = spawn('bash', ['-c', cmd], { stdio: ['ignore', 'ignore', 'inherit'], detached: true });
  await waitForPort(HTTP, proc, 'ejabberd');
  await waitForPort(C2S, proc, 'ejabberd');
  const t0 = Date.now();
  await pool(N, 20, (i) => xmppRegister(C2S, user(i)));
  console.log(`  ejabberd: registered ${N} accounts in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const socks = await loginAll(C2S);
  return {
    target: {
      name: 'ejabberd',
      port: HTTP,
      text: ['/presence/jid/u', '/localhost/text'],
      image: ['/presence/jid/u', '/localhost/image'],
    },
    stop: async () => {
      for (const s of socks) s.destroy();
      await stopGroup(proc);
      rmSync(d, { recursive: true, force: true });
    },
  };
}

/**
 * Ends a peer we started (its whole process group: the shell, erl/lua and their children), by PID:
 * SIGTERM, then SIGKILL if it is still there after 15 s (Prosody was seen busy for minutes tearing
 * down 1,000 dropped sessions).
 */
async function stopGroup(proc: ChildProcess): Promise<void> {
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-(proc.pid as number), sig);
    } catch {
      /* already gone */
    }
  };
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  signal('SIGTERM');
  const timer = setTimeout(() => signal('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------- Prosody

async function prosody(): Promise<{ target: Target; stop: () => Promise<void> }> {
  ensurePackages(['prosody', 'prosody-modules'], '/usr/bin/prosody');
  const C2S = 25_422;
  const HTTP = 25_480;
  const d = mkdtempSync(join(tmpdir(), 'prosody-bench-'));
  // Accounts written in Prosody's own storage format (internal_plain), instead of 10,000 prosodyctl runs.
  const accounts = join(d, 'data', 'localhost', 'accounts');
  mkdirSync(accounts, { recursive: true });
  for (let i = 0; i < N; i++) writeFileSync(join(accounts, `${user(i)}.dat`), `return {\n\t["password"] = "${PASSWORD}";\n};\n`);
  const cfg = join(d, 'prosody.cfg.lua');
  writeFileSync(
    cfg,
    `run_as_root = true
daemonize = false
pidfile = "${d}/prosody.pid"
data_path = "${d}/data"
interfaces = { "127.0.0.1" }
c2s_ports = { ${C2S} }
s2s_ports = { }
component_ports = { }
http_ports = { ${HTTP} }
https_ports = { }
http_interfaces = { "127.0.0.1" }
http_default_host = "localhost"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
plugin_paths = { "/usr/lib/prosody/modules" }
modules_enabled = { "roster", "saslauth", "disco", "ping", "http", "webpresence", "posix" }
log = { warn = "${d}/prosody.log", error = "${d}/prosody.log" }
VirtualHost "localhost"
`,
  );
  const proc = spawn('bash', ['-c', `ulimit -n 20000; exec taskset -c ${CPU} prosody --config ${cfg}`], { stdio: ['ignore', 'ignore', 'inherit'], detached: true });
  await waitForPort(HTTP, proc, 'prosody');
  await waitForPort(C2S, proc, 'prosody');
  const socks = await loginAll(C2S);
  return {
    target: {
      name: 'prosody',
      port: HTTP,
      text: ['/status/u', '%40localhost/text'],
      image: ['/status/u', '%40localhost/image'],
    },
    stop: async () => {
      for (const s of socks) s.destroy();
      await stopGroup(proc);
      rmSync(d, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------------------------- main

function summary(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const med = s[Math.floor(s.length / 2)] ?? NaN;
  return `median ${Math.round(med)}/s (runs ${s.map(Math.round).join(', ')})`;
}

const results: Array<[string, Record<'text' | 'image', number[]>]> = [];
const servers = [['presenced', presenced] as const, ...(['ejabberd', 'prosody'] as const).filter((p) => (args.peers as string).split(',').includes(p)).map((p) => [p, p === 'ejabberd' ? ejabberd : prosody] as const)];
for (const [name, start] of servers) {
  console.log(`${name}: starting with ${N} accounts, ${ONLINE} online`);
  const { target, stop } = await start();
  try {
    // A sanity check that the URL forms answer as expected before measuring them.
    for (const kind of ['text', 'image'] as const) {
      const [p, s] = target[kind];
      const res = await fetch(`http://127.0.0.1:${target.port}${p}1${s}`);
      const body = Buffer.from(await res.arrayBuffer());
      console.log(`  ${kind}: ${res.status} ${res.headers.get('content-type')} ${kind === 'text' ? JSON.stringify(body.toString()) : `${body.length} bytes`}`);
    }
    results.push([name, await measure(target)]);
  } finally {
    await stop();
  }
}
console.log('\nrequests/s, wrk -t1 -c' + args.connections + `, ${DURATION} s per run, server on core ${CPU}:`);
for (const [name, r] of results) console.log(`${name.padEnd(10)} text: ${summary(r.text)}; image: ${summary(r.image)}`);
process.exit(0);
