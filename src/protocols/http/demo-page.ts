import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { PresenceError } from '../../core/errors.js';

/** Content types of what the demo serves; anything else is not served. */
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

/** A plain file name: no directories, so no way out of the served folder. */
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+$/;

/** The page may only talk to this server: its own scripts, styles and WebSocket. */
const CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/**
 * The directory of presenced's package.json. Found by walking up rather than by a fixed relative path
 * from this module, which is src/protocols/http under tsx and dist/protocols/http when built; the
 * demo's static files and the client SDK live at fixed places under the root in both cases.
 */
export function packageRoot(start: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = start;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'presenced') return dir;
      } catch {
        // not ours (or unreadable): keep walking
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`presenced's package.json not found above ${start}`);
    dir = up;
  }
}

export interface DemoPageOptions {
  /** presenced's package root; found from this module when omitted. */
  readonly root?: string;
}

/**
 * The live presence demo: a static page at /demo using the client SDK, whose built ES modules
 * (packages/client/dist) are served under /demo/sdk/.
 */
export function demoPage(opts: DemoPageOptions = {}) {
  const root = opts.root ?? packageRoot();
  const pageDir = join(root, 'src', 'protocols', 'http', 'demo');
  const sdkDir = join(root, 'packages', 'client', 'dist');

  const serve = async (reply: FastifyReply, dir: string, name: string): Promise<FastifyReply> => {
    const type = TYPES[extname(name)];
    if (!FILE_NAME.test(name) || type === undefined) throw new PresenceError('not-found', `no demo file ${name}`);
    let body: Buffer;
    try {
      body = await readFile(join(dir, name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        const hint = dir === sdkDir ? ' (build the client SDK: npm run build)' : '';
        throw new PresenceError('not-found', `no demo file ${name}${hint}`);
      }
      throw e;
    }
    reply.header('content-type', type).header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff');
    if (type.startsWith('text/html')) reply.header('content-security-policy', CSP).header('referrer-policy', 'no-referrer');
    return reply.send(body);
  };

  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/demo', async (_req, reply) => serve(reply, pageDir, 'index.html'));
    app.get('/demo/', async (_req, reply) => serve(reply, pageDir, 'index.html'));
    const file = { schema: { params: { type: 'object', required: ['file'], properties: { file: { type: 'string', maxLength: 255 } } } } } as const;
    app.get('/demo/:file', file, async (req, reply) => serve(reply, pageDir, (req.params as { file: string }).file));
    app.get('/demo/sdk/:file', file, async (req, reply) => serve(reply, sdkDir, (req.params as { file: string }).file));
  };
}
