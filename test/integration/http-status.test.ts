import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN, metricSum, startTestServer, type TestServer } from '../helpers/server.js';
import { TestClient } from '../helpers/ws-client.js';

const ASSETS = new URL('../../assets/status/', import.meta.url);
const asset = (name: string): Buffer => readFileSync(new URL(name, ASSETS));
const WORDS = ['available', 'chat', 'away', 'xa', 'dnd', 'offline', 'forbidden'] as const;
const DEFAULT_TEXT: Record<string, string> = {
  available: 'Available',
  chat: 'Free to chat',
  away: 'Away',
  xa: 'Extended away',
  dnd: 'Do not disturb',
  offline: 'Unavailable',
  forbidden: 'Forbidden',
};

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
}

const basic = (jid: string, pw = 'secret-pw'): string => `Basic ${Buffer.from(`${jid}:${pw}`).toString('base64')}`;

describe('HTTP presence: /plugins/presence/status and /api/v1/presence', () => {
  let t: TestServer;
  let pub: TestClient; // public account whose status the tests change
  let watcher: TestClient; // subscribed to pub, to learn when pub has gone offline
  let alice: TestClient; // private account
  let bob: TestClient; // subscribed to alice (alice's item for bob has `from`)

  async function get(path: string, headers: Record<string, string> = {}, init: RequestInit = {}): Promise<Answer> {
    const res = await fetch(t.url + path, { redirect: 'manual', headers, ...init });
    const body = Buffer.from(await res.arrayBuffer());
    const h: Record<string, string> = {};
    res.headers.forEach((v, k) => {
      if (k !== 'date' && k !== 'keep-alive' && k !== 'connection') h[k] = v;
    });
    return { status: res.status, headers: h, body, text: body.toString('utf8') };
  }
  const status = (query: string, headers: Record<string, string> = {}): Promise<Answer> => get(`/plugins/presence/status?${query}`, headers);

  async function befriend(from: TestClient, fromJid: string, to: TestClient, toJid: string): Promise<void> {
    await from.request('subscribe', { jid: toJid });
    await to.request('approve', { jid: fromJid });
    await from.presenceOf(toJid);
  }

  before(async () => {
    t = await startTestServer();
    for (const u of ['pub', 'watcher', 'alice', 'bob', 'carol']) await t.createAccount(`${u}@localhost`);
    assert.equal((await t.admin('PATCH', '/accounts/pub@localhost/settings', { publicPresence: true })).status, 200);
    ({ client: pub } = await TestClient.login(t.wsUrl, 'pub@localhost', 'secret-pw', { resource: 'r1' }));
    ({ client: watcher } = await TestClient.login(t.wsUrl, 'watcher@localhost'));
    ({ client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost'));
    ({ client: bob } = await TestClient.login(t.wsUrl, 'bob@localhost'));
    await pub.request('presence', { show: 'available' });
    await alice.request('presence', { show: 'dnd', status: 'in a meeting' });
    await befriend(watcher, 'watcher@localhost', pub, 'pub@localhost');
    await befriend(bob, 'bob@localhost', alice, 'alice@localhost');
  });
  after(async () => {
    for (const c of [pub, watcher, alice, bob]) await c?.close();
    await t.destroy();
  });

  test('every status word, in every type, for a public account asked anonymously', async () => {
    for (const show of ['available', 'chat', 'away', 'xa', 'dnd'] as const) {
      await pub.request('presence', { show });
      const text = await status('jid=pub@localhost&type=text');
      assert.equal(text.status, 200);
      assert.equal(text.headers['content-type'], 'text/plain; charset=utf-8');
      assert.equal(text.text, DEFAULT_TEXT[show], show);
      const json = JSON.parse((await status('jid=pub@localhost&type=json')).text);
      assert.deepEqual(json, { jid: 'pub@localhost', online: true, show, status: null, priority: 0, lastSeen: null });
      const xml = await status('jid=pub@localhost&type=xml');
      assert.equal(xml.headers['content-type'], 'text/xml; charset=utf-8');
      const showEl = show === 'available' ? '' : `<show>${show}</show>`;
      assert.equal(xml.text, `<presence from='pub@localhost'>${showEl}<priority>0</priority></presence>`);
      // The default type is image: a PNG for clients that do not ask for SVG, the bytes of that status.
      const img = await status('jid=pub@localhost');
      assert.equal(img.headers['content-type'], 'image/png');
      assert.deepEqual(img.body, asset(`${show}.png`), show);
      const svg = await status('jid=pub@localhost', { accept: 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8' });
      assert.equal(svg.headers['content-type'], 'image/svg+xml');
      assert.deepEqual(svg.body, asset(`${show}.svg`));
      assert.deepEqual((await status('jid=pub@localhost&format=png&scale=2')).body, asset(`${show}@2x.png`));
    }

    await pub.request('presence', { show: 'away', status: "out <for> lunch & 'back' soon" });
    assert.equal((await status('jid=PUB@LocalHost&type=text')).text, "out <for> lunch & 'back' soon");
    assert.equal(
      (await status('jid=pub@localhost&type=xml')).text,
      "<presence from='pub@localhost'><show>away</show><status>out &lt;for&gt; lunch &amp; &apos;back&apos; soon</status><priority>0</priority></presence>",
    );

    // Offline: the last status is kept in xml and json, with when it was last seen.
    await pub.close();
    await watcher.presenceOf('pub@localhost', (p) => p.online === false);
    assert.equal((await status('jid=pub@localhost&type=text')).text, 'Unavailable');
    const json = JSON.parse((await status('jid=pub@localhost&type=json')).text);
    assert.equal(json.show, 'offline');
    assert.equal(json.online, false);
    assert.equal(json.status, "out <for> lunch & 'back' soon");
    assert.ok(Date.parse(json.lastSeen) > 0);
    const xml = (await status('jid=pub@localhost&type=xml')).text;
    assert.match(xml, /^<presence from='pub@localhost' type='unavailable'><status>out &lt;for&gt; lunch &amp; &apos;back&apos; soon<\/status><delay xmlns='urn:xmpp:delay' stamp='[0-9T:.Z-]+'\/><\/presence>$/);
    assert.deepEqual((await status('jid=pub@localhost')).body, asset('offline.png'));
    ({ client: pub } = await TestClient.login(t.wsUrl, 'pub@localhost', 'secret-pw', { resource: 'r1' }));
    await pub.request('presence', { show: 'available' });
  });

  test('images and per-status parameters answer with redirects, never fetched; only http(s) accepted', async () => {
    await pub.request('presence', { show: 'xa' });
    const tpl = encodeURIComponent('https://img.example.com/set/--IMAGE--.gif');
    const r = await status(`jid=pub@localhost&images=${tpl}`);
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, 'https://img.example.com/set/xa.gif');
    // A per-status URL wins for its status; the template still serves the others.
    const per = await status(`jid=pub@localhost&images=${tpl}&xa=${encodeURIComponent('http://other.example/x.png')}&dnd=${encodeURIComponent('http://other.example/d.png')}`);
    assert.equal(per.headers.location, 'http://other.example/x.png');
    const onlyDnd = await status(`jid=pub@localhost&images=${tpl}&dnd=${encodeURIComponent('http://other.example/d.png')}`);
    assert.equal(onlyDnd.headers.location, 'https://img.example.com/set/xa.gif');
    // Without a template, a status with no override gets the default image.
    const noOverride = await status(`jid=pub@localhost&dnd=${encodeURIComponent('http://other.example/d.png')}`);
    assert.equal(noOverride.status, 200);
    assert.deepEqual(noOverride.body, asset('xa.png'));
    // Forbidden is a status word like the others.
    const forb = await status(`jid=alice@localhost&images=${tpl}&forbidden=${encodeURIComponent('https://x.example/no.png')}`);
    assert.equal(forb.headers.location, 'https://x.example/no.png');
    assert.equal((await status(`jid=alice@localhost&images=${tpl}`)).headers.location, 'https://img.example.com/set/forbidden.gif');

    for (const bad of [
      `images=${encodeURIComponent('file:///etc/--IMAGE--')}`,
      `images=${encodeURIComponent('javascript:alert(1)//--IMAGE--')}`,
      `images=${encodeURIComponent('https://img.example.com/no-token.gif')}`,
      `images=${encodeURIComponent('/relative/--IMAGE--.gif')}`,
      `away=${encodeURIComponent('gopher://x.example/')}`,
      `chat=not%20a%20url`,
    ]) {
      const res = await status(`jid=pub@localhost&${bad}`);
      assert.equal(res.status, 400, bad);
      assert.equal(res.headers['content-type'], 'application/json; charset=utf-8');
      assert.equal(JSON.parse(res.text).error.code, 'bad-request');
    }
  });

  test('bad parameters get a 400 JSON error', async () => {
    for (const q of ['', 'type=text', 'jid=', 'jid=pub@localhost&type=html', 'jid=pub@localhost&format=gif', 'jid=pub@localhost&scale=3']) {
      const res = await status(q);
      assert.equal(res.status, 400, q);
      assert.equal(JSON.parse(res.text).error.code, 'bad-request', q);
    }
  });

  test('forbidden answers are byte-identical whatever the reason (hidden, unproven req_jid, non-subscriber, unknown, remote, malformed)', async () => {
    const cases: Array<[string, string, Record<string, string>]> = [
      ['private account, no req_jid', 'jid=alice@localhost', {}],
      ['unproven req_jid of a subscriber', 'jid=alice@localhost&req_jid=bob@localhost', {}],
      ['proven non-subscriber (Basic)', 'jid=alice@localhost&req_jid=carol@localhost', { authorization: basic('carol@localhost') }],
      ['unknown user', 'jid=nobody@localhost', {}],
      ['unknown user with req_jid', 'jid=nobody@localhost&req_jid=bob@localhost', {}],
      ['remote domain', 'jid=alice@elsewhere.example', {}],
      ['malformed jid', 'jid=not%20a%20jid', {}],
      ['malformed jid (domain only)', 'jid=localhost', {}],
    ];
    for (const type of ['image', 'text', 'xml', 'json']) {
      const answers = [];
      for (const [why, q, h] of cases) answers.push([why, await status(`${q}&type=${type}`, h)] as const);
      const [, ref] = answers[0]!;
      assert.equal(ref.status, 200);
      for (const [why, a] of answers) {
        assert.equal(a.status, ref.status, `${type}: ${why}`);
        assert.deepEqual(a.headers, ref.headers, `${type}: ${why}`);
        assert.deepEqual(a.body, ref.body, `${type}: ${why}`);
      }
      if (type === 'image') assert.deepEqual(ref.body, asset('forbidden.png'));
      if (type === 'text') assert.equal(ref.text, 'Forbidden');
      if (type === 'xml') {
        assert.equal(ref.text, "<presence type='error'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>");
      }
      if (type === 'json') assert.equal(JSON.parse(ref.text).show, 'forbidden');
    }
  });

  test('a subscriber who proves req_jid (Basic or presence token) sees a private account', async () => {
    const viaBasic = await status('jid=alice@localhost&req_jid=bob@localhost&type=text', { authorization: basic('bob@localhost') });
    assert.equal(viaBasic.text, 'in a meeting');
    assert.deepEqual((await status('jid=alice@localhost', { authorization: basic('bob@localhost') })).body, asset('dnd.png'));

    // Issued by the operator...
    const issued = await t.admin('POST', '/accounts/bob@localhost/tokens', { scope: 'presence', ttl: 600 });
    assert.equal(issued.status, 201);
    assert.equal(issued.body.scope, 'presence');
    const tok = encodeURIComponent(issued.body.token);
    assert.equal((await status(`jid=alice@localhost&req_jid=bob@localhost&type=xml&token=${tok}`)).text,
      "<presence from='alice@localhost'><show>dnd</show><status>in a meeting</status><priority>0</priority></presence>");
    assert.equal((await status('jid=alice@localhost&type=text', { authorization: `Bearer ${issued.body.token}` })).text, 'in a meeting');
    // ...or minted by the user with its password.
    const minted = await fetch(`${t.url}/api/v1/presence/token`, { method: 'POST', headers: { authorization: basic('bob@localhost') } });
    assert.equal(minted.status, 201);
    const mtok = (await minted.json()).token as string;
    assert.equal((await status(`jid=alice@localhost&type=text&token=${encodeURIComponent(mtok)}`)).text, 'in a meeting');

    // A login token is not a presence token, and a presence token does not log in.
    const login = await t.admin('POST', '/accounts/bob@localhost/tokens', {});
    const wrongScope = await status(`jid=alice@localhost&type=text&token=${encodeURIComponent(login.body.token)}`);
    assert.equal(wrongScope.status, 401);
    const c = await TestClient.connect(t.wsUrl);
    await assert.rejects(c.request('auth', { token: issued.body.token }), /auth-failed/);
    await c.close();

    // Wrong credentials: 401 with a challenge, never the anonymous view.
    const wrong = await status('jid=alice@localhost&type=text', { authorization: basic('bob@localhost', 'wrong') });
    assert.equal(wrong.status, 401);
    assert.match(wrong.headers['www-authenticate'] ?? '', /^Basic realm="presenced"/);
    assert.equal(JSON.parse(wrong.text).error.code, 'auth-failed');
    const unknownUser = await status('jid=alice@localhost&type=text', { authorization: basic('nobody@localhost', 'wrong') });
    assert.equal(unknownUser.status, 401);
    assert.deepEqual(unknownUser.body, wrong.body, 'an unknown Basic user is told exactly what a wrong password is told');
    assert.equal((await status('jid=alice@localhost&type=text&token=garbage')).status, 401);
    assert.equal((await status('jid=alice@localhost&type=text', { authorization: 'Digest x' })).status, 401);

    // Blocking wins over the subscription.
    await alice.request('block', { jid: 'bob@localhost' });
    assert.equal((await status('jid=alice@localhost&type=text', { authorization: basic('bob@localhost') })).text, 'Forbidden');
    await alice.request('unblock', { jid: 'bob@localhost' });
    assert.equal((await status('jid=alice@localhost&type=text', { authorization: basic('bob@localhost') })).text, 'in a meeting');
  });

  test('an account asked about before it existed is seen once created (no stale "unknown")', async () => {
    assert.equal((await status('jid=latecomer@localhost&type=text')).text, 'Forbidden');
    await t.createAccount('latecomer@localhost');
    assert.equal((await status('jid=latecomer@localhost&type=text')).text, 'Forbidden', 'private by default');
    await t.admin('PATCH', '/accounts/latecomer@localhost/settings', { publicPresence: true });
    assert.equal((await status('jid=latecomer@localhost&type=text')).text, 'Unavailable');
    assert.equal((await t.admin('DELETE', '/accounts/latecomer@localhost')).status, 204);
    assert.equal((await status('jid=latecomer@localhost&type=text')).text, 'Forbidden');
  });

  test('POST with a form body takes the same parameters', async () => {
    await pub.request('presence', { show: 'chat', status: 'talk to me' });
    const res = await fetch(`${t.url}/plugins/presence/status`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'jid=pub%40localhost&type=text',
    });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'talk to me');
    const img = await fetch(`${t.url}/plugins/presence/status`, { method: 'POST', body: new URLSearchParams({ jid: 'pub@localhost' }), redirect: 'manual' });
    assert.equal(img.headers.get('content-type'), 'image/png');
    assert.deepEqual(Buffer.from(await img.arrayBuffer()), asset('chat.png'));
  });

  test('the anonymous GET fast path answers exactly as the full route (POST form), for every type, visible or not', async () => {
    await pub.request('presence', { show: 'away', status: 'back <soon> & "then"' });
    for (const jid of ['pub@localhost', 'alice@localhost', 'nobody@localhost', 'not a jid']) {
      for (const type of ['image', 'text', 'xml', 'json']) {
        const fast = await status(`jid=${encodeURIComponent(jid)}&type=${type}`);
        const full = await get('/plugins/presence/status', {}, { method: 'POST', body: new URLSearchParams({ jid, type }) });
        assert.equal(fast.status, full.status, `${jid} ${type}`);
        assert.deepEqual(fast.headers, full.headers, `${jid} ${type}`);
        assert.deepEqual(fast.body, full.body, `${jid} ${type}`);
      }
    }
    // HEAD: the same headers, no body.
    const head = await get('/plugins/presence/status?jid=pub%40localhost&type=text', {}, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    assert.equal(head.headers['content-length'], String(Buffer.byteLength('back <soon> & "then"')));
    // Answers of the fast path are counted in the metrics like the full route's.
    const ok200 = (): Promise<number> => metricSum(t, 'presenced_http_requests_total{status="200"}');
    const before = await ok200();
    for (let i = 0; i < 5; i++) await status('jid=pub%40localhost&type=text');
    // The /metrics request itself is counted once its answer is sent, so at least the five.
    assert.ok((await ok200()) - before >= 5);
  });

  test('caching: short max-age, ETag, 304 on If-None-Match, a new ETag after a change', async () => {
    await pub.request('presence', { show: 'away', status: null });
    for (const q of ['jid=pub@localhost', 'jid=pub@localhost&type=text', 'jid=pub@localhost&type=xml', 'jid=pub@localhost&type=json']) {
      const first = await status(q);
      assert.equal(first.headers['cache-control'], 'private, max-age=10');
      const etag = first.headers.etag;
      assert.ok(etag, q);
      const again = await status(q, { 'if-none-match': etag! });
      assert.equal(again.status, 304, q);
      assert.equal(again.body.length, 0);
      assert.equal(again.headers.etag, etag);
    }
    // HEAD: the headers of GET, no body.
    const head = await get('/plugins/presence/status?jid=pub@localhost&type=text', {}, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '4');
    assert.equal(head.body.length, 0);
    // Answers written past Fastify's send pipeline are still counted.
    assert.ok((await metricSum(t, 'presenced_http_requests_total{status="304"}')) > 0);

    const before = (await status('jid=pub@localhost')).headers.etag!;
    await pub.request('presence', { show: 'dnd' });
    const changed = await status('jid=pub@localhost', { 'if-none-match': before });
    assert.equal(changed.status, 200);
    assert.notEqual(changed.headers.etag, before);
    assert.deepEqual(changed.body, asset('dnd.png'));
  });

  test('trust_req_jid restores the plugin behaviour (unsafe, off by default)', async () => {
    const open = await startTestServer({ trust_req_jid: true });
    try {
      await open.createAccount('x@localhost');
      await open.createAccount('y@localhost');
      const x = (await TestClient.login(open.wsUrl, 'x@localhost')).client;
      const y = (await TestClient.login(open.wsUrl, 'y@localhost')).client;
      await x.request('presence', { show: 'away', status: 'gone fishing' });
      await befriend(y, 'y@localhost', x, 'x@localhost');
      const ask = async (q: string) => (await fetch(`${open.url}/plugins/presence/status?${q}`)).text();
      assert.equal(await ask('jid=x@localhost&type=text&req_jid=y@localhost'), 'gone fishing');
      assert.equal(await ask('jid=x@localhost&type=text'), 'Forbidden');
      assert.equal(await ask('jid=x@localhost&type=text&req_jid=nobody@localhost'), 'Forbidden');
      await x.close();
      await y.close();
    } finally {
      await open.destroy();
    }
  });

  test('JSON API: one JID, with the same visibility rules and JSON errors', async () => {
    await pub.request('presence', { show: 'available', status: 'hi' });
    const one = await get('/api/v1/presence/pub@localhost');
    assert.equal(one.status, 200);
    assert.equal(one.headers['access-control-allow-origin'], '*');
    assert.deepEqual(JSON.parse(one.text), { jid: 'pub@localhost', online: true, show: 'available', status: 'hi', priority: 0, lastSeen: null });
    assert.equal((await get('/api/v1/presence/pub@localhost', { 'if-none-match': one.headers.etag! })).status, 304);

    const hidden = await get('/api/v1/presence/alice@localhost');
    const unknown = await get('/api/v1/presence/nobody@localhost');
    const remote = await get('/api/v1/presence/alice@elsewhere.example');
    assert.equal(hidden.status, 403);
    for (const a of [unknown, remote]) {
      assert.equal(a.status, hidden.status);
      assert.deepEqual(a.body, hidden.body);
      assert.deepEqual(a.headers, hidden.headers);
    }
    assert.equal(JSON.parse(hidden.text).error.code, 'not-allowed');
    const bad = await get('/api/v1/presence/a%20b@localhost');
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(bad.text).error.code, 'bad-jid');

    assert.equal(JSON.parse((await get('/api/v1/presence/alice@localhost', { authorization: basic('bob@localhost') })).text).show, 'dnd');
    assert.equal((await get('/api/v1/presence/alice@localhost', { authorization: basic('carol@localhost') })).status, 403);
    // The operator sees every account, but still not accounts that do not exist.
    assert.equal(JSON.parse((await get('/api/v1/presence/alice@localhost', { authorization: `Bearer ${ADMIN_TOKEN}` })).text).status, 'in a meeting');
    assert.equal((await get('/api/v1/presence/nobody@localhost', { authorization: `Bearer ${ADMIN_TOKEN}` })).status, 403);
    assert.equal((await get('/api/v1/presence/alice@localhost', { authorization: basic('bob@localhost', 'nope') })).status, 401);

    const pre = await get('/api/v1/presence/pub@localhost', { origin: 'https://page.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' }, { method: 'OPTIONS' });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-origin'], '*');
    assert.match(pre.headers['access-control-allow-headers'] ?? '', /Authorization/);
  });

  test('JSON API: batch by GET and POST; the admin query route is untouched', async () => {
    const q = ['pub@localhost', 'alice@localhost', 'nobody@localhost', 'a b@localhost'].map((j) => `jid=${encodeURIComponent(j)}`).join('&');
    const g = await get(`/api/v1/presence?${q}`);
    assert.equal(g.status, 200);
    const body = JSON.parse(g.text);
    assert.deepEqual(Object.keys(body.presence), ['pub@localhost']);
    assert.deepEqual(body.forbidden, ['alice@localhost', 'nobody@localhost']);
    assert.equal(body.errors['a b@localhost'].code, 'bad-jid');

    const p = await fetch(`${t.url}/api/v1/presence/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: basic('bob@localhost') },
      body: JSON.stringify({ jids: ['pub@localhost', 'alice@localhost', 'carol@localhost'] }),
    });
    const pb = await p.json();
    assert.equal(p.status, 200);
    assert.deepEqual(Object.keys(pb.presence).sort(), ['alice@localhost', 'pub@localhost']);
    assert.deepEqual(pb.forbidden, ['carol@localhost']);
    for (const bad of [{}, { jids: [] }, { jids: [1] }, { jids: 'x' }]) {
      const r = await fetch(`${t.url}/api/v1/presence/batch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(bad) });
      assert.equal(r.status, 400);
      assert.equal((await r.json()).error.code, 'bad-request');
    }
    assert.equal((await get('/api/v1/presence')).status, 400);
    const admin = await t.admin('POST', '/presence/query', { jids: ['alice@localhost'] });
    assert.equal(admin.status, 200);
    assert.equal(admin.body.presence['alice@localhost'].show, 'dnd');
  });

  test('SVG badge: status dot and label; a hidden account gets the same forbidden badge as an unknown one', async () => {
    await pub.request('presence', { show: 'away' });
    const b = await get('/api/v1/presence/pub@localhost/badge.svg?label=Support%20%26%20Sales');
    assert.equal(b.status, 200);
    assert.equal(b.headers['content-type'], 'image/svg+xml; charset=utf-8');
    assert.equal(b.headers['access-control-allow-origin'], '*');
    assert.match(b.text, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(b.text, />away</);
    assert.match(b.text, /#f08c00/);
    assert.match(b.text, />Support &amp; Sales</);
    assert.doesNotMatch((await get('/api/v1/presence/pub@localhost/badge.svg?label=')).text, /#555/);
    const hidden = await get('/api/v1/presence/alice@localhost/badge.svg');
    const unknown = await get('/api/v1/presence/nobody@localhost/badge.svg');
    assert.equal(hidden.status, 200);
    assert.match(hidden.text, />forbidden</);
    assert.deepEqual(unknown.body, hidden.body);
    assert.match((await get('/api/v1/presence/alice@localhost/badge.svg', { authorization: basic('bob@localhost') })).text, />dnd</);
    assert.equal((await get(`/api/v1/presence/pub@localhost/badge.svg?label=${'x'.repeat(65)}`)).status, 400);
  });
});
