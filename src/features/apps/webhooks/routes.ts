import type { FastifyInstance, FastifyRequest } from 'fastify';
import { PresenceError } from '../../../core/errors.js';
import { authHeaders, integerParam } from '../../../protocols/http/schemas.js';
import type { AppRecord } from '../repository.js';
import type { AttemptRecord, EndpointState, WebhookStore } from './store.js';

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } } as const;
const instant = { anyOf: [{ type: 'string', maxLength: 64 }, { type: 'integer', minimum: 0 }] } as const;
const deliveriesQuery = {
  type: 'object',
  properties: { since: { type: 'string', maxLength: 64 }, limit: integerParam },
  additionalProperties: false,
} as const;
const MAX_DELIVERIES = 1000;
const replayBody = { type: 'object', required: ['from', 'to'], properties: { from: instant, to: instant }, additionalProperties: false } as const;

/** An instant given as epoch ms (a number or digits) or an ISO 8601 date. */
function instantOf(field: string, raw: unknown): number {
  const t = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : typeof raw === 'string' && /^\d{4}-\d\d-\d\d/.test(raw) ? Date.parse(raw) : NaN;
  if (!Number.isSafeInteger(t) || t < 0) throw new PresenceError('bad-request', `${field} must be an ISO 8601 date or epoch milliseconds`);
  return t;
}

const iso = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());

function stateOf(e: EndpointState): 'ok' | 'failing' | 'disabled' {
  return e.disabledAt !== null ? 'disabled' : e.failingSince !== null ? 'failing' : 'ok';
}

export interface WebhookAdmin {
  readonly store: WebhookStore;
  /** The worker looks at once (after an enable or a replay). */
  wake(): void;
  now(): number;
}

/**
 * The owner's view of an app's webhook, under `/api/v1/apps/:id/webhook` (registered inside the apps
 * routes, so their authentication and their 404 for another owner's app apply).
 */
export function webhookRoutes(w: WebhookAdmin) {
  return (app: FastifyInstance, find: (req: FastifyRequest) => Promise<AppRecord>): void => {
    const view = async (a: AppRecord) => {
      const e = await w.store.endpoint(a.id);
      return {
        appId: a.id,
        url: a.webhookUrl,
        format: a.webhookFormat,
        state: stateOf(e),
        failingSince: iso(e.failingSince),
        failures: e.failures,
        nextAttemptAt: iso(e.nextAttemptAt),
        lastError: e.lastError,
        lastSuccessAt: iso(e.lastSuccessAt),
        disabledAt: iso(e.disabledAt),
        disabledReason: e.disabledReason,
        pending: await w.store.pendingCount(a.id),
      };
    };
    const attemptView = (r: AttemptRecord) => ({
      id: r.batchId,
      at: new Date(r.at).toISOString(),
      updates: r.updates,
      status: r.status,
      latencyMs: r.latencyMs,
      responseExcerpt: r.responseExcerpt,
      error: r.error,
    });

    app.get('/:id/webhook', { schema: { headers: authHeaders, params: idParams } }, async (req) => view(await find(req)));

    app.get('/:id/webhook/deliveries', { schema: { headers: authHeaders, params: idParams, querystring: deliveriesQuery } }, async (req) => {
      const a = await find(req);
      const q = req.query as { since?: string; limit?: string };
      const since = q.since === undefined ? 0 : instantOf('since', q.since);
      const limit = q.limit === undefined ? 100 : Number(q.limit);
      if (limit < 1 || limit > MAX_DELIVERIES) throw new PresenceError('bad-request', `limit must be an integer from 1 to ${MAX_DELIVERIES}`);
      return { deliveries: (await w.store.attempts(a.id, since, limit)).map(attemptView) };
    });

    app.post('/:id/webhook/replay', { schema: { headers: authHeaders, params: idParams, body: replayBody } }, async (req) => {
      const a = await find(req);
      const b = req.body as { from: unknown; to: unknown };
      const from = instantOf('from', b.from);
      const to = instantOf('to', b.to);
      if (from > to) throw new PresenceError('bad-request', 'from must not be after to');
      if (a.webhookUrl === null) throw new PresenceError('bad-request', 'this app has no webhook URL');
      const replayed = await w.store.replay(a.id, from, to, w.now());
      w.wake();
      return { replayed };
    });

    app.post('/:id/webhook/enable', { schema: { headers: authHeaders, params: idParams } }, async (req) => {
      const a = await find(req);
      await w.store.enable(a.id);
      w.wake();
      return view(a);
    });
  };
}
