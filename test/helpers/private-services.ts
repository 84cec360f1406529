/**
 * Private Redis and PostgreSQL servers for tests: Debian's `redis-server` and PostgreSQL 15 binaries,
 * each started on a free loopback port in its own temp directory, so a test depends on nothing left
 * running on the machine (the shared instances on 6379 and 5432 are never touched). A package that is
 * missing is installed with apt-get, as the browser helper does for Chromium.
 *
 * Each server can be stopped and started again on the same port and data directory (restart tests),
 * or killed with a signal.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PG_BIN_ROOT = '/usr/lib/postgresql';
const REDIS_SERVER = '/usr/bin/redis-server';

let aptUpdated = false;

function aptInstall(pkg: string): void {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!aptUpdated) {
    execFileSync('apt-get', ['update'], { stdio: 'inherit', env });
    aptUpdated = true;
  }
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], { stdio: 'inherit', env });
}

/** The directory of PostgreSQL 15's server binaries (installing `postgresql-15` when absent). */
export function pgBinDir(): string {
  const find = (): string | null => {
    if (!existsSync(PG_BIN_ROOT)) return null;
    const versions = readdirSync(PG_BIN_ROOT).filter((v) => existsSync(join(PG_BIN_ROOT, v, 'bin', 'postgres')));
    versions.sort((a, b) => Number(b) - Number(a));
    return versions[0] === undefined ? null : join(PG_BIN_ROOT, versions[0], 'bin');
  };
  const found = find();
  if (found !== null) return found;
  aptInstall('postgresql-15');
  const after = find();
  if (after === null) throw new Error(`apt-get installed postgresql-15 but no postgres binary is under ${PG_BIN_ROOT}`);
  return after;
}

export function redisServerPath(): string {
  if (!existsSync(REDIS_SERVER)) aptInstall('redis-server');
  if (!existsSync(REDIS_SERVER)) throw new Error(`apt-get installed redis-server but ${REDIS_SERVER} is missing`);
  return REDIS_SERVER;
}

/** A port that was free a moment ago (the kernel's choice, released at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on the port, or rejects after `ms`, or when the process ends first. */
async function waitForPort(port: number, proc: ChildProcess, ms: number, what: string, log: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}) before listening:\n${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port} within ${ms} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once('exit', () => resolve()));
}

/** A server process the harness owns: start, stop (graceful), kill (any signal), and its output. */
abstract class PrivateServer {
  protected proc: ChildProcess | null = null;
  #output = '';
  #unref = false;
  constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  protected abstract spawnServer(): ChildProcess;
  protected abstract readonly name: string;

