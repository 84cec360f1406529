import { randomBytes, type KeyObject } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { jwtVerify } from 'jose';
import { Recorder, type FakeAnswer } from './common.js';

export const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';

export interface FcmReceived {
  readonly at: number;
  readonly headers: IncomingHttpHeaders;
  readonly accessToken: string;
  readonly message: {
    token: string;
    data?: Record<string, string>;
    android?: { priority?: string; collapse_key?: string; ttl?: string };
    apns?: { headers?: Record<string, string>; payload?: Record<string, unknown> };
  };
  readonly answered: number;
}

const fcmError = (status: number, grpc: string, message: string, errorCode?: string): string =>
  JSON.stringify({ error: { code: status, message, status: grpc, details: errorCode ? [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }] : [] } });

/** The answers the real FCM gives, for scripting. */
export const FcmAnswers = {
  unregistered: (): FakeAnswer => ({ status: 404, body: fcmError(404, 'NOT_FOUND', 'Requested entity was not found.', 'UNREGISTERED') }),
  invalidToken: (): FakeAnswer => ({ status: 400, body: fcmError(400, 'INVALID_ARGUMENT', 'The registration token is not a valid FCM registration token', 'INVALID_ARGUMENT') }),
  invalidMessage: (): FakeAnswer => ({ status: 400, body: fcmError(400, 'INVALID_ARGUMENT', 'Invalid value at \'message.android.ttl\'', 'INVALID_ARGUMENT') }),
  quota: (retryAfterS: number): FakeAnswer => ({ status: 429, headers: { 'retry-after': String(retryAfterS) }, body: fcmError(429, 'RESOURCE_EXHAUSTED', 'Quota exceeded.', 'QUOTA_EXCEEDED') }),
  unavailable: (): FakeAnswer => ({ status: 503, body: fcmError(503, 'UNAVAILABLE', 'The service is currently unavailable.', 'UNAVAILABLE') }),
  internal: (): FakeAnswer => ({ status: 500, body: fcmError(500, 'INTERNAL', 'Internal error encountered.', 'INTERNAL') }),
};

const RESERVED = /^(from|message_type|notification|collapse_key)$|^(google|gcm)[._]/i;

/**
 * A local FCM: the OAuth token endpoint of the service account (it verifies the RS256 assertion with
 * the account's public key, its issuer, audience, scope and lifetime, then issues access tokens that
 * last `tokenLifetimeS`), and `messages:send`, which verifies the bearer token and the message's shape.
 */
export class FcmFake extends Recorder<FcmReceived> {
  readonly tokenRequests: Array<{ at: number; claims: Record<string, unknown> }> = [];
  /** Lifetime of issued access tokens (expires_in); short in tests of renewal. */
  tokenLifetimeS = 3600;
  /** The next token requests get this answer instead of a token (e.g. 400 invalid_grant). */
  readonly tokenAnswers: FakeAnswer[] = [];
  readonly #issued = new Map<string, number>();
  readonly #server: Server;
  #ids = 0;
  publicKey: KeyObject | null = null;
  clientEmail = '';
  projectId = '';

