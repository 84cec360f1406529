/**
 * What the XMPP benchmarks (xmpp-bench.ts, storm-bench.ts) share about the servers they run: presenced
 * as `bin/presenced.js start`, Prosody 0.12 and ejabberd 23.01 from Debian's packages (installed with
 * apt-get when missing), each as its own process pinned to one core, on a free loopback port, in a temp
 * directory, and stopped by PID (`../shared/PEERS.md` has the notes these follow). Linux only.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { chownSync, copyFileSync, createWriteStream, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { cpuTicks } from '../proc-stats.js';

export interface RunningServer {
  readonly port: number;
  /** The process whose RSS and CPU time are the server's (node, lua, beam.smp). */
  readonly memPid: number;
  readonly version: string;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once('exit', () => resolve()));
}

/** SIGTERM, and SIGKILL if the process has not gone after `graceMs`. */
export async function stopProcess(proc: ChildProcess, pid: number, graceMs: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }, graceMs);
  await exited(proc);
  clearTimeout(timer);
}

/**
 * Waits until the port accepts TCP connections. Prosody and ejabberd have no machine-readable
 * "ready" signal on stdout, so readiness is probed with a connect retried every 200 ms.
 */
export async function waitForPort(port: number, proc: ChildProcess, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`exited with ${proc.exitCode ?? proc.signalCode} before listening`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`port ${port} not listening after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200)); // polling a peer's port: an external process gives no event
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Field 4 (ppid) follows the parenthesised command name, which may itself contain spaces.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

export function findDescendant(pid: number, comm: string): number | null {
  const todo = [pid];
  while (todo.length > 0) {
    const p = todo.shift() as number;
    if (commOf(p) === comm) return p;
    todo.push(...childrenOf(p));
  }
  return null;
}

/**
 * Resolves once the server has used at most one clock tick of CPU in half a second: what the last phase
 * left (queued writes, a collection it started) is done before the next is measured. A peer process
 * gives no event for this, so its CPU counter is polled; after `stallMs` it goes on regardless.
 */
export async function serverQuiet(pid: number, stallMs: number): Promise<void> {
  const until = Date.now() + stallMs;
  let last = cpuTicks(pid);
  for (;;) {
    await new Promise((r) => setTimeout(r, 500)); // polling a peer's CPU counter: measurement, not synchronisation
    const now = cpuTicks(pid);
    if (now - last <= 1 || Date.now() > until) return;
    last = now;
  }
}

export function debVersion(pkg: string): string {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Version}', pkg], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '?';
}

/** Installs the peers from Debian's packages when they are missing. */
export function ensurePackages(names: string[]): void {
  const missing: string[] = [];
  if (names.includes('prosody') && spawnSync('sh', ['-c', 'command -v prosody']).status !== 0) missing.push('prosody', 'prosody-modules');
  if (names.includes('ejabberd') && spawnSync('sh', ['-c', 'command -v ejabberdctl || test -x /usr/sbin/ejabberdctl']).status !== 0) missing.push('ejabberd');
  if (missing.length === 0) return;
  console.log(`installing ${missing.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
  const r = spawnSync('apt-get', ['install', '-y', ...missing], { stdio: 'inherit', env });
  if (r.status !== 0) console.log(`apt-get install failed (${r.status}); the missing servers will be reported as failed`);
}

export interface PresencedOptions {
  readonly dir: string;
  /** XMPP c2s port. */
  readonly port: number;
  readonly cpu: string;
  /** Extra node flags (e.g. --cpu-prof), split on spaces. */
  readonly nodeArgs: string;
  /** PRESENCED_* settings on top of the benchmark defaults. */
  readonly env: Record<string, string>;
}

/** A started presenced with the HTTP port it bound (the native protocol's /ws). */
export interface RunningPresenced extends RunningServer {
  readonly httpPort: number;
}

/**
 * `bin/presenced.js start` on a prepared data directory, plain TCP XMPP (no TLS), timeouts out of the
 * way of the measurement, and sessions that end at once (no grace period) so that phases do not overlap.
 * Its log (and whatever node flags make V8 print) is kept as presenced.log in the directory.
 */
export async function startPresenced(o: PresencedOptions): Promise<RunningPresenced> {
  const proc = spawn('sh', ['-c', `ulimit -n 20000; exec taskset -c ${o.cpu} "${process.execPath}" ${o.nodeArgs} bin/presenced.js start`], {
    env: {
      ...process.env,
      PRESENCED_DATA_DIR: o.dir,
      PRESENCED_HTTP_PORT: '0',
      PRESENCED_XMPP_PORT: String(o.port),
      PRESENCED_XMPPS_PORT: '-1',
      PRESENCED_XMPP_REQUIRE_TLS: 'false',
      PRESENCED_LOG_LEVEL: 'info',
      PRESENCED_HEARTBEAT_INTERVAL_MS: '600000',
      PRESENCED_IDLE_TIMEOUT_MS: '3600000',
      PRESENCED_XMPP_NEGOTIATION_TIMEOUT_MS: '600000',
      // Streams closed between the phases must end their sessions at once, not linger.
      PRESENCED_GRACE_PERIOD_MS: '0',
      ...o.env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const log = createWriteStream(join(o.dir, 'presenced.log'));
  proc.stdout!.pipe(log);
  const httpPort = await new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) {
        if (line.includes('listening on')) resolve((JSON.parse(line) as { port: number }).port);
      }
      if (buf.length > 100_000) buf = buf.slice(-1000);
    });
    proc.once('exit', (code) => reject(new Error(`presenced exited with ${code}`)));
  });
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
  return { port: o.port, httpPort, memPid: proc.pid!, version: pkg.version, stop: () => stopProcess(proc, proc.pid!, 15_000) };
}

