import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { RefusedAddress, resolveChecked } from './ssrf.js';

export const EXCERPT_MAX_BYTES = 512;

export interface DeliveryResult {
  /** The HTTP status, or null when no answer came. */
  readonly status: number | null;
  readonly latencyMs: number;
  /** The first bytes of the answer (at most EXCERPT_MAX_BYTES), for the owner's log. */
  readonly excerpt: string | null;
  readonly error: string | null;
  readonly retryAfter: string | undefined;
  /** Refused by the SSRF rule: nothing was sent. */
  readonly refused: boolean;
  /** Nothing was left to send when the request was about to go (prepare answered null). */
  readonly cancelled?: boolean;
}

export interface PostOptions {
  readonly timeoutMs: number;
  readonly allowPrivate: boolean;
  readonly agents: { readonly http: http.Agent; readonly https: https.Agent };
  readonly signal?: AbortSignal;
}

/**
 * POSTs one webhook request: the host is resolved and checked first (ssrf.ts), the connection goes to
 * the checked address, redirects are not followed (a 3xx is a failure), and the whole exchange is
 * bounded by the timeout. `prepare` builds the headers and body once the address is known. Never rejects.
 */
export async function postWebhook(rawUrl: string, prepare: () => { readonly headers: Record<string, string>; readonly body: string } | null, opts: PostOptions): Promise<DeliveryResult> {
  const started = performance.now();
  const done = (r: Omit<DeliveryResult, 'latencyMs'>): DeliveryResult => ({ ...r, latencyMs: Math.round(performance.now() - started) });
  let url: URL;
  try {
    url = new URL(rawUrl);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`scheme ${url.protocol} is not allowed`);
    if (url.protocol === 'http:' && !opts.allowPrivate) throw new RefusedAddress('plain http webhooks are refused (webhooks_allow_private is off)');
  } catch (e) {
    return done({ status: null, excerpt: null, error: `bad webhook URL: ${(e as Error).message}`, retryAfter: undefined, refused: e instanceof RefusedAddress });
  }
  let checked: { address: string; family: 4 | 6 };
  try {
    checked = await resolveChecked(url.hostname, opts.allowPrivate);
  } catch (e) {
    const refused = e instanceof RefusedAddress;
    return done({ status: null, excerpt: null, error: refused ? `refused: ${(e as Error).message}` : `cannot resolve ${url.hostname}: ${(e as Error).message}`, retryAfter: undefined, refused });
  }
  // The connection uses the address that was checked, whatever DNS would answer now.
  const lookup: LookupFunction = (_host, options, cb) => {
    if ((options as { all?: boolean }).all) (cb as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: checked.address, family: checked.family }]);
    else cb(null, checked.address, checked.family);
  };
  // Built only now, after the lookup's wait: what it contains is decided as late as possible (a user who
  // revoked meanwhile is left out); null means there is nothing left to send.
  const prepared = prepare();
  if (prepared === null) return done({ status: null, excerpt: null, error: null, retryAfter: undefined, refused: false, cancelled: true });
  const { headers, body } = prepared;
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise<DeliveryResult>((resolve) => {
    let settled = false;
    const finish = (r: Omit<DeliveryResult, 'latencyMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve(done(r));
    };
    const req = mod.request(
      url,
      {
        method: 'POST',
        lookup,
        agent: url.protocol === 'https:' ? opts.agents.https : opts.agents.http,
        headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'presenced-webhooks/1' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        const status = res.statusCode ?? null;
        const retryAfter = typeof res.headers['retry-after'] === 'string' ? res.headers['retry-after'] : undefined;
        const end = () => {
          const excerpt = Buffer.concat(chunks).subarray(0, EXCERPT_MAX_BYTES).toString('utf8');
          finish({ status, excerpt: excerpt === '' ? null : excerpt, error: null, retryAfter, refused: false });
        };
        res.on('data', (c: Buffer) => {
          if (size < EXCERPT_MAX_BYTES) chunks.push(c);
          size += c.length;
          // The rest of a long answer is of no use: stop reading it.
          if (size >= EXCERPT_MAX_BYTES) {
            end();
            res.destroy();
          }
        });
        res.on('end', end);
        res.on('error', end);
      },
    );
    const timer = setTimeout(() => {
      finish({ status: null, excerpt: null, error: `no answer within ${opts.timeoutMs} ms`, retryAfter: undefined, refused: false });
      req.destroy();
    }, opts.timeoutMs);
    const onAbort = () => {
      finish({ status: null, excerpt: null, error: 'interrupted by shutdown', retryAfter: undefined, refused: false });
      req.destroy();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (e) => finish({ status: null, excerpt: null, error: `${(e as NodeJS.ErrnoException).code ?? 'error'}: ${e.message}`, retryAfter: undefined, refused: false }));
    req.end(body);
  });
}
