import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { ProviderConfigError, type PushMessage, type SendResult } from './provider.js';

/** A push service that takes longer than this is treated as unreachable (the push is retried). */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Retry-After values above this are capped: the core's own backoff decides past that point. */
export const RETRY_AFTER_CAP_MS = 3_600_000;
/**
 * Message text is clipped to this many characters: every platform caps a push at about 4 KB, and a
 * push that is refused for its size (APNs 413, FCM 400) would never be delivered at all.
 */
export const TEXT_MAX_CHARS = 1000;

/** Reads and checks one provider's configuration entry; every error names the provider and the field. */
export class ConfigReader {
  constructor(
    readonly provider: string,
    readonly type: string,
    private readonly config: Record<string, unknown>,
  ) {}

  fail(field: string, why: string): never {
    throw new ProviderConfigError(`push provider "${this.provider}" (${this.type}): ${field} ${why}`);
  }

  string(field: string): string;
  string(field: string, optional: true): string | undefined;
  string(field: string, optional = false): string | undefined {
    const v = this.config[field];
    if (v === undefined || v === null) {
      if (optional) return undefined;
      this.fail(field, 'is required');
    }
    if (typeof v !== 'string' || v.trim() === '') this.fail(field, 'must be a non-empty string');
    return v;
  }

  boolean(field: string, fallback: boolean): boolean {
    const v = this.config[field];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.fail(field, 'must be true or false');
    return v;
  }