/**
 * An account of Prosody's mod_auth_internal_hashed (SCRAM-SHA-1 keys in hex over PBKDF2 of the password
 * with a string salt), for writing into its `internal` file storage. One shared salt keeps a bench's
 * setup to one PBKDF2; logins still cost the server one each.
 */
export function prosodyAccountFile(password: string, iterations = 10_000): string {
  const salt = 'xmpp-bench-shared-salt';
  const salted = pbkdf2Sync(password, salt, iterations, 20, 'sha1');
  const storedKey = createHash('sha1').update(createHmac('sha1', salted).update('Client Key').digest()).digest('hex');
  const serverKey = createHmac('sha1', salted).update('Server Key').digest('hex');
  return `return {\n\t["stored_key"] = "${storedKey}";\n\t["iteration_count"] = ${iterations};\n\t["server_key"] = "${serverKey}";\n\t["salt"] = "${salt}";\n};\n`;
}

/** A Prosody roster file: every contact with subscription both. */
export function prosodyRosterFile(contacts: readonly string[]): string {
  const items = contacts.map((jid) => `\t["${jid}"] = { ["groups"] = {}; ["subscription"] = "both"; };\n`);
  return `return {\n\t[false] = { ["version"] = 1; ["pending"] = {}; };\n${items.join('')}};\n`;
}

export interface PeerOptions {
  readonly dir: string;
  readonly port: number;
  readonly cpu: string;
  readonly domain: string;
  /** Listen backlog: a login storm's connects beyond it are dropped and retried by the client's kernel after 1 s, 3 s... */
  readonly backlog?: number;
}

/**
 * Prosody with a generated config (no TLS module, plaintext PLAIN allowed, in-band registration open);
 * its data, if any, was written into `dir/data` before.
 */
