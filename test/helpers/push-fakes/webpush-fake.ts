import { createECDH, createPublicKey, randomBytes, type ECDH } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import ece from 'http_ece';
import { jwtVerify } from 'jose';
import { Recorder, type FakeAnswer } from './common.js';

export interface WebPushSubscription {
  readonly endpoint: string;
  readonly keys: { readonly p256dh: string; readonly auth: string };
}

export interface WebPushReceived {
  readonly at: number;
  readonly subscription: string;
  readonly headers: IncomingHttpHeaders;
  /** The decrypted payload. */
  readonly plaintext: string;
  /** The VAPID key (k=) and the JWT's claims. */
  readonly vapidKey: string;
  readonly claims: Record<string, unknown>;
  readonly answered: number;
}

/** The answers push services give, for scripting. */
export const WebPushAnswers = {
  gone: (): FakeAnswer => ({ status: 410, body: 'push subscription has unsubscribed or expired.' }),
  notFound: (): FakeAnswer => ({ status: 404, body: 'not found' }),
  tooMany: (retryAfterS: number): FakeAnswer => ({ status: 429, headers: { 'retry-after': String(retryAfterS) }, body: 'too many requests' }),
  internal: (): FakeAnswer => ({ status: 500, body: 'internal error' }),
  tooLarge: (): FakeAnswer => ({ status: 413, body: 'payload too large' }),
};

interface Sub {
  readonly ecdh: ECDH;
  readonly auth: Buffer;
  /** The applicationServerKey the browser subscribed with: pushes signed by another VAPID key are refused. */
  readonly applicationServerKey?: string;
}

/**
 * A local push service as browsers' are: it hands out subscriptions (a P-256 key pair and a 16-byte
 * auth secret, kept here as a browser keeps them), verifies the VAPID authorization (the JWT against
 * the k= key, aud = this origin, exp within 24 hours, sub), checks the RFC 8030 headers, and decrypts
 * the aes128gcm payload with the subscription's private key.
 */
export class WebPushFake extends Recorder<WebPushReceived> {
  readonly #server: Server;
  readonly #subs = new Map<string, Sub>();
  #ids = 0;

  constructor() {
    super();
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.#handle(req, res, Buffer.concat(chunks)).catch((e: unknown) => {
          this.refuse(`fake crashed: ${(e as Error).message}`);
          res.writeHead(500).end();
        });
      });
    });
  }

  async listen(port = 0): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(port, '127.0.0.1', r));
  }

  get origin(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** A new subscription, as PushSubscription.toJSON() gives it; with applicationServerKey, only that VAPID key may push to it. */
  subscribe(applicationServerKey?: string): WebPushSubscription {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const auth = randomBytes(16);
    const id = randomBytes(12).toString('base64url');
    this.#subs.set(id, applicationServerKey === undefined ? { ecdh, auth } : { ecdh, auth, applicationServerKey });
    return { endpoint: `${this.origin}/push/${id}`, keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: auth.toString('base64url') } };
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((r) => this.#server.close(() => r()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
    const send = (a: FakeAnswer): void => {
      res.writeHead(a.status, a.headers ?? {}).end(a.body ?? '');
    };
    const refuse = (a: FakeAnswer, why: string) => {
      this.refuse(why);
      send(a);
    };
    const m = /^\/push\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '');
    const sub = m ? this.#subs.get(m[1]!) : undefined;
    if (req.method !== 'POST' || !m || !sub) return refuse({ status: 404 }, `${req.method} ${req.url}`);
    const h = req.headers;
    // RFC 8292: Authorization: vapid t=<JWT>, k=<public key>.
    const va = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(h.authorization ?? '');
    if (!va) return refuse({ status: 401, body: 'missing or malformed vapid authorization' }, `authorization ${h.authorization}`);
    const [, t, k] = va as unknown as [string, string, string];
    if (sub.applicationServerKey !== undefined && k !== sub.applicationServerKey) return refuse({ status: 403, body: 'VAPID key does not match the subscription' }, 'k= is not the subscription key');
    let claims: Record<string, unknown>;
    try {
      const pt = Buffer.from(k, 'base64url');
      if (pt.length !== 65 || pt[0] !== 4) throw new Error('k is not an uncompressed P-256 point');
      const pub = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: pt.subarray(1, 33).toString('base64url'), y: pt.subarray(33).toString('base64url') }, format: 'jwk' });
      ({ payload: claims } = await jwtVerify(t, pub, { algorithms: ['ES256'], audience: this.origin, requiredClaims: ['exp', 'sub'] }));
    } catch (e) {
      return refuse({ status: 403, body: 'bad VAPID token' }, `VAPID: ${(e as Error).message}`);
    }
    if ((claims.exp as number) > Date.now() / 1000 + 24 * 3600) return refuse({ status: 403, body: 'VAPID exp more than 24 hours ahead' }, 'VAPID exp > 24 h');
    if (typeof claims.sub !== 'string' || !/^(mailto:|https:)/.test(claims.sub)) return refuse({ status: 403, body: 'VAPID sub' }, `VAPID sub ${String(claims.sub)}`);
    // RFC 8030 headers.
    if (h.ttl === undefined || !/^\d+$/.test(h.ttl as string)) return refuse({ status: 400, body: 'TTL required' }, `TTL ${h.ttl}`);
    if (h.urgency !== undefined && !['very-low', 'low', 'normal', 'high'].includes(h.urgency as string)) return refuse({ status: 400 }, `Urgency ${h.urgency}`);
    if (h.topic !== undefined && !/^[A-Za-z0-9_-]{1,32}$/.test(h.topic as string)) return refuse({ status: 400 }, `Topic ${h.topic}`);
    if (h['content-encoding'] !== 'aes128gcm') return refuse({ status: 415 }, `Content-Encoding ${h['content-encoding']}`);
    if (body.length > 4096) return refuse({ status: 413 }, `body of ${body.length} bytes`);
    let plaintext: string;
    try {
      plaintext = ece.decrypt(body, { version: 'aes128gcm', privateKey: sub.ecdh, authSecret: sub.auth }).toString('utf8');
    } catch (e) {
      return refuse({ status: 400, body: 'cannot decrypt' }, `decrypt: ${(e as Error).message}`);
    }
    // Scripted by endpoint URL (the token a provider sends to).
    const a = this.scripted(`${this.origin}/push/${m[1]}`) ?? { status: 201, headers: { location: `${this.origin}/message/${++this.#ids}` } };
    this.record({ at: Date.now(), subscription: m[1]!, headers: h, plaintext, vapidKey: k, claims, answered: a.status });
    send(a);
  }
}
