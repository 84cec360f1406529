import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { controlRequest } from '../../src/control-channel.js';
import { ADMIN_TOKEN, metricSum, startTestServer, type TestServer } from '../helpers/server.js';
import { RequestFailed, TestClient } from '../helpers/ws-client.js';

/**
 * Issue 10, adversarial findings 5 (tokens outlive their account), 6 (cold-path timing of anonymous
 * probes), 7 (unvalidated input crashing routes) and 8 (batches stalling the loop), and a leak matrix
 * over every HTTP presence endpoint and every requester relation.
 */

const basic = (jid: string, pw: string): string => `Basic ${Buffer.from(`${jid}:${pw}`).toString('base64')}`;

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
}

async function call(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, { redirect: 'manual', ...init });
  const body = Buffer.from(await res.arrayBuffer());
  const headers: Record<string, string> = {};
  res.headers.forEach((v, k) => {
    if (k !== 'date' && k !== 'keep-alive' && k !== 'connection') headers[k] = v;
  });
  return { status: res.status, headers, body, text: body.toString('utf8') };
}

/** A counter over the whole server: under TEST_CLUSTER, what every node counted. */
function metricValue(t: TestServer, name: string): Promise<number> {
  return metricSum(t, name);
}

describe('HTTP and authentication hardening (issue 10)', () => {
  let t: TestServer;

  before(async () => {
    t = await startTestServer({ http_batch_max: 1000 });
  });
  after(async () => {
    await t.destroy();
  });

  // ------------------------------------------------------------------------------- finding 5

  test('finding 5: login and presence tokens die with their account (deleted by REST or CLI, then re-created)', async () => {
    await t.createAccount('watched@localhost');
    for (const how of ['rest', 'cli'] as const) {
      const jid = `reborn-${how}@localhost`;
      await t.createAccount(jid, 'first-pw');
      const login = (await t.admin('POST', `/accounts/${jid}/tokens`, {})).body.token as string;
      const minted = await call(`${t.url}/api/v1/presence/token`, { method: 'POST', headers: { authorization: basic(jid, 'first-pw') } });
      assert.equal(minted.status, 201);
      const presence = JSON.parse(minted.text).token as string;
      const viaPresenceToken = () => call(`${t.url}/api/v1/presence/watched@localhost?token=${encodeURIComponent(presence)}`);
      const viaLoginToken = async (): Promise<string> => {
        const c = await TestClient.connect(t.wsUrl);
        try {
          return (await c.request('auth', { token: login })).jid as string;
        } catch (e) {
          return e instanceof RequestFailed ? e.error.code : String(e);
        } finally {
          await c.close();
        }
      };
      assert.equal(await viaLoginToken(), jid, 'the login token works while its account lives');
      assert.equal((await viaPresenceToken()).status, 403, 'the presence token proves its account (which may not see watched)');

      if (how === 'rest') assert.equal((await t.admin('DELETE', `/accounts/${jid}`)).status, 204);
      else assert.deepEqual(await controlRequest(t.dataDir, { op: 'account.remove', jid }), { ok: true, jid, removed: true });
      await t.createAccount(jid, 'second-pw');

      assert.equal(await viaLoginToken(), 'auth-failed', `${how}: the old login token does not log into the new account`);
      assert.equal((await viaPresenceToken()).status, 401, `${how}: the old presence token does not prove the new account`);
      const reMint = await call(`${t.url}/api/v1/presence/token`, { method: 'POST', headers: { authorization: `Bearer ${login}` } });
      assert.equal(reMint.status, 401, `${how}: nor can it mint new tokens`);
    }
  });

  test('finding 5: a token of the old format (no account generation) is refused', async () => {
    await t.createAccount('legacy@localhost');
    const secret = Buffer.from(readFileSync(join(t.dataDir, 'token-secret'), 'utf8').trim(), 'base64');
    const now = Date.now();
    const body = Buffer.from(JSON.stringify({ sub: 'legacy@localhost', iat: now, exp: now + 600_000, scope: 'login' })).toString('base64url');
    const token = `pd1.${body}.${createHmac('sha256', secret).update(`pd1.${body}`).digest('base64url')}`;
    const c = await TestClient.connect(t.wsUrl);
    await assert.rejects(c.request('auth', { token }), (e: unknown) => e instanceof RequestFailed && e.error.code === 'auth-failed');
    await c.close();
  });

  // ------------------------------------------------------------------------------- finding 6

  test('finding 6: anonymous probes of a non-public account (online, offline) or an unknown JID never load anything', async () => {
    await t.createAccount('shy@localhost');
    await t.createAccount('shy-offline@localhost');
    await t.createAccount('open@localhost');
    assert.equal((await t.admin('PATCH', '/accounts/open@localhost/settings', { publicPresence: true })).status, 200);
    const { client: shy } = await TestClient.login(t.wsUrl, 'shy@localhost');
    await shy.request('presence', { show: 'dnd', status: 'hidden but here' });
    const { client: gone } = await TestClient.login(t.wsUrl, 'shy-offline@localhost');
    await gone.close();
    // Hidden explicitly, too: a stored choice of false is the same as the default.
    assert.equal((await t.admin('PATCH', '/accounts/shy-offline@localhost/settings', { publicPresence: false })).status, 200);

    const loads0 = await metricValue(t, 'presenced_account_loads_total');
    for (let i = 0; i < 20; i++) {
      // Never seen before, each round: the cold path the finding measured.
      for (const jid of ['shy@localhost', 'shy-offline@localhost', `ghost-${i}@localhost`]) {
        const q = encodeURIComponent(jid);
        await call(`${t.url}/plugins/presence/status?jid=${q}&type=text`); // the fast path
        await call(`${t.url}/plugins/presence/status`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `jid=${q}&type=xml` });
        await call(`${t.url}/api/v1/presence/${q}`);
        await call(`${t.url}/api/v1/presence/${q}/badge.svg`);
        await call(`${t.url}/api/v1/presence?jid=${q}&jid=ghost-b-${i}@localhost`);
      }
    }
    assert.equal(await metricValue(t, 'presenced_account_loads_total'), loads0,
      'a hidden account, online or not, and an unknown JID are answered from memory: no store read, no cache change to time');

    // The counter does count: a public account is loaded to be answered, and so is anything an account asks about.
    assert.equal(JSON.parse((await call(`${t.url}/api/v1/presence/open@localhost`)).text).show, 'offline');
    assert.ok((await metricValue(t, 'presenced_account_loads_total')) > loads0);
    await shy.close();
  });

  // ------------------------------------------------------------------------------- finding 8

  test('finding 8: batches are bounded by http_batch_max (413 with a JSON error)', async () => {
    const jids = Array.from({ length: 1001 }, (_, i) => `many-${i}@localhost`);
    const post = await call(`${t.url}/api/v1/presence/batch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jids }) });
    assert.equal(post.status, 413);
    assert.equal(JSON.parse(post.text).error.code, 'too-large');
    assert.match(JSON.parse(post.text).error.message, /at most 1000 JIDs/);
    const get = await call(`${t.url}/api/v1/presence?${jids.slice(0, 101).map((j) => `jid=${j}`).join('&')}`);
    assert.equal(get.status, 413);
    assert.equal(JSON.parse(get.text).error.code, 'too-large');
  });

  test('finding 8: a batch of never-seen JIDs costs one load per JID at most, and lets the event loop run between chunks', async () => {
    const fresh = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `never-${tag}-${i}@localhost`);
    const batch = (jids: string[], auth?: string) =>
      call(`${t.url}/api/v1/presence/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
        body: JSON.stringify({ jids }),
      });

    let loads = await metricValue(t, 'presenced_account_loads_total');
    const anon = await batch(fresh('anon', 1000));
    assert.equal(anon.status, 200);
    assert.equal(JSON.parse(anon.text).forbidden.length, 1000);
    assert.equal(await metricValue(t, 'presenced_account_loads_total'), loads, 'anonymous: nothing loaded at all');

    // The operator's view loads every account it is asked about: exactly one load each, so the work is linear.
    loads = await metricValue(t, 'presenced_account_loads_total');
    const admin = await batch(fresh('admin', 1000), `Bearer ${ADMIN_TOKEN}`);
    assert.equal(admin.status, 200);
    assert.equal(await metricValue(t, 'presenced_account_loads_total'), loads + 1000);

    // While a large batch runs, the loop keeps turning (the server runs in this process, so a ticker
    // here sees what /healthz would): no turn may take a large share of the batch's time. Before the
    // fix the whole batch ran as one chain of microtasks and one turn took all of it.
    let last = performance.now();
    let longest = 0;
    let ticking = true;
    const tick = (): void => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
      if (ticking) setImmediate(tick);
    };
    const started = performance.now();
    const running = batch(fresh('loop', 1000), `Bearer ${ADMIN_TOKEN}`);
    const health = fetch(`${t.url}/healthz`).then(() => performance.now());
    setImmediate(tick);
    const done = await running;
    const finished = performance.now();
    ticking = false;
    assert.equal(done.status, 200);
    assert.ok((await health) < finished, '/healthz is answered while the batch runs');
    assert.ok(longest < (finished - started) / 2, `longest loop turn ${longest.toFixed(1)} ms of a ${(finished - started).toFixed(1)} ms batch`);
  });
});

