import type { FastifyInstance } from 'fastify';
import { vapidPublicKeyOf } from './providers/index.js';
import type { PushProvider } from './providers/provider.js';

/**
 * `GET /api/v1/push/providers`: what a client needs to register a device: the configured providers'
 * names and types, and for Web Push the server's VAPID public key (`applicationServerKey` of
 * `PushManager.subscribe()`). Public: it holds nothing a client could not learn by registering.
 */
export function providerRoutes(providers: ReadonlyMap<string, PushProvider>) {
  const body = {
    providers: [...providers.values()].map((p) => {
      const key = vapidPublicKeyOf(p);
      return { name: p.name, type: p.type, ...(key !== null ? { applicationServerKey: key } : {}) };
    }),
  };
  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/providers', async (_req, reply) => reply.header('cache-control', 'public, max-age=300').send(body));
  };
}
