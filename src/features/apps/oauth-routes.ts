import OAuth2Server from '@node-oauth/oauth2-server';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { PresenceEngine } from '../../engine/engine.js';
import { LoginThrottled } from '../../engine/login-throttle.js';
import type { AppRecord } from './repository.js';
import type { AppService } from './app-service.js';
import { consentPage, errorPage, newNonce, pageHeaders, signInPage, type SignInFor } from './consent-pages.js';
import type { SessionCodec } from './consent-session.js';
import { connectedAppsPages, CONNECTED_APPS_PATH } from './connected-apps-pages.js';
import type { GrantRepository } from './grant-repository.js';
import { isScope, normalizeScopes, SCOPES, type GrantService } from './grant-service.js';
import { GRANT_TYPES, oauthModel, tokenHash, type OAuthUser } from './oauth-model.js';
import { PageKit } from './page-kit.js';

/**
 * OAuth 2.0 authorization code with PKCE for apps (docs/apps.md): our consent pages, and the token,
 * revocation and userinfo endpoints, with `@node-oauth/oauth2-server` doing the protocol over our
 * storage model (oauth-model.ts). What this file adds is what RFC 9700 asks beyond the library's
 * defaults: PKCE S256 required (not only allowed), the redirect URI required and matched exactly
 * before anything is redirected, and RFC 7009 revocation, which the library does not have.
 */

/** Authorization codes live 5 minutes (RFC 9700: short; the issue: at most 10). */
export const CODE_LIFETIME_S = 300;
export const ACCESS_TOKEN_LIFETIME_S = 3600;
export const REFRESH_TOKEN_LIFETIME_S = 30 * 24 * 3600;
const FORM_LIMIT = 16 * 1024;
/** The parameters of an authorization request that the pages carry from step to step. */
const AUTHORIZE_PARAMS = ['response_type', 'client_id', 'redirect_uri', 'scope', 'state', 'code_challenge', 'code_challenge_method'] as const;

export interface OAuthDeps {
  readonly engine: PresenceEngine;
  readonly apps: AppService;
  readonly grants: GrantService;
  readonly repo: GrantRepository;
  readonly sessions: SessionCodec;
  /** public_url: when it is https, the session cookie is always Secure. */
  readonly publicUrl?: string;
}

type Params = Record<string, string>;

/** A request the pages can act on: a known app and one of its registered redirect URIs, exactly. */
interface Checked {
  readonly app: AppRecord;
  readonly redirectUri: string;
  readonly params: Params;
  /** An error to send back to the app (its redirect URI is trusted by now), or null. */
  readonly redirectError: { readonly error: string; readonly description: string } | null;
  readonly scopes: string[];
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Reads the authorization parameters; a repeated one is refused (RFC 6749 §3.1), as is anything not a string. */
function authorizeParams(src: unknown): Params | string {
  const out: Params = {};
  const o = (src ?? {}) as Record<string, unknown>;
  for (const k of AUTHORIZE_PARAMS) {
    const v = o[k];
    if (v === undefined) continue;
    if (typeof v !== 'string') return `parameter ${k} must be given once`;
    if (v.length > 2048) return `parameter ${k} is too long`;
    out[k] = v;
  }
  return out;
}

export function errorRedirect(redirectUri: string, error: string, description: string, state: string | undefined): string {
  const u = new URL(redirectUri);
  u.searchParams.set('error', error);
  u.searchParams.set('error_description', description);
  if (state !== undefined) u.searchParams.set('state', state);
  return u.href;
}

function formDecode(s: string): string | null {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return null;
  }
}

/** Client credentials of a Basic header, form-urldecoded (RFC 6749 §2.3.1); null when absent or malformed. */
export function basicCredentials(header: string | undefined): { id: string; secret: string } | null {
  if (header === undefined || header.length > 1024 || !/^basic /i.test(header)) return null;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return null;
  const id = formDecode(decoded.slice(0, colon));
  const secret = formDecode(decoded.slice(colon + 1));
  return id === null || secret === null ? null : { id, secret };
}