// --------------------------------------------------------------------------------- finding 7

/** Every route, as `METHOD path`; the test checks it against the routes the server registered. */
const ROUTES = [
  'GET /healthz',
  'GET /metrics',
  'POST /api/v1/accounts',
  'GET /api/v1/accounts',
  'DELETE /api/v1/accounts/:jid',
  'PUT /api/v1/accounts/:jid/password',
  'GET /api/v1/accounts/:jid/presence',
  'GET /api/v1/accounts/:jid/sessions',
  'PATCH /api/v1/accounts/:jid/settings',
  'POST /api/v1/accounts/:jid/tokens',
  'POST /api/v1/accounts/:jid/notify',
  'GET /api/v1/push/providers',
  'GET /api/v1/extensions',
  'POST /api/v1/extensions/reload',
  'GET /api/v1/presence',
  'OPTIONS /api/v1/presence',
  'POST /api/v1/presence/query',
  'POST /api/v1/presence/batch',
  'POST /api/v1/presence/token',
  'GET /api/v1/presence/:jid',
  'OPTIONS /api/v1/presence/:jid',
  'GET /api/v1/presence/:jid/badge.svg',
  'OPTIONS /api/v1/presence/:jid/badge.svg',
  'GET /demo',
  'GET /demo/',
  'GET /demo/sdk/:file',
  'GET /demo/:file',
  'GET /plugins/presence/status',
  'POST /plugins/presence/status',
  'OPTIONS /plugins/presence/status',
  'POST /api/v1/apps',
  'GET /api/v1/apps',
  'GET /api/v1/apps/:id',
  'PATCH /api/v1/apps/:id',
  'DELETE /api/v1/apps/:id',
  'POST /api/v1/apps/:id/secret',
  'POST /api/v1/apps/:id/webhook-secret',
  'POST /api/v1/apps/:id/verify',
  'GET /api/v1/apps/:id/webhook',
  'GET /api/v1/apps/:id/webhook/deliveries',
  'POST /api/v1/apps/:id/webhook/replay',
  'POST /api/v1/apps/:id/webhook/enable',
  'GET /oauth/authorize',
  'POST /oauth/authorize',
  'POST /oauth/login',
  'GET /oauth/apps',
  'POST /oauth/apps/revoke',
  'POST /oauth/logout',
  'POST /oauth/token',
  'POST /oauth/revoke',
  'GET /oauth/userinfo',
  'GET /.well-known/oauth-authorization-server',
  'GET /:appid/grant',
  'GET /api/v1/me/apps',
  'DELETE /api/v1/me/apps/:id',
  'GET /:appid/presence.json',
  'GET /api/v1/apps/:id/presence.json',
  'POST /api/v1/apps/:id/presence',
];

