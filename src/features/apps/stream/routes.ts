import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendError } from '../../../protocols/http/http-common.js';
import { CREDENTIAL_MAX } from '../../../protocols/http/schemas.js';
import type { AppService } from '../app-service.js';
import { basicCredentials } from '../oauth-routes.js';
import type { AppRecord } from '../repository.js';
import type { GrantedAudience } from '../webhooks/presence-source.js';
import type { WebhookStore } from '../webhooks/store.js';
import type { StreamRegistry } from './app-stream.js';
import { updateView } from './lines.js';

/** Most users asked about in one `POST .../presence`. */
export const MAX_PRESENCE_UIDS = 1000;
const UID_MAX = 128;

export interface StreamRouteDeps {
  readonly service: Pick<AppService, 'authenticate'>;
  readonly registry: StreamRegistry;
  readonly store: Pick<WebhookStore, 'newestOfUsers'>;
  readonly audience: Pick<GrantedAudience, 'grantOf' | 'confirm'>;
}

const idParam = { type: 'string', minLength: 1, maxLength: 64 } as const;
const headers = { type: 'object', properties: { authorization: { type: 'string', maxLength: CREDENTIAL_MAX }, 'last-event-id': { type: 'string', maxLength: 256 } } } as const;
const streamQuery = { type: 'object', properties: { since: { type: 'string', maxLength: 256 } } } as const;
const presenceBody = {
  type: 'object',
  required: ['uids'],
  properties: { uids: { type: 'array', maxItems: MAX_PRESENCE_UIDS, items: { type: 'string', minLength: 1, maxLength: UID_MAX } } },
  additionalProperties: false,
} as const;

const CHALLENGE = 'Basic realm="presenced apps", charset="UTF-8"';
const WRONG = 'unknown app or wrong client secret';

/**
 * The app whose credentials the request carries for the app in its path: HTTP Basic `APPID:SECRET`
 * (form-encoded as OAuth clients send them), or `Bearer SECRET`. An unknown app, a wrong secret and
 * another app's credentials all get the same 401, so the answer never tells whether an app exists.
 */
async function authenticated(service: StreamRouteDeps['service'], req: FastifyRequest, reply: FastifyReply, appId: string): Promise<AppRecord | null> {
  const auth = req.headers.authorization;
  reply.header('www-authenticate', CHALLENGE);
  if (auth === undefined) {
    sendError(reply, 401, 'not-authenticated', 'send the app id and its client secret as HTTP Basic credentials (APPID:CLIENT_SECRET)');
    return null;
  }
  let secret: string | null = null;
  const basic = basicCredentials(auth);
  if (basic !== null) secret = basic.id === appId ? basic.secret : null;
  else if (/^bearer /i.test(auth) && auth.length <= CREDENTIAL_MAX) secret = auth.slice(7).trim();
  const app = secret === null || secret === '' || appId.length > idParam.maxLength ? null : await service.authenticate(appId, secret);
  if (app === null) {
    sendError(reply, 401, 'auth-failed', WRONG);
    return null;
  }
  reply.removeHeader('www-authenticate');
  return app;
}

const appIdOf = (req: FastifyRequest): string => {
  const p = req.params as { appid?: string; id?: string };
  return p.appid ?? p.id ?? '';
};

/**
 * `GET <prefix>/:param/presence.json`: the held-open stream (docs/apps.md, "Presence stream"). With
 * `param` `appid` at the root (the seed's path, beside `/:appid/grant`) and `id` under /api/v1/apps,
 * where the apps' other routes name it so.
 */
function streamRoute(app: FastifyInstance, deps: StreamRouteDeps, param: 'appid' | 'id'): void {
  app.get(
    `/:${param}/presence.json`,
    {
      // A HEAD would open a stream that can never carry a body.
      exposeHeadRoute: false,
      schema: { headers, querystring: streamQuery, params: { type: 'object', required: [param], properties: { [param]: idParam } } },
      onRequest: async (req, reply) => {
        const a = await authenticated(deps.service, req, reply, appIdOf(req));
        if (a !== null) apps.set(req, a);
        return a === null ? reply : undefined;
      },
    },
    async (req, reply) => {
      const record = apps.get(req)!;
      const accept = req.headers.accept ?? '';
      // Last-Event-ID wins: an EventSource reconnecting keeps the URL (and its ?since=) it started with.
      const since = (req.headers['last-event-id'] as string | undefined) ?? (req.query as { since?: string }).since;
      reply.hijack();
      deps.registry.open(record, reply.raw, accept.includes('text/event-stream') ? 'sse' : 'ndjson', since === '' ? undefined : since);
    },
  );
}

const apps = new WeakMap<FastifyRequest, AppRecord>();

/** The stream at the seed's path, `/:appid/presence.json` (registered with prefix `/`). */
export function rootStreamRoutes(deps: StreamRouteDeps) {
  return async (app: FastifyInstance): Promise<void> => streamRoute(app, deps, 'appid');
}

/** Under `/api/v1/apps`: the same stream, and the presence of many users in one call. */
export function apiStreamRoutes(deps: StreamRouteDeps) {
  return async (app: FastifyInstance): Promise<void> => {
    streamRoute(app, deps, 'id');
    app.post(
      '/:id/presence',
      {
        schema: { headers, params: { type: 'object', required: ['id'], properties: { id: idParam } }, body: presenceBody },
        onRequest: async (req, reply) => {
          const a = await authenticated(deps.service, req, reply, appIdOf(req));
          if (a !== null) apps.set(req, a);
          return a === null ? reply : undefined;
        },
      },
      async (req) => {
        const record = apps.get(req)!;
        const uids = [...new Set((req.body as { uids: string[] }).uids)];
        // In a cluster: grants made or revoked on another node a moment ago count already.
        if (deps.audience.confirm !== undefined) await deps.audience.confirm(record.id, uids);
        const granted = uids.filter((u) => deps.audience.grantOf(record.id, u) !== undefined);
        const rows = new Map((await deps.store.newestOfUsers(record.id, granted)).map((r) => [r.uid, r]));
        return {
          users: uids.map((uid) => {
            // Checked again after the read: a grant revoked meanwhile is answered like a stranger.
            const grant = deps.audience.grantOf(record.id, uid);
            const row = rows.get(uid);
            return grant === undefined || row === undefined ? { uid, status: null } : updateView(row, grant);
          }),
        };
      },
    );
  };
}
