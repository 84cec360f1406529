import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RequestFailed, TestClient } from '../helpers/ws-client.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('admin REST API', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => t.destroy());

  test('requires the admin bearer token', async () => {
    const res = await fetch(`${t.url}/api/v1/accounts`);
    assert.equal(res.status, 401);
    const body = (await res.json()) as { error: { code: string } };
    assert.equal(body.error.code, 'auth-failed');
    const wrong = await fetch(`${t.url}/api/v1/accounts`, { headers: { authorization: 'Bearer not-the-token-at-all' } });
    assert.equal(wrong.status, 401);
  });

  test('accounts: create, list with pagination, conflict, bad input, delete', async () => {
    for (const u of ['zed', 'amy', 'Max']) assert.equal((await t.admin('POST', '/accounts', { jid: `${u}@localhost`, password: 'pw-123' })).status, 201);
    const dup = await t.admin('POST', '/accounts', { jid: 'AMY@localhost', password: 'x' });
    assert.deepEqual([dup.status, dup.body.error.code], [409, 'conflict']);
    const bad = await t.admin('POST', '/accounts', { jid: 'a b@localhost', password: 'x' });
    assert.deepEqual([bad.status, bad.body.error.code], [400, 'bad-jid']);
    const remote = await t.admin('POST', '/accounts', { jid: 'a@elsewhere.example', password: 'x' });
    assert.equal(remote.status, 404);
    const nopw = await t.admin('POST', '/accounts', { jid: 'c@localhost' });
    assert.deepEqual([nopw.status, nopw.body.error.code], [400, 'bad-request']);
    const notJson = await fetch(`${t.url}/api/v1/accounts`, {
      method: 'POST',
      headers: { authorization: 'Bearer test-admin-token-0123456789', 'content-type': 'application/json' },
      body: '{"jid":',
    });
    assert.equal(notJson.status, 400);
    assert.equal(((await notJson.json()) as { error: { code: string } }).error.code, 'bad-request');

    const p1 = await t.admin('GET', '/accounts?limit=2');
    assert.deepEqual(p1.body, { accounts: ['amy@localhost', 'max@localhost'], next: 'max@localhost' });
    const p2 = await t.admin('GET', `/accounts?limit=2&after=${p1.body.next}`);
    assert.deepEqual(p2.body, { accounts: ['zed@localhost'], next: null });
    assert.equal((await t.admin('GET', '/accounts?limit=0')).status, 400);

    assert.equal((await t.admin('DELETE', '/accounts/zed@localhost')).status, 204);
    const gone = await t.admin('DELETE', '/accounts/zed@localhost');
    assert.deepEqual([gone.status, gone.body.error.code], [404, 'not-found']);
  });

  test('presence of one and of many accounts, and their sessions', async () => {
    await t.createAccount('pia@localhost');
    await t.createAccount('quinn@localhost');
    const { client } = await TestClient.login(t.wsUrl, 'pia@localhost', 'secret-pw', { resource: 'tablet', presence: { show: 'xa', status: 'asleep', priority: 3 } });
    const one = await t.admin('GET', '/accounts/pia@localhost/presence');
    assert.equal(one.status, 200);
    assert.deepEqual([one.body.online, one.body.show, one.body.status, one.body.priority], [true, 'xa', 'asleep', 3]);
    const sessions = await t.admin('GET', '/accounts/pia@localhost/sessions');
    assert.deepEqual(sessions.body.sessions.map((s: any) => [s.resource, s.protocol, s.show]), [['tablet', 'native', 'xa']]);

    const many = await t.admin('POST', '/presence/query', { jids: ['pia@localhost', 'QUINN@localhost', 'bad jid'] });
    assert.equal(many.status, 200);
    assert.equal(many.body.presence['pia@localhost'].show, 'xa');
    assert.equal(many.body.presence['quinn@localhost'].show, 'offline');
    assert.equal(many.body.errors['bad jid'].code, 'bad-jid');
    assert.equal((await t.admin('POST', '/presence/query', { jids: [] })).status, 400);
    assert.equal((await t.admin('GET', '/accounts/nobody@localhost/presence')).status, 404);
    await client.close();
    const off = await t.admin('GET', '/accounts/pia@localhost/presence');
    assert.deepEqual([off.body.online, off.body.status], [false, 'asleep']);
  });

  test('login tokens: issued by the API, accepted over WebSocket, revoked by a password change', async () => {
    await t.createAccount('rita@localhost', 'old-password');
    const issued = await t.admin('POST', '/accounts/rita@localhost/tokens', { ttl: 600 });
    assert.equal(issued.status, 201);
    const c = await TestClient.connect(t.wsUrl);
    const auth = await c.request('auth', { token: issued.body.token });
    assert.equal(auth.jid, 'rita@localhost');
    await c.close();

    const tampered = issued.body.token.slice(0, -2) + (issued.body.token.endsWith('AA') ? 'BB' : 'AA');
    const c2 = await TestClient.connect(t.wsUrl);
    await assert.rejects(c2.request('auth', { token: tampered }), (e: RequestFailed) => e.error.code === 'auth-failed');
    await c2.close();

    assert.equal((await t.admin('PUT', '/accounts/rita@localhost/password', { password: 'new-password' })).status, 204);
    const c3 = await TestClient.connect(t.wsUrl);
    await assert.rejects(c3.request('auth', { token: issued.body.token }), (e: RequestFailed) => e.error.code === 'auth-failed');
    await assert.rejects(c3.request('auth', { jid: 'rita@localhost', password: 'old-password' }), (e: RequestFailed) => e.error.code === 'auth-failed');
    assert.equal((await c3.request('auth', { jid: 'rita@localhost', password: 'new-password' })).jid, 'rita@localhost');
    await c3.close();
    assert.equal((await t.admin('POST', '/accounts/rita@localhost/tokens', { ttl: 5 })).status, 400);
  });

  test('deleting an account ends its sessions and removes it from contacts', async () => {
    await t.createAccount('sam@localhost');
    await t.createAccount('tess@localhost');
    const { client: sam } = await TestClient.login(t.wsUrl, 'sam@localhost');
    const { client: tess } = await TestClient.login(t.wsUrl, 'tess@localhost');
    await sam.request('subscribe', { jid: 'tess@localhost' });
    await tess.request('approve', { jid: 'sam@localhost' });
    await t.admin('DELETE', '/accounts/tess@localhost');
    const closing = await tess.waitFor((p) => p.type === 'closing');
    assert.equal(closing.reason, 'account-removed');
    await sam.waitFor((p) => p.type === 'roster' && p.removed === 'tess@localhost');
    assert.deepEqual((await sam.request('roster.get')).items, []);
    await sam.close();
  });

  test('health and metrics', async () => {
    const h = await fetch(`${t.url}/healthz`);
    assert.equal(h.status, 200);
    assert.equal(((await h.json()) as { status: string }).status, 'ok');
    const m = await (await fetch(`${t.url}/metrics`)).text();
    for (const name of ['presenced_connections', 'presenced_sessions_online', 'presenced_presence_changes_total', 'presenced_errors_total', 'presenced_deliveries_total']) {
      assert.match(m, new RegExp(`^${name}`, 'm'), name);
    }
    assert.match(m, /presenced_errors_total\{code="auth-failed"\} [1-9]/);
    const nf = await fetch(`${t.url}/nope`);
    assert.equal(nf.status, 404);
    assert.equal(((await nf.json()) as { error: { code: string } }).error.code, 'not-found');
  });
});
