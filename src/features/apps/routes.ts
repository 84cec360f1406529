import type { FastifyInstance, FastifyRequest } from 'fastify';
import { PresenceError } from '../../core/errors.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { sendError } from '../../protocols/http/http-common.js';
import { credentialsHook, RequesterResolver } from '../../protocols/http/requester.js';
import { authHeaders } from '../../protocols/http/schemas.js';
import { isManifest, LIMITS, manifestFields, MAX_MANIFEST_BYTES, patchFields, registrationFields } from './app-input.js';
import { ADMIN_OWNER, appView, AppService } from './app-service.js';
import type { AppRecord } from './repository.js';
import { ProofFailed } from './domain-proof.js';

export interface AppRoutesOptions {
  readonly adminToken: string;
  /** `accounts`: any account may register; `admin`: only the operator. */
  readonly registration: 'accounts' | 'admin';
  /** More routes on one app (webhooks, ...), behind the same authentication; `find` answers 404 for an app the requester may not see. */
  readonly extraRoutes?: ReadonlyArray<(app: FastifyInstance, find: (req: FastifyRequest) => Promise<AppRecord>) => void>;
}

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } } as const;
const urlString = { type: 'string', maxLength: LIMITS.url } as const;
const nullableUrl = { type: ['string', 'null'], maxLength: LIMITS.url } as const;
/** Types of the REST fields; the rules (schemes, lengths, unknown fields) are checked in app-input.ts with clearer messages. */
const fieldSchemas = {
  name: { type: 'string', maxLength: 4 * LIMITS.name },
  description: { type: 'string', maxLength: 4 * LIMITS.description },
  homepage: urlString,
  iconUrl: nullableUrl,
  redirectUris: { type: 'array', maxItems: 4 * LIMITS.redirectUris, items: urlString },
  webhookUrl: nullableUrl,
  webhookFormat: { type: 'string', maxLength: 32 },
  webhookEveryTransition: { type: 'boolean' },
} as const;
/** The REST form, or a web app manifest with a `presence` member (whose other members are its own business). */
const registerBody = { type: 'object', maxProperties: 256, properties: { ...fieldSchemas, presence: { type: 'object', maxProperties: 64 } } } as const;
const patchBody = { type: 'object', maxProperties: 64, properties: fieldSchemas } as const;

/**
 * `/api/v1/apps`: register and manage apps. Accounts authenticate with HTTP Basic or a login token
 * (Bearer), the operator with the admin token; an account sees only its own apps, and any other app
 * id, existing or not, gets the same 404.
 */
export function appRoutes(engine: PresenceEngine, service: AppService, opts: AppRoutesOptions) {
  const resolver = new RequesterResolver(engine, { adminToken: opts.adminToken, trustReqJid: false, tokenScope: 'login' });
  const credentials = credentialsHook(resolver, 'send HTTP Basic credentials of an account, a login token (Bearer) or the admin token');
  const viewer = (req: FastifyRequest): string | null => {
    const r = credentials.requesterOf(req);
    return r.kind === 'account' ? r.jid : null;
  };
  const allowPrivate = service.rules.allowPrivate;
  const view = (app: Parameters<typeof appView>[0]) => appView(app, allowPrivate);

  return async function register(app: FastifyInstance): Promise<void> {
    // Manifests are often served as application/manifest+json; read them as the JSON they are.
    app.addContentTypeParser('application/manifest+json', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));

    app.addHook('onRequest', credentials.hook);

    const body = (req: FastifyRequest): Record<string, unknown> => req.body as Record<string, unknown>;
    const find = (req: FastifyRequest) => service.find(viewer(req), (req.params as { id: string }).id);
    const onApp = { schema: { headers: authHeaders, params: idParams } };

    // One spelling of the collection's URL (`/api/v1/apps`), not also with a trailing slash.
    app.post('/', { prefixTrailingSlash: 'no-slash', bodyLimit: MAX_MANIFEST_BYTES, schema: { headers: authHeaders, body: registerBody } }, async (req, reply) => {
      const owner = viewer(req) ?? ADMIN_OWNER;
      if (owner !== ADMIN_OWNER && opts.registration === 'admin') {
        throw new PresenceError('not-allowed', 'app registration is limited to the administrator on this server (app_registration: admin)');
      }
      const b = body(req);
      const fields = isManifest(b) ? manifestFields(b, service.rules) : registrationFields(b, service.rules);
      const { app: created, clientSecret } = await service.register(owner, fields);
      return reply.code(201).send({ ...view(created), clientSecret });
    });

    app.get('/', { prefixTrailingSlash: 'no-slash', schema: { headers: authHeaders } }, async (req) => ({ apps: (await service.list(viewer(req))).map(view) }));

    app.get('/:id', onApp, async (req) => view(await find(req)));

    app.patch('/:id', { bodyLimit: MAX_MANIFEST_BYTES, schema: { headers: authHeaders, params: idParams, body: patchBody } }, async (req) => {
      const current = await find(req);
      return view(await service.update(current, patchFields(body(req), service.rules)));
    });

    app.post('/:id/secret', onApp, async (req) => {
      const { app: rotated, clientSecret } = await service.rotateClientSecret(await find(req));
      return { id: rotated.id, clientSecret };
    });

    app.post('/:id/webhook-secret', onApp, async (req) => {
      const rotated = await service.rotateWebhookSecret(await find(req));
      return { id: rotated.id, webhookSecret: rotated.webhookSecret };
    });

    app.post('/:id/verify', onApp, async (req, reply) => {
      const current = await find(req);
      try {
        return view(await service.verify(current));
      } catch (e) {
        if (e instanceof ProofFailed) return sendError(reply, 422, 'verification-failed', e.message);
        throw e;
      }
    });

    app.delete('/:id', onApp, async (req, reply) => {
      await service.remove((await find(req)).id);
      return reply.code(204).send();
    });

    for (const extra of opts.extraRoutes ?? []) extra(app, find);
  };
}
