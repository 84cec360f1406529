import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { parseJid } from '../../core/jid.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { LoginThrottled } from '../../engine/login-throttle.js';
import { sendError } from './http-common.js';
import { CREDENTIAL_MAX } from './schemas.js';

/**
 * Who is asking, on an HTTP presence endpoint. `req_jid` on its own is a claim anyone can type, so it
 * counts only when proven: HTTP Basic with that account's password, or a presence token the REST API
 * issued. Everything else is anonymous, unless the operator turned on `trust_req_jid`.
 */
export type Requester = { readonly kind: 'anonymous' } | { readonly kind: 'account'; readonly jid: string } | { readonly kind: 'admin' };

export const ANONYMOUS: Requester = { kind: 'anonymous' };
/** Scope of the tokens that prove a requester on the presence endpoints; login tokens are not accepted here, nor these at login. */
export const PRESENCE_SCOPE = 'presence';

export interface RequesterOptions {
  readonly adminToken: string;
  readonly trustReqJid: boolean;
  /** Scope a bearer token must have (default `presence`; account management routes take `login` tokens). */
  readonly tokenScope?: string;
}

export class AuthFailed extends Error {}

/** Bare JID of an address (a resource is dropped, as the plugin did); null when malformed or without a localpart. */
export function bareOrNull(raw: string | undefined): string | null {
  if (raw === undefined || raw.length === 0 || raw.length > 3071) return null;
  try {
    const j = parseJid(raw);
    return j.local === '' ? null : `${j.local}@${j.domain}`;
  } catch {
    return null;
  }
}

export class RequesterResolver {
  private readonly admin: Buffer | null;

  constructor(
    private readonly engine: PresenceEngine,
    private readonly opts: RequesterOptions,
  ) {
    this.admin = opts.adminToken === '' ? null : Buffer.from(opts.adminToken);
  }

  /**
   * Synchronous when no credentials were sent (the common, anonymous case); rejects with AuthFailed
   * when credentials were sent and are wrong: a caller who tried to prove something is told it failed
   * instead of silently getting the anonymous view.
   */
  resolve(authorization: string | undefined, token: string | undefined, reqJid: string | undefined, address: string | null = null): Requester | Promise<Requester> {
    if (authorization !== undefined) {
      const space = authorization.indexOf(' ');
      const scheme = authorization.slice(0, space).toLowerCase();
      const cred = authorization.slice(space + 1).trim();
      if (scheme === 'basic') return this.basic(cred, address);
      if (scheme === 'bearer') return this.isAdmin(cred) ? { kind: 'admin' } : this.token(cred);
      return Promise.reject(new AuthFailed('unsupported authorization scheme (use Basic or Bearer)'));
    }
    if (token !== undefined) return this.token(token);
    if (this.opts.trustReqJid && reqJid !== undefined) {
      const jid = bareOrNull(reqJid);
      if (jid !== null) return { kind: 'account', jid };
    }
    return ANONYMOUS;
  }

  private isAdmin(given: string): boolean {
    if (this.admin === null) return false;
    const g = Buffer.from(given);
    return g.length === this.admin.length && timingSafeEqual(g, this.admin);
  }

  private async basic(cred: string, address: string | null): Promise<Requester> {
    const decoded = Buffer.from(cred, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new AuthFailed('malformed Basic credentials');
    const user = decoded.slice(0, colon);
    try {
      // A check still queued when the throttle turns against its address is dropped at its turn (refused, not counted).
      const admit = (): void => this.engine.loginThrottle.check('http', user, address);
      const jid = await this.engine.loginThrottle.attempt('http', user, address, () => this.engine.authenticatePassword(user, decoded.slice(colon + 1), { admit }));
      return { kind: 'account', jid };
    } catch (e) {
      if (e instanceof LoginThrottled) throw e;
      throw new AuthFailed('wrong jid or password');
    }
  }

  private async token(token: string): Promise<Requester> {
    try {
      return { kind: 'account', jid: await this.engine.authenticateToken(token, this.opts.tokenScope ?? PRESENCE_SCOPE) };
    } catch {
      throw new AuthFailed(`invalid or expired ${this.opts.tokenScope ?? PRESENCE_SCOPE} token`);
    }
  }
}

/**
 * The answer to failed credentials: 401 with a challenge, so a browser may ask its user again; or 429
 * with Retry-After when the account or address is throttled after too many failures.
 */
export function sendAuthFailed(reply: FastifyReply, err: unknown): FastifyReply {
  if (err instanceof LoginThrottled) {
    reply.header('retry-after', String(err.retryAfterSeconds));
    return sendError(reply, 429, 'rate-limited', err.message);
  }
  if (!(err instanceof AuthFailed)) throw err;
  reply.header('www-authenticate', 'Basic realm="presenced", charset="UTF-8"');
  return sendError(reply, 401, 'auth-failed', err.message);
}

/** The bare JID whose view applies, or null for anonymous; admin sees everything and is handled by callers. */
export function viewerOf(r: Requester): string | null {
  return r.kind === 'account' ? r.jid : null;
}

/**
 * An onRequest hook for routes that need credentials (HTTP Basic, a login token or the admin token, as
 * `resolver` accepts them): none sent is a 401 with a Basic challenge saying `missing`, wrong ones the
 * throttled refusal. `requesterOf(req)` tells the handlers who it was.
 */
export function credentialsHook(
  resolver: RequesterResolver,
  missing: string,
): { hook(req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined>; requesterOf(req: FastifyRequest): Requester } {
  const who = new WeakMap<FastifyRequest, Requester>();
  return {
    async hook(req, reply) {
      const auth = req.headers.authorization;
      if (auth === undefined) {
        reply.header('www-authenticate', 'Basic realm="presenced", charset="UTF-8"');
        return sendError(reply, 401, 'not-authenticated', missing);
      }
      // The routes' header schemas bound it too, but only after this hook: do not decode megabytes of Basic.
      if (auth.length > CREDENTIAL_MAX) return sendError(reply, 401, 'auth-failed', `credentials longer than ${CREDENTIAL_MAX} characters`);
      try {
        who.set(req, await resolver.resolve(auth, undefined, undefined, req.ip));
      } catch (e) {
        return sendAuthFailed(reply, e);
      }
      return undefined;
    },
    requesterOf: (req) => who.get(req) ?? ANONYMOUS,
  };
}
