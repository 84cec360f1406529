import { createPrivateKey, type KeyObject } from 'node:crypto';
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type IncomingHttpStatusHeader } from 'node:http2';
import { rootCertificates } from 'node:tls';
import { SignJWT } from 'jose';
import type { Logger } from 'pino';
import { ConfigReader, DEFAULT_TIMEOUT_MS, Timer, clip, errorText, fitKey, parseRetryAfter } from './common.js';
import type { ProviderFactory, PushMessage, PushProvider, PushTarget, SendResult } from './provider.js';

/**
 * Apple Push Notification service, provider API over HTTP/2 with token authentication: one
 * multiplexed HTTP/2 connection per provider, every request carrying an ES256 JWT signed with the
 * team's .p8 key. Apple refuses a token older than an hour and answers TooManyProviderTokenUpdates to
 * one renewed more often than every 20 minutes, so one token is reused and renewed after 50 minutes.
 */

const ENDPOINTS = { production: 'https://api.push.apple.com', sandbox: 'https://api.sandbox.push.apple.com' } as const;
const JWT_RENEW_AFTER_MS = 50 * 60_000;
const JWT_MIN_AGE_MS = 20 * 60_000;
/** Apple's limit for a regular push's payload. */
const PAYLOAD_MAX_BYTES = 4096;
const DEVICE_TOKEN = /^[0-9a-f]{16,200}$/i;

interface ProviderJwt {
  readonly value: string;
  readonly issuedAt: number;
}

export class ApnsProvider implements PushProvider {
  readonly type = 'apns' as const;
  readonly #key: KeyObject;
  readonly #keyId: string;
  readonly #teamId: string;
  readonly #topic: string;
  readonly #endpoint: string;
  readonly #ca: string[] | undefined;
  readonly #timeoutMs: number;
  readonly #defaultAlert: string;
  readonly #log: Logger;
  #jwt: ProviderJwt | null = null;
  #jwtPending: Promise<ProviderJwt> | null = null;
  #session: ClientHttp2Session | null = null;
  readonly #inflight = new WeakMap<ClientHttp2Session, number>();
  #closed = false;
  /** Connections opened so far (tests and metrics check that pushes share one). */
  sessionsOpened = 0;

