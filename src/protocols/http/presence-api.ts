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
}

const MAX_GET_BATCH = 100;
const MAX_POST_BATCH = 1000;
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

  /** Runs `then` with the requester, or answers 401 for wrong credentials. */
  function withRequester(req: FastifyRequest, reply: FastifyReply, then: (w: Requester) => unknown): unknown {
    const q = req.query as Record<string, unknown>;
    const who = resolver.resolve(req.headers.authorization, first(q.token), undefined);
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

  async function batch(who: Requester, raws: readonly string[]) {
    const presence: Record<string, unknown> = {};
    const forbidden: string[] = [];
    const errors: Record<string, { code: string; message: string }> = {};
    const pending: Array<[string, Lookup]> = [];
    for (const raw of new Set(raws)) {
      const bad = syntaxError(raw);
      if (bad !== null) errors[raw] = { code: 'bad-jid', message: bad };
      else pending.push([raw, lookup.presence(who, lookup.target(raw))]);
    }
    for (const [raw, l] of pending) {
      const p = l instanceof Promise ? await l : l;
      if (p === null) forbidden.push(raw);
      else presence[raw] = presenceJson(p);
    }
    return { presence, forbidden, errors };
  }

  /** The account proving itself with its password (Basic) or a login token (Bearer). */
  async function userOf(auth: string | undefined): Promise<string> {
    if (auth !== undefined && /^bearer /i.test(auth)) {
      try {
        return await engine.authenticateToken(auth.slice(7).trim(), 'login');
      } catch {
        throw new AuthFailed('invalid or expired login token');
      }
    }
    if (auth !== undefined && /^basic /i.test(auth)) {
      const who = await resolver.resolve(auth, undefined, undefined);
      if (who.kind === 'account') return who.jid;
    }
    throw new AuthFailed('send Basic credentials or a login token (Bearer)');
  }

  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/presence/:jid', (req, reply) =>
      one(req, reply, (p) =>
        p === null
          ? (cors(reply), sendError(reply, 403, 'not-allowed', NOT_VISIBLE))
          : sendCached(req, reply, 200, JSON.stringify(presenceJson(p)), 'application/json; charset=utf-8'),
      ),
    );

    app.get('/presence/:jid/badge.svg', (req, reply) => {
      const q = req.query as Record<string, unknown>;
      const given = first(q.label);
      if (given !== undefined && given.length > MAX_LABEL) return sendError(reply, 400, 'bad-request', `"label" is longer than ${MAX_LABEL} characters`);
      const label = given === undefined ? 'presence' : given === '' ? null : given;
      // Hidden and unknown accounts get a 200 "forbidden" badge, not an error, so an embedded badge still draws.
      return one(req, reply, (p) => sendCached(req, reply, 200, badgeSvg(label, p === null ? 'forbidden' : statusWord(p)), 'image/svg+xml; charset=utf-8'));
    });

    app.get('/presence', (req, reply) => {
      cors(reply);
      const q = req.query as Record<string, unknown>;
      const jids = q.jid === undefined ? [] : Array.isArray(q.jid) ? q.jid : [q.jid];
      if (jids.length === 0 || jids.length > MAX_GET_BATCH) return sendError(reply, 400, 'bad-request', `give 1 to ${MAX_GET_BATCH} "jid" parameters (POST /api/v1/presence/batch takes up to ${MAX_POST_BATCH})`);
      return withRequester(req, reply, async (who) => reply.header('cache-control', 'private, no-cache').send(await batch(who, jids as string[])));
    });

    app.post('/presence/batch', (req, reply) => {
      const b = req.body as { jids?: unknown } | null | undefined;
      const jids = b !== null && typeof b === 'object' ? b.jids : undefined;
      if (!Array.isArray(jids) || jids.length === 0 || jids.length > MAX_POST_BATCH || !jids.every((j) => typeof j === 'string')) {
        return sendError(reply, 400, 'bad-request', `body must be {"jids": [1 to ${MAX_POST_BATCH} strings]}`);
      }
      return withRequester(req, reply, async (who) => reply.header('cache-control', 'no-store').send(await batch(who, jids as string[])));
    });

    // A user mints a presence token for itself (to put in <img> URLs) with its password (Basic) or a
    // login token (Bearer); operators can also issue one with POST /api/v1/accounts/{jid}/tokens.
    app.post('/presence/token', async (req, reply) => {
      let jid: string;
      try {
        jid = await userOf(req.headers.authorization);
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