/** Parses Fastify's printRoutes({ commonPrefix: false }) tree into `METHOD path` lines (HEAD left out: Fastify adds it to every GET). */
function registeredRoutes(tree: string): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of tree.split('\n')) {
    const at = line.indexOf('── ');
    if (at < 0) continue;
    const depth = Math.round((at - 1) / 4);
    const m = /^(\S*)(?: \(([^)]*)\))?/.exec(line.slice(at + 3)) as RegExpExecArray;
    stack.length = depth;
    const path = (depth > 0 ? (stack[depth - 1] ?? '') : '') + (m[1] ?? '');
    stack.push(path);
    for (const method of (m[2] ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '' && s !== 'HEAD')) out.push(`${method} ${path}`);
  }
  return out;
}

const PARAM_NAMES = [
  'jid', 'domain', 'after', 'limit', 'token', 'label', 'type', 'req_jid', 'format', 'scale', 'images',
  'available', 'chat', 'away', 'xa', 'dnd', 'offline', 'forbidden', 'ttl', 'scope',
];
const BODY_FIELDS = ['jid', 'password', 'jids', 'ttl', 'scope', 'publicPresence', 'type', 'token', 'req_jid', 'images'];

describe('finding 7: every route validates its input (no 5xx from repeated, mistyped or oversized values)', () => {
  let t: TestServer;

  before(async () => {
    // Throttling off: this walk sends wrong credentials by the hundred on purpose.
    t = await startTestServer({ login_throttle_max_delay_ms: 0 });
    await t.createAccount('alice@localhost');
  });
  after(async () => {
    await t.destroy();
  });

  test('the reported crashes: repeated domain and after on GET /api/v1/accounts are 400s with a JSON error', async () => {
    for (const q of ['domain=a&domain=b', 'after=a&after=b', 'limit=5&limit=6', 'limit=abc', 'limit=0']) {
      const r = await t.admin('GET', `/accounts?${q}`);
      assert.equal(r.status, 400, q);
      assert.equal(r.body.error.code, 'bad-request', q);
      assert.ok(r.body.error.message.length > 0, q);
    }
    const ok = await t.admin('GET', '/accounts?domain=localhost&after=a&limit=5');
    assert.equal(ok.status, 200);
  });

  test('the test knows every registered route', () => {
    const registered = registeredRoutes(t.server.http.printRoutes({ commonPrefix: false }));
    assert.deepEqual([...registered].sort(), [...ROUTES].sort(), 'a new route must be added to ROUTES (and so get walked)');
  });

  test('walk: every route, with and without credentials, never answers 5xx', async () => {
    const big = 'x'.repeat(8000);
    const failures: string[] = [];
    let requests = 0;
    const bodies: Array<[string, string]> = [
      ['application/json', '{}'],
      ['application/json', '[]'],
      ['application/json', 'null'],
      ['application/json', '"a string"'],
      ['application/json', '123'],
      ['application/json', '{'],
      ['application/json', JSON.stringify(Object.fromEntries(BODY_FIELDS.map((f) => [f, [1, 2]])))],
      ['application/json', JSON.stringify(Object.fromEntries(BODY_FIELDS.map((f) => [f, { nested: true }])))],
      ['application/json', JSON.stringify(Object.fromEntries(BODY_FIELDS.map((f) => [f, 12.5])))],
      ['application/json', JSON.stringify(Object.fromEntries(BODY_FIELDS.map((f) => [f, big])))],
      ['application/json', JSON.stringify({ jids: Array.from({ length: 20_000 }, (_, i) => `j${i}@localhost`) })],
      ['application/json', JSON.stringify({ jids: ['a@localhost', 7, null] })],
      ['application/x-www-form-urlencoded', PARAM_NAMES.map((n) => `${n}=a&${n}=b`).join('&')],
      ['application/x-www-form-urlencoded', `jid=${big}&images=${big}`],
      ['text/plain', 'hello'],
    ];
    const queries = [
      PARAM_NAMES.map((n) => `${n}=a&${n}=b`).join('&'),
      PARAM_NAMES.map((n) => `${n}=`).join('&'),
      'limit=-1&ttl=1e99&scale=3&format=gif&type=nope&jid=%00',
      'jid=a%40localhost&jid=b%40localhost&jid=c%40localhost',
      PARAM_NAMES.map((n) => `${n}[a]=1&${n}[b]=2`).join('&'),
      ...['jid', 'domain', 'after', 'token', 'label', 'images'].map((n) => `${n}=${big}`),
    ];
    // Credentials that fail fast (a wrong password costs an scrypt each, and is covered elsewhere).
    const auths = [undefined, `Bearer ${ADMIN_TOKEN}`, 'Basic Zm9v', 'Bearer', `Basic ${big}`];
    for (const route of ROUTES) {
      const [method, pattern] = route.split(' ') as [string, string];
      for (const jid of ['alice@localhost', encodeURIComponent(big.slice(0, 4000)), '%E0%A4%A', 'a%00b']) {
        if (!pattern.includes(':') && jid !== 'alice@localhost') continue;
        const path = pattern.replace(':jid', jid).replace(':id', jid).replace(':file', jid === 'alice@localhost' ? 'index.html' : jid);
        for (const auth of auths) {
          const sends: Array<[string, RequestInit]> = queries.map((q) => [`${path}?${q}`, { method }]);
          if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
            for (const [type, body] of bodies) sends.push([path, { method, headers: { 'content-type': type }, body }]);
          }
          for (const [url, init] of sends) {
            const headers = { ...(init.headers as Record<string, string> | undefined), ...(auth ? { authorization: auth } : {}) };
            // Only the routes that delete or change accounts are walked without the admin token, so alice survives.
            if (auth === `Bearer ${ADMIN_TOKEN}` && (method === 'DELETE' || method === 'PUT')) continue;
            const r = await call(`${t.url}${url}`, { ...init, headers });
            requests++;
            if (r.status >= 500) failures.push(`${method} ${url.slice(0, 80)} [${auth?.slice(0, 20)}]: ${r.status} ${r.text.slice(0, 160)}`);
            else if (r.status >= 400 && (r.headers['content-type'] ?? '').startsWith('application/json') && url.startsWith('/oauth/') && typeof JSON.parse(r.text).error === 'string') {
              // The OAuth endpoints answer in the form OAuth clients read (RFC 6749 §5.2); what Fastify
              // refuses before them (a malformed body) still gets ours.
              const o = JSON.parse(r.text);
              if (typeof o.error_description !== 'string') failures.push(`${method} ${url.slice(0, 80)}: ${r.status} without an OAuth error: ${r.text.slice(0, 160)}`);
            } else if (r.status >= 400 && (r.headers['content-type'] ?? '').startsWith('application/json')) {
              const e = JSON.parse(r.text).error;
              if (typeof e?.code !== 'string' || typeof e?.message !== 'string' || typeof JSON.parse(r.text).code === 'string') {
                failures.push(`${method} ${url.slice(0, 80)}: ${r.status} without our JSON error: ${r.text.slice(0, 160)}`);
              }
            }
          }
        }
      }
    }
    assert.deepEqual(failures.slice(0, 10), [], `${failures.length} of ${requests} requests failed`);
    assert.ok(requests > 1000, `walked ${requests} requests`);
    // And the server is still well.
    assert.equal((await call(`${t.url}/healthz`)).status, 200);
    assert.equal((await t.admin('GET', '/accounts/alice@localhost/presence')).status, 200);
  });
});

