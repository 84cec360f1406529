import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AccountPresence } from '../../core/presence.js';
import { parseJid } from '../../core/jid.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { badgeSvg, MAX_LABEL } from './badge.js';
import { CACHE_CONTROL, cors, etagOf, first, notModified, preflight, sendError, VARY } from './http-common.js';
import { presenceJson } from './presence-formats.js';
import { AuthFailed, PRESENCE_SCOPE, sendAuthFailed, type Requester, type RequesterResolver } from './requester.js';
import { statusWord } from './status-words.js';
import type { PresenceLookup } from './visible-presence.js';
import { authHeaders, body as bodySchema, CREDENTIAL_MAX, jidParams, JID_MAX, listParam, optionalBody } from './schemas.js';

/**
 * The presence REST API for users, pages and dashboards, beside the Openfire-compatible endpoint:
 * the same requesters (anonymous, Basic, presence token, admin bearer) and the same visibility rule.
 * An account that does not exist, is on another domain, or may not be seen answers the same 403.
 */
export interface PresenceApiOptions {
  readonly engine: PresenceEngine;
  readonly resolver: RequesterResolver;
  readonly lookup: PresenceLookup;
  readonly presenceTokenTtlSeconds: number;
  /** Most JIDs in a POST batch (http_batch_max); a GET batch takes at most the smaller of this and 100. */
  readonly batchMax: number;
}

const MAX_GET_BATCH = 100;
/** JIDs looked up at once in a batch; between chunks the event loop serves other requests. */
const BATCH_CHUNK = 64;
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const MAX_TOKEN_TTL = 86_400;
const NOT_VISIBLE = 'no presence visible for this JID (it may not exist, or you may not see it)';

type Lookup = AccountPresence | null | Promise<AccountPresence | null>;

