import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The real server as a child process (`bin/presenced.js start`), for tests that kill -9 it. */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'presenced.js');
const TSC = join(ROOT, 'node_modules', '.bin', 'tsc');
export const PROCESS_ADMIN_TOKEN = 'crash-test-admin-token-0123456789';

export type LogRecord = Record<string, unknown>;

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly logs: LogRecord[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children = new Set<ChildProcess>();

/** bin/presenced.js runs dist/: build it so that a test runs the code under test. */
export async function buildDist(): Promise<void> {
  await promisify(execFile)(TSC, ['-p', 'tsconfig.json'], { cwd: ROOT, timeout: 180_000 });
}

/** Kills (-9) every child server still running: for a test's `after`. */
export function killAllServerProcesses(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

/**
 * Spawns `presenced start` on `dataDir` (HTTP on a free port, no XMPP listeners, info logs as JSON)
 * with `env` as extra PRESENCED_* settings (and `args` after `start`, e.g. `--config FILE`), and
 * resolves once its "listening on" line has been read.
 */
export async function startServerProcess(dataDir: string, extraEnv: Record<string, string> = {}, args: readonly string[] = []): Promise<ServerProcess> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PRESENCED_')) env[k] = v;
  Object.assign(env, {
    PRESENCED_DATA_DIR: dataDir,
    PRESENCED_HTTP_PORT: '0',
    PRESENCED_XMPP_PORT: '-1',
    PRESENCED_XMPPS_PORT: '-1',
    PRESENCED_ADMIN_TOKEN: PROCESS_ADMIN_TOKEN,
    PRESENCED_LOG_LEVEL: 'info',
    ...extraEnv,
  });
  const child = spawn(process.execPath, [BIN, 'start', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  const logs: LogRecord[] = [];
  const rl = createInterface({ input: child.stdout! });
  const listening = await new Promise<LogRecord>((resolve, reject) => {
    rl.on('line', (line) => {
      try {
        const rec = JSON.parse(line) as LogRecord;
        logs.push(rec);
        if (typeof rec.msg === 'string' && rec.msg.includes('listening on')) resolve(rec);
      } catch {
        // not a log record
      }
    });
    void exited.then(({ code, signal }) => reject(new Error(`server exited (${code ?? signal}) before listening; stderr:\n${stderr}`)));
  });
  return { child, url: `http://127.0.0.1:${listening.port as number}`, logs, exited };
}

/** A call to the admin REST API of a server process. */
export async function processAdmin(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${url}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${PROCESS_ADMIN_TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}