  output(): string {
    return this.#output.slice(-4000);
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async start(): Promise<void> {
    if (this.proc !== null) throw new Error(`${this.name} on ${this.port} is already running`);
    const p = this.spawnServer();
    this.proc = p;
    p.stdout?.on('data', (b: Buffer) => (this.#output += b.toString()));
    p.stderr?.on('data', (b: Buffer) => (this.#output += b.toString()));
    if (this.#unref) this.unrefProcess(p);
    await waitForPort(this.port, p, 30_000, this.name, () => this.output());
  }

  /**
   * Lets this process's Node exit while the server runs (the exit hook below then ends it): for
   * servers a helper starts on a test file's behalf, which no `after` of the file would stop.
   */
  unref(): void {
    this.#unref = true;
    if (this.proc !== null) this.unrefProcess(this.proc);
  }

  private unrefProcess(p: ChildProcess): void {
    p.unref();
    for (const s of [p.stdout, p.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  }

  /** Ends the process synchronously at this process's exit (no event loop left to wait with). */
  abstract endAtExit(): void;

  /** Sends the signal and waits for the process to end. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.proc;
    if (p === null) return;
    // An unref'd process would not keep this process running while we wait for it to end.
    p.ref();
    p.kill(signal);
    await exited(p);
    this.proc = null;
  }

  /** Pauses or resumes the process (SIGSTOP / SIGCONT) without forgetting it. */
  signal(signal: NodeJS.Signals): void {
    this.proc?.kill(signal);
  }

  async stop(): Promise<void> {
    await this.kill('SIGTERM');
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Stops the server and removes its directory. */
  async destroy(): Promise<void> {
    started.delete(this);
    await this.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Blocks this thread for `ms` (only for the exit hook, where nothing else can run anyway). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export class PrivateRedis extends PrivateServer {
  protected readonly name = 'redis-server';
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }
  endAtExit(): void {
    if (this.pid !== undefined) try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ }
    rmSync(this.dir, { recursive: true, force: true });
  }

  protected spawnServer(): ChildProcess {
    // setpriv execs redis-server with a parent-death signal: it ends with the test process, however that ends.
    return spawn(
      'setpriv',
      ['--pdeathsig', 'KILL', '--', redisServerPath(), '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir, '--protected-mode', 'no'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
  }
}

/** The unprivileged user the PostgreSQL server runs as when the tests run as root (it refuses root). */
const PG_USER = 'nobody';
/**
 * setpriv execs the command in its own process (runuser forks and waits), so a signal reaches postgres
 * itself. --pdeathsig: the server ends when the test process dies, even by SIGKILL (a timeout), instead
 * of running on unowned; SIGQUIT is PostgreSQL's immediate shutdown, which removes its shared memory.
 */
const PG_DEATH = ['--pdeathsig', 'QUIT'];
const SETPRIV = ['--reuid', PG_USER, '--regid', 'nogroup', '--clear-groups', ...PG_DEATH, '--'];

export class PrivatePostgres extends PrivateServer {
  protected readonly name = 'postgres';
  readonly database = 'presenced';
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${this.database}`;
  }
  /** A URL for another database of the same server (created by createDatabase). */
  urlOf(database: string): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }
  get dataDir(): string {
    return join(this.dir, 'data');
  }

  /** initdb into a fresh directory, owned by the unprivileged user when running as root. */
  init(): void {
    const bin = pgBinDir();
    if (process.getuid?.() === 0) {
      // The temp directory itself must be reachable by the server's user.
      chmodSync(this.dir, 0o777);
    }
    this.asServerUser(join(bin, 'initdb'), ['-D', this.dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
  }

  private asServerUser(cmd: string, args: string[]): void {
    if (process.getuid?.() === 0) execFileSync('setpriv', [...SETPRIV, cmd, ...args], { stdio: 'pipe' });
    else execFileSync(cmd, args, { stdio: 'pipe' });
  }

  protected spawnServer(): ChildProcess {
    const bin = pgBinDir();
    const args = [
      '-D', this.dataDir, '-p', String(this.port), '-k', this.dir, '-c', 'listen_addresses=127.0.0.1',
      // A test server: durability of the machine's disk is not what is tested (a crash of postgres
      // itself is not among the failures injected), and fsync makes every commit slow here.
      '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
      '-c', 'max_connections=200', '-c', 'shared_buffers=64MB',
    ];
    return process.getuid?.() === 0
      ? spawn('setpriv', [...SETPRIV, join(bin, 'postgres'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('setpriv', [...PG_DEATH, '--', join(bin, 'postgres'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  override async start(): Promise<void> {
    await super.start();
    // Accepting TCP is not yet accepting queries (startup, recovery): wait until psql gets an answer.
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        this.psql('postgres', 'SELECT 1');
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`postgres on ${this.port} never answered: ${String(err)}\n${this.output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Runs one SQL command with psql (as postgres) and returns its unaligned output. */
  psql(database: string, command: string): string {
    return execFileSync('psql', ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-d', database, '-At', '-v', 'ON_ERROR_STOP=1', '-c', command], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /**
   * Runs one statement on `database` and returns a query's rows as objects (JSON types: numbers,
   * strings, null), none for other statements; `?` are parameters, substituted as SQL literals.
   */
  query(database: string, text: string, args: ReadonlyArray<string | number | null> = []): Array<Record<string, any>> {
    let i = 0;
    let quoted = false;
    let bound = '';
    for (const ch of text) {
      if (ch === "'") quoted = !quoted;
      if (ch !== '?' || quoted) {
        bound += ch;
        continue;
      }
      if (i >= args.length) throw new Error(`too few parameters for: ${text}`);
      const v = args[i++];
      bound += v === null || v === undefined ? 'NULL' : typeof v === 'number' ? String(v) : `'${String(v).replace(/'/g, "''")}'`;
    }
    if (i !== args.length) throw new Error(`${args.length} parameters for ${i} placeholders in: ${text}`);
    if (!/^\s*(select|with)\b/i.test(bound)) {
      this.psql(database, bound);
      return [];
    }
    const out = this.psql(database, `select coalesce(json_agg(q), '[]'::json) from (${bound}) q`);
    return JSON.parse(out) as Array<Record<string, any>>;
  }

  createDatabase(name: string): string {
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`not a plain database name: ${name}`);
    this.psql('postgres', `CREATE DATABASE ${name}`);
    return this.urlOf(name);
  }

  override async stop(): Promise<void> {
    // SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, checkpoint, exit.
    await this.kill('SIGINT');
  }

  /**
   * SIGQUIT is PostgreSQL's "immediate" shutdown: as quick as SIGKILL for a server about to be
   * deleted, but the postmaster still ends its backends and removes its System V shared memory
   * segment, which a SIGKILL leaves behind (one per killed server, until the machine's limit).
   */
  override async destroy(): Promise<void> {
    started.delete(this);
    await this.kill('SIGQUIT');
    rmSync(this.dir, { recursive: true, force: true });
  }

  endAtExit(): void {
    if (this.pid !== undefined) {
      try {
        process.kill(this.pid, 'SIGQUIT');
        // The postmaster removes its pid file last; a zombie cannot be told from a live process here
        // (Node reaps children from its event loop, which no longer runs).
        const pidFile = join(this.dataDir, 'postmaster.pid');
        for (const deadline = Date.now() + 5_000; existsSync(pidFile) && Date.now() < deadline; ) sleepSync(20);
      } catch {
        // gone already
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const started = new Set<PrivateServer>();

export async function startRedis(): Promise<PrivateRedis> {
  const r = new PrivateRedis(await freePort(), mkdtempSync(join(tmpdir(), 'presenced-redis-')));
  started.add(r);
  await r.start();
  return r;
}

/** A PostgreSQL server with an empty database `presenced` (see `url`). */
export async function startPostgres(): Promise<PrivatePostgres> {
  const pg = new PrivatePostgres(await freePort(), mkdtempSync(join(tmpdir(), 'presenced-pg-')));
  started.add(pg);
  pg.init();
  await pg.start();
  pg.createDatabase(pg.database);
  return pg;
}

/** Stops every server this process started and removes their directories (for a file's `after`). */
export async function stopAllPrivateServices(): Promise<void> {
  const all = [...started];
  started.clear();
  await Promise.all(all.map((s) => s.destroy()));
}

process.once('exit', () => {
  for (const s of started) s.endAtExit();
});
// Interrupted (Ctrl-C, a runner's SIGTERM): end the servers and remove their directories, then die of
// the same signal. (A SIGKILL leaves only the directories: the servers' parent-death signal ends them.)
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    for (const s of started) s.endAtExit();
    started.clear();
    process.kill(process.pid, sig);
  });
}
