import { createPrivateKey, type KeyObject } from 'node:crypto';
import type http from 'node:http';
import { SignJWT } from 'jose';
import type { Logger } from 'pino';
import { ConfigReader, DEFAULT_TIMEOUT_MS, Timer, errorText, fitKey, flatFields, keepAliveAgent, parseRetryAfter, post, readCapped, timeoutSignal, type HttpAnswer } from './common.js';
import type { ProviderFactory, PushMessage, PushProvider, PushTarget, SendResult } from './provider.js';

/**
 * Firebase Cloud Messaging, HTTP v1 API. The server authenticates as a Google service account: it
 * signs an RS256 assertion with the account's private key and trades it at the account's `token_uri`
 * for an OAuth 2.0 access token (RFC 7523, the JWT bearer grant), which is cached and renewed before
 * it expires. Pushes are data-only messages, so the app decides what to show.
 */

const SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** Google refuses assertions valid for more than an hour. */
const ASSERTION_LIFETIME_S = 3600;
/** Keys FCM refuses in `data` (its own fields); an app's data carrying them would make every push fail. */
const RESERVED_DATA_KEY = /^(from|message_type|notification|collapse_key)$|^(google|gcm)[._]/i;
/** FCM limits a collapse key to 4 per device, but not its length; a short one keeps the message small. */
const COLLAPSE_KEY_MAX = 64;

interface ServiceAccount {
  readonly projectId: string;
  readonly clientEmail: string;
  readonly tokenUri: string;
  readonly key: KeyObject;
}

interface AccessToken {
  readonly value: string;
  /** After this, the token is renewed before use (well before it really expires). */
  readonly renewAt: number;
  readonly expiresAt: number;
}

