import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Rng, randomValue, NASTY_STRINGS } from '../helpers/fuzz.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from '../helpers/server.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20261129);
const REQUESTS = 1500;

/** Every route with the methods it answers; `:jid`, `:file` and `:id` are filled in at random. */
const ROUTES: ReadonlyArray<readonly [string, string]> = [
  ['GET', '/plugins/presence/status'],
  ['POST', '/plugins/presence/status'],
  ['OPTIONS', '/plugins/presence/status'],
  ['GET', '/api/v1/presence/:jid'],
  ['GET', '/api/v1/presence/:jid/badge.svg'],
  ['GET', '/api/v1/presence'],
  ['POST', '/api/v1/presence/batch'],
  ['POST', '/api/v1/presence/token'],
  ['POST', '/api/v1/accounts'],
  ['GET', '/api/v1/accounts'],
  ['DELETE', '/api/v1/accounts/:jid'],
  ['PUT', '/api/v1/accounts/:jid/password'],
  ['GET', '/api/v1/accounts/:jid/presence'],
  ['GET', '/api/v1/accounts/:jid/sessions'],
  ['PATCH', '/api/v1/accounts/:jid/settings'],
  ['POST', '/api/v1/accounts/:jid/tokens'],
  ['POST', '/api/v1/accounts/:jid/notify'],
  ['GET', '/api/v1/push/providers'],
  ['GET', '/api/v1/extensions'],
  ['POST', '/api/v1/extensions/reload'],
  ['POST', '/api/v1/presence/query'],
  ['GET', '/demo/:file'],
  ['GET', '/demo/sdk/:file'],
  ['GET', '/healthz'],
  ['POST', '/api/v1/apps'],
  ['GET', '/api/v1/apps'],
  ['GET', '/api/v1/apps/:id'],
  ['PATCH', '/api/v1/apps/:id'],
  ['DELETE', '/api/v1/apps/:id'],
  ['POST', '/api/v1/apps/:id/secret'],
  ['POST', '/api/v1/apps/:id/webhook-secret'],
  ['POST', '/api/v1/apps/:id/verify'],
  ['GET', '/api/v1/apps/:id/webhook'],
  ['GET', '/api/v1/apps/:id/webhook/deliveries'],
  ['POST', '/api/v1/apps/:id/webhook/replay'],
  ['POST', '/api/v1/apps/:id/webhook/enable'],
  ['GET', '/oauth/authorize'],
  ['POST', '/oauth/authorize'],
  ['POST', '/oauth/login'],
  ['GET', '/oauth/apps'],
  ['POST', '/oauth/apps/revoke'],
  ['POST', '/oauth/logout'],
  ['POST', '/oauth/token'],
  ['POST', '/oauth/revoke'],
  ['GET', '/oauth/userinfo'],
  ['GET', '/.well-known/oauth-authorization-server'],
  ['GET', '/:appid/grant'],
  ['GET', '/api/v1/me/apps'],
  ['DELETE', '/api/v1/me/apps/:id'],
  ['GET', '/:appid/presence.json'],
  ['GET', '/api/v1/apps/:id/presence.json'],
  ['POST', '/api/v1/apps/:id/presence'],
];
const PARAMS = ['client_id', 'redirect_uri', 'code', 'code_verifier', 'grant_type', 'redirect', 'jid', 'req_jid', 'type', 'images', 'domain', 'after', 'limit', 'label', 'token', 'ttl', 'password', 'publicPresence', 'jids', 'style', 'since', 'from', 'to', 'revoked', 'app', 'csrf', 'next'];

/** encodeURIComponent throws on a lone surrogate, which no URL can carry anyway: send U+FFFD instead. */
const enc = (s: string): string => encodeURIComponent(Buffer.from(s, 'utf8').toString('utf8'));
/** A random value as URL text (JSON for anything that is not a string: some have odd prototypes). */
const text = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v) ?? 'undefined');

function pathValue(r: Rng): string {
  const v = r.chance(0.4) ? `u${r.int(4)}@localhost` : text(randomValue(r));
  return enc(v.slice(0, 3000)).replace(/%2F/g, r.chance(0.5) ? '/' : '%2F');
}

