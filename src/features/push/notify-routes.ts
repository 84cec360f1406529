import { adminOnlyHook } from '../../protocols/http/admin-only.js';
import type { FastifyInstance } from 'fastify';
import { PresenceError } from '../../core/errors.js';
import { isXmlSafeText } from '../../core/text.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { authHeaders, jidParams } from '../../protocols/http/schemas.js';
import type { NotificationInput, PushService } from './push-service.js';

/** Limits of a notification: what fits one push payload (APNs takes 4 KB in all) with room for the envelope. */
export const NOTIFY_LIMITS = { title: 256, body: 2048, dataKeys: 16, dataKey: 64, dataValue: 512, collapseKey: 64, bytes: 8192 } as const;

const notifyBody = {
  type: 'object',
  required: ['body'],
  maxProperties: 16,
  properties: {
    title: { type: 'string', minLength: 1, maxLength: NOTIFY_LIMITS.title },
    body: { type: 'string', minLength: 1, maxLength: NOTIFY_LIMITS.body },
    data: {
      type: 'object',
      maxProperties: NOTIFY_LIMITS.dataKeys,
      propertyNames: { maxLength: NOTIFY_LIMITS.dataKey, pattern: '^[A-Za-z0-9_.-]+$' },
      additionalProperties: { type: 'string', maxLength: NOTIFY_LIMITS.dataValue },
    },
    collapseKey: { type: 'string', minLength: 1, maxLength: NOTIFY_LIMITS.collapseKey, pattern: '^[A-Za-z0-9_.:-]+$' },
    urgency: { type: 'string', enum: ['high', 'normal'] },
  },
} as const;

/**
 * `POST /api/v1/accounts/{jid}/notify` (admin token): a notification for one account, live to its
 * connected sessions and by push to its devices the policy picks. 202: accepted, pushes queued durably.
 */
export function notifyRoutes(engine: PresenceEngine, service: PushService, adminToken: string) {
  return async function register(app: FastifyInstance): Promise<void> {
    app.addHook('onRequest', adminOnlyHook(engine, adminToken));
    app.post('/:jid/notify', { bodyLimit: NOTIFY_LIMITS.bytes, schema: { headers: authHeaders, params: jidParams, body: notifyBody } }, async (req, reply) => {
      const jid = engine.localJid((req.params as { jid: string }).jid);
      if (!(await engine.accountExists(jid))) throw new PresenceError('not-found', 'no such account');
      const b = req.body as NotificationInput;
      // Checked here, not by the schema: Fastify's validator would drop unknown fields silently.
      for (const k of Object.keys(b)) {
        if (!Object.hasOwn(notifyBody.properties, k)) throw new PresenceError('bad-request', `unknown field "${k.slice(0, 64)}" (a notification takes ${Object.keys(notifyBody.properties).join(', ')})`);
      }
      // The text also travels as an XMPP headline message: it must be text XML can carry.
      for (const [k, v] of [['title', b.title], ['body', b.body], ...Object.entries(b.data ?? {}).map(([dk, dv]) => [`data.${dk}`, dv])] as Array<[string, string | undefined]>) {
        if (v !== undefined && !isXmlSafeText(v)) throw new PresenceError('bad-request', `"${k}" contains characters that are not allowed (control characters)`);
      }
      const r = await service.notify(jid, b);
      return reply.code(202).send({ id: r.id, sessions: r.sessions, pushed: r.pushed.length, devices: r.pushed });
    });
  };
}