class TokenError extends Error {
  constructor(
    message: string,
    /** A token endpoint that is down or slow is retried; one that refuses the account is not. */
    readonly transient: boolean,
    readonly status: number | null,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

function readServiceAccount(cfg: ConfigReader): ServiceAccount {
  const { path, text } = cfg.file('serviceAccountFile');
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    cfg.fail('serviceAccountFile', `is not JSON (${path}): ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null) cfg.fail('serviceAccountFile', `is not a service-account JSON object (${path})`);
  const field = (k: string): string => {
    const v = json[k];
    if (typeof v !== 'string' || v === '') cfg.fail('serviceAccountFile', `has no "${k}" (${path}); download the key from the Firebase console, Project settings, Service accounts`);
    return v;
  };
  if (json.type !== undefined && json.type !== 'service_account') cfg.fail('serviceAccountFile', `is of type "${String(json.type)}", not a service account (${path})`);
  const projectId = field('project_id');
  const clientEmail = field('client_email');
  const tokenUri = field('token_uri');
  try {
    const u = new URL(tokenUri);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error(`scheme ${u.protocol}`);
  } catch (e) {
    cfg.fail('serviceAccountFile', `has a bad token_uri (${path}): ${(e as Error).message}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(field('private_key'));
  } catch (e) {
    cfg.fail('serviceAccountFile', `has an unreadable private_key (${path}): ${(e as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'rsa') cfg.fail('serviceAccountFile', `private_key is not an RSA key (${path})`);
  return { projectId, clientEmail, tokenUri, key };
}

export class FcmProvider implements PushProvider {
  readonly type = 'fcm' as const;
  readonly #account: ServiceAccount;
  readonly #sendUrl: URL;
  readonly #agent: http.Agent;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  #token: AccessToken | null = null;
  /** The renewal under way: concurrent sends wait for the same one instead of each asking Google. */
  #renewing: Promise<AccessToken> | null = null;
  #closed = new AbortController();

  constructor(
    readonly name: string,
    config: Record<string, unknown>,
    deps: { readonly log: Logger },
  ) {
    const cfg: ConfigReader = new ConfigReader(name, 'fcm', config);
    this.#account = readServiceAccount(cfg);
    const endpoint = cfg.url('endpoint', 'https://fcm.googleapis.com');
    this.#timeoutMs = cfg.integer('timeoutMs', DEFAULT_TIMEOUT_MS, 100, 120_000);
    this.#sendUrl = new URL(`${endpoint}/v1/projects/${encodeURIComponent(this.#account.projectId)}/messages:send`);
    this.#agent = keepAliveAgent(endpoint, cfg.integer('maxConnections', 64, 1, 1000));
    this.#log = deps.log.child({ provider: name, providerType: 'fcm' });
  }

  async send(target: PushTarget, message: PushMessage, signal?: AbortSignal): Promise<SendResult> {
    const timer = new Timer();
    if (target.token === '' || target.token.length > 4096) return timer.failed(null, 'the FCM registration token is empty or too long');
    const body = JSON.stringify({ message: this.#message(target, message) });
    let token: AccessToken;
    try {
      token = await this.#accessToken(signal);
    } catch (e) {
      return this.#tokenFailure(timer, e);
    }
    let first = await this.#post(body, token, timer, signal);
    if (first.kind === 'unauthorized') {
      // The token may have been revoked or the clock may be off: one new token, one more try.
      this.#dropToken(token);
      try {
        token = await this.#accessToken(signal);
      } catch (e) {
        return this.#tokenFailure(timer, e);
      }
      first = await this.#post(body, token, timer, signal);
      if (first.kind === 'unauthorized') return timer.failed(401, `FCM refused a fresh access token: ${first.error}`);
    }
    return first.result;
  }

  async close(): Promise<void> {
    this.#closed.abort(new Error('provider closed'));
    this.#agent.destroy();
  }

  #message(target: PushTarget, m: PushMessage): Record<string, unknown> {
    const data: Record<string, string> = {};
    for (const [k, v] of Object.entries(flatFields(m))) if (!RESERVED_DATA_KEY.test(k)) data[k] = v;
    const collapseKey = fitKey(m.collapseKey, COLLAPSE_KEY_MAX, /^[\x21-\x7e]+$/);
    const ttl = Math.max(0, Math.floor(m.ttlSeconds));
    return {
      token: target.token,
      data,
      android: { priority: m.urgency === 'high' ? 'HIGH' : 'NORMAL', collapse_key: collapseKey, ttl: `${ttl}s` },
      // The same message reaching an iOS app through FCM: a background (content-available) push, which
      // Apple only accepts at priority 5, collapsed and expiring like the Android one.
      apns: {
        headers: {
          'apns-push-type': 'background',
          'apns-priority': '5',
          'apns-collapse-id': fitKey(m.collapseKey, 64, /^[\x21-\x7e]+$/),
          'apns-expiration': String(ttl === 0 ? 0 : Math.floor(Date.now() / 1000) + ttl),
        },
        payload: { aps: { 'content-available': 1 } },
      },
    };
  }

  async #post(body: string, token: AccessToken, timer: Timer, signal?: AbortSignal): Promise<{ kind: 'done'; result: SendResult } | { kind: 'unauthorized'; error: string }> {
    let res: HttpAnswer;
    try {
      res = await post(this.#sendUrl, this.#agent, { authorization: `Bearer ${token.value}`, 'content-type': 'application/json; charset=utf-8' }, body, this.#timeoutMs, signal);
    } catch (e) {
      if ((e as { timedOut?: boolean }).timedOut) return { kind: 'done', result: timer.retry(null, `FCM: no answer within ${this.#timeoutMs} ms`) };
      if (signal?.aborted || this.#closed.signal.aborted) return { kind: 'done', result: timer.retry(null, 'FCM: interrupted (shutdown)') };
      return { kind: 'done', result: timer.retry(null, `FCM: ${errorText(e)}`) };
    }
    if (res.status === 200) {
      let id: string | undefined;
      try {
        const n = (JSON.parse(res.text) as { name?: unknown }).name;
        if (typeof n === 'string') id = n;
      } catch {
        // A 200 is a success whatever its body says.
      }
      return { kind: 'done', result: timer.sent(200, id) };
    }
    const err = fcmError(res.text);
    const what = `${res.status}${err.code ? ` ${err.code}` : ''}${err.message ? `: ${err.message}` : ''}`;
    if (res.status === 401) return { kind: 'unauthorized', error: what };
    if (res.status === 404 || err.code === 'UNREGISTERED') return { kind: 'done', result: timer.dead(res.status, err.code ?? 'UNREGISTERED') };
    // INVALID_ARGUMENT covers both a malformed token and a malformed message; only the first is the device's fault.
    if (res.status === 400 && err.code === 'INVALID_ARGUMENT' && /registration token/i.test(err.message ?? '')) return { kind: 'done', result: timer.dead(400, 'INVALID_ARGUMENT (registration token)') };
    // The token belongs to another Firebase project: it will never work with this one.
    if (res.status === 403 && err.code === 'SENDER_ID_MISMATCH') return { kind: 'done', result: timer.dead(403, 'SENDER_ID_MISMATCH') };
    const ra = res.headers['retry-after'];
    if (res.status === 429 || res.status >= 500) return { kind: 'done', result: timer.retry(res.status, `FCM ${what}`, parseRetryAfter(typeof ra === 'string' ? ra : undefined)) };
    return { kind: 'done', result: timer.failed(res.status, `FCM ${what}`) };
  }

  #tokenFailure(timer: Timer, e: unknown): SendResult {
    if (e instanceof TokenError) {
      if (e.transient) return timer.retry(e.status, e.message, e.retryAfterMs);
      return timer.failed(e.status, e.message);
    }
    return timer.retry(null, `FCM token: ${errorText(e)}`);
  }

  #dropToken(used: AccessToken): void {
    if (this.#token === used) this.#token = null;
  }

  async #accessToken(signal?: AbortSignal): Promise<AccessToken> {
    const now = Date.now();
    const cur = this.#token;
    if (cur && now < cur.renewAt) return cur;
    if (!this.#renewing) {
      this.#renewing = this.#fetchToken().then(
        (t) => {
          this.#token = t;
          this.#renewing = null;
          return t;
        },
        (e: unknown) => {
          this.#renewing = null;
          throw e;
        },
      );
    }
    // A token not yet expired stays usable while its renewal is under way (or failing).
    if (cur && now < cur.expiresAt - 5_000) {
      this.#renewing.catch((e: unknown) => this.#log.warn({ err: errorText(e) }, 'FCM access token renewal failed; the current token is used until it expires'));
      return cur;
    }
    return signal ? abortable(this.#renewing, signal) : this.#renewing;
  }

  async #fetchToken(): Promise<AccessToken> {
    const a = this.#account;
    const iat = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ scope: SCOPE })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .setIssuer(a.clientEmail)
      .setAudience(a.tokenUri)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ASSERTION_LIFETIME_S)
      .sign(a.key);
    const t = timeoutSignal(this.#timeoutMs, this.#closed.signal);
    const started = Date.now();
    let res: Response;
    let text: string;
    try {
      res = await fetch(a.tokenUri, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: GRANT_TYPE, assertion }).toString(),
        redirect: 'manual',
        signal: t.signal,
      });
      text = await readCapped(res, 16_384);
    } catch (e) {
      throw new TokenError(`FCM token endpoint: ${t.timedOut() ? `no answer within ${this.#timeoutMs} ms` : errorText(e)}`, true, null);
    } finally {
      t.dispose();
    }
    let json: { access_token?: unknown; expires_in?: unknown; error?: unknown; error_description?: unknown } = {};
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      // Judged on the status below.
    }
    if (res.status !== 200) {
      const what = `FCM token endpoint answered ${res.status}${typeof json.error === 'string' ? ` ${json.error}` : ''}${typeof json.error_description === 'string' ? `: ${json.error_description}` : ''}`;
      this.#log.error({ status: res.status, error: json.error }, 'FCM access token refused');
      const transient = res.status === 429 || res.status >= 500;
      throw new TokenError(what, transient, res.status, transient ? parseRetryAfter(res.headers.get('retry-after')) : undefined);
    }
    if (typeof json.access_token !== 'string' || json.access_token === '') throw new TokenError('FCM token endpoint answered 200 without an access_token', true, 200);
    const lifetimeMs = (typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 3600) * 1000;
    // Renewed five minutes before it expires (Google's tokens last an hour), or halfway for short-lived ones.
    const margin = Math.min(300_000, lifetimeMs / 2);
    return { value: json.access_token, renewAt: started + lifetimeMs - margin, expiresAt: started + lifetimeMs };
  }
}

function fcmError(text: string): { code?: string; message?: string } {
  try {
    const e = (JSON.parse(text) as { error?: { status?: unknown; message?: unknown; details?: Array<{ errorCode?: unknown }> } }).error;
    if (!e) return {};
    // The FCM-specific code (UNREGISTERED, SENDER_ID_MISMATCH, ...) is in details; status is the generic gRPC one.
    const specific = Array.isArray(e.details) ? e.details.find((d) => typeof d?.errorCode === 'string')?.errorCode : undefined;
    const out: { code?: string; message?: string } = {};
    const code = typeof specific === 'string' ? specific : typeof e.status === 'string' ? e.status : undefined;
    if (code !== undefined) out.code = code;
    if (typeof e.message === 'string') out.message = e.message.slice(0, 300);
    return out;
  } catch {
    return {};
  }
}

/** Waits for a shared promise, but lets this caller give up on its own signal. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new TokenError('FCM: interrupted (shutdown)', true, null));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new TokenError('FCM: interrupted (shutdown)', true, null));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

export const createFcmProvider: ProviderFactory = (name, config, deps) => new FcmProvider(name, config, deps);
