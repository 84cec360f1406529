import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { WebSocket } from 'ws';
import { CONFIG_KEYS, envName } from '../../src/config.js';

/**
 * Drives the real command-line program (`node bin/presenced.js`, running the compiled dist/) as a
 * child process, the way an operator would.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'presenced.js');
const TSC = join(ROOT, 'node_modules', '.bin', 'tsc');
const ADMIN_TOKEN = 'cli-test-admin-token-0123456789';

const children = new Set<ChildProcess>();
const tempDirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'presenced-cli-'));
  tempDirs.push(d);
  return d;
}

/** The parent's environment without any PRESENCED_* variable (they would change the config), plus `extra`. */
function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PRESENCED_')) env[k] = v;
  return { ...env, ...extra };
}

function killAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  children.clear();
}

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs one CLI command to completion. `input` is written to its standard input, which is then closed. */
function runCli(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => {}); // the CLI may exit without reading stdin
    child.stdin.end(input ?? '');
  });
}

function show(r: CliResult): string {
  return `exit ${r.code ?? r.signal}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

function lines(s: string): string[] {
  return s.split('\n').filter((l) => l !== '');
}

type LogRecord = Record<string, unknown>;

interface ServerProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly listening: LogRecord;
  readonly logs: LogRecord[];
  /** stdout lines that were not JSON log records. */
  readonly stray: string[];
  stderr(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `presenced start` and resolves once its "listening on" log line has been read. */
async function startServerProcess(env: NodeJS.ProcessEnv): Promise<ServerProcess> {
  const child = spawn(process.execPath, [BIN, 'start'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
  const logs: LogRecord[] = [];
  const stray: string[] = [];
  const rl = createInterface({ input: child.stdout! });
  const listening = await new Promise<LogRecord>((resolve, reject) => {
    rl.on('line', (line) => {
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch {
        stray.push(line);
        return;
      }
      if (typeof rec !== 'object' || rec === null) {
        stray.push(line);
        return;
      }
      logs.push(rec as LogRecord);
      const msg = (rec as LogRecord).msg;
      if (typeof msg === 'string' && msg.includes('listening on')) resolve(rec as LogRecord);
    });
    child.on('error', reject);
    void exited.then(({ code, signal }) =>
      reject(new Error(`server exited (${code ?? signal}) before logging "listening on"; stderr:\n${stderr}\nstdout:\n${[...logs.map((l) => JSON.stringify(l)), ...stray].join('\n')}`)),
    );
  });
  const port = listening.port;
  assert.equal(typeof port, 'number', `"listening on" record has no numeric port: ${JSON.stringify(listening)}`);
  return { child, port: port as number, listening, logs, stray, stderr: () => stderr, exited };
}

type Frame = Record<string, any>;

/** A raw WebSocket peer that keeps every frame it receives, in order. */
class WsProbe {
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: Array<{ pred: (f: Frame) => boolean; resolve(f: Frame): void }> = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as Frame;
      this.frames.push(f);
      const w = this.waiters.find((x) => x.pred(f));
      if (w) {
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve(f);
      }
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  static open(url: string): Promise<WsProbe> {
    const ws = new WebSocket(url);
    return new Promise((resolve, reject) => {
      // Registered before 'open' so no frame can slip past.
      const probe = new WsProbe(ws);
      ws.once('open', () => resolve(probe));
      ws.once('error', reject);
    });
  }

  send(msg: unknown): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** The first frame, received so far or yet to come, matching `pred`. Rejects if the socket closes first. */
  waitFor(pred: (f: Frame) => boolean): Promise<Frame> {
    const seen = this.frames.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      this.waiters.push({ pred, resolve });
      void this.closed.then(({ code, reason }) => reject(new Error(`socket closed (${code} ${reason}) first; frames: ${JSON.stringify(this.frames)}`)));
    });
  }

  /** Sends an auth request and returns the reply frame carrying its id. */
  async auth(id: number, jid: string, password: string): Promise<Frame> {
    this.send({ id, type: 'auth', jid, password });
    return this.waitFor((f) => f.id === id);
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    await this.closed;
  }
}

before(async () => {
  // bin/presenced.js runs dist/: build it so this file does not depend on an earlier `npm run build`.
  try {
    await promisify(execFile)(TSC, ['-p', 'tsconfig.json'], { cwd: ROOT, timeout: 180_000 });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`build failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
});

