import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { PresenceEngine } from '../../engine/engine.js';
import { presenceApi } from './presence-api.js';
import { RequesterResolver } from './requester.js';
import { loadStatusImages } from './status-images.js';
import { statusEndpoint, statusFastPath } from './status-endpoint.js';
import { PresenceLookup } from './visible-presence.js';

export interface HttpPresenceOptions {
  readonly adminToken: string;
  /** Believe an unproven req_jid (Openfire's behaviour); unsafe outside closed networks. */
  readonly trustReqJid: boolean;
  /** Default lifetime of presence tokens minted by users (POST /api/v1/presence/token). */
  readonly presenceTokenTtlSeconds?: number;
  /** Most JIDs in one batch (http_batch_max). */
  readonly batchMax?: number;
}

export type FastPath = (req: IncomingMessage, res: ServerResponse) => boolean;

/**
 * Mounts the HTTP presence front door: the Openfire-compatible status endpoint and /api/v1/presence.
 * Returns the status endpoint's fast path, for the HTTP server to try before Fastify (see
 * statusFastPath); `onAnswer` counts what it answers, as Fastify's hooks count the rest.
 */
export async function httpPresence(http: FastifyInstance, engine: PresenceEngine, opts: HttpPresenceOptions, onAnswer: (status: number) => void = () => {}): Promise<FastPath> {
  const resolver = new RequesterResolver(engine, opts);
  const lookup = new PresenceLookup(engine);
  const status = { resolver, lookup, images: loadStatusImages() };
  await http.register(statusEndpoint(status));
  await http.register(presenceApi({ engine, resolver, lookup, presenceTokenTtlSeconds: opts.presenceTokenTtlSeconds ?? 3600, batchMax: opts.batchMax ?? 500 }), { prefix: '/api/v1' });
  return statusFastPath(status, onAnswer);
}
