import { chmod, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { isPresenceError, PresenceError } from './core/errors.js';
import type { PresenceEngine } from './engine/engine.js';

/**
 * The running server's local control channel: a Unix socket in the data directory, through which the
 * command line changes accounts while the server runs (as prosodyctl and ejabberdctl talk to their
 * servers). Writing to the database behind the server's back would leave its caches wrong: a removed
 * account would stay online to its contacts and in their cached rosters until a restart.
 *
 * Whoever can open the socket can already write the database next to it, so the file's permissions
 * (0600) are the access control. The socket also marks the data directory as in use: a second server
 * started on the same directory finds it answering and refuses to start.
 *
 * Wire format: one JSON request per connection, one JSON line back.
 */

export const CONTROL_SOCKET = 'presenced.ctl';
const MAX_REQUEST_BYTES = 64 * 1024;
/** Unix socket paths are limited to 107 bytes on Linux. */
const MAX_PATH = 107;

export type ControlRequest =
  | { readonly op: 'account.add'; readonly jid: string; readonly password: string }
  | { readonly op: 'account.passwd'; readonly jid: string; readonly password: string }
  | { readonly op: 'account.remove'; readonly jid: string }
  /** An operation a feature registered with `handleControl` (e.g. `extensions.list`). */
  | { readonly op: 'feature'; readonly name: string; readonly args?: unknown };

export type ControlResponse = { readonly ok: true; readonly jid: string; readonly removed?: boolean } | { readonly ok: false; readonly code: string; readonly message: string };
export type FeatureControlResponse = { readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly code: string; readonly message: string };

/**
 * Operations features add to the control channel, by engine (one server per engine), so that the
 * channel, started before the features, names none of them.
 */
const featureOps = new WeakMap<PresenceEngine, Map<string, (args: unknown) => Promise<unknown>>>();
export function handleControl(engine: PresenceEngine, name: string, fn: (args: unknown) => Promise<unknown>): void {
  let ops = featureOps.get(engine);
  if (!ops) featureOps.set(engine, (ops = new Map()));
  ops.set(name, fn);
}

export function controlSocketPath(dataDir: string): string {
  return join(dataDir, CONTROL_SOCKET);
}

export class DataDirInUseError extends Error {}

async function answer(engine: PresenceEngine, req: ControlRequest): Promise<ControlResponse | FeatureControlResponse> {
  switch (req.op) {
    case 'feature': {
      const fn = featureOps.get(engine)?.get(req.name);
      if (!fn) throw new PresenceError('not-found', `this server has no control operation "${req.name.slice(0, 64)}" (is its feature turned on?)`);
      return { ok: true, result: await fn(req.args) };
    }
    case 'account.add':
      return { ok: true, jid: await engine.createAccount(req.jid, req.password) };
    case 'account.passwd':
      await engine.changePassword(req.jid, req.password);
      return { ok: true, jid: engine.localJid(req.jid) };
    case 'account.remove':
      return { ok: true, jid: engine.localJid(req.jid), removed: await engine.deleteAccount(req.jid) };
  }
}

function parseRequest(text: string): ControlRequest {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new PresenceError('bad-request', 'control request is not JSON');
  }
  const r = v as Record<string, unknown>;
  if (typeof r === 'object' && r !== null && r.op === 'feature' && typeof r.name === 'string') return { op: 'feature', name: r.name, args: r.args };
  if (typeof r !== 'object' || r === null || typeof r.jid !== 'string') throw new PresenceError('bad-request', 'control request needs "op" and "jid"');
  if (r.op === 'account.remove') return { op: r.op, jid: r.jid };
  if ((r.op === 'account.add' || r.op === 'account.passwd') && typeof r.password === 'string') return { op: r.op, jid: r.jid, password: r.password };
  throw new PresenceError('bad-request', `unknown control request ${JSON.stringify(r.op)}`);
}

function serve(engine: PresenceEngine, log: Logger, socket: Socket): void {
  let buf = '';
  let done = false;
  socket.setEncoding('utf8');
  socket.on('error', () => {});
  socket.on('data', (chunk: string) => {
    if (done) return;
    buf += chunk;
    const nl = buf.indexOf('\n');
    if (nl < 0 && buf.length <= MAX_REQUEST_BYTES) return;
    done = true;
    const reply = (r: ControlResponse | FeatureControlResponse): void => {
      socket.end(`${JSON.stringify(r)}\n`);
    };
    if (nl < 0) {
      reply({ ok: false, code: 'bad-request', message: 'control request too large' });
      return;
    }
    let req: ControlRequest;
    try {
      req = parseRequest(buf.slice(0, nl));
    } catch (e) {
      reply({ ok: false, code: 'bad-request', message: (e as Error).message });
      return;
    }
    answer(engine, req).then(
      (r) => {
        log.info({ op: req.op === 'feature' ? req.name : req.op, ...('jid' in req ? { jid: req.jid } : {}) }, 'control request');
        reply(r);
      },
      (e: unknown) => {
        if (!isPresenceError(e)) log.error({ err: e, op: req.op === 'feature' ? req.name : req.op }, 'control request failed');
        reply(isPresenceError(e) ? { ok: false, code: e.code, message: e.message } : { ok: false, code: 'internal', message: 'internal error' });
      },
    );
  });
}

/** Whether a server answers on `path` (a stale file from a crashed server does not). */
function answering(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface ControlChannel {
  readonly path: string | null;
  close(): Promise<void>;
}

/**
 * Listens on the data directory's control socket. Throws DataDirInUseError when another server
 * already answers there.
 */
export async function startControlChannel(engine: PresenceEngine, dataDir: string, log: Logger): Promise<ControlChannel> {
  const path = controlSocketPath(dataDir);
  if (Buffer.byteLength(path) > MAX_PATH) {
    log.warn({ path }, 'data directory path too long for the control socket; CLI account changes will go to the database directly and take effect in this server only after a restart');
    return { path: null, close: async () => {} };
  }
  if (await answering(path)) {
    throw new DataDirInUseError(`another presenced is already running with data directory ${dataDir}`);
  }
  await unlink(path).catch(() => {});
  const server: Server = createServer((socket) => serve(engine, log, socket));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(path, 0o600);
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}

/**
 * Sends one request to the server running on `dataDir`. Resolves null when no server is running
 * there (no socket, or a stale one), so the caller can work on the database directly.
 */
export function controlRequest(dataDir: string, req: Exclude<ControlRequest, { op: 'feature' }>): Promise<ControlResponse | null> {
  return send(dataDir, req) as Promise<ControlResponse | null>;
}

/** Asks the server running on `dataDir` to run a feature's control operation; null when none runs there. */
export function featureControlRequest(dataDir: string, name: string, args?: unknown): Promise<FeatureControlResponse | null> {
  return send(dataDir, { op: 'feature', name, args }) as Promise<FeatureControlResponse | null>;
}

function send(dataDir: string, req: ControlRequest): Promise<unknown> {
  const path = controlSocketPath(dataDir);
  if (Buffer.byteLength(path) > MAX_PATH) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    let connected = false;
    let buf = '';
    s.setEncoding('utf8');
    s.once('connect', () => {
      connected = true;
      s.write(`${JSON.stringify(req)}\n`);
    });
    s.on('data', (d: string) => {
      buf += d;
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      if (!connected && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')) resolve(null);
      else reject(new Error(`control socket ${path}: ${e.message}`));
    });
    s.once('close', () => {
      if (!connected) return;
      try {
        resolve(JSON.parse(buf) as unknown);
      } catch {
        reject(new Error(`the running server closed the control socket without an answer`));
      }
    });
  });
}
