import { createECDH, createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ece from 'http_ece';
import { SignJWT } from 'jose';
import type { Logger } from 'pino';
import { ConfigReader, DEFAULT_TIMEOUT_MS, Timer, clip, errorText, fitKey, keepAliveAgent, parseRetryAfter, post, type HttpAnswer } from './common.js';
import { ProviderConfigError, type ProviderFactory, type PushMessage, type PushProvider, type PushTarget, type SendResult } from './provider.js';

/**
 * Web Push: the push message protocol (RFC 8030), the application server identified by VAPID
 * (RFC 8292), the payload encrypted for the subscription with aes128gcm (RFC 8291, RFC 8188), so the
 * browser vendor's push service carries bytes it cannot read.
 */

export const VAPID_KEYS_FILE = 'vapid-keys.json';
/** RFC 8292 allows at most 24 hours; a shorter token is reused for a while and renewed well before it ends. */
const VAPID_LIFETIME_S = 12 * 3600;
const VAPID_RENEW_AFTER_MS = 11 * 3600_000;
/** RFC 8030: a Topic is at most 32 characters of the base64url alphabet. */
const TOPIC = /^[A-Za-z0-9_-]{1,32}$/;
/**
 * The push services of the browsers. Subscription endpoints are URLs a client hands us; without a list
 * a client could make this server POST to any host, its own network included.
 */
export const DEFAULT_ENDPOINT_HOSTS: readonly string[] = [
  'fcm.googleapis.com', // Chrome, Edge on Android, Opera, Brave, Samsung Internet
  'push.services.mozilla.com', // Firefox
  'push.apple.com', // Safari (web.push.apple.com)
  'notify.windows.com', // Edge on Windows (WNS)
];
/** A record of 4096 bytes holds the whole payload; push services accept at least 4096 bytes of body. */
const RECORD_SIZE = 4096;
const PAYLOAD_MAX_BYTES = 3993;

export interface VapidKeys {
  /** The uncompressed P-256 point (65 bytes), base64url: what applications pass as applicationServerKey. */
  readonly publicKey: string;
  /** The private scalar (32 bytes), base64url. */
  readonly privateKey: string;
}

function keyObjects(keys: VapidKeys, where: string): { priv: KeyObject; pub: Buffer } {
  const pub = Buffer.from(keys.publicKey, 'base64url');
  const d = Buffer.from(keys.privateKey, 'base64url');
  if (pub.length !== 65 || pub[0] !== 4) throw new ProviderConfigError(`${where}: the VAPID public key must be an uncompressed P-256 point (65 bytes, base64url)`);
  if (d.length !== 32) throw new ProviderConfigError(`${where}: the VAPID private key must be 32 bytes, base64url`);
  // A public key that is not the private key's would make every push service refuse every push. The
  // point is derived from the scalar here: a JWK import alone takes x and y on trust.
  let derived: Buffer;
  try {
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(d);
    derived = ecdh.getPublicKey();
  } catch (e) {
    throw new ProviderConfigError(`${where}: the VAPID private key is not a P-256 key: ${(e as Error).message}`);
  }
  if (!derived.equals(pub)) throw new ProviderConfigError(`${where}: the VAPID public key does not belong to the private key`);
  let priv: KeyObject;
  try {
    priv = createPrivateKey({ key: { kty: 'EC', crv: 'P-256', d: d.toString('base64url'), x: pub.subarray(1, 33).toString('base64url'), y: pub.subarray(33).toString('base64url') }, format: 'jwk' });
  } catch (e) {
    throw new ProviderConfigError(`${where}: the VAPID keys are not a P-256 key pair: ${(e as Error).message}`);
  }
  return { priv, pub };
}

function newVapidKeys(): VapidKeys {
  const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const pub = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  return { publicKey: pub.toString('base64url'), privateKey: jwk.d! };
}

/**
 * The VAPID keys kept in the data directory: created on first use and never replaced, since every
 * browser subscription was made for the public key and dies with it. Two providers (or two processes)
 * starting together agree on one file: it is written aside and linked into place, and the loser reads
 * the winner's.
 */
export function loadOrCreateVapidKeys(dataDir: string, where: string): VapidKeys {
  const file = join(dataDir, VAPID_KEYS_FILE);
  const read = (): VapidKeys | null => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new ProviderConfigError(`${where}: cannot read ${file}: ${errorText(e)}`);
    }
    try {
      const j = JSON.parse(text) as Partial<VapidKeys>;
      if (typeof j.publicKey !== 'string' || typeof j.privateKey !== 'string') throw new Error('publicKey or privateKey missing');
      return { publicKey: j.publicKey, privateKey: j.privateKey };
    } catch (e) {
      throw new ProviderConfigError(`${where}: ${file} is damaged (${(e as Error).message}); restore it from a backup, or delete it to make new keys (every browser must then subscribe again)`);
    }
  };
  const existing = read();
  if (existing) return existing;
  try {
    mkdirSync(dataDir, { recursive: true });
  } catch (e) {
    throw new ProviderConfigError(`${where}: cannot create the data directory ${dataDir}: ${errorText(e)}`);
  }
  const keys = newVapidKeys();
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, `${JSON.stringify({ ...keys, createdAt: new Date().toISOString() }, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    try {
      linkSync(tmp, file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  } catch (e) {
    throw new ProviderConfigError(`${where}: cannot write ${file}: ${errorText(e)}`);
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // Already gone.
    }
  }
  const kept = read();
  if (!kept) throw new ProviderConfigError(`${where}: ${file} vanished right after it was written`);
  return kept;
}

export class WebPushProvider implements PushProvider {
  readonly type = 'webpush' as const;
  /** What browsers subscribe with (PushManager.subscribe's applicationServerKey), base64url. */
  readonly applicationServerKey: string;
  readonly #priv: KeyObject;
  readonly #subject: string;
  readonly #hosts: readonly string[];
  readonly #allowHttp: boolean;
  readonly #timeoutMs: number;
  readonly #vapid = new Map<string, { value: string; renewAt: number }>();
  #closed = false;
  readonly #agents = { http: keepAliveAgent('http:', 16), https: keepAliveAgent('https:', 16) };

  constructor(
    readonly name: string,
    config: Record<string, unknown>,
    deps: { readonly dataDir: string; readonly log: Logger },
  ) {
    const cfg: ConfigReader = new ConfigReader(name, 'webpush', config);
    const where = `push provider "${name}" (webpush)`;
    this.#subject = cfg.string('subject');
    if (!/^mailto:[^@\s]+@[^@\s]+$/.test(this.#subject) && !/^https:\/\/\S+$/.test(this.#subject)) cfg.fail('subject', `must be a mailto: address or an https: URL where the push services can reach the operator (RFC 8292), not ${JSON.stringify(this.#subject)}`);
    const pub = cfg.string('vapidPublicKey', true);
    const priv = cfg.string('vapidPrivateKey', true);
    if ((pub === undefined) !== (priv === undefined)) cfg.fail(pub === undefined ? 'vapidPublicKey' : 'vapidPrivateKey', 'is required with the other VAPID key (give both, or neither to have them generated)');
    const keys = pub !== undefined && priv !== undefined ? { publicKey: pub, privateKey: priv } : loadOrCreateVapidKeys(deps.dataDir, where);
    const objs = keyObjects(keys, where);
    this.#priv = objs.priv;
    this.applicationServerKey = objs.pub.toString('base64url');
    this.#hosts = (cfg.stringList('endpointHosts') ?? DEFAULT_ENDPOINT_HOSTS).map((h) => h.toLowerCase());
    this.#allowHttp = cfg.boolean('allowInsecureEndpoints', false);
    this.#timeoutMs = cfg.integer('timeoutMs', DEFAULT_TIMEOUT_MS, 100, 120_000);
  }

  /** Why a subscription cannot be used (bad endpoint, keys), or null: the core can refuse it when registered. */
  checkSubscription(target: Pick<PushTarget, 'token' | 'keys'>): string | null {
    let url: URL;
    try {
      url = new URL(target.token);
    } catch {
      return 'the endpoint is not a URL';
    }
    if (url.protocol !== 'https:' && !(this.#allowHttp && url.protocol === 'http:')) return `the endpoint must be https, not ${url.protocol}`;
    if (url.username !== '' || url.password !== '') return 'the endpoint must not carry credentials';
    const host = url.hostname.toLowerCase();
    if (!this.#hosts.some((h) => host === h || host.endsWith(`.${h}`))) return `${host} is not a known push service (see endpointHosts)`;
    if (!target.keys) return 'the subscription has no keys (p256dh, auth)';
    const p = Buffer.from(target.keys.p256dh, 'base64url');
    if (p.length !== 65 || p[0] !== 4) return 'keys.p256dh is not an uncompressed P-256 point';
    if (Buffer.from(target.keys.auth, 'base64url').length !== 16) return 'keys.auth is not 16 bytes';
    return null;
  }

  async send(target: PushTarget, message: PushMessage, signal?: AbortSignal): Promise<SendResult> {
    const timer = new Timer();
    const bad = this.checkSubscription(target);
    if (bad !== null) return timer.failed(null, `Web Push subscription: ${bad}`);
    const url = new URL(target.token);
    let body: Buffer;
    let auth: string;
    try {
      body = this.#encrypt(this.#payload(message), target.keys!);
      auth = `vapid t=${await this.#vapidJwt(url.origin)}, k=${this.applicationServerKey}`;
    } catch (e) {
      return timer.failed(null, `Web Push: ${errorText(e)}`);
    }
    const ttl = Math.max(0, Math.floor(message.ttlSeconds));
    const headers = {
      authorization: auth,
      ttl: String(ttl),
      urgency: message.urgency,
      topic: fitKey(message.collapseKey, 32, TOPIC),
      'content-encoding': 'aes128gcm',
      'content-type': 'application/octet-stream',
    };
    let res: HttpAnswer;
    try {
      res = await post(url, url.protocol === 'https:' ? this.#agents.https : this.#agents.http, headers, body, this.#timeoutMs, signal, 512);
    } catch (e) {
      if ((e as { timedOut?: boolean }).timedOut) return timer.retry(null, `Web Push: no answer within ${this.#timeoutMs} ms`);
      if (signal?.aborted || this.#closed) return timer.retry(null, 'Web Push: interrupted (shutdown)');
      return timer.retry(null, `Web Push: ${errorText(e)}`);
    }
    const what = `Web Push ${res.status}${res.text ? `: ${res.text.replace(/\s+/g, ' ').slice(0, 200)}` : ''}`;
    if (res.status >= 200 && res.status < 300) return timer.sent(res.status, typeof res.headers.location === 'string' ? res.headers.location : undefined);
    if (res.status === 404 || res.status === 410) return timer.dead(res.status, res.status === 410 ? 'Gone' : 'Not Found');
    const ra = res.headers['retry-after'];
    if (res.status === 429 || res.status >= 500) return timer.retry(res.status, what, parseRetryAfter(typeof ra === 'string' ? ra : undefined));
    return timer.failed(res.status, what);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }

  #payload(m: PushMessage): Buffer {
    const p: Record<string, unknown> = { reason: m.reason, count: m.count };
    if (m.sender !== undefined) p.sender = m.sender;
    const title = clip(m.title);
    const body = clip(m.body);
    if (title !== undefined) p.title = title;
    if (body !== undefined) p.body = body;
    if (m.data && Object.keys(m.data).length > 0) p.data = m.data;
    let buf = Buffer.from(JSON.stringify(p), 'utf8');
    // The body goes first when the payload does not fit in one record; the rest is what the app needs.
    if (buf.length > PAYLOAD_MAX_BYTES && p.body !== undefined) {
      delete p.body;
      p.truncated = true;
      buf = Buffer.from(JSON.stringify(p), 'utf8');
    }
    if (buf.length > PAYLOAD_MAX_BYTES) throw new Error(`the payload is ${buf.length} bytes, over ${PAYLOAD_MAX_BYTES}`);
    return buf;
  }

  #encrypt(plain: Buffer, keys: { readonly p256dh: string; readonly auth: string }): Buffer {
    // A fresh sender key pair and salt for every message (RFC 8291 §3.1).
    const local = createECDH('prime256v1');
    local.generateKeys();
    return ece.encrypt(plain, { version: 'aes128gcm', privateKey: local, dh: keys.p256dh, authSecret: keys.auth, salt: randomBytes(16), rs: RECORD_SIZE });
  }

  async #vapidJwt(audience: string): Promise<string> {
    const now = Date.now();
    const cached = this.#vapid.get(audience);
    if (cached && now < cached.renewAt) return cached.value;
    const iat = Math.floor(now / 1000);
    const value = await new SignJWT({})
      .setProtectedHeader({ typ: 'JWT', alg: 'ES256' })
      .setAudience(audience)
      .setExpirationTime(iat + VAPID_LIFETIME_S)
      .setSubject(this.#subject)
      .sign(this.#priv);
    // Only a handful of push services exist; the bound only guards against a runaway endpoint list.
    if (this.#vapid.size >= 256) this.#vapid.clear();
    this.#vapid.set(audience, { value, renewAt: now + VAPID_RENEW_AFTER_MS });
    return value;
  }
}

export const createWebPushProvider: ProviderFactory = (name, config, deps) => new WebPushProvider(name, config, deps);