export async function startProsody(o: PeerOptions): Promise<RunningServer> {
  mkdirSync(join(o.dir, 'data'), { recursive: true });
  const cfg = join(o.dir, 'prosody.cfg.lua');
  writeFileSync(
    cfg,
    `-- written by bench/lib/xmpp-servers.ts
run_as_root = true
daemonize = false
data_path = "${o.dir}/data"
log = { warn = "${o.dir}/prosody.log" }
interfaces = { "127.0.0.1" }
c2s_ports = { ${o.port} }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
min_seconds_between_registrations = 0
authentication = "internal_hashed"
storage = "internal"
${o.backlog !== undefined ? `network_settings = { tcp_backlog = ${o.backlog} }\n` : ''}-- no tls: without a certificate mod_tls would still offer STARTTLS (PEERS.md); no s2s on this box
modules_enabled = { "roster", "saslauth", "disco", "ping", "register" }
modules_disabled = { "s2s" }
VirtualHost "${o.domain}"
`,
  );
  const proc = spawn('sh', ['-c', `ulimit -n 20000; exec taskset -c ${o.cpu} prosody --config "${cfg}"`], { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    await waitForPort(o.port, proc, 30_000);
  } catch (e) {
    proc.kill('SIGKILL');
    throw e;
  }
  // taskset and env exec into lua: the spawned PID is the Lua interpreter.
  return { port: o.port, memPid: proc.pid!, version: debVersion('prosody'), stop: () => stopProcess(proc, proc.pid!, 15_000) };
}

/**
 * ejabberd as user ejabberd through setpriv (PAM would reset the open-files limit to 1024), one
 * scheduler (`+S 1:1`, fair against single-threaded servers on the same one-core pin), in-band
 * registration open to all without its per-address timeout. Restartable on the same directory: the
 * spool keeps the accounts and rosters.
 */
export async function startEjabberd(o: PeerOptions): Promise<RunningServer> {
  mkdirSync(join(o.dir, 'logs'), { recursive: true });
  mkdirSync(join(o.dir, 'db'), { recursive: true });
  writeFileSync(
    join(o.dir, 'ejabberd.yml'),
    `# written by bench/lib/xmpp-servers.ts
hosts: [${o.domain}]
loglevel: warning
listen:
  - port: ${o.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: false
    max_stanza_size: 262144
    # the default backlog of 5 drops connects of a login storm (resets, 1 s SYN retries)
    backlog: ${o.backlog ?? 1024}
acl:
  local:
    user_regexp: ""
access_rules:
  local: {allow: local}
  c2s: {allow: all}
  register: {allow: all}
# otherwise one in-band registration per IP per 10 minutes
registration_timeout: infinity
modules:
  mod_roster: {}
  mod_register:
    access: register
    ip_access: all
  mod_disco: {}
  mod_ping: {}
  mod_offline: {}
`,
  );
  // A node name of our own so that another ejabberd on this machine is not taken for ours.
  writeFileSync(
    join(o.dir, 'ejabberdctl.cfg'),
    `ERL_OPTIONS="+S 1:1"\nERLANG_NODE=xmppbench${process.pid}@localhost\nINET_DIST_INTERFACE=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\n`,
  );
  copyFileSync('/etc/ejabberd/inetrc', join(o.dir, 'inetrc'));
  const uid = Number(spawnSync('id', ['-u', 'ejabberd'], { encoding: 'utf8' }).stdout.trim());
  const gid = Number(spawnSync('id', ['-g', 'ejabberd'], { encoding: 'utf8' }).stdout.trim());
  for (const p of [o.dir, join(o.dir, 'logs'), join(o.dir, 'db'), join(o.dir, 'ejabberd.yml'), join(o.dir, 'ejabberdctl.cfg'), join(o.dir, 'inetrc')]) chownSync(p, uid, gid);
  const cmd =
    `ulimit -n 20000; exec taskset -c ${o.cpu} setpriv --reuid=ejabberd --regid=ejabberd --init-groups ` +
    `env HOME=/var/lib/ejabberd USER=ejabberd ejabberdctl --config-dir "${o.dir}" --config "${o.dir}/ejabberd.yml" ` +
    `--ctl-config "${o.dir}/ejabberdctl.cfg" --logs "${o.dir}/logs" --spool "${o.dir}/db" foreground`;
  const proc = spawn('sh', ['-c', cmd], { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    await waitForPort(o.port, proc, 60_000);
  } catch (e) {
    const beam = findDescendant(proc.pid!, 'beam.smp');
    if (beam !== null) process.kill(beam, 'SIGKILL');
    proc.kill('SIGKILL');
    throw e;
  }
  const beam = findDescendant(proc.pid!, 'beam.smp');
  if (beam === null) throw new Error('ejabberd is listening but no beam.smp under it');
  // beam.smp takes SIGTERM as init:stop(); the ejabberdctl shell then exits with it.
  return { port: o.port, memPid: beam, version: debVersion('ejabberd'), stop: () => stopProcess(proc, beam, 30_000) };
}