  integer(field: string, fallback: number, min: number, max: number): number {
    const v = this.config[field];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) this.fail(field, `must be an integer from ${min} to ${max}`);
    return v;
  }

  stringList(field: string): string[] | undefined {
    const v = this.config[field];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x.trim() === '')) this.fail(field, 'must be a list of non-empty strings');
    return v as string[];
  }

  /** An http(s) base URL, without a trailing slash. */
  url(field: string, fallback: string): string {
    const v = this.string(field, true) ?? fallback;
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      this.fail(field, `is not a URL: ${JSON.stringify(v)}`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') this.fail(field, `must be an http or https URL, not ${u.protocol}`);
    return v.replace(/\/+$/, '');
  }

  /** Reads a file named by a field; a missing or unreadable file is a configuration error. */
  file(field: string, optional?: false): { path: string; text: string };
  file(field: string, optional: true): { path: string; text: string } | undefined;
  file(field: string, optional = false): { path: string; text: string } | undefined {
    const path = optional ? this.string(field, true) : this.string(field);
    if (path === undefined) return undefined;
    try {
      return { path, text: readFileSync(path, 'utf8') };
    } catch (e) {
      this.fail(field, `cannot be read (${path}): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
}

/** Milliseconds to wait from a `Retry-After` value (RFC 9110 §10.2.3: seconds or an HTTP date), capped; undefined when absent or unreadable. */
export function parseRetryAfter(header: string | null | undefined, nowMs = Date.now()): number | undefined {
  if (header === null || header === undefined) return undefined;
  const v = header.trim();
  let ms: number;
  if (/^\d+$/.test(v)) ms = Number(v) * 1000;
  else {
    const t = Date.parse(v);
    if (Number.isNaN(t) || !/[a-z]/i.test(v)) return undefined;
    ms = t - nowMs;
  }
  return Math.min(Math.max(ms, 0), RETRY_AFTER_CAP_MS);
}

/** Measures one send from its start; every SendResult carries the latency. */
export class Timer {
  readonly #start = performance.now();
  get ms(): number {
    return Math.round((performance.now() - this.#start) * 10) / 10;
  }
  sent(status: number, id?: string): SendResult {
    return id === undefined ? { outcome: 'sent', status, latencyMs: this.ms } : { outcome: 'sent', status, latencyMs: this.ms, id };
  }
  retry(status: number | null, error: string, retryAfterMs?: number): SendResult {
    return retryAfterMs === undefined
      ? { outcome: 'retry', status, latencyMs: this.ms, error }
      : { outcome: 'retry', status, latencyMs: this.ms, error, retryAfterMs };
  }
  dead(status: number, reason: string): SendResult {
    return { outcome: 'dead', status, latencyMs: this.ms, reason };
  }
  failed(status: number | null, error: string): SendResult {
    return { outcome: 'failed', status, latencyMs: this.ms, error };
  }
}

export function clip(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  if (text.length <= TEXT_MAX_CHARS) return text;
  // Do not cut a surrogate pair in half: the JSON would carry a lone surrogate.
  let end = TEXT_MAX_CHARS - 1;
  const c = text.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}

/** A key that fits a provider's limit: kept when short and made of allowed characters, else its SHA-256 (base64url) cut to `max`. */
export function fitKey(key: string, max: number, allowed: RegExp): string {
  if (key.length > 0 && key.length <= max && allowed.test(key)) return key;
  return createHash('sha256').update(key).digest('base64url').slice(0, max);
}

/**
 * The fields of a push as flat strings, for FCM's data map and the Web Push payload. Only what the
 * message carries is sent: sender and body are absent unless the core's privacy settings put them in.
 * The app's own data cannot override these fields.
 */
export function flatFields(message: PushMessage): Record<string, string> {
  const out: Record<string, string> = { ...(message.data ?? {}) };
  out.reason = message.reason;
  out.count = String(message.count);
  const sender = message.sender;
  const body = clip(message.body);
  const title = clip(message.title);
  if (sender !== undefined) out.sender = sender;
  else delete out.sender;
  if (body !== undefined) out.body = body;
  else delete out.body;
  if (title !== undefined) out.title = title;
  else delete out.title;
  return out;
}

/** A short description of an error for the SendResult (never the push's content). */
export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: unknown }).cause;
    const code = (e as NodeJS.ErrnoException).code ?? (cause as NodeJS.ErrnoException | undefined)?.code;
    const inner = cause instanceof Error ? `: ${cause.message}` : '';
    return `${code ? `${code}: ` : ''}${e.message}${inner}`;
  }
  return String(e);
}

/** A signal that fires on the caller's signal or after `ms`, and says which. */
export function timeoutSignal(ms: number, outer?: AbortSignal): { signal: AbortSignal; timedOut: () => boolean; dispose: () => void } {
  const ctl = new AbortController();
  let timed = false;
  const timer = setTimeout(() => {
    timed = true;
    ctl.abort(new Error(`no answer within ${ms} ms`));
  }, ms);
  const onAbort = () => ctl.abort(outer?.reason ?? new Error('aborted'));
  if (outer?.aborted) onAbort();
  else outer?.addEventListener('abort', onAbort, { once: true });
  return {
    signal: ctl.signal,
    timedOut: () => timed,
    dispose: () => {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onAbort);
    },
  };
}

/** Reads at most `max` bytes of an answer body as text (an error answer is only looked at, never stored whole). */
export async function readCapped(res: Response, max = 4096): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < max) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    // Release the connection either way; cancelling an already finished stream is harmless.
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).subarray(0, max).toString('utf8');
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  /** The first bytes of the body (at most `maxBody`). */
  readonly text: string;
}

/** Keep-alive agents for one provider's sends (node:http rather than fetch: a third of the CPU per push). */
export function keepAliveAgent(url: string, maxSockets: number): http.Agent {
  const opts = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: 'lifo' as const };
  return url.startsWith('https:') ? new https.Agent(opts) : new http.Agent(opts);
}

/**
 * One POST over a keep-alive agent. Rejects on a network error, a timeout (`timedOut` set on the error)
 * or the signal; resolves with any HTTP answer.
 */
export function post(url: URL, agent: http.Agent, headers: Record<string, string>, body: string | Buffer, timeoutMs: number, signal?: AbortSignal, maxBody = 4096): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    let done = false;
    const fail = (e: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      req.destroy();
      reject(e);
    };
    const req = mod.request(url, { method: 'POST', agent, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < maxBody) chunks.push(c);
        size += c.length;
      });
      res.on('end', () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).subarray(0, maxBody).toString('utf8') });
      });
      res.on('error', fail);
    });
    const timer = setTimeout(() => fail(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { timedOut: true })), timeoutMs);
    const onAbort = () => fail(Object.assign(new Error('interrupted (shutdown)'), { aborted: true }));
    // Before anything can destroy the request: its 'error' must always have a listener.
    req.on('error', fail);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    req.end(body);
  });
}