after(() => {
  killAll();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

describe('presenced CLI: account commands and argument handling', { timeout: 120_000 }, () => {
  let env: NodeJS.ProcessEnv;
  before(() => {
    env = cliEnv({ PRESENCED_DATA_DIR: tempDir(), PRESENCED_LOG_LEVEL: 'silent' });
  });
  after(() => killAll());

  test('--version prints the package version', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = await runCli(['--version'], env);
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stdout.trim(), pkg.version);
  });

  test('--help prints usage and exits 0; no arguments prints usage and exits 2', async () => {
    const help = await runCli(['--help'], env);
    assert.equal(help.code, 0, show(help));
    assert.match(help.stdout, /Usage:/);
    assert.match(help.stdout, /presenced account add <jid>/);
    const none = await runCli([], env);
    assert.equal(none.code, 2, show(none));
    assert.match(none.stdout, /Usage:/);
  });

  test('`config` lists every configuration key with its environment variable and default', async () => {
    const r = await runCli(['config'], env);
    assert.equal(r.code, 0, show(r));
    for (const [k, spec] of Object.entries(CONFIG_KEYS)) {
      const line = lines(r.stdout).find((l) => l.startsWith(`${k} `));
      assert.ok(line, `no line for ${k} in:\n${r.stdout}`);
      assert.ok(line.includes(envName(k)), line);
      assert.ok(line.includes(`default ${JSON.stringify(spec.def)}`), line);
      assert.ok(r.stdout.includes(spec.doc), `doc of ${k} missing`);
    }
  });

  test('account add then account list shows the account', async () => {
    const add = await runCli(['account', 'add', 'alice@localhost', '--password', 'x'], env);
    assert.equal(add.code, 0, show(add));
    assert.equal(add.stdout.trim(), 'created alice@localhost');
    const list = await runCli(['account', 'list'], env);
    assert.equal(list.code, 0, show(list));
    assert.deepEqual(lines(list.stdout), ['alice@localhost']);
  });

  test('adding the same account again fails with a conflict, also when spelled differently', async () => {
    for (const jid of ['alice@localhost', 'ALICE@LocalHost']) {
      const r = await runCli(['account', 'add', jid, '--password', 'x'], env);
      assert.notEqual(r.code, 0, show(r));
      assert.equal(r.code, 1, show(r));
      assert.match(r.stderr, /alice@localhost already exists/, show(r));
      assert.match(r.stderr, /conflict/, show(r));
      assert.equal(r.stdout, '');
    }
    const list = await runCli(['account', 'list'], env);
    assert.deepEqual(lines(list.stdout), ['alice@localhost']);
  });

  test('an invalid jid is refused with exit 1 and a message explaining the jid problem', async () => {
    const r = await runCli(['account', 'add', 'bad jid@', '--password', 'x'], env);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, /invalid JID "bad jid@"/, show(r));
    assert.match(r.stderr, /whitespace/, show(r));
    assert.match(r.stderr, /bad-jid/, show(r));
    // Nothing was created.
    assert.deepEqual(lines((await runCli(['account', 'list'], env)).stdout), ['alice@localhost']);
  });

  test('an account on a domain this server does not host is refused', async () => {
    const r = await runCli(['account', 'add', 'someone@elsewhere.example', '--password', 'x'], env);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, /elsewhere\.example is not served here/, show(r));
  });

  test('without --password the password is read from standard input', async () => {
    const r = await runCli(['account', 'add', 'carol@localhost'], env, 'pw\n');
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stdout.trim(), 'created carol@localhost');
    assert.deepEqual(lines((await runCli(['account', 'list'], env)).stdout), ['alice@localhost', 'carol@localhost']);
  });

  test('without --password and with nothing on standard input the command fails and creates nothing', async () => {
    const r = await runCli(['account', 'add', 'dave@localhost'], env, '');
    assert.equal(r.code, 2, show(r));
    assert.match(r.stderr, /no password given/, show(r));
    assert.deepEqual(lines((await runCli(['account', 'list'], env)).stdout), ['alice@localhost', 'carol@localhost']);
  });

  test('account passwd changes the password of an existing account, from --password or stdin', async () => {
    const a = await runCli(['account', 'passwd', 'alice@localhost', '--password', 'new-x'], env);
    assert.equal(a.code, 0, show(a));
    assert.equal(a.stdout.trim(), 'password changed for alice@localhost');
    const b = await runCli(['account', 'passwd', 'Carol@localhost'], env, 'new-pw\n');
    assert.equal(b.code, 0, show(b));
    assert.equal(b.stdout.trim(), 'password changed for carol@localhost');
  });

  test('account passwd of an unknown account fails with exit 1', async () => {
    const r = await runCli(['account', 'passwd', 'nobody@localhost', '--password', 'x'], env);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, /no account nobody@localhost/, show(r));
  });

  test('account remove deletes the accounts; then list is empty', async () => {
    for (const jid of ['alice@localhost', 'carol@localhost']) {
      const r = await runCli(['account', 'remove', jid], env);
      assert.equal(r.code, 0, show(r));
      assert.equal(r.stdout.trim(), `removed ${jid}`);
    }
    const list = await runCli(['account', 'list'], env);
    assert.equal(list.code, 0, show(list));
    assert.equal(list.stdout, '');
  });

  test('removing an unknown account fails with exit 1', async () => {
    const r = await runCli(['account', 'remove', 'alice@localhost'], env);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, /no account alice@localhost/, show(r));
  });

  test('in a cluster with no node on this machine, passwd and remove are refused (only a node can end the sessions on every node) and change nothing', async () => {
    const dir = tempDir();
    const local = cliEnv({ PRESENCED_DATA_DIR: dir, PRESENCED_LOG_LEVEL: 'silent' });
    const added = await runCli(['account', 'add', 'kim@localhost', '--password', 'old-pw'], local);
    assert.equal(added.code, 0, show(added));
    // The same data directory, configured as a cluster member; nothing listens on the bus: the refusal comes first.
    const clustered = cliEnv({ PRESENCED_DATA_DIR: dir, PRESENCED_LOG_LEVEL: 'silent', PRESENCED_BUS: 'redis://127.0.0.1:1' });
    const passwd = await runCli(['account', 'passwd', 'kim@localhost', '--password', 'new-pw'], clustered);
    assert.equal(passwd.code, 1, show(passwd));
    assert.match(passwd.stderr, /only a node can end the account's sessions.*PUT \/api\/v1\/accounts\/\{jid\}\/password/, show(passwd));
    const remove = await runCli(['account', 'remove', 'kim@localhost'], clustered);
    assert.equal(remove.code, 1, show(remove));
    assert.match(remove.stderr, /DELETE \/api\/v1\/accounts\/\{jid\}/, show(remove));
    const list = await runCli(['account', 'list'], local);
    assert.equal(list.stdout.trim(), 'kim@localhost', 'the account is still there');
  });

  test('account list --domain only lists that domain', async () => {
    const multi = cliEnv({ PRESENCED_DATA_DIR: tempDir(), PRESENCED_LOG_LEVEL: 'silent', PRESENCED_DOMAINS: 'localhost,example.com' });
    for (const jid of ['zoe@localhost', 'amy@example.com', 'bea@example.com']) {
      const r = await runCli(['account', 'add', jid, '--password', 'x'], multi);
      assert.equal(r.code, 0, show(r));
    }
    assert.deepEqual(lines((await runCli(['account', 'list'], multi)).stdout), ['amy@example.com', 'bea@example.com', 'zoe@localhost']);
    assert.deepEqual(lines((await runCli(['account', 'list', '--domain', 'example.com'], multi)).stdout), ['amy@example.com', 'bea@example.com']);
    assert.deepEqual(lines((await runCli(['account', 'list', '--domain', 'localhost'], multi)).stdout), ['zoe@localhost']);
  });

  test('an unknown command exits 2 with a usage hint', async () => {
    const r = await runCli(['frobnicate'], env);
    assert.equal(r.code, 2, show(r));
    assert.match(r.stderr, /unknown command "frobnicate"/, show(r));
    assert.match(r.stderr, /presenced --help/, show(r));
    const sub = await runCli(['account', 'frob'], env);
    assert.equal(sub.code, 2, show(sub));
    assert.match(sub.stderr, /unknown account command "frob"/, show(sub));
    const opt = await runCli(['account', 'list', '--bogus'], env);
    assert.equal(opt.code, 2, show(opt));
    assert.match(opt.stderr, /--bogus/, show(opt));
  });

  test('a bad configuration value exits 2 naming the key', async () => {
    const bad = { ...env, PRESENCED_HTTP_PORT: 'abc' };
    for (const args of [['account', 'list'], ['start']]) {
      const r = await runCli(args, bad);
      assert.equal(r.code, 2, `${args.join(' ')}: ${show(r)}`);
      assert.match(r.stderr, /invalid configuration/, show(r));
      assert.match(r.stderr, /http_port must be an integer/, show(r));
      assert.match(r.stderr, /PRESENCED_HTTP_PORT/, show(r));
    }
  });

  test('--config with a missing file exits 2 naming the file', async () => {
    const r = await runCli(['account', 'list', '--config', 'missing.json'], env);
    assert.equal(r.code, 2, show(r));
    assert.match(r.stderr, /missing\.json/, show(r));
    assert.match(r.stderr, /file not found/, show(r));
  });
});