/** Why a JID is malformed, or null if it parses. Syntax errors are safe to explain: they say nothing about accounts. */
function syntaxError(raw: string): string | null {
  try {
    if (parseJid(raw).local === '') return 'an account JID needs a localpart (user@domain)';
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

export function presenceApi(opts: PresenceApiOptions) {
  const { engine, resolver, lookup } = opts;
  const maxPost = opts.batchMax;
  const maxGet = Math.min(MAX_GET_BATCH, maxPost);

  /** Runs `then` with the requester, or answers 401 for wrong credentials. */
  function withRequester(req: FastifyRequest, reply: FastifyReply, then: (w: Requester) => unknown): unknown {
    const q = req.query as Record<string, unknown>;
    const who = resolver.resolve(req.headers.authorization, first(q.token), undefined, req.ip);
    if (who instanceof Promise) return who.then(then, (err: unknown) => sendAuthFailed(reply, err));
    return then(who);
  }

  function sendCached(req: FastifyRequest, reply: FastifyReply, status: number, body: string, contentType: string): FastifyReply {
    const etag = etagOf(body);
    cors(reply);
    reply.header('cache-control', CACHE_CONTROL).header('vary', VARY).header('etag', etag);
    if (status === 200 && notModified(req, etag)) return reply.code(304).send();
    return reply.code(status).header('content-type', contentType).send(body);
  }

  function one(req: FastifyRequest, reply: FastifyReply, render: (p: AccountPresence | null) => FastifyReply): unknown {
    const raw = (req.params as { jid: string }).jid;
    const bad = syntaxError(raw);
    if (bad !== null) {
      cors(reply);
      return sendError(reply, 400, 'bad-jid', bad);
    }
    const target = lookup.target(raw);
    return withRequester(req, reply, (who) => {
      const p = lookup.presence(who, target);
      return p instanceof Promise ? p.then(render) : render(p);
    });
  }

  /**
   * Looked up in chunks, yielding between them: a batch of accounts not in memory loads each from the
   * store, and a thousand loads started at once queue behind one another (the SQLite driver's lock
   * wakes every waiter on each release, so the cost grew with the square of the queue) while nothing
   * else is served.
   */
  async function batch(who: Requester, raws: readonly string[]) {
    const presence: Record<string, unknown> = {};
    const forbidden: string[] = [];
    const errors: Record<string, { code: string; message: string }> = {};
    const unique = [...new Set(raws)];
    for (let i = 0; i < unique.length; i += BATCH_CHUNK) {
      if (i > 0) await yieldToLoop();
      const pending: Array<[string, Lookup]> = [];
      for (const raw of unique.slice(i, i + BATCH_CHUNK)) {
        const bad = syntaxError(raw);
        if (bad !== null) errors[raw] = { code: 'bad-jid', message: bad };
        else pending.push([raw, lookup.presence(who, lookup.target(raw))]);
      }
      for (const [raw, l] of pending) {
        const p = l instanceof Promise ? await l : l;
        if (p === null) forbidden.push(raw);
        else presence[raw] = presenceJson(p);
      }
    }
    return { presence, forbidden, errors };
  }

  /** The account proving itself with its password (Basic) or a login token (Bearer). */
  async function userOf(auth: string | undefined, address: string): Promise<string> {
    if (auth !== undefined && /^bearer /i.test(auth)) {
      // A token cannot be guessed, but a stream of bad ones from one address is throttled all the same.
      engine.loginThrottle.check('http', null, address);
      try {
        return await engine.authenticateToken(auth.slice(7).trim(), 'login');
      } catch {
        engine.loginThrottle.failed(null, address);
        throw new AuthFailed('invalid or expired login token');
      }
    }
    if (auth !== undefined && /^basic /i.test(auth)) {
      const who = await resolver.resolve(auth, undefined, undefined, address);
      if (who.kind === 'account') return who.jid;
    }
    throw new AuthFailed('send Basic credentials or a login token (Bearer)');
  }

  const tokenParam = { type: 'string', minLength: 1, maxLength: CREDENTIAL_MAX } as const;
  const oneSchema = { headers: authHeaders, params: jidParams, querystring: { type: 'object', properties: { token: tokenParam } } } as const;
  const badgeSchema = { ...oneSchema, querystring: { type: 'object', properties: { token: tokenParam, label: { type: 'string', maxLength: 1024 } } } } as const;
  const jidItems = { type: 'string', maxLength: JID_MAX } as const;
  // The schemas allow more than the configured bound so that going over it gets the 413 below.
  const getSchema = {
    headers: authHeaders,
    querystring: { type: 'object', properties: { token: tokenParam, jid: listParam(10_000, JID_MAX) } },
  } as const;
  const postSchema = { headers: authHeaders, querystring: getSchema.querystring, body: bodySchema({ jids: { type: 'array', minItems: 1, maxItems: 10_000, items: jidItems } }, ['jids']) } as const;
  const tokenSchema = { headers: authHeaders, body: optionalBody({ ttl: { type: 'integer' } }) } as const;

  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/presence/:jid', { schema: oneSchema }, (req, reply) =>
      one(req, reply, (p) =>
        p === null
          ? (cors(reply), sendError(reply, 403, 'not-allowed', NOT_VISIBLE))
          : sendCached(req, reply, 200, JSON.stringify(presenceJson(p)), 'application/json; charset=utf-8'),
      ),
    );

    app.get('/presence/:jid/badge.svg', { schema: badgeSchema }, (req, reply) => {
      const q = req.query as Record<string, unknown>;
      const given = first(q.label);
      if (given !== undefined && given.length > MAX_LABEL) return sendError(reply, 400, 'bad-request', `"label" is longer than ${MAX_LABEL} characters`);
      const label = given === undefined ? 'presence' : given === '' ? null : given;
      // Hidden and unknown accounts get a 200 "forbidden" badge, not an error, so an embedded badge still draws.
      return one(req, reply, (p) => sendCached(req, reply, 200, badgeSvg(label, p === null ? 'forbidden' : statusWord(p)), 'image/svg+xml; charset=utf-8'));
    });

    app.get('/presence', { schema: getSchema }, (req, reply) => {
      cors(reply);
      const q = req.query as Record<string, unknown>;
      const jids = q.jid === undefined ? [] : Array.isArray(q.jid) ? q.jid : [q.jid];
      if (jids.length === 0) return sendError(reply, 400, 'bad-request', `give 1 to ${maxGet} "jid" parameters`);
      if (jids.length > maxGet) return sendError(reply, 413, 'too-large', `give at most ${maxGet} "jid" parameters (POST /api/v1/presence/batch takes up to ${maxPost})`);
      return withRequester(req, reply, async (who) => reply.header('cache-control', 'private, no-cache').send(await batch(who, jids as string[])));
    });

    app.post('/presence/batch', { schema: postSchema }, (req, reply) => {
      const jids = (req.body as { jids: string[] }).jids;
      if (jids.length > maxPost) return sendError(reply, 413, 'too-large', `at most ${maxPost} JIDs in one batch (http_batch_max); got ${jids.length}`);
      return withRequester(req, reply, async (who) => reply.header('cache-control', 'no-store').send(await batch(who, jids as string[])));
    });

    // A user mints a presence token for itself (to put in <img> URLs) with its password (Basic) or a
    // login token (Bearer); operators can also issue one with POST /api/v1/accounts/{jid}/tokens.
    app.post('/presence/token', { schema: tokenSchema }, async (req, reply) => {
      let jid: string;
      try {
        jid = await userOf(req.headers.authorization, req.ip);
      } catch (e) {
        return sendAuthFailed(reply, e);
      }
      const b = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as { ttl?: unknown };
      const ttl = b.ttl ?? opts.presenceTokenTtlSeconds;
      if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 60 || ttl > MAX_TOKEN_TTL) {
        return sendError(reply, 400, 'bad-request', `ttl must be an integer number of seconds from 60 to ${MAX_TOKEN_TTL}`);
      }
      const t = await engine.issueToken(jid, ttl, PRESENCE_SCOPE);
      return reply.code(201).header('cache-control', 'no-store').send({ jid, token: t.token, scope: PRESENCE_SCOPE, expiresAt: new Date(t.expiresAt).toISOString() });
    });

    for (const url of ['/presence', '/presence/:jid', '/presence/:jid/badge.svg']) app.options(url, preflight);
  };
}