  constructor(
    readonly name: string,
    config: Record<string, unknown>,
    deps: { readonly log: Logger },
  ) {
    const cfg: ConfigReader = new ConfigReader(name, 'apns', config);
    const { path, text } = cfg.file('keyFile');
    let key: KeyObject;
    try {
      key = createPrivateKey(text);
    } catch (e) {
      cfg.fail('keyFile', `is not a readable private key (${path}): ${(e as Error).message}; use the .p8 file from Apple's developer account (Keys)`);
    }
    this.#key = key;
    if (this.#key.asymmetricKeyType !== 'ec' || this.#key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') cfg.fail('keyFile', `is not an EC P-256 key (${path}); APNs keys (.p8) are`);
    this.#keyId = cfg.string('keyId');
    this.#teamId = cfg.string('teamId');
    this.#topic = cfg.string('topic');
    const env = cfg.string('environment');
    // Required, not defaulted: a sandbox token sent to production is answered BadDeviceToken, and pruned.
    if (env !== 'production' && env !== 'sandbox') cfg.fail('environment', `must be "production" or "sandbox", not ${JSON.stringify(env)}`);
    this.#endpoint = cfg.url('endpoint', ENDPOINTS[env]);
    const ca = cfg.file('caFile', true);
    // An extra CA is added to the usual roots, not put in their place.
    this.#ca = ca ? [...rootCertificates, ca.text] : undefined;
    this.#timeoutMs = cfg.integer('timeoutMs', DEFAULT_TIMEOUT_MS, 100, 120_000);
    this.#defaultAlert = cfg.string('defaultAlert', true) ?? 'New message';
    this.#log = deps.log.child({ provider: name, providerType: 'apns' });
  }

  async send(target: PushTarget, message: PushMessage, signal?: AbortSignal): Promise<SendResult> {
    const timer = new Timer();
    if (!DEVICE_TOKEN.test(target.token)) return timer.failed(null, 'the APNs device token is not hexadecimal');
    const { headers, body } = this.#request(target, message);
    if (Buffer.byteLength(body) > PAYLOAD_MAX_BYTES) return timer.failed(null, `the APNs payload is over ${PAYLOAD_MAX_BYTES} bytes`);
    let jwt: ProviderJwt;
    try {
      jwt = await this.#providerJwt(false);
    } catch (e) {
      return timer.failed(null, `APNs provider token: ${errorText(e)}`);
    }
    let answer = await this.#exchange(headers, body, jwt, signal);
    // A connection that went away before this stream was taken (GOAWAY, reset) sent nothing: once more on a new one.
    if (answer.kind === 'unsent' && !signal?.aborted && !this.#closed) answer = await this.#exchange(headers, body, jwt, signal);
    if (answer.kind === 'answer' && answer.status === 403 && answer.reason === 'ExpiredProviderToken') {
      try {
        jwt = await this.#providerJwt(true, jwt);
      } catch (e) {
        return timer.failed(403, `APNs provider token: ${errorText(e)}`);
      }
      answer = await this.#exchange(headers, body, jwt, signal);
    }
    if (answer.kind !== 'answer') return timer.retry(null, `APNs: ${answer.error}`);
    const { status, reason, apnsId, retryAfterMs } = answer;
    if (status === 200) return timer.sent(200, apnsId);
    const what = `APNs ${status}${reason ? ` ${reason}` : ''}`;
    if (status === 410 || (status === 400 && (reason === 'BadDeviceToken' || reason === 'DeviceTokenNotForTopic'))) return timer.dead(status, reason ?? 'Unregistered');
    if (status === 429 || status >= 500) return timer.retry(status, what, retryAfterMs);
    if (status === 403 && (reason === 'InvalidProviderToken' || reason === 'ExpiredProviderToken' || reason === 'TooManyProviderTokenUpdates')) this.#log.error({ status, reason }, 'APNs refused the provider token; check keyId, teamId and keyFile');
    return timer.failed(status, what);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const s = this.#session;
    this.#session = null;
    if (!s || s.destroyed) return;
    // An idle session is unref'd: without this, a process awaiting close() could exit before it closes.
    s.ref();
    await new Promise<void>((r) => {
      const force = setTimeout(() => s.destroy(), this.#timeoutMs);
      s.close(() => {
        clearTimeout(force);
        r();
      });
    });
  }

  #request(target: PushTarget, m: PushMessage): { headers: Record<string, string>; body: string } {
    const aps: Record<string, unknown> = {};
    let pushType: 'alert' | 'background';
    if (m.reason === 'clear') {
      // Only the badge changes: an alert-type push with nothing to show (Apple files badge updates under alert).
      aps.badge = 0;
      pushType = 'alert';
    } else {
      const title = clip(m.title ?? m.sender);
      const body = clip(m.body);
      // With sender and body withheld, the text is generic; mutable-content lets the app's Notification
      // Service Extension fetch and show the real content over its own connection.
      aps.alert = title === undefined && body === undefined ? { body: this.#defaultAlert } : { ...(title !== undefined ? { title } : {}), ...(body !== undefined ? { body } : {}) };
      if (m.reason === 'message' || m.count > 0) aps.badge = m.count;
      aps.sound = 'default';
      aps['mutable-content'] = 1;
      pushType = 'alert';
    }
    // Custom keys sit beside aps; aps itself cannot be overridden.
    const payload: Record<string, unknown> = { ...(m.data ?? {}), reason: m.reason, count: m.count, aps };
    if (m.sender !== undefined) payload.sender = m.sender;
    const ttl = Math.max(0, Math.floor(m.ttlSeconds));
    const headers: Record<string, string> = {
      ':method': 'POST',
      ':path': `/3/device/${target.token.toLowerCase()}`,
      'apns-topic': this.#topic,
      'apns-push-type': pushType,
      'apns-priority': m.urgency === 'high' ? '10' : '5',
      'apns-collapse-id': fitKey(m.collapseKey, 64, /^[\x21-\x7e]+$/),
      // 0: deliver now or never; otherwise APNs stores the push until then.
      'apns-expiration': String(ttl === 0 ? 0 : Math.floor(Date.now() / 1000) + ttl),
      'content-type': 'application/json',
    };
    return { headers, body: JSON.stringify(payload) };
  }

  async #providerJwt(renew: boolean, used?: ProviderJwt): Promise<ProviderJwt> {
    const now = Date.now();
    const cur = this.#jwt;
    if (cur) {
      if (renew) {
        // Another request already renewed it, or it is too young for Apple to accept a new one.
        if (cur !== used) return cur;
        if (now - cur.issuedAt < JWT_MIN_AGE_MS) this.#log.warn({ ageMs: now - cur.issuedAt }, 'APNs says the provider token expired although it is young: is the clock right?');
      } else if (now - cur.issuedAt < JWT_RENEW_AFTER_MS) return cur;
    }
    if (!this.#jwtPending) {
      this.#jwtPending = (async () => {
        const issuedAt = Date.now();
        const value = await new SignJWT({})
          .setProtectedHeader({ alg: 'ES256', kid: this.#keyId })
          .setIssuer(this.#teamId)
          .setIssuedAt(Math.floor(issuedAt / 1000))
          .sign(this.#key);
        return { value, issuedAt };
      })().then(
        (j) => {
          this.#jwt = j;
          this.#jwtPending = null;
          return j;
        },
        (e: unknown) => {
          this.#jwtPending = null;
          throw e;
        },
      );
    }
    return this.#jwtPending;
  }

  #connect(): ClientHttp2Session {
    const s = this.#session;
    if (s && !s.closed && !s.destroyed) return s;
    const session = http2.connect(this.#endpoint, this.#ca ? { ca: this.#ca } : {});
    this.sessionsOpened++;
    this.#inflight.set(session, 0);
    const forget = () => {
      if (this.#session === session) this.#session = null;
    };
    // After a GOAWAY the session only finishes what it has; new pushes go to a new connection.
    session.on('goaway', (code) => {
      this.#log.info({ code }, 'APNs connection closing (GOAWAY)');
      forget();
    });
    session.on('error', (e) => {
      this.#log.warn({ err: errorText(e) }, 'APNs connection error');
      forget();
    });
    session.on('close', forget);
    this.#session = session;
    return session;
  }

  /** An idle connection must not keep the process alive; one with pushes in flight must. */
  #track(session: ClientHttp2Session, delta: 1 | -1): void {
    const n = (this.#inflight.get(session) ?? 0) + delta;
    this.#inflight.set(session, n);
    if (session.destroyed) return;
    if (n > 0) session.ref();
    else session.unref();
  }

  #exchange(headers: Record<string, string>, body: string, jwt: ProviderJwt, signal?: AbortSignal): Promise<
    | { kind: 'answer'; status: number; reason?: string; apnsId?: string; retryAfterMs?: number }
    | { kind: 'unsent' | 'error'; error: string }
  > {
    return new Promise((resolve) => {
      if (this.#closed) return resolve({ kind: 'error', error: 'provider closed' });
      if (signal?.aborted) return resolve({ kind: 'error', error: 'interrupted (shutdown)' });
      let session: ClientHttp2Session;
      try {
        session = this.#connect();
      } catch (e) {
        return resolve({ kind: 'error', error: errorText(e) });
      }
      let settled = false;
      let gotHeaders = false;
      const finish = (r: Parameters<typeof resolve>[0]) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(r);
      };
      let req: http2.ClientHttp2Stream;
      try {
        req = session.request({ ...headers, authorization: `bearer ${jwt.value}` });
      } catch (e) {
        // The session closed between the check and the request.
        this.#session = null;
        return resolve({ kind: 'unsent', error: errorText(e) });
      }
      this.#track(session, 1);
      const timer = setTimeout(() => {
        finish({ kind: 'error', error: `no answer within ${this.#timeoutMs} ms` });
        req.close(http2.constants.NGHTTP2_CANCEL);
      }, this.#timeoutMs);
      const onAbort = () => {
        finish({ kind: 'error', error: 'interrupted (shutdown)' });
        req.close(http2.constants.NGHTTP2_CANCEL);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      let status = 0;
      let resHeaders: IncomingHttpHeaders & IncomingHttpStatusHeader = {};
      req.on('response', (h) => {
        gotHeaders = true;
        resHeaders = h;
        status = Number(h[':status']);
      });
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        if (size < 4096) chunks.push(c);
        size += c.length;
      });
      req.on('end', () => {
        let reason: string | undefined;
        let retryAfterMs: number | undefined;
        if (status !== 200 && size > 0) {
          try {
            const j = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { reason?: unknown };
            if (typeof j.reason === 'string') reason = j.reason.slice(0, 100);
          } catch {
            // A body that is not JSON: the status alone decides.
          }
        }
        const ra = resHeaders['retry-after'];
        if (typeof ra === 'string') retryAfterMs = parseRetryAfter(ra);
        const apnsId = typeof resHeaders['apns-id'] === 'string' ? resHeaders['apns-id'] : undefined;
        const r: { kind: 'answer'; status: number; reason?: string; apnsId?: string; retryAfterMs?: number } = { kind: 'answer', status };
        if (reason !== undefined) r.reason = reason;
        if (apnsId !== undefined) r.apnsId = apnsId;
        if (retryAfterMs !== undefined) r.retryAfterMs = retryAfterMs;
        finish(r);
      });
      req.on('error', (e) => {
        // REFUSED_STREAM (or a reset before any answer) means APNs did not process it.
        const code = (e as NodeJS.ErrnoException).code;
        const refused = !gotHeaders && (code === 'ERR_HTTP2_GOAWAY_SESSION' || /REFUSED_STREAM/.test(e.message));
        finish({ kind: refused ? 'unsent' : 'error', error: errorText(e) });
      });
      req.on('close', () => {
        this.#track(session, -1);
        if (!settled) {
          const refused = !gotHeaders && req.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
          finish({ kind: refused ? 'unsent' : 'error', error: gotHeaders ? 'stream closed before the answer ended' : `stream closed (code ${req.rstCode})` });
        }
      });
      req.end(body);
    });
  }
}

export const createApnsProvider: ProviderFactory = (name, config, deps) => new ApnsProvider(name, config, deps);