export function oauthRoutes(deps: OAuthDeps) {
  const { engine, apps, grants, repo, sessions } = deps;
  const server = new OAuth2Server({
    model: oauthModel(apps, repo),
    allowEmptyState: true,
    authorizationCodeLifetime: CODE_LIFETIME_S,
    accessTokenLifetime: ACCESS_TOKEN_LIFETIME_S,
    refreshTokenLifetime: REFRESH_TOKEN_LIFETIME_S,
    allowExtendedTokenAttributes: true,
    alwaysIssueNewRefreshToken: true,
  });

  const kit = new PageKit(sessions, deps.publicUrl?.startsWith('https:') ?? false);
  const page = kit.send.bind(kit);
  const fail = (reply: FastifyReply, status: number, message: string) => kit.fail(reply, status, message);

  async function check(src: unknown): Promise<Checked | string> {
    const p = authorizeParams(src);
    if (typeof p === 'string') return p;
    const clientId = p.client_id;
    if (clientId === undefined || clientId === '') return 'the request names no app (client_id)';
    const app = clientId.length > 64 ? undefined : await apps.repo.get(clientId);
    if (app === undefined) return 'unknown app';
    const redirectUri = p.redirect_uri;
    if (redirectUri === undefined) return 'the request has no redirect_uri';
    // Exact string comparison: no prefix, path, port or fragment leeway (RFC 9700 §2.1). Until this
    // holds nothing is redirected anywhere: an error here is our page, never an open redirect.
    if (!app.redirectUris.includes(redirectUri)) return 'this redirect_uri is not registered for this app';
    const asked = (p.scope ?? 'presence').split(' ').filter((s) => s !== '');
    const scopes = normalizeScopes(asked);
    let redirectError: Checked['redirectError'] = null;
    if (p.response_type !== 'code') redirectError = { error: 'unsupported_response_type', description: 'only response_type=code is supported' };
    else if (p.code_challenge === undefined || p.code_challenge === '') redirectError = { error: 'invalid_request', description: 'PKCE is required: send code_challenge with code_challenge_method=S256' };
    else if (p.code_challenge_method !== 'S256') redirectError = { error: 'invalid_request', description: 'code_challenge_method must be S256 (plain is not accepted)' };
    else if (asked.length === 0 || !asked.every(isScope)) redirectError = { error: 'invalid_scope', description: `scopes are ${SCOPES.join(', ')}` };
    return { app, redirectUri, params: { ...p, scope: scopes.join(' ') }, redirectError, scopes };
  }

  const toApp = (reply: FastifyReply, c: Checked, error: { error: string; description: string }) =>
    reply.code(303).header('cache-control', 'no-store').redirect(errorRedirect(c.redirectUri, error.error, error.description, c.params.state), 303);

  const oauthError = (reply: FastifyReply, e: unknown, headers: Record<string, string> = {}) => {
    if (!(e instanceof OAuth2Server.OAuthError)) throw e;
    const status = e.code >= 500 ? 500 : e.code;
    reply.headers({ 'cache-control': 'no-store', pragma: 'no-cache', ...headers });
    if (e.name === 'invalid_client') reply.header('www-authenticate', 'Basic realm="presenced"');
    return reply.code(status === 503 ? 500 : status).send({ error: e.name, error_description: e.message });
  };

  const libRequest = (req: FastifyRequest, body: Record<string, unknown>) => {
    const headers = { ...req.headers } as Record<string, string>;
    // RFC 6749 §2.3.1: the client id and secret are form-urlencoded inside Basic (oauth4webapi does
    // so), which the library does not undo; hand it the plain values.
    const basic = basicCredentials(req.headers.authorization);
    if (basic !== null) headers.authorization = `Basic ${Buffer.from(`${basic.id}:${basic.secret}`).toString('base64')}`;
    return new OAuth2Server.Request({ method: req.method, headers, query: {}, body });
  };

  /** The client of a revocation request (Basic or form), or null. */
  async function clientOf(req: FastifyRequest, body: Record<string, unknown>): Promise<AppRecord | null> {
    const basic = basicCredentials(req.headers.authorization);
    const id = basic === null ? str(body.client_id) : basic.id;
    const secret = basic === null ? str(body.client_secret) : basic.secret;
    if (id === undefined || secret === undefined || id.length > 64 || secret.length > 256) return null;
    return apps.authenticate(id, secret);
  }

  return async function register(app: FastifyInstance): Promise<void> {
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_LIMIT }, (_req, body, done) => {
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of new URLSearchParams(body as string)) {
        const prev = out[k];
        out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
      }
      done(null, out);
    });

    app.get('/authorize', async (req, reply) => {
      const c = await check(req.query);
      if (typeof c === 'string') return fail(reply, 400, c);
      if (c.redirectError !== null) return toApp(reply, c, c.redirectError);
      const session = kit.sessionOrNew(req, reply);
      if (session.jid === null) {
        return page(reply, 200, (n) => signInPage(n, { appName: c.app.name, request: new URLSearchParams(c.params).toString(), csrf: sessions.csrfToken(session) }));
      }
      const jid = session.jid;
      return page(reply, 200, (n) => consentPage(n, { appName: c.app.name, verifiedDomain: c.app.verifiedDomain, jid, scopes: c.scopes, csrf: sessions.csrfToken(session), params: c.params }), c.redirectUri);
    });

    // Sign-in for both pages: `next=apps` leads to the connected apps page, otherwise `request` carries
    // the authorization request to go back to (checked again here, as it came through the browser).
    app.post('/login', async (req, reply) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      const s = kit.session(req);
      const forApps = str(body.next) === 'apps';
      if (s === null || !sessions.csrfMatches(s, body.csrf)) {
        return forApps
          ? kit.fail(reply, 403, 'this form expired or did not come from this site; sign in again', { href: CONNECTED_APPS_PATH, text: 'Sign in again' })
          : fail(reply, 403, 'this form expired or did not come from this site; go back to the app and start again');
      }
      let signIn: SignInFor;
      let then: string;
      if (forApps) {
        signIn = { appName: null, next: 'apps' };
        then = CONNECTED_APPS_PATH;
      } else {
        const request = str(body.request) ?? '';
        const c = await check(Object.fromEntries(new URLSearchParams(request)));
        if (typeof c === 'string') return fail(reply, 400, c);
        signIn = { appName: c.app.name, request };
        then = `/oauth/authorize?${new URLSearchParams(c.params).toString()}`;
      }
      const jid = str(body.jid);
      const password = str(body.password);
      const again = (status: number, error: string) => page(reply, status, (n) => signInPage(n, { ...signIn, csrf: sessions.csrfToken(s), error }));
      if (jid === undefined || password === undefined || jid.length > 3071 || password.length > 1024) return again(400, 'enter your address and password');
      let account: string;
      try {
        account = await engine.loginThrottle.attempt('http', jid, req.ip, () =>
          engine.authenticatePassword(jid, password, { admit: () => engine.loginThrottle.check('http', jid, req.ip) }),
        );
      } catch (e) {
        if (e instanceof LoginThrottled) {
          reply.header('retry-after', String(e.retryAfterSeconds));
          return again(429, e.message);
        }
        return again(401, 'wrong address or password');
      }
      // A new session id at sign-in: a sid planted before cannot ride into the signed-in session.
      kit.setSession(req, reply, sessions.create(account, Date.now()));
      return reply.code(303).header('cache-control', 'no-store').redirect(then, 303);
    });

    app.post('/authorize', async (req, reply) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      const s = kit.signedInForm(req, body.csrf);
      if (s === null) return fail(reply, 403, 'this form expired or did not come from this site; go back to the app and start again');
      const c = await check(body);
      if (typeof c === 'string') return fail(reply, 400, c);
      if (c.redirectError !== null) return toApp(reply, c, c.redirectError);
      const decision = str(body.decision);
      if (decision !== 'allow' && decision !== 'deny') return fail(reply, 400, 'choose Allow or Deny');
      const user: OAuthUser = { jid: s.jid };
      const response = new OAuth2Server.Response();
      try {
        await server.authorize(libRequest(req, { ...c.params, allowed: decision === 'allow' ? 'true' : 'false' }), response, { authenticateHandler: { handle: () => user } });
        await grants.grant(c.app.id, user.jid, c.scopes);
      } catch (e) {
        const location = response.get('location') as string | undefined;
        if (!(e instanceof OAuth2Server.OAuthError) || location === undefined) throw e;
        return reply.code(303).header('cache-control', 'no-store').redirect(location, 303);
      }
      return reply.code(303).header('cache-control', 'no-store').redirect(response.get('location') as string, 303);
    });

    connectedAppsPages(app, { kit, apps, grants });

    app.post('/token', { bodyLimit: FORM_LIMIT }, async (req, reply) => {
      const response = new OAuth2Server.Response();
      try {
        await server.token(libRequest(req, (req.body ?? {}) as Record<string, unknown>), response, {
          requireClientAuthentication: { authorization_code: true, refresh_token: true },
        });
      } catch (e) {
        return oauthError(reply, e);
      }
      return reply
        .code(response.status ?? 200)
        .headers({ ...(response.headers as Record<string, string>), 'cache-control': 'no-store', pragma: 'no-cache' })
        .send(response.body);
    });

    // RFC 7009. Unknown, expired or another app's tokens are answered 200 like revoked ones (§2.2), so
    // the endpoint tells a caller nothing about tokens it does not own.
    app.post('/revoke', { bodyLimit: FORM_LIMIT }, async (req, reply) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      reply.headers({ 'cache-control': 'no-store', pragma: 'no-cache' });
      const client = await clientOf(req, body);
      if (client === null) {
        return reply.code(401).header('www-authenticate', 'Basic realm="presenced"').send({ error: 'invalid_client', error_description: 'unknown app or wrong client secret' });
      }
      const token = str(body.token);
      if (token === undefined || token === '') return reply.code(400).send({ error: 'invalid_request', error_description: 'send the token to revoke in `token`' });
      const t = await repo.getToken(tokenHash(token));
      // A refresh token takes its access tokens with it (§2.1); so does an access token here: both end the family.
      if (t !== undefined && t.appId === client.id) await repo.revokeFamily(t.family, Date.now());
      return reply.code(200).send();
    });

    // What a token stands for: the app's pairwise id of the user, and the scopes. Refused as soon as the user revokes.
    app.get('/userinfo', async (req, reply) => {
      const response = new OAuth2Server.Response();
      let token: OAuth2Server.Token;
      try {
        token = await server.authenticate(new OAuth2Server.Request({ method: req.method, headers: req.headers as Record<string, string>, query: {}, body: {} }), response);
      } catch (e) {
        if (!(e instanceof OAuth2Server.OAuthError)) throw e;
        const status = e.code === 400 || e.code === 401 || e.code === 403 ? e.code : 401;
        return reply
          .code(status)
          .headers({ 'cache-control': 'no-store', 'www-authenticate': `Bearer realm="presenced", error="${e.name === 'unauthorized_request' ? 'invalid_request' : 'invalid_token'}"` })
          .send({ error: e.name === 'unauthorized_request' ? 'invalid_request' : 'invalid_token', error_description: e.message });
      }
      const user = token.user as OAuthUser;
      return reply.header('cache-control', 'no-store').send({ presence_uid: apps.pairwiseId(token.client.id, user.jid), scope: (token.scope ?? []).join(' ') });
    });
  };
}

