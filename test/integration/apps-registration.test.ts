import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { clientSecretMatches } from '../../src/features/apps/secrets.js';
import { appsKeysOf } from '../helpers/secrets.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from '../helpers/server.js';

const basic = (jid: string, pw = 'secret-pw') => `Basic ${Buffer.from(`${jid}:${pw}`).toString('base64')}`;
const ADMIN = `Bearer ${ADMIN_TOKEN}`;

interface Answer {
  status: number;
  text: string;
  body: any;
  type: string | null;
}

async function call(t: TestServer, method: string, path: string, auth: string | null, body?: unknown, contentType = 'application/json'): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (auth !== null) headers.authorization = auth;
  if (body !== undefined) headers['content-type'] = contentType;
  const res = await fetch(`${t.url}/api/v1/apps${path}`, { method, headers, ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}) });
  const text = await res.text();
  return { status: res.status, text, body: text ? JSON.parse(text) : null, type: res.headers.get('content-type') };
}

const valid = (over: Record<string, unknown> = {}) => ({
  name: 'Chess Club',
  description: 'Play chess with your friends',
  homepage: 'https://chess.example/',
  iconUrl: 'https://chess.example/icon.png',
  redirectUris: ['https://chess.example/callback', 'http://127.0.0.1:8123/cb'],
  ...over,
});

function dbRows(t: TestServer): Array<Record<string, unknown>> {
  return t.sql('select * from apps');
}

/** Retries a check until it passes: waits for an effect that follows an answer asynchronously (no fixed sleep). */
async function eventually(check: () => Promise<void>, tries = 200): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      return await check();
    } catch (e) {
      if (i >= tries) throw e;
      await new Promise((r) => setImmediate(r));
    }
  }
}