  constructor() {
    super();
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.#handle(req, res, Buffer.concat(chunks).toString('utf8')).catch((e: unknown) => {
          this.refuse(`fake crashed: ${(e as Error).message}`);
          res.writeHead(500).end();
        });
      });
    });
  }

  /** The service account the fake trusts (its public key, email and project). */
  trust(account: { publicKey: KeyObject; clientEmail: string; projectId: string }): void {
    this.publicKey = account.publicKey;
    this.clientEmail = account.clientEmail;
    this.projectId = account.projectId;
  }

  async listen(port = 0): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(port, '127.0.0.1', r));
  }

  get base(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  get tokenUri(): string {
    return `${this.base}/token`;
  }

  /** Every access token issued so far stops working (as when Google revokes them). */
  revokeTokens(): void {
    this.#issued.clear();
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((r) => this.#server.close(() => r()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse, body: string): Promise<void> {
    const send = (a: FakeAnswer): void => {
      res.writeHead(a.status, { 'content-type': 'application/json', ...(a.headers ?? {}) }).end(a.body ?? '');
    };
    if (req.method === 'POST' && req.url === '/token') return send(await this.#token(req, body));
    const m = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(req.url ?? '');
    if (req.method !== 'POST' || !m) return send({ status: 404, body: fcmError(404, 'NOT_FOUND', 'not found') });
    if (decodeURIComponent(m[1]!) !== this.projectId) {
      this.refuse(`send for project ${m[1]}`);
      return send({ status: 403, body: fcmError(403, 'PERMISSION_DENIED', 'SenderId mismatch', 'SENDER_ID_MISMATCH') });
    }
    const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    const exp = bearer ? this.#issued.get(bearer) : undefined;
    if (!bearer || exp === undefined || exp < Date.now()) {
      this.refuse(`messages:send with ${bearer ? (exp === undefined ? 'an unknown' : 'an expired') : 'no'} access token`);
      return send({ status: 401, body: fcmError(401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials.') });
    }
    let parsed: { message?: FcmReceived['message'] & Record<string, unknown> };
    try {
      parsed = JSON.parse(body) as typeof parsed;
    } catch {
      this.refuse('messages:send body is not JSON');
      return send({ status: 400, body: fcmError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.') });
    }
    const problem = checkMessage(parsed.message);
    if (problem) {
      this.refuse(`messages:send: ${problem}`);
      return send({ status: 400, body: fcmError(400, 'INVALID_ARGUMENT', problem, 'INVALID_ARGUMENT') });
    }
    const message = parsed.message!;
    const answer = this.scripted(message.token) ?? { status: 200, body: JSON.stringify({ name: `projects/${this.projectId}/messages/${++this.#ids}` }) };
    this.record({ at: Date.now(), headers: req.headers, accessToken: bearer, message, answered: answer.status });
    send(answer);
  }

  async #token(req: IncomingMessage, body: string): Promise<FakeAnswer> {
    const invalid = (why: string): FakeAnswer => {
      this.refuse(`token request: ${why}`);
      return { status: 400, body: JSON.stringify({ error: 'invalid_grant', error_description: why }) };
    };
    if (!/^application\/x-www-form-urlencoded/.test(req.headers['content-type'] ?? '')) return invalid(`content-type ${req.headers['content-type']}`);
    const form = new URLSearchParams(body);
    if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return invalid(`grant_type ${form.get('grant_type')}`);
    const assertion = form.get('assertion');
    if (!assertion || !this.publicKey) return invalid('no assertion');
    let claims: Record<string, unknown>;
    try {
      ({ payload: claims } = await jwtVerify(assertion, this.publicKey, { algorithms: ['RS256'], issuer: this.clientEmail, audience: this.tokenUri, requiredClaims: ['iat', 'exp'] }));
    } catch (e) {
      return invalid(`Invalid JWT Signature or claims: ${(e as Error).message}`);
    }
    if (typeof claims.scope !== 'string' || !claims.scope.split(' ').includes(FCM_SCOPE)) return invalid(`scope ${String(claims.scope)}`);
    if ((claims.exp as number) - (claims.iat as number) > 3600) return invalid('Invalid JWT: Token must be a short-lived token (60 minutes)');
    if (Math.abs((claims.iat as number) - Date.now() / 1000) > 300) return invalid('Invalid JWT: iat is not now');
    this.tokenRequests.push({ at: Date.now(), claims });
    this.notify();
    const scripted = this.tokenAnswers.shift();
    if (scripted) return scripted;
    const token = `ya29.fake-${randomBytes(24).toString('base64url')}`;
    this.#issued.set(token, Date.now() + this.tokenLifetimeS * 1000);
    return { status: 200, body: JSON.stringify({ access_token: token, expires_in: this.tokenLifetimeS, token_type: 'Bearer' }) };
  }
}

/** What FCM checks in a message before accepting it. */
function checkMessage(m: (FcmReceived['message'] & Record<string, unknown>) | undefined): string | null {
  if (!m || typeof m !== 'object') return 'message is required';
  const targets = ['token', 'topic', 'condition'].filter((k) => m[k] !== undefined);
  if (targets.length !== 1) return 'exactly one of token, topic, condition';
  if (typeof m.token !== 'string' || m.token === '') return 'message.token';
  if (m.data !== undefined) {
    if (typeof m.data !== 'object' || m.data === null) return 'message.data must be a map';
    for (const [k, v] of Object.entries(m.data)) {
      if (typeof v !== 'string') return `message.data.${k} is not a string`;
      if (RESERVED.test(k)) return `message.data.${k} is a reserved key`;
    }
  }
  const a = m.android;
  if (a !== undefined) {
    if (a.priority !== undefined && a.priority !== 'HIGH' && a.priority !== 'NORMAL') return `android.priority ${a.priority}`;
    if (a.ttl !== undefined && !/^\d+(\.\d{1,9})?s$/.test(a.ttl)) return `android.ttl ${a.ttl}`;
    if (a.ttl !== undefined && Number.parseFloat(a.ttl) > 2_419_200) return 'android.ttl over 4 weeks';
  }
  if (m.apns?.headers) for (const [k, v] of Object.entries(m.apns.headers)) if (typeof v !== 'string') return `apns.headers.${k} is not a string`;
  if (Buffer.byteLength(JSON.stringify(m.data ?? {})) > 4096) return 'Android message is too big';
  return null;
}
