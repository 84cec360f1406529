import { createHash } from 'node:crypto';
import type OAuth2Server from '@node-oauth/oauth2-server';
import type { AppService } from './app-service.js';
import type { GrantRepository, TokenRecord } from './grant-repository.js';
import { normalizeScopes, scopeCovers } from './grant-service.js';

/**
 * The storage model `@node-oauth/oauth2-server` asks for (authorization code with PKCE, refresh
 * tokens), over the apps and grants repositories. The library does the protocol; this decides what
 * is stored and what counts as valid: codes and tokens only as SHA-256 hashes, a code used twice
 * revokes every token issued from it (RFC 6749 §4.1.2), as does a rotated refresh token used again
 * (RFC 9700 §4.14.2), and nothing is valid once the user's grant is revoked.
 */

/** The library's `user`: the account, and the code its tokens descend from (the token family). */
export interface OAuthUser {
  readonly jid: string;
  readonly family?: string;
}

export const GRANT_TYPES = ['authorization_code', 'refresh_token'] as const;

export function tokenHash(value: string): string {
  return createHash('sha256').update(value).digest('base64url');
}

/** How long replay detection remembers used codes and rotated refresh tokens after they expired. */
const REMEMBER_USED_MS = 24 * 3600_000;

export function oauthModel(apps: AppService, repo: GrantRepository, now: () => number = Date.now): OAuth2Server.AuthorizationCodeModel & OAuth2Server.RefreshTokenModel {
  const client = (app: { id: string; redirectUris: readonly string[]; name: string }): OAuth2Server.Client => ({
    id: app.id,
    name: app.name,
    redirectUris: [...app.redirectUris],
    grants: [...GRANT_TYPES],
  });
  const granted = async (appId: string, account: string, scopes: readonly string[]): Promise<boolean> => {
    const g = await repo.getGrant(appId, account);
    return g !== undefined && g.revokedAt === null && scopes.every((s) => scopeCovers(g.scopes, s));
  };

  return {
    async getClient(clientId: string, clientSecret: string | null) {
      // The authorize step names the client without its secret; the token endpoint always authenticates it.
      const app = clientSecret === null ? await apps.repo.get(clientId) : await apps.authenticate(clientId, clientSecret);
      return app === undefined || app === null ? false : client(app);
    },

    async validateScope(_user, _client, scope) {
      const asked = scope === undefined || scope.length === 0 ? ['presence'] : scope;
      const known = normalizeScopes(asked);
      // An unknown scope is an error, not silently dropped: the app should know what it got.
      return known.length > 0 && asked.every((s) => known.includes(s)) ? known : false;
    },

    // RFC 9700 §4.1.3: the exact string registered, nothing looser.
    async validateRedirectUri(redirectUri, c) {
      return Array.isArray(c.redirectUris) && c.redirectUris.includes(redirectUri);
    },

    async saveAuthorizationCode(code, c, user) {
      const u = user as OAuthUser;
      await repo.purgeExpired(now() - REMEMBER_USED_MS);
      await repo.saveCode({
        codeHash: tokenHash(code.authorizationCode),
        appId: c.id,
        account: u.jid,
        scopes: code.scope ?? [],
        redirectUri: code.redirectUri,
        // The routes refuse a request without an S256 challenge before the library is called.
        codeChallenge: code.codeChallenge ?? '',
        codeChallengeMethod: code.codeChallengeMethod ?? '',
        expiresAt: code.expiresAt.getTime(),
        usedAt: null,
      });
      return { ...code, client: c, user };
    },

    async getAuthorizationCode(value) {
      const hash = tokenHash(value);
      const code = await repo.getCode(hash);
      if (code === undefined) return false;
      if (code.usedAt !== null) {
        await repo.revokeFamily(hash, now());
        return false;
      }
      const app = await apps.repo.get(code.appId);
      if (app === undefined) return false;
      return {
        authorizationCode: value,
        expiresAt: new Date(code.expiresAt),
        redirectUri: code.redirectUri,
        scope: [...code.scopes],
        client: client(app),
        user: { jid: code.account, family: hash } satisfies OAuthUser,
        ...(code.codeChallenge === '' ? {} : { codeChallenge: code.codeChallenge, codeChallengeMethod: code.codeChallengeMethod }),
      };
    },

    async revokeAuthorizationCode(code) {
      const hash = tokenHash(code.authorizationCode);
      if (await repo.useCode(hash, now())) return true;
      // Lost a race with another use of the same code: a replay, whichever came first.
      await repo.revokeFamily(hash, now());
      return false;
    },

    async saveToken(token, c, user) {
      const u = user as OAuthUser;
      const scopes = token.scope ?? [];
      // A grant revoked between consent and exchange (or refresh) issues nothing.
      if (!(await granted(c.id, u.jid, scopes))) return false;
      const family = u.family ?? tokenHash(token.accessToken);
      const rows: TokenRecord[] = [
        { tokenHash: tokenHash(token.accessToken), kind: 'access', appId: c.id, account: u.jid, scopes, family, expiresAt: (token.accessTokenExpiresAt ?? new Date(0)).getTime(), usedAt: null },
      ];
      if (token.refreshToken !== undefined) {
        rows.push({ tokenHash: tokenHash(token.refreshToken), kind: 'refresh', appId: c.id, account: u.jid, scopes, family, expiresAt: (token.refreshTokenExpiresAt ?? new Date(0)).getTime(), usedAt: null });
      }
      // False when a replay of this family was detected meanwhile (by a request that lost the race to this one).
      if (!(await repo.saveTokens(rows))) return false;
      return { ...token, client: c, user: { jid: u.jid, family }, presence_uid: apps.pairwiseId(c.id, u.jid) };
    },

    async getAccessToken(value) {
      const t = await repo.getToken(tokenHash(value));
      if (t === undefined || t.kind !== 'access' || !(await granted(t.appId, t.account, t.scopes))) return false;
      const app = await apps.repo.get(t.appId);
      if (app === undefined) return false;
      return { accessToken: value, accessTokenExpiresAt: new Date(t.expiresAt), scope: [...t.scopes], client: client(app), user: { jid: t.account, family: t.family } satisfies OAuthUser };
    },

    async getRefreshToken(value) {
      const t = await repo.getToken(tokenHash(value));
      if (t === undefined || t.kind !== 'refresh') return false;
      if (t.usedAt !== null) {
        // A rotated refresh token presented again: someone holds a copy; end the whole family.
        await repo.revokeFamily(t.family, now());
        return false;
      }
      if (!(await granted(t.appId, t.account, t.scopes))) return false;
      const app = await apps.repo.get(t.appId);
      if (app === undefined) return false;
      return { refreshToken: value, refreshTokenExpiresAt: new Date(t.expiresAt), scope: [...t.scopes], client: client(app), user: { jid: t.account, family: t.family } satisfies OAuthUser };
    },

    async revokeToken(token) {
      const hash = tokenHash(token.refreshToken);
      if (await repo.useToken(hash, now())) return true;
      const t = await repo.getToken(hash);
      if (t !== undefined) await repo.revokeFamily(t.family, now());
      return false;
    },

    async verifyScope(token, scope) {
      return scope.every((s) => scopeCovers(token.scope ?? [], s));
    },
  };
}
