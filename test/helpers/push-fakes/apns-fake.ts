import { randomUUID, type KeyObject } from 'node:crypto';
import http2, { type Http2SecureServer, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { Recorder, type FakeAnswer } from './common.js';

export interface ApnsReceived {
  readonly at: number;
  /** Which connection it came on (1, 2, ... in the order they were opened). */
  readonly session: number;
  readonly headers: IncomingHttpHeaders;
  readonly deviceToken: string;
  readonly jwt: string;
  readonly payload: { aps: Record<string, unknown> } & Record<string, unknown>;
  readonly answered: number;
}

const reason = (status: number, r: string, extra: Record<string, string> = {}): FakeAnswer => ({ status, headers: extra, body: JSON.stringify({ reason: r }) });

/** The answers the real APNs gives, for scripting. */
export const ApnsAnswers = {
  unregistered: (): FakeAnswer => ({ status: 410, body: JSON.stringify({ reason: 'Unregistered', timestamp: Date.now() }) }),
  badDeviceToken: () => reason(400, 'BadDeviceToken'),
  tooMany: (retryAfterS?: number) => reason(429, 'TooManyRequests', retryAfterS === undefined ? {} : { 'retry-after': String(retryAfterS) }),
  internal: () => reason(500, 'InternalServerError'),
  unavailable: () => reason(503, 'ServiceUnavailable'),
  expiredProviderToken: () => reason(403, 'ExpiredProviderToken'),
  payloadTooLarge: () => reason(413, 'PayloadTooLarge'),
};

const PUSH_TYPES = new Set(['alert', 'background', 'voip', 'complication', 'fileprovider', 'mdm', 'location', 'liveactivity', 'pushtotalk', 'controls', 'widgets']);

/**
 * A local APNs: an HTTP/2 TLS server that checks what Apple checks (the ES256 provider token against
 * the .p8 key's public key, its kid, iss and age; the topic, push type, priority, expiration, collapse
 * id, the device token in the path, and the payload's size and shape), answering as Apple does.
 */
export class ApnsFake extends Recorder<ApnsReceived> {
  readonly #server: Http2SecureServer;
  readonly #sessions = new Set<ServerHttp2Session>();
  readonly jwts = new Set<string>();
  /** Provider tokens already verified: APNs checks a token once, not at every push (and so does this fake). */
  readonly #verified = new Map<string, Record<string, unknown>>();
  /** Provider tokens answered ExpiredProviderToken (as if older than an hour). */
  readonly expiredJwts = new Set<string>();
  sessionsOpened = 0;
  inFlight = 0;
  maxInFlight = 0;
  /** When set, answers wait until this many requests are open at once (proves they share a connection), then all go. */
  holdUntil = 0;
  #held: Array<() => void> = [];

  constructor(
    readonly opts: { key: string; cert: string; publicKey: KeyObject; keyId: string; teamId: string; topic: string },
  ) {
    super();
    this.#server = http2.createSecureServer({ key: opts.key, cert: opts.cert, settings: { maxConcurrentStreams: 1000 } });
    this.#server.on('session', (s) => {
      this.sessionsOpened++;
      const id = this.sessionsOpened;
      (s as ServerHttp2Session & { fakeId?: number }).fakeId = id;
      this.#sessions.add(s);
      s.on('close', () => this.#sessions.delete(s));
      s.on('error', () => undefined);
    });
    this.#server.on('stream', (stream, headers) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        this.inFlight++;
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
        this.notify();
        this.#handle(stream, headers, Buffer.concat(chunks)).catch((e: unknown) => {
          this.refuse(`fake crashed: ${(e as Error).message}`);
          if (!stream.closed) stream.respond({ ':status': 500 }, { endStream: true });
        });
      });
      stream.on('error', () => undefined);
    });
  }

  async listen(port = 0): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(port, '127.0.0.1', r));
  }

  get endpoint(): string {
    return `https://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Answers every request held by `holdUntil` now. */
  release(): void {
    for (const release of this.#held.splice(0)) release();
  }

  /** Sends GOAWAY on every open connection, as APNs does when it closes one. */
  goaway(): void {
    for (const s of this.#sessions) s.goaway(http2.constants.NGHTTP2_NO_ERROR);
  }

  async close(): Promise<void> {
    for (const release of this.#held.splice(0)) release();
    for (const s of this.#sessions) s.destroy();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }

  async #handle(stream: ServerHttp2Stream, h: IncomingHttpHeaders, body: Buffer): Promise<void> {
    const apnsId = (h['apns-id'] as string | undefined) ?? randomUUID().toUpperCase();
    const answer = async (a: FakeAnswer, rec?: Omit<ApnsReceived, 'answered'>) => {
      if (rec) {
        if (this.holdUntil > 0) {
          await new Promise<void>((r) => {
            this.#held.push(r);
            if (this.#held.length >= this.holdUntil) for (const release of this.#held.splice(0)) release();
          });
        }
        this.record({ ...rec, answered: a.status });
      }
      this.inFlight--;
      if (stream.closed) return;
      stream.respond({ ':status': a.status, 'apns-id': apnsId, ...(a.body ? { 'content-type': 'application/json' } : {}), ...(a.headers ?? {}) });
      stream.end(a.body ?? '');
    };
    const refuse = (a: FakeAnswer, why: string) => {
      this.refuse(why);
      return answer(a);
    };
    if (h[':method'] !== 'POST') return refuse(reason(405, 'MethodNotAllowed'), `method ${h[':method']}`);
    const m = /^\/3\/device\/([^/?]+)$/.exec((h[':path'] as string) ?? '');
    if (!m) return refuse(reason(404, 'BadPath'), `path ${h[':path']}`);
    const deviceToken = m[1]!;
    if (!/^[0-9a-f]{64,200}$/.test(deviceToken)) return refuse(reason(400, 'BadDeviceToken'), `device token ${deviceToken}`);
    // The provider token.
    const auth = /^bearer (\S+)$/.exec((h.authorization as string | undefined) ?? '')?.[1];
    if (!auth) return refuse(reason(403, 'MissingProviderToken'), 'no provider token');
    let claims = this.#verified.get(auth);
    if (!claims) {
      try {
        const ph = decodeProtectedHeader(auth);
        if (ph.kid !== this.opts.keyId) throw new Error(`kid ${ph.kid}`);
        ({ payload: claims } = await jwtVerify(auth, this.opts.publicKey, { algorithms: ['ES256'], issuer: this.opts.teamId, requiredClaims: ['iat'] }));
      } catch (e) {
        return refuse(reason(403, 'InvalidProviderToken'), `provider token: ${(e as Error).message}`);
      }
      if (this.#verified.size > 1000) this.#verified.clear();
      this.#verified.set(auth, claims);
    }
    const age = Date.now() / 1000 - (claims.iat as number);
    if (age > 3600 || this.expiredJwts.has(auth)) return answer(reason(403, 'ExpiredProviderToken'));
    if (age < -300) return refuse(reason(403, 'InvalidProviderToken'), 'provider token issued in the future');
    if (this.keep) this.jwts.add(auth);
    // Headers.
    const topic = h['apns-topic'];
    if (topic === undefined) return refuse(reason(400, 'MissingTopic'), 'no apns-topic');
    if (topic !== this.opts.topic) return refuse(reason(400, 'TopicDisallowed'), `apns-topic ${topic}`);
    const type = h['apns-push-type'] as string | undefined;
    if (!type || !PUSH_TYPES.has(type)) return refuse(reason(400, 'InvalidPushType'), `apns-push-type ${type}`);
    const prio = h['apns-priority'] as string | undefined;
    if (prio !== undefined && !['10', '5', '1'].includes(prio)) return refuse(reason(400, 'BadPriority'), `apns-priority ${prio}`);
    if (type === 'background' && prio === '10') return refuse(reason(400, 'BadPriority'), 'background push at priority 10');
    const exp = h['apns-expiration'] as string | undefined;
    if (exp !== undefined && !/^\d+$/.test(exp)) return refuse(reason(400, 'BadExpirationDate'), `apns-expiration ${exp}`);
    const collapse = h['apns-collapse-id'] as string | undefined;
    if (collapse !== undefined && Buffer.byteLength(collapse) > 64) return refuse(reason(400, 'BadCollapseId'), `apns-collapse-id of ${Buffer.byteLength(collapse)} bytes`);
    // Payload.
    if (body.length === 0) return refuse(reason(400, 'PayloadEmpty'), 'empty payload');
    if (body.length > 4096) return refuse(reason(413, 'PayloadTooLarge'), `payload of ${body.length} bytes`);
    let payload: ApnsReceived['payload'];
    try {
      payload = JSON.parse(body.toString('utf8')) as ApnsReceived['payload'];
      if (typeof payload.aps !== 'object' || payload.aps === null) throw new Error('no aps dictionary');
    } catch (e) {
      return refuse(reason(400, 'BadPayload'), `payload: ${(e as Error).message}`);
    }
    if (type === 'background' && payload.aps['content-available'] !== 1) return refuse(reason(400, 'BadPayload'), 'background push without content-available');
    const session = (stream.session as (ServerHttp2Session & { fakeId?: number }) | undefined)?.fakeId ?? 0;
    const a = this.scripted(deviceToken) ?? { status: 200 };
    return answer(a, { at: Date.now(), session, headers: h, deviceToken, jwt: auth, payload });
  }
}
