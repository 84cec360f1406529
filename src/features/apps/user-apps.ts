import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { PresenceError } from '../../core/errors.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { sendError } from '../../protocols/http/http-common.js';
import { credentialsHook, RequesterResolver } from '../../protocols/http/requester.js';
import { authHeaders } from '../../protocols/http/schemas.js';
import type { AppService } from './app-service.js';
import type { GrantService } from './grant-service.js';

/**
 * The user's control over the apps they let in: the list (what, since when, which scopes, last
 * delivery) and revocation, the same over the native protocol (`apps.list`, `apps.revoke`) and REST
 * (`/api/v1/me/apps`). A revocation is complete when answered: grant marked revoked, tokens deleted.
 */

export interface ConnectedApp {
  readonly app: string;
  readonly name: string;
  readonly verifiedDomain: string | null;
  readonly scopes: readonly string[];
  readonly grantedAt: string;
  readonly lastDeliveryAt: string | null;
}

export async function connectedApps(apps: AppService, grants: GrantService, account: string): Promise<ConnectedApp[]> {
  const out: ConnectedApp[] = [];
  for (const g of await grants.listByAccount(account)) {
    const app = await apps.repo.get(g.appId);
    if (app === undefined) continue;
    out.push({
      app: app.id,
      name: app.name,
      verifiedDomain: app.verifiedDomain,
      scopes: g.scopes,
      grantedAt: new Date(g.grantedAt).toISOString(),
      lastDeliveryAt: g.lastDeliveryAt === null ? null : new Date(g.lastDeliveryAt).toISOString(),
    });
  }
  return out;
}

/** Revokes; an app the account never granted (or no such app) is a not-found, as it is for the owner's routes. */
export async function revokeApp(grants: GrantService, account: string, appId: unknown): Promise<{ app: string; revoked: true }> {
  if (typeof appId !== 'string' || appId.length === 0 || appId.length > 64) throw new PresenceError('bad-request', '`app` must be an app id');
  if (!(await grants.revoke(appId, account))) throw new PresenceError('not-found', 'this account has not granted that app');
  return { app: appId, revoked: true };
}

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } } as const;

/** `/api/v1/me/apps`: HTTP Basic or a login token (Bearer) of the account. */
export function myAppsRoutes(engine: PresenceEngine, apps: AppService, grants: GrantService, adminToken: string) {
  const resolver = new RequesterResolver(engine, { adminToken, trustReqJid: false, tokenScope: 'login' });
  const credentials = credentialsHook(resolver, 'send HTTP Basic credentials of an account or a login token (Bearer)');
  return async function register(app: FastifyInstance): Promise<void> {
    app.addHook('onRequest', credentials.hook);
    app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
      if (credentials.requesterOf(req).kind !== 'account') {
        return sendError(reply, 403, 'not-allowed', 'these are the routes of an account; the admin token has no apps of its own here');
      }
      return undefined;
    });
    const account = (req: FastifyRequest): string => (credentials.requesterOf(req) as { jid: string }).jid;

    app.get('/', { prefixTrailingSlash: 'no-slash', schema: { headers: authHeaders } }, async (req) => ({ apps: await connectedApps(apps, grants, account(req)) }));

    app.delete('/:id', { schema: { headers: authHeaders, params: idParams } }, async (req, reply) => {
      await revokeApp(grants, account(req), (req.params as { id: string }).id);
      return reply.code(204).send();
    });
  };
}