// --------------------------------------------------------------------------------- leak matrix

const RELATIONS = ['anonymous', 'none', 'pending', 'to', 'from', 'both', 'blocked', 'blocker', 'admin'] as const;
type Relation = (typeof RELATIONS)[number];
const TARGETS = ['online', 'offline', 'hidden', 'never'] as const;
type Target = (typeof TARGETS)[number];

/** Who may see what: public targets (online, offline) to all but blocked relations; the hidden one to subscribers and the admin. */
function maysee(rel: Relation, target: Target): boolean {
  if (target === 'never') return false;
  if (rel === 'admin') return true;
  if (rel === 'blocked' || rel === 'blocker') return false;
  if (target === 'hidden') return rel === 'to' || rel === 'both';
  return true;
}

describe('leak matrix over HTTP: what a requester may not see is byte-identical to a never-existing account', () => {
  let t: TestServer;
  const clients: TestClient[] = [];
  const tokens = new Map<Relation, string>();
  const targetJid = (target: Target): string => `target-${target}@localhost`;

  before(async () => {
    t = await startTestServer();
    for (const target of ['online', 'offline', 'hidden'] as const) await t.createAccount(targetJid(target));
    for (const target of ['online', 'offline'] as const) {
      assert.equal((await t.admin('PATCH', `/accounts/${targetJid(target)}/settings`, { publicPresence: true })).status, 200);
    }
    const login = async (jid: string): Promise<TestClient> => {
      const { client } = await TestClient.login(t.wsUrl, jid);
      clients.push(client);
      return client;
    };
    const targets = new Map<string, TestClient>();
    const viewers = new Map<Relation, TestClient>();
    for (const target of ['online', 'offline', 'hidden'] as const) {
      const c = await login(targetJid(target));
      await c.request('presence', { show: 'away', status: `status of ${target}` });
      targets.set(targetJid(target), c);
    }
    for (const rel of RELATIONS) {
      if (rel === 'anonymous' || rel === 'admin') continue;
      const vj = `viewer-${rel}@localhost`;
      await t.createAccount(vj);
      const v = await login(vj);
      viewers.set(rel, v);
      for (const [tj, tc] of targets) {
        if (rel === 'pending' || rel === 'to' || rel === 'both' || rel === 'blocked' || rel === 'blocker') {
          await v.request('subscribe', { jid: tj });
          if (rel !== 'pending') await tc.request('approve', { jid: vj });
        }
        if (rel === 'from' || rel === 'both' || rel === 'blocked' || rel === 'blocker') {
          await tc.request('subscribe', { jid: vj });
          await v.request('approve', { jid: tj });
        }
        if (rel === 'blocked') await tc.request('block', { jid: vj });
        if (rel === 'blocker') await v.request('block', { jid: tj });
      }
      const issued = await t.admin('POST', `/accounts/${vj}/tokens`, { scope: 'presence', ttl: 3600 });
      assert.equal(issued.status, 201);
      tokens.set(rel, issued.body.token as string);
    }
    // The offline target leaves; a subscriber sees it go.
    await (targets.get(targetJid('offline')) as TestClient).close();
    await (viewers.get('both') as TestClient).presenceOf(targetJid('offline'), (p) => p.online === false);
    const offline = await t.admin('GET', `/accounts/${targetJid('offline')}/presence`);
    assert.equal(offline.body.online, false);
    assert.equal(offline.body.status, 'status of offline');
  });
  after(async () => {
    for (const c of clients) await c.close();
    await t.destroy();
  });

  /** The endpoints, each a function of the target JID and the requester's credentials. */
  const ENDPOINTS: Record<string, (jid: string, auth: Record<string, string>, token: string | null) => [string, RequestInit]> = {
    'status image': (jid, auth, token) => [`/plugins/presence/status?jid=${encodeURIComponent(jid)}${token ? `&token=${encodeURIComponent(token)}` : ''}`, { headers: auth }],
    'status image svg': (jid, auth, token) => [`/plugins/presence/status?jid=${encodeURIComponent(jid)}&format=svg${token ? `&token=${encodeURIComponent(token)}` : ''}`, { headers: auth }],
    'status text': (jid, auth, token) => [`/plugins/presence/status?jid=${encodeURIComponent(jid)}&type=text${token ? `&token=${encodeURIComponent(token)}` : ''}`, { headers: auth }],
    'status xml': (jid, auth, token) => [`/plugins/presence/status?jid=${encodeURIComponent(jid)}&type=xml${token ? `&token=${encodeURIComponent(token)}` : ''}`, { headers: auth }],
    'status json': (jid, auth, token) => [`/plugins/presence/status?jid=${encodeURIComponent(jid)}&type=json${token ? `&token=${encodeURIComponent(token)}` : ''}`, { headers: auth }],
    'status POST form': (jid, auth, token) => [
      '/plugins/presence/status',
      { method: 'POST', headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' }, body: `jid=${encodeURIComponent(jid)}&type=text${token ? `&token=${encodeURIComponent(token)}` : ''}` },
    ],
    'JSON presence API': (jid, auth, token) => [`/api/v1/presence/${encodeURIComponent(jid)}${token ? `?token=${encodeURIComponent(token)}` : ''}`, { headers: auth }],
    badge: (jid, auth, token) => [`/api/v1/presence/${encodeURIComponent(jid)}/badge.svg${token ? `?token=${encodeURIComponent(token)}` : ''}`, { headers: auth }],
    'batch GET': (jid, auth, token) => [`/api/v1/presence?jid=${encodeURIComponent(jid)}${token ? `&token=${encodeURIComponent(token)}` : ''}`, { headers: auth }],
    'batch POST': (jid, auth, token) => [
      `/api/v1/presence/batch${token ? `?token=${encodeURIComponent(token)}` : ''}`,
      { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ jids: [jid] }) },
    ],
  };

  test('every endpoint × every relation × every target', async () => {
    let compared = 0;
    for (const rel of RELATIONS) {
      const auth: Record<string, string> = rel === 'admin' ? { authorization: `Bearer ${ADMIN_TOKEN}` } : {};
      const token = rel === 'anonymous' || rel === 'admin' ? null : (tokens.get(rel) as string);
      for (const [name, endpoint] of Object.entries(ENDPOINTS)) {
        const ask = async (jid: string): Promise<Answer> => {
          const [path, init] = endpoint(jid, auth, token);
          const a = await call(`${t.url}${path}`, init);
          // A batch names the JID it was asked about; everything else about the answer must match.
          return { ...a, text: a.text.replaceAll(jid, '<JID>'), body: Buffer.from(a.text.replaceAll(jid, '<JID>')), headers: { ...a.headers, etag: '', 'content-length': '' } };
        };
        const never = await ask(targetJid('never'));
        assert.ok(never.status < 500, `${name} as ${rel}: ${never.status}`);
        for (const target of TARGETS) {
          const a = await ask(targetJid(target));
          const where = `${name}, requester ${rel}, target ${target}`;
          if (maysee(rel, target)) {
            assert.notDeepEqual(a.body, never.body, `${where}: a visible account must not look like a never-existing one`);
          } else {
            assert.equal(a.status, never.status, where);
            assert.deepEqual(a.headers, never.headers, where);
            assert.equal(a.text, never.text, where);
            compared++;
          }
        }
      }
    }
    assert.ok(compared > 100, `compared ${compared} hidden answers`);
  });
});

describe('shutdown is not held by HTTP connections', () => {
  test('a connection that never sends a request, and one that sent half a request, are cut and the server stops', { timeout: 30_000 }, async () => {
    const t = await startTestServer();
    const { port, hostname } = new URL(t.url);
    const open = async (first: string): Promise<Socket> => {
      const s = connect(Number(port), hostname);
      await new Promise((r) => s.once('connect', r));
      if (first !== '') s.write(first);
      return s;
    };
    const silent = await open('');
    const half = await open('GET /health HTTP/1.1\r\nHost: x\r\n');
    const closed = Promise.all([silent, half].map((s) => new Promise((r) => s.once('close', r))));
    // Without the cut, Node's HTTP server waits for such connections until its header timeout (a minute).
    await t.destroy();
    await closed;
    assert.ok(silent.destroyed && half.destroyed);
  });
});