function query(r: Rng): string {
  const parts: string[] = [];
  const n = r.int(6);
  for (let i = 0; i < n; i++) {
    const key = r.pick(PARAMS);
    // Repeated keys, empty values and values of every shape: what broke the admin routes before.
    const times = r.chance(0.3) ? 2 + r.int(3) : 1;
    for (let k = 0; k < times; k++) parts.push(`${enc(key)}=${enc(text(r.chance(0.5) ? randomValue(r) : r.pick(['image', 'text', 'xml', 'u1@localhost', '10', '-1', '99999999999'])))}`);
  }
  if (r.chance(0.1)) parts.push(r.pick(['%', '%zz', '&&&', '=x', 'a[b]=c', '__proto__[x]=1']));
  return parts.length ? `?${parts.join('&')}` : '';
}

function body(r: Rng): { body?: string; type?: string } {
  switch (r.int(6)) {
    case 0:
      return {};
    case 1:
      return { body: JSON.stringify(randomValue(r)), type: 'application/json' };
    case 2: {
      const o: Record<string, unknown> = {};
      for (const k of ['jid', 'jids', 'password', 'ttl', 'publicPresence', 'scope', 'name', 'homepage', 'redirectUris', 'webhookUrl', 'presence']) if (r.chance(0.5)) o[k] = randomValue(r);
      return { body: JSON.stringify(o), type: 'application/json' };
    }
    case 3:
      return { body: '{"jids": [' + '"a@b",'.repeat(r.int(50)), type: 'application/json' };
    case 4:
      return { body: query(r).slice(1), type: 'application/x-www-form-urlencoded' };
    default:
      return { body: r.pick(NASTY_STRINGS), type: r.pick(['text/plain', 'application/json', 'application/xml']) };
  }
}

function authHeader(r: Rng): string | undefined {
  switch (r.int(5)) {
    case 0:
      return `Bearer ${ADMIN_TOKEN}`;
    case 1:
      return `Basic ${Buffer.from(`u${r.int(4)}@localhost:${r.chance(0.5) ? 'secret-pw' : 'wrong'}`).toString('base64')}`;
    case 2:
      return r.pick(['Bearer', 'Basic !!!', 'Bearer pd1.x.y', 'Digest x', `Basic ${Buffer.from(text(randomValue(r))).toString('base64')}`]);
    default:
      return undefined;
  }
}

describe('bounded fuzz run of the HTTP API', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
    for (let i = 0; i < 4; i++) await t.createAccount(`u${i}@localhost`);
  });
  after(async () => t.destroy());

  test(`${REQUESTS} random requests (seed ${SEED}) never get a 5xx, and errors are JSON that says what is wrong`, async () => {
    const r = new Rng(SEED);
    const statuses = new Map<number, number>();
    for (let i = 0; i < REQUESTS; i++) {
      const [method, template] = r.pick(ROUTES);
      const path = template.replace(/:jid|:file|:appid|:id/g, () => pathValue(r)) + query(r);
      const b = method === 'GET' || method === 'OPTIONS' ? {} : body(r);
      const headers: Record<string, string> = {};
      const auth = authHeader(r);
      if (auth) headers.authorization = auth;
      if (b.type) headers['content-type'] = b.type;
      const res = await fetch(t.url + path, { method, headers, ...(b.body !== undefined ? { body: b.body } : {}) });
      const text = await res.text();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const what = `seed ${SEED}, request ${i}: ${method} ${path.slice(0, 300)} -> ${res.status} ${text.slice(0, 300)}`;
      assert.ok(res.status < 500, what);
      const type = res.headers.get('content-type') ?? '';
      if (res.status >= 400 && type.startsWith('application/json') && path.startsWith('/oauth/') && typeof JSON.parse(text).error === 'string') {
        // The OAuth endpoints answer in the form OAuth clients read (RFC 6749 §5.2); what Fastify
        // refuses before them (a malformed body) still gets ours.
        const err = JSON.parse(text) as { error?: unknown; error_description?: unknown };
        assert.ok(typeof err.error_description === 'string' && err.error_description.length > 0, what);
      } else if (res.status >= 400 && type.startsWith('application/json')) {
        const err = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
        assert.equal(typeof err.error?.code, 'string', what);
        assert.ok(typeof err.error?.message === 'string' && err.error.message.length > 0, what);
      }
    }
    // The run reached handlers, not only the router's 404.
    const ok = [...statuses].filter(([s]) => s < 300).reduce((n, [, c]) => n + c, 0);
    assert.ok(ok > 50, `seed ${SEED}: statuses ${JSON.stringify([...statuses])}`);
    const health = await fetch(`${t.url}/healthz`);
    assert.equal(health.status, 200);
  });
});