describe('presenced start: a running server, graceful shutdown and restart', { timeout: 120_000 }, () => {
  let dataDir: string;
  let serverEnv: NodeJS.ProcessEnv;
  let cliEnvForDir: NodeJS.ProcessEnv;
  before(() => {
    dataDir = tempDir();
    serverEnv = cliEnv({
      PRESENCED_HTTP_PORT: '0',
      PRESENCED_DATA_DIR: dataDir,
      PRESENCED_ADMIN_TOKEN: ADMIN_TOKEN,
      PRESENCED_LOG_LEVEL: 'info',
      // Other test servers may hold the default XMPP ports.
      PRESENCED_XMPP_PORT: '-1',
      PRESENCED_XMPPS_PORT: '-1',
    });
    cliEnvForDir = cliEnv({ PRESENCED_DATA_DIR: dataDir, PRESENCED_LOG_LEVEL: 'silent' });
  });
  after(() => killAll());

  test('serves accounts created by the CLI while it runs, shuts down cleanly on SIGTERM, and keeps data across restarts', async () => {
    // ---- first run
    const srv = await startServerProcess(serverEnv);
    assert.ok(srv.port > 0, `port must be a real one, got ${srv.port}`);
    assert.match(String(srv.listening.msg), new RegExp(`listening on http://127\\.0\\.0\\.1:${srv.port}\\b`));
    const wsUrl = `ws://127.0.0.1:${srv.port}/ws`;

    const add = await runCli(['account', 'add', 'bob@localhost', '--password', 'pw'], cliEnvForDir);
    assert.equal(add.code, 0, show(add));
    assert.equal(add.stdout.trim(), 'created bob@localhost');

    let bob = await WsProbe.open(wsUrl);
    const reply = await bob.auth(1, 'bob@localhost', 'pw');
    assert.equal(reply.id, 1);
    assert.equal(reply.type, 'result', JSON.stringify(reply));
    assert.equal(reply.result.jid, 'bob@localhost');

    // A password given on standard input while the server runs: the server sees the new one at once.
    const passwd = await runCli(['account', 'passwd', 'bob@localhost'], cliEnvForDir, 'new-pw\n');
    assert.equal(passwd.code, 0, show(passwd));
    // Sessions logged in with the old password end at once; bob logs in again with the new one.
    assert.deepEqual(await bob.waitFor((f) => f.type === 'closing'), { type: 'closing', reason: 'password-changed' });
    await bob.closed;
    bob = await WsProbe.open(wsUrl);
    assert.equal((await bob.auth(1, 'bob@localhost', 'new-pw')).type, 'result');
    const oldPw = await WsProbe.open(wsUrl);
    const refused = await oldPw.auth(1, 'bob@localhost', 'pw');
    assert.deepEqual([refused.type, refused.error?.code], ['error', 'auth-failed'], JSON.stringify(refused));
    await oldPw.close();
    const newPw = await WsProbe.open(wsUrl);
    const accepted = await newPw.auth(1, 'bob@localhost', 'new-pw');
    assert.equal(accepted.type, 'result', JSON.stringify(accepted));
    await newPw.close();

    // Removing an account while the server runs goes through the server: its online session is ended
    // at once (a removed account must not stay online to its contacts until a restart).
    assert.equal((await runCli(['account', 'add', 'carol@localhost', '--password', 'pw'], cliEnvForDir)).code, 0);
    const carol = await WsProbe.open(wsUrl);
    assert.equal((await carol.auth(1, 'carol@localhost', 'pw')).type, 'result');
    const removed = await runCli(['account', 'remove', 'carol@localhost'], cliEnvForDir);
    assert.equal(removed.code, 0, show(removed));
    assert.equal(removed.stdout.trim(), 'removed carol@localhost');
    assert.deepEqual(await carol.waitFor((f) => f.type === 'closing'), { type: 'closing', reason: 'account-removed' });
    await carol.closed;
    // Errors answered by the running server read like the CLI's own, with exit 1.
    const removedAgain = await runCli(['account', 'remove', 'carol@localhost'], cliEnvForDir);
    assert.deepEqual([removedAgain.code, removedAgain.stderr.trim()], [1, 'presenced: no account carol@localhost']);
    const dup = await runCli(['account', 'add', 'bob@localhost', '--password', 'pw'], cliEnvForDir);
    assert.equal(dup.code, 1, show(dup));
    assert.match(dup.stderr, /\(conflict\)/);

    // A second server on the same data directory refuses to start instead of sharing the database.
    const second = spawn(process.execPath, [BIN, 'start'], { cwd: ROOT, env: serverEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(second);
    let secondErr = '';
    second.stderr.setEncoding('utf8').on('data', (d: string) => (secondErr += d));
    const secondExit = await new Promise<number | null>((resolve) => second.on('close', (code) => resolve(code)));
    children.delete(second);
    assert.equal(secondExit, 1, secondErr);
    assert.match(secondErr, /another presenced is already running with data directory/);

    // ---- graceful shutdown
    assert.equal(srv.child.kill('SIGTERM'), true);
    const [closed, exit] = await Promise.all([bob.closed, srv.exited]);
    const closing = bob.frames.find((f) => f.type === 'closing');
    assert.deepEqual(closing, { type: 'closing', reason: 'shutdown' }, `frames: ${JSON.stringify(bob.frames)}`);
    assert.equal(bob.frames.at(-1), closing, 'the closing notice is the last frame before the close');
    assert.equal(closed.code, 1001, `close code ${closed.code} ${closed.reason}`);
    assert.equal(closed.reason, 'shutdown');
    assert.deepEqual(exit, { code: 0, signal: null }, `stderr:\n${srv.stderr()}`);
    assert.ok(srv.logs.some((l) => l.msg === 'stopped'), 'the shutdown ran to completion');
    assert.deepEqual(srv.stray, [], 'stdout carries only JSON log lines');

    // ---- second run on the same data directory
    const again = await startServerProcess(serverEnv);
    assert.ok(again.port > 0);
    const list = await runCli(['account', 'list'], cliEnvForDir);
    assert.equal(list.code, 0, show(list));
    assert.deepEqual(lines(list.stdout), ['bob@localhost']);
    const bob2 = await WsProbe.open(`ws://127.0.0.1:${again.port}/ws`);
    const reply2 = await bob2.auth(7, 'bob@localhost', 'new-pw');
    assert.deepEqual([reply2.type, reply2.result?.jid], ['result', 'bob@localhost'], JSON.stringify(reply2));

    assert.equal(again.child.kill('SIGTERM'), true);
    const [closed2, exit2] = await Promise.all([bob2.closed, again.exited]);
    assert.equal(closed2.code, 1001);
    assert.deepEqual(exit2, { code: 0, signal: null }, `stderr:\n${again.stderr()}`);
  });
});
