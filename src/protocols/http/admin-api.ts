import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { PresenceError } from '../../core/errors.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { presenceView } from '../native/messages.js';
import { authHeaders, body as bodySchema, integerParam, JID_MAX, jidParams, jidString, optionalBody } from './schemas.js';

export interface AdminApiOptions {
  readonly adminToken: string;
  readonly tokenTtlSeconds: number;
}

const MAX_BATCH = 1000;
const MAX_PAGE = 1000;

/**
 * The operator's REST API (bearer admin token): accounts, their presence and sessions, login tokens.
 * Registered as an encapsulated Fastify plugin so its auth hook guards only these routes.
 */
export function adminApi(engine: PresenceEngine, opts: AdminApiOptions) {
  const expected = Buffer.from(`Bearer ${opts.adminToken}`);

  return async function register(app: FastifyInstance): Promise<void> {
    app.addHook('onRequest', async (req: FastifyRequest) => {
      if (opts.adminToken === '') {
        throw new PresenceError('not-allowed', 'the admin API is disabled: set PRESENCED_ADMIN_TOKEN (admin_token) to enable it');
      }
      // Guessing the admin token is throttled per address like a password (429 with Retry-After).
      engine.loginThrottle.check('http', null, req.ip);
      const given = Buffer.from(req.headers.authorization ?? '');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        engine.loginThrottle.failed(null, req.ip);
        throw new PresenceError('auth-failed', 'missing or wrong admin bearer token');
      }
    });
    const password = { type: 'string', maxLength: 4096 } as const;


    const jidParam = (req: FastifyRequest): string => engine.localJid((req.params as { jid: string }).jid);
    const body = (req: FastifyRequest): Record<string, unknown> => {
      if (typeof req.body !== 'object' || req.body === null || Array.isArray(req.body)) {
        throw new PresenceError('bad-request', 'request body must be a JSON object');
      }
      return req.body as Record<string, unknown>;
    };

    app.post('/accounts', { schema: { headers: authHeaders, body: bodySchema({ jid: jidString, password }, ['jid', 'password']) } }, async (req, reply: FastifyReply) => {
      const b = body(req);
      if (typeof b.jid !== 'string') throw new PresenceError('bad-request', '"jid" (string) is required');
      if (typeof b.password !== 'string') throw new PresenceError('bad-request', '"password" (string) is required');
      const jid = await engine.createAccount(b.jid, b.password);
      return reply.code(201).send({ jid });
    });

    const listQuery = {
      type: 'object',
      properties: {
        limit: integerParam,
        domain: { type: 'string', minLength: 1, maxLength: 1023 },
        after: { type: 'string', minLength: 1, maxLength: JID_MAX },
      },
    } as const;
    app.get('/accounts', { schema: { headers: authHeaders, querystring: listQuery } }, async (req) => {
      const q = req.query as { limit?: string; domain?: string; after?: string };
      const limit = q.limit === undefined ? 100 : Number(q.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) throw new PresenceError('bad-request', `limit must be an integer from 1 to ${MAX_PAGE}`);
      const page = await engine.store.listAccounts({
        limit,
        ...(q.domain ? { domain: q.domain.toLowerCase() } : {}),
        ...(q.after ? { after: q.after } : {}),
      });
      return { accounts: page.jids, next: page.next };
    });

    const onAccount = { schema: { headers: authHeaders, params: jidParams } };
    app.delete('/accounts/:jid', onAccount, async (req, reply) => {
      if (!(await engine.deleteAccount(jidParam(req)))) throw new PresenceError('not-found', 'no such account');
      return reply.code(204).send();
    });

    app.put('/accounts/:jid/password', { schema: { headers: authHeaders, params: jidParams, body: bodySchema({ password }, ['password']) } }, async (req, reply) => {
      const b = body(req);
      if (typeof b.password !== 'string') throw new PresenceError('bad-request', '"password" (string) is required');
      await engine.changePassword(jidParam(req), b.password);
      return reply.code(204).send();
    });

    const existing = async (req: FastifyRequest): Promise<string> => {
      const jid = jidParam(req);
      if (!(await engine.accountExists(jid))) throw new PresenceError('not-found', 'no such account');
      return jid;
    };

    app.get('/accounts/:jid/presence', onAccount, async (req) => presenceView(await engine.presenceOf(await existing(req))));

    app.get('/accounts/:jid/sessions', onAccount, async (req) => {
      const sessions = await engine.sessionsOf(await existing(req));
      return {
        sessions: sessions.map((s) => ({
          resource: s.resource,
          protocol: s.protocol,
          available: s.available,
          show: s.show,
          status: s.status,
          priority: s.priority,
          lastActive: new Date(s.lastActive).toISOString(),
          node: s.node,
        })),
      };
    });

    app.patch('/accounts/:jid/settings', { schema: { headers: authHeaders, params: jidParams, body: { type: 'object' } } }, async (req) => {
      const jid = await existing(req);
      const b = body(req);
      const patch: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(b)) {
        if (k !== 'publicPresence') throw new PresenceError('bad-request', `unknown setting "${k}" (known: publicPresence)`);
        if (typeof v !== 'boolean' && v !== null) throw new PresenceError('bad-request', 'publicPresence must be true, false or null');
        patch[k] = v;
      }
      const s = await engine.updateSettings(jid, patch);
      return { publicPresence: s.publicPresence ?? null };
    });

    const tokenBody = optionalBody({ ttl: { type: 'integer' }, scope: { type: 'string', maxLength: 64 } });
    app.post('/accounts/:jid/tokens', { schema: { headers: authHeaders, params: jidParams, body: tokenBody } }, async (req, reply) => {
      const jid = await existing(req);
      const b = req.body === undefined || req.body === null ? {} : body(req);
      const ttl = b.ttl === undefined ? opts.tokenTtlSeconds : b.ttl;
      if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 60 || ttl > 31_536_000) {
        throw new PresenceError('bad-request', 'ttl must be an integer number of seconds from 60 to 31536000');
      }
      // 'presence' tokens only prove a requester on the HTTP presence endpoints; they cannot log in.
      const scope = b.scope === undefined ? 'login' : b.scope;
      if (scope !== 'login' && scope !== 'presence') throw new PresenceError('bad-request', 'scope must be "login" or "presence"');
      const t = await engine.issueToken(jid, ttl, scope);
      return reply.code(201).send({ jid, token: t.token, scope, expiresAt: new Date(t.expiresAt).toISOString() });
    });

    const queryBody = bodySchema({ jids: { type: 'array', minItems: 1, maxItems: MAX_BATCH, items: jidString } }, ['jids']);
    app.post('/presence/query', { schema: { headers: authHeaders, body: queryBody } }, async (req) => {
      const b = body(req);
      const jids = b.jids;
      if (!Array.isArray(jids) || jids.length === 0 || jids.length > MAX_BATCH || !jids.every((j) => typeof j === 'string')) {
        throw new PresenceError('bad-request', `"jids" must be an array of 1 to ${MAX_BATCH} strings`);
      }
      const out: Record<string, unknown> = {};
      const errors: Record<string, { code: string; message: string }> = {};
      const valid: string[] = [];
      for (const raw of jids as string[]) {
        try {
          valid.push(engine.localJid(raw));
        } catch (e) {
          const err = e as PresenceError;
          errors[raw] = { code: err.code, message: err.message };
        }
      }
      const presence = await engine.presenceOfMany([...new Set(valid)]);
      for (const [jid, p] of presence) out[jid] = presenceView(p);
      return { presence: out, errors };
    });
  };
}