describe('apps registration', () => {
  let t: TestServer;
  /** A local site for the domain proof: what it serves at /__presence is set per test. */
  let site: Server;
  let sitePort = 0;
  let proof: { status: number; body: string; headers?: Record<string, string> } = { status: 404, body: '' };

  before(async () => {
    t = await startTestServer({ webhooks_allow_private: true });
    await t.createAccount('alice@localhost');
    await t.createAccount('bob@localhost');
    site = createServer((req, res) => {
      if (req.url !== '/__presence') return res.writeHead(404).end();
      res.writeHead(proof.status, { 'content-type': 'text/plain', ...(proof.headers ?? {}) }).end(proof.body);
    });
    await new Promise<void>((r) => site.listen(0, '127.0.0.1', () => r()));
    sitePort = (site.address() as { port: number }).port;
  });
  after(async () => {
    await t.destroy();
    await new Promise((r) => site.close(r));
  });

  test('an account registers an app with Basic: id, client secret and webhook secret shown, domain key given', async () => {
    const r = await call(t, 'POST', '', basic('alice@localhost'), valid({ webhookUrl: 'https://chess.example/hook', webhookFormat: 'extended' }));
    assert.equal(r.status, 201, r.text);
    const a = r.body;
    assert.match(a.id, /^[A-Za-z0-9_-]{22}$/);
    assert.equal(a.owner, 'alice@localhost');
    assert.equal(a.name, 'Chess Club');
    assert.deepEqual(a.redirectUris, ['https://chess.example/callback', 'http://127.0.0.1:8123/cb']);
    assert.equal(a.webhookFormat, 'extended');
    assert.match(a.clientSecret, /^pcs_/);
    assert.match(a.webhookSecret, /^whsec_[A-Za-z0-9+/]{32}$/);
    assert.equal(a.domain.host, 'chess.example');
    assert.equal(a.domain.proofUrl, 'https://chess.example/__presence');
    assert.equal(a.domain.verified, false);
    // Shown once: reading it back never shows the client secret again.
    const back = await call(t, 'GET', `/${a.id}`, basic('alice@localhost'));
    assert.equal(back.status, 200);
    assert.equal(back.body.clientSecret, undefined);
    assert.ok(!back.text.includes(a.clientSecret));
    assert.equal(back.body.webhookSecret, a.webhookSecret);
  });

  test('a login token (Bearer) works too; a presence token, a wrong password or nothing do not', async () => {
    const tok = await t.admin('POST', '/accounts/alice@localhost/tokens', { scope: 'login' });
    assert.equal((await call(t, 'GET', '', `Bearer ${tok.body.token}`)).status, 200);
    const presenceTok = await t.admin('POST', '/accounts/alice@localhost/tokens', { scope: 'presence' });
    assert.equal((await call(t, 'GET', '', `Bearer ${presenceTok.body.token}`)).status, 401);
    const wrong = await call(t, 'GET', '', basic('alice@localhost', 'nope'));
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error.code, 'auth-failed');
    const none = await call(t, 'POST', '', null, valid());
    assert.equal(none.status, 401);
    assert.equal(none.body.error.code, 'not-authenticated');
  });

  test('the admin registers apps owned by "admin" and lists every app; an account lists only its own', async () => {
    const r = await call(t, 'POST', '', ADMIN, valid({ name: 'Ops board' }));
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.owner, 'admin');
    const bobs = await call(t, 'POST', '', basic('bob@localhost'), valid({ name: 'Bob app' }));
    assert.equal(bobs.status, 201);
    const all = await call(t, 'GET', '', ADMIN);
    const owners = new Set(all.body.apps.map((a: { owner: string }) => a.owner));
    assert.deepEqual([...owners].sort(), ['admin', 'alice@localhost', 'bob@localhost']);
    const bobList = await call(t, 'GET', '', basic('bob@localhost'));
    assert.deepEqual(bobList.body.apps.map((a: { name: string }) => a.name), ['Bob app']);
    // The list never carries client secrets.
    assert.ok(!all.text.includes('clientSecret'));
  });

  test('manifest form: a W3C web app manifest with a presence member, as application/manifest+json', async () => {
    const manifest = {
      name: 'Go Board',
      short_name: 'Go',
      start_url: 'https://go.example/play',
      display: 'standalone',
      icons: [{ src: '/relative.png' }, { src: 'https://go.example/icon-192.png', sizes: '192x192' }],
      presence: { redirect_uris: ['https://go.example/cb'], webhook_url: 'https://go.example/hook', description: 'Go with friends' },
    };
    const r = await call(t, 'POST', '', basic('alice@localhost'), manifest, 'application/manifest+json');
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.name, 'Go Board');
    assert.equal(r.body.homepage, 'https://go.example/play');
    assert.equal(r.body.iconUrl, 'https://go.example/icon-192.png');
    assert.equal(r.body.description, 'Go with friends');
    assert.deepEqual(r.body.redirectUris, ['https://go.example/cb']);
    assert.equal(r.body.webhookUrl, 'https://go.example/hook');
    assert.equal(r.body.webhookFormat, 'pairs');
    // Also as plain application/json.
    assert.equal((await call(t, 'POST', '', basic('alice@localhost'), manifest)).status, 201);
  });

  test('bad input: each a clear 400 (or 413), and nothing stored', async () => {
    const before = dbRows(t).length;
    const cases: Array<[unknown, RegExp]> = [
      [valid({ redirectUris: ['javascript:alert(1)'] }), /scheme "javascript:" is not allowed/],
      [valid({ redirectUris: ['https://chess.example/cb#frag'] }), /fragment/],
      [valid({ redirectUris: ['http://evil.example/cb'] }), /https \(http is allowed only for localhost/],
      [valid({ redirectUris: ['com.example.app:/cb'] }), /not allowed/],
      [valid({ redirectUris: ['/relative'] }), /absolute URL/],
      [valid({ redirectUris: ['https://user:pw@chess.example/cb'] }), /credentials/],
      [valid({ redirectUris: [] }), /1 to 10/],
      [valid({ homepage: 'ftp://chess.example/' }), /homepage must be an http or https URL/],
      [valid({ webhookUrl: 'ftp://chess.example/hook' }), /webhookUrl must be an https URL/],
      [valid({ webhookFormat: 'xml' }), /webhookFormat must be one of pairs, extended/],
      [valid({ name: '   ' }), /name must not be empty/],
      [valid({ name: 'x'.repeat(101) }), /longer than 100/],
      [valid({ colour: 'red' }), /unknown field "colour"/],
      [{ ...valid(), redirectUris: undefined }, /redirectUris is required/],
      [valid({ name: 5 }), /body\/name must be string/],
      [{ name: 'M', presence: { redirect_uris: ['https://m.example/cb'], homepage: 'https://m.example/', secret_sauce: 1 } }, /unknown field "secret_sauce" in the manifest/],
      [{ name: 'M', presence: 'yes' }, /presence must be object/],
      [{ presence: { redirect_uris: ['https://m.example/cb'], homepage: 'https://m.example/' } }, /manifest has no name/],
    ];
    for (const [body, message] of cases) {
      const r = await call(t, 'POST', '', basic('alice@localhost'), body);
      assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 120)} -> ${r.text}`);
      assert.equal(r.body.error.code, 'bad-request');
      assert.match(r.body.error.message, message);
    }
    const notJson = await call(t, 'POST', '', basic('alice@localhost'), '{"name": ', 'application/manifest+json');
    assert.equal(notJson.status, 400);
    const huge = { name: 'Big', start_url: 'https://big.example/', presence: { redirect_uris: ['https://big.example/cb'] }, padding: 'x'.repeat(70 * 1024) };
    const big = await call(t, 'POST', '', basic('alice@localhost'), huge, 'application/manifest+json');
    assert.equal(big.status, 413);
    assert.equal(big.body.error.code, 'too-large');
    assert.equal(dbRows(t).length, before);
  });

  test('secrets are stored hashed: no plaintext client secret in the database files; rotation replaces the hash', async () => {
    const r = await call(t, 'POST', '', basic('alice@localhost'), valid({ name: 'Secretive' }));
    const { id, clientSecret, webhookSecret } = r.body;
    const row = dbRows(t).find((x) => x.id === id) as Record<string, string>;
    assert.ok(!Object.values(row).some((v) => typeof v === 'string' && v.includes(clientSecret.slice(4))));
    for (const f of ['presenced.sqlite', 'presenced.sqlite-wal']) {
      const file = join(t.dataDir, f);
      if (existsSync(file)) assert.ok(!readFileSync(file).includes(clientSecret.slice(4)), `plaintext secret in ${f}`);
    }
    // The hash is HMAC-SHA256 under a key derived from the apps secret (data_dir/apps-secret, or the cluster's database).
    const keys = appsKeysOf(t);
    assert.ok(clientSecretMatches(keys.clientSecret, clientSecret, row.client_secret_hash as string));
    assert.equal(row.webhook_secret, webhookSecret);

    const rotated = await call(t, 'POST', `/${id}/secret`, basic('alice@localhost'));
    assert.equal(rotated.status, 200);
    assert.notEqual(rotated.body.clientSecret, clientSecret);
    const after = dbRows(t).find((x) => x.id === id) as Record<string, string>;
    assert.ok(!clientSecretMatches(keys.clientSecret, clientSecret, after.client_secret_hash as string), 'the old secret no longer matches');
    assert.ok(clientSecretMatches(keys.clientSecret, rotated.body.clientSecret, after.client_secret_hash as string));

    const w = await call(t, 'POST', `/${id}/webhook-secret`, basic('alice@localhost'));
    assert.equal(w.status, 200);
    assert.match(w.body.webhookSecret, /^whsec_/);
    assert.notEqual(w.body.webhookSecret, webhookSecret);
    assert.equal((await call(t, 'GET', `/${id}`, basic('alice@localhost'))).body.webhookSecret, w.body.webhookSecret);
  });

  test('PATCH changes fields, validates them, and clears null optional ones', async () => {
    const { id } = (await call(t, 'POST', '', basic('alice@localhost'), valid({ webhookUrl: 'https://chess.example/hook' }))).body;
    const r = await call(t, 'PATCH', `/${id}`, basic('alice@localhost'), { name: 'Chess Club 2', webhookUrl: null, redirectUris: ['https://chess.example/new'] });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.name, 'Chess Club 2');
    assert.equal(r.body.webhookUrl, null);
    assert.deepEqual(r.body.redirectUris, ['https://chess.example/new']);
    const bad = await call(t, 'PATCH', `/${id}`, basic('alice@localhost'), { redirectUris: ['javascript:alert(1)'] });
    assert.equal(bad.status, 400);
    assert.equal((await call(t, 'PATCH', `/${id}`, basic('alice@localhost'), {})).status, 400);
    assert.deepEqual((await call(t, 'GET', `/${id}`, basic('alice@localhost'))).body.redirectUris, ['https://chess.example/new']);
  });

  test("owner isolation: another account gets for every route on an app the very answer of a nonexistent id", async () => {
    const { id } = (await call(t, 'POST', '', basic('alice@localhost'), valid())).body;
    const missing = 'AAAAAAAAAAAAAAAAAAAAAA';
    const routes: Array<[string, string, unknown?]> = [
      ['GET', ''],
      ['PATCH', '', { name: 'mine now' }],
      ['POST', '/secret'],
      ['POST', '/webhook-secret'],
      ['POST', '/verify'],
      ['DELETE', ''],
    ];
    for (const [method, suffix, body] of routes) {
      const theirs = await call(t, method, `/${id}${suffix}`, basic('bob@localhost'), body);
      const none = await call(t, method, `/${missing}${suffix}`, basic('bob@localhost'), body);
      assert.equal(theirs.status, 404, `${method} ${suffix}`);
      assert.equal(theirs.text, none.text, `${method} ${suffix}: body differs from a nonexistent app's`);
      assert.equal(theirs.type, none.type);
    }
    // Nothing changed for the owner.
    const mine = await call(t, 'GET', `/${id}`, basic('alice@localhost'));
    assert.equal(mine.status, 200);
    assert.equal(mine.body.name, 'Chess Club');
    // The operator sees it.
    assert.equal((await call(t, 'GET', `/${id}`, ADMIN)).status, 200);
  });

  test('domain proof: the key served at /__presence verifies the app; anything else is a clear 422', async () => {
    const homepage = `http://127.0.0.1:${sitePort}/`;
    const created = (await call(t, 'POST', '', basic('alice@localhost'), valid({ homepage }))).body;
    assert.equal(created.domain.proofUrl, `http://127.0.0.1:${sitePort}/__presence`);
    const verify = () => call(t, 'POST', `/${created.id}/verify`, basic('alice@localhost'));

    proof = { status: 404, body: '' };
    let r = await verify();
    assert.equal(r.status, 422);
    assert.equal(r.body.error.code, 'verification-failed');
    assert.match(r.body.error.message, /HTTP 404/);

    proof = { status: 200, body: 'presence-verification=not-the-key' };
    r = await verify();
    assert.equal(r.status, 422);
    assert.match(r.body.error.message, /does not hold this app's key/);

    proof = { status: 302, body: '', headers: { location: 'https://elsewhere.example/__presence' } };
    r = await verify();
    assert.equal(r.status, 422);
    assert.match(r.body.error.message, /redirect/);

    proof = { status: 200, body: created.domain.key + ' '.repeat(5000) };
    r = await verify();
    assert.equal(r.status, 422);
    assert.match(r.body.error.message, /more than 4096 bytes/);

    proof = { status: 200, body: `${created.domain.key}\n` };
    r = await verify();
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.domain.verified, true);
    assert.equal(r.body.domain.host, '127.0.0.1');
    assert.ok(r.body.domain.verifiedAt);

    // Moving the homepage to another host needs a new proof; a path change on the same host does not.
    const samehost = await call(t, 'PATCH', `/${created.id}`, basic('alice@localhost'), { homepage: `http://127.0.0.1:${sitePort}/about` });
    assert.equal(samehost.body.domain.verified, true);
    const moved = await call(t, 'PATCH', `/${created.id}`, basic('alice@localhost'), { homepage: 'https://chess.example/' });
    assert.equal(moved.body.domain.verified, false);
  });

  test('DELETE removes an app', async () => {
    const { id } = (await call(t, 'POST', '', basic('bob@localhost'), valid())).body;
    assert.equal((await call(t, 'DELETE', `/${id}`, basic('bob@localhost'))).status, 204);
    assert.equal((await call(t, 'GET', `/${id}`, basic('bob@localhost'))).status, 404);
    assert.equal((await call(t, 'DELETE', `/${id}`, basic('bob@localhost'))).status, 404);
  });

  test("deleting an account deletes the apps it owns, and only those", async () => {
    const { id } = (await call(t, 'POST', '', basic('bob@localhost'), valid({ name: 'Doomed' }))).body;
    const adminApps = (await call(t, 'GET', '', ADMIN)).body.apps.filter((a: { owner: string }) => a.owner !== 'bob@localhost').length;
    assert.equal((await t.admin('DELETE', '/accounts/bob@localhost')).status, 204);
    await eventually(async () => assert.equal((await call(t, 'GET', `/${id}`, ADMIN)).status, 404));
    const left = (await call(t, 'GET', '', ADMIN)).body.apps;
    assert.ok(!left.some((a: { owner: string }) => a.owner === 'bob@localhost'));
    assert.equal(left.length, adminApps);
  });
});

describe('app_registration: admin', () => {
  test('accounts are refused registration (403) but the admin may register; plain-http webhooks refused by default', async () => {
    const t = await startTestServer({ app_registration: 'admin' });
    try {
      await t.createAccount('alice@localhost');
      const r = await call(t, 'POST', '', basic('alice@localhost'), valid());
      assert.equal(r.status, 403);
      assert.equal(r.body.error.code, 'not-allowed');
      assert.match(r.body.error.message, /app_registration: admin/);
      assert.equal((await call(t, 'POST', '', ADMIN, valid())).status, 201);
      const hook = await call(t, 'POST', '', ADMIN, valid({ webhookUrl: 'http://hooks.example/in' }));
      assert.equal(hook.status, 400);
      assert.match(hook.body.error.message, /webhooks_allow_private/);
      // A localhost homepage cannot be verified without webhooks_allow_private.
      const local = (await call(t, 'POST', '', ADMIN, valid({ homepage: 'http://127.0.0.1:9/' }))).body;
      const v = await call(t, 'POST', `/${local.id}/verify`, ADMIN);
      assert.equal(v.status, 400);
      assert.match(v.body.error.message, /webhooks_allow_private/);
    } finally {
      await t.destroy();
    }
  });
});