/**
 * Routes at the root: the RFC 8414 metadata, and the seed's `GET /<appid>/grant?redirect=<url>`, which
 * sends the browser into the standard flow only when `redirect` is one of the app's registered URIs.
 */
export function oauthRootRoutes(apps: AppService, publicUrl: string) {
  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/.well-known/oauth-authorization-server', async (req, reply) => {
      // public_url when the operator set it. Otherwise the origin the client reached us at (with
      // http_trust_proxy, what the proxy forwarded): good for development, but a client that sends
      // another Host header is then told another issuer, so a public server sets public_url.
      const issuer = publicUrl !== '' ? publicUrl : `${req.protocol}://${req.host}`;
      return reply.header('cache-control', 'public, max-age=3600').send({
        issuer,
        authorization_endpoint: `${issuer}/oauth/authorize`,
        token_endpoint: `${issuer}/oauth/token`,
        revocation_endpoint: `${issuer}/oauth/revoke`,
        userinfo_endpoint: `${issuer}/oauth/userinfo`,
        response_types_supported: ['code'],
        response_modes_supported: ['query'],
        grant_types_supported: [...GRANT_TYPES],
        code_challenge_methods_supported: ['S256'],
        token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
        revocation_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
        scopes_supported: [...SCOPES],
      });
    });

    app.get('/:appid/grant', async (req, reply) => {
      const { appid } = req.params as { appid: string };
      const q = (req.query ?? {}) as Record<string, unknown>;
      const redirect = str(q.redirect);
      const target = appid.length > 64 ? undefined : await apps.repo.get(appid);
      const fail = (message: string) => {
        const nonce = newNonce();
        return reply.code(400).headers(pageHeaders(nonce)).send(errorPage(nonce, message));
      };
      if (target === undefined) return fail('unknown app');
      if (redirect === undefined || !target.redirectUris.includes(redirect)) return fail('this redirect URL is not registered for this app');
      const next = new URLSearchParams({ response_type: 'code', client_id: target.id, redirect_uri: redirect, scope: str(q.scope) ?? 'presence' });
      for (const k of ['state', 'code_challenge', 'code_challenge_method'] as const) {
        const v = str(q[k]);
        if (v !== undefined) next.set(k, v);
      }
      return reply.code(302).redirect(`/oauth/authorize?${next.toString()}`, 302);
    });
  };
}

