import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pushOf } from '../../src/features/push/push-feature.js';
import { startSingleTestServer, startTestServer, type SqlValue, type TestServer } from '../helpers/server.js';
import { eventually, Receiver } from '../helpers/webhook-receiver.js';
import { RequestFailed, TestClient } from '../helpers/ws-client.js';
import { XmppTestClient, xml } from '../helpers/xmpp-client.js';
import { WebSocket } from 'ws';
import { PresencedClient, PresencedError, type ServerNotification } from '../../packages/client/src/index.js';

/**
 * Push from the native protocol's side: a device registers its token (MigratoryData's external token),
 * the notify API reaches it live while its session is active and by push (the webhook provider, checked
 * with standardwebhooks by a local receiver) while it is offline or away; dead tokens are pruned, failing
 * ones disabled, and bad registrations refused with nothing stored.
 */

const SECRET = `whsec_${randomBytes(24).toString('base64')}`;
const P256DH = Buffer.concat([Buffer.from([4]), randomBytes(64)]).toString('base64url');
const AUTH = randomBytes(16).toString('base64url');

async function expectError(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RequestFailed, String(e));
    assert.equal(e.error.code, code, e.message);
    if (message) assert.match(e.error.message, message);
    return true;
  });
}

describe('push over the native protocol', () => {
  let t: TestServer;
  const rx = new Receiver();
  const rows = (sqlText: string, ...args: SqlValue[]): any[] => t.sql(sqlText, ...args);
  const notify = async (jid: string, body: unknown, auth = 'admin', base = t.url) => {
    const res = await fetch(`${base}/api/v1/accounts/${encodeURIComponent(jid)}/notify`, {
      method: 'POST',
      headers: { ...(auth === 'admin' ? { authorization: `Bearer ${t.config.admin_token}` } : auth === '' ? {} : { authorization: auth }), 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  const pushesTo = (device: string) => rx.requests.filter((r) => (r.payload as { device?: string } | null)?.device === device);
  const queueEmpty = () => eventually(async () => assert.equal(await pushOf(t.server.engine)!.registrations.pendingCount(), 0));

  before(async () => {
    rx.secret = SECRET;
    await rx.listen();
    t = await startTestServer(
      {
        webhooks_allow_private: true,
        push_providers: { gw: { type: 'webhook', url: rx.url, secret: SECRET }, browser: { type: 'webpush', subject: 'mailto:ops@localhost', endpointHosts: ['127.0.0.1'], allowInsecureEndpoints: true } },
        push_max_registrations: 3,
        push_max_failures: 2,
        push_backoff_base_ms: 10,
        // Long enough that a lost connection's session is still lingering when a test asks about it.
        grace_period_ms: 30_000,
      },
    );
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) await t.createAccount(`${u}@localhost`);
  });
  after(async () => {
    await t.destroy();
    await rx.close();
  });

  test('GET /api/v1/push/providers tells clients the provider names and the VAPID public key to subscribe with', async () => {
    const res = await fetch(`${t.url}/api/v1/push/providers`);
    assert.equal(res.status, 200);
    const { publicKey } = JSON.parse(readFileSync(join(t.dataDir, 'vapid-keys.json'), 'utf8')) as { publicKey: string };
    assert.deepEqual(await res.json(), {
      providers: [
        { name: 'gw', type: 'webhook' },
        { name: 'browser', type: 'webpush', applicationServerKey: publicKey },
      ],
    });
    assert.equal(Buffer.from(publicKey, 'base64url').length, 65);
  });

  test('registered, then offline: the notify API reaches the device by one signed push', async () => {
    const { client } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'phone' });
    const r = await client.request('push.register', { provider: 'gw', token: 'alice-phone-token' });
    assert.equal(r.replaced, false);
    assert.match(r.id, /^pr_/);
    assert.equal(r.registration.resource, 'phone');
    assert.equal(r.registration.current, true);
    await client.request('bye');
    await client.closed;
    const n = await notify('alice@localhost', { title: 'Hello', body: 'Your order shipped', data: { order: '42' } });
    assert.equal(n.status, 202, JSON.stringify(n.body));
    assert.equal(n.body.pushed, 1);
    assert.equal(n.body.sessions, 0);
    await rx.until(() => pushesTo('alice-phone-token').length >= 1, 'the push');
    await queueEmpty();
    assert.deepEqual(rx.bad, []);
    const got = pushesTo('alice-phone-token');
    assert.equal(got.length, 1);
    const p = got[0]!.payload as Record<string, any>;
    assert.equal(p.type, 'push');
    assert.equal(p.provider, 'gw');
    assert.equal(p.reason, 'notify');
    assert.equal(p.title, 'Hello');
    assert.equal(p.body, 'Your order shipped');
    assert.equal(p.data.order, '42');
    assert.equal(p.data.notification, n.body.id);
    assert.equal(p.urgency, 'high');
    assert.equal(typeof p.ttl, 'number');
    assert.ok(typeof got[0]!.headers['webhook-id'] === 'string');
    // The registration's health shows the success.
    const { client: again } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'laptop' });
    const list = await again.request('push.list');
    assert.equal(list.registrations.length, 1);
    assert.notEqual(list.registrations[0].lastSuccessAt, null);
    assert.equal(list.registrations[0].failures, 0);
    assert.equal(list.registrations[0].current, false);
    assert.equal(list.registrations[0].tokenHint, '…ne-token');
    assert.ok(!JSON.stringify(list).includes('alice-phone-token'), 'push.list does not hand out whole tokens');
    await again.close();
  });

  test('online and available: the notification arrives live and no push is queued; away: both', async () => {
    const { client } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'phone' });
    await client.request('push.register', { provider: 'gw', token: 'bob-phone-token' });
    const before = rx.requests.length;
    const n = await notify('bob@localhost', { body: 'Live only' });
    assert.equal(n.status, 202);
    assert.equal(n.body.pushed, 0);
    assert.equal(n.body.sessions, 1);
    const live = await client.waitFor((p) => p.type === 'notification', 'notification');
    assert.deepEqual(live, { type: 'notification', id: n.body.id, body: 'Live only' });
    assert.equal(rows('SELECT count(*) AS n FROM push_outbox WHERE account = ?', 'bob@localhost')[0].n, 0);

    // Policy: a device whose session is away (or xa, dnd) is pushed; it also gets the live notification.
    await client.request('presence', { show: 'away' });
    const n2 = await notify('bob@localhost', { title: 'T', body: 'While away', collapseKey: 'news' });
    assert.equal(n2.body.pushed, 1);
    await client.waitFor((p) => p.type === 'notification' && p.id === n2.body.id, 'live notification while away');
    await rx.until(() => pushesTo('bob-phone-token').length >= 1, 'the push while away');
    assert.equal((pushesTo('bob-phone-token')[0]!.payload as any).collapseKey, 'news');
    assert.equal(rx.requests.length, before + 1);

    // Another device of the account being active does not spare this one: devices are told apart by resource.
    await client.request('presence', { show: 'chat' });
    const { client: laptop } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'laptop' });
    client.destroy();
    // Wait for the server to notice the lost connection: the session stays (grace period) without a connection.
    // (On whichever node holds it: under TEST_CLUSTER, any of them.)
    const phone = () => t.nodes.flatMap((n) => n.server.engine.localSessionsOf('bob@localhost')).find((s) => s.resource === 'phone');
    await eventually(async () => assert.equal(phone()?.sink, null));
    // What the phone's node did about it has reached every node (under TEST_CLUSTER; a ping otherwise).
    await laptop.barrier();
    // The phone's connection is lost but its session lingers (grace period): it is not reachable live, so it is pushed,
    // whichever node is asked: under TEST_CLUSTER at least one of them is not the node the phone's session lingers on.
    let pushes = pushesTo('bob-phone-token').length;
    for (const node of t.nodes) {
      const n3 = await notify('bob@localhost', { body: `Phone gone (${node.url})` }, 'admin', node.url);
      assert.equal(n3.status, 202, JSON.stringify(n3.body));
      assert.equal(n3.body.pushed, 1, `asked at ${node.url}: the lingering phone is pushed`);
      assert.equal(n3.body.sessions, 1, `asked at ${node.url}: only the laptop can take it live`);
      await laptop.waitFor((p) => p.type === 'notification' && p.id === n3.body.id, 'live on the laptop');
      pushes++;
      await rx.until(() => pushesTo('bob-phone-token').length >= pushes, 'the push to the lost phone');
    }
    // The phone comes back to its session (the same resource, on the node where it lingers): reachable
    // live again, whichever node is asked, so it is not pushed.
    const phoneNode = t.nodes.find((n) => n.server.engine.localSessionsOf('bob@localhost').some((s) => s.resource === 'phone'));
    assert.ok(phoneNode, 'the phone still lingers on a node');
    const { client: phoneAgain } = await TestClient.login(phoneNode.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'phone' });
    await phoneAgain.barrier();
    for (const node of t.nodes) {
      const n4 = await notify('bob@localhost', { body: `Phone back (${node.url})` }, 'admin', node.url);
      assert.equal(n4.body.pushed, 0, `asked at ${node.url}: the phone is back, not pushed`);
      assert.equal(n4.body.sessions, 2, `asked at ${node.url}: the phone and the laptop take it live`);
      await phoneAgain.waitFor((p) => p.type === 'notification' && p.id === n4.body.id, 'live on the phone again');
    }
    assert.equal(pushesTo('bob-phone-token').length, pushes);
    await phoneAgain.close();
    await laptop.close();
  });

  test('the same token again replaces its registration; the same device with a new token replaces its old one; the limit is per account', async () => {
    const { client } = await TestClient.login(t.wsUrl, 'carol@localhost', 'secret-pw', { resource: 'tablet' });
    const a = await client.request('push.register', { provider: 'gw', token: 'carol-t1' });
    const b = await client.request('push.register', { provider: 'gw', token: 'carol-t1', secondToken: 'voip-1' });
    assert.equal(b.replaced, true);
    assert.equal(b.id, a.id);
    // Tokens rotate: the same resource and provider with a new token is the same device.
    const c = await client.request('push.register', { provider: 'gw', token: 'carol-t2' });
    assert.equal(c.replaced, true);
    assert.equal(c.id, a.id);
    assert.deepEqual(rows('SELECT token, second_token FROM push_registrations WHERE account = ?', 'carol@localhost'), [{ token: 'carol-t2', second_token: null }]);
    const { client: c2 } = await TestClient.login(t.wsUrl, 'carol@localhost', 'secret-pw', { resource: 'phone' });
    await c2.request('push.register', { provider: 'gw', token: 'carol-t3' });
    const { client: c3 } = await TestClient.login(t.wsUrl, 'carol@localhost', 'secret-pw', { resource: 'watch' });
    await c3.request('push.register', { provider: 'gw', token: 'carol-t4' });
    const { client: c4 } = await TestClient.login(t.wsUrl, 'carol@localhost', 'secret-pw', { resource: 'tv' });
    await expectError(c4.request('push.register', { provider: 'gw', token: 'carol-t5' }), 'not-allowed', /push_max_registrations = 3/);
    assert.equal(rows('SELECT count(*) AS n FROM push_registrations WHERE account = ?', 'carol@localhost')[0].n, 3);
    // Unregister by token and by id; an unknown one removes nothing.
    assert.deepEqual(await c4.request('push.unregister', { token: 'carol-t3' }), { removed: 1 });
    assert.deepEqual(await c4.request('push.unregister', { registration: c.id }), { removed: 1 });
    assert.deepEqual(await c4.request('push.unregister', { token: 'nope' }), { removed: 0 });
    const list = await c4.request('push.list');
    assert.deepEqual(list.registrations.map((r: any) => r.resource), ['watch']);
    // Another account cannot remove carol's device: unregister is always for the session's own account.
    const { client: dave } = await TestClient.login(t.wsUrl, 'dave@localhost', 'secret-pw', { resource: 'x' });
    assert.deepEqual(await dave.request('push.unregister', { token: 'carol-t4' }), { removed: 0 });
    assert.equal(rows('SELECT count(*) AS n FROM push_registrations WHERE token = ?', 'carol-t4')[0].n, 1);
    for (const x of [client, c2, c3, c4, dave]) await x.close();
  });

  test('bad registrations are refused with a clear error and store nothing', async () => {
    const { client } = await TestClient.login(t.wsUrl, 'dave@localhost', 'secret-pw', { resource: 'bad' });
    const count = () => rows('SELECT count(*) AS n FROM push_registrations WHERE account = ?', 'dave@localhost')[0].n as number;
    const before = count();
    await expectError(client.request('push.register', { provider: 'apns-prod', token: 'abc' }), 'bad-request', /unknown push provider "apns-prod".*knows: gw, browser/);
    await expectError(client.request('push.register', { provider: 'gw', token: 'x'.repeat(4097) }), 'bad-request', /longer than 4096 bytes/);
    await expectError(client.request('push.register', { provider: 'gw', token: 'has space' }), 'bad-request', /printable ASCII/);
    await expectError(client.request('push.register', { provider: 'gw' }), 'bad-request', /"token"/);
    await expectError(client.request('push.register', { provider: 'gw', token: 't', account: 'carol@localhost' }), 'bad-request', /unknown field "account"/);
    // Web Push: the subscription object, checked.
    await expectError(client.request('push.register', { provider: 'browser', token: 'https://push.example/x' }), 'bad-request', /needs "subscription"/);
    const sub = (over: Record<string, unknown>) => ({ provider: 'browser', subscription: { endpoint: `http://127.0.0.1:${new URL(rx.url).port}/wp/1`, keys: { p256dh: P256DH, auth: AUTH }, ...over } });
    await expectError(client.request('push.register', sub({ keys: { p256dh: 'not base64!', auth: AUTH } })), 'bad-request', /p256dh/);
    await expectError(client.request('push.register', sub({ keys: { p256dh: Buffer.alloc(65, 4).toString('base64url').slice(0, 40), auth: AUTH } })), 'bad-request', /P-256/);
    await expectError(client.request('push.register', sub({ keys: { p256dh: P256DH, auth: randomBytes(8).toString('base64url') } })), 'bad-request', /16-byte/);
    await expectError(client.request('push.register', sub({ keys: undefined })), 'bad-request', /keys/);
    await expectError(client.request('push.register', sub({ endpoint: 'ftp://push.example/x' })), 'bad-request', /https/);
    await expectError(client.request('push.register', sub({ endpoint: 'not a url' })), 'bad-request', /printable ASCII|not a URL/);
    // The provider's own rule: only its known push services.
    await expectError(client.request('push.register', sub({ endpoint: `http://localhost:${new URL(rx.url).port}/wp/1` })), 'bad-request', /localhost is not a known push service/);
    await expectError(client.request('push.register', { provider: 'gw', subscription: { endpoint: 'https://x.example/' } }), 'bad-request', /for Web Push providers/);
    await expectError(client.request('push.unregister', {}), 'bad-request', /exactly one/);
    await expectError(client.request('push.unregister', { registration: 'a', token: 'b' }), 'bad-request', /exactly one/);
    assert.equal(count(), before);
    // A good Web Push subscription is stored with its keys; its endpoint is its token.
    const ok = await client.request('push.register', sub({}));
    assert.equal(ok.registration.provider, 'browser');
    assert.deepEqual(rows('SELECT token, keys_json FROM push_registrations WHERE id = ?', ok.id).map((r) => [r.token, JSON.parse(r.keys_json)]), [
      [`http://127.0.0.1:${new URL(rx.url).port}/wp/1`, { p256dh: P256DH, auth: AUTH }],
    ]);
    await client.close();
  });

  test('a dead token (410) is pruned; a device refusing pushes is disabled after push_max_failures, with the reason in push.list', async () => {
    const { client } = await TestClient.login(t.wsUrl, 'erin@localhost', 'secret-pw', { resource: 'old-phone' });
    const dead = await client.request('push.register', { provider: 'gw', token: 'erin-dead' });
    await client.close();
    rx.answer = () => ({ status: 410, body: 'gone' });
    try {
      assert.equal((await notify('erin@localhost', { body: 'one' })).body.pushed, 1);
      await eventually(async () => assert.deepEqual(rows('SELECT id FROM push_registrations WHERE id = ?', dead.id), []));
      await queueEmpty();
    } finally {
      rx.answer = () => ({ status: 204 });
    }
    const { client: erin } = await TestClient.login(t.wsUrl, 'erin@localhost', 'secret-pw', { resource: 'x' });
    assert.deepEqual((await erin.request('push.list')).registrations, []);
    await erin.close();
    const metrics = await (await fetch(`${t.url}/metrics`)).text();
    assert.match(metrics, /presenced_push_pruned_total\{provider="gw"\} 1/);

    // A device whose pushes are refused (400): two failures in a row (push_max_failures) disable it.
    const { client: phone } = await TestClient.login(t.wsUrl, 'frank@localhost', 'secret-pw', { resource: 'phone' });
    await phone.request('push.register', { provider: 'gw', token: 'frank-token' });
    await phone.close();
    rx.answer = () => ({ status: 400, body: 'bad payload' });
    try {
      await notify('frank@localhost', { body: 'first' });
      await notify('frank@localhost', { body: 'second' });
      await eventually(async () => assert.equal(rows('SELECT disabled_at FROM push_registrations WHERE token = ?', 'frank-token')[0].disabled_at !== null, true));
      await queueEmpty();
    } finally {
      rx.answer = () => ({ status: 204 });
    }
    assert.equal(pushesTo('frank-token').length, 2);
    // Disabled: nothing more is queued for it.
    assert.equal((await notify('frank@localhost', { body: 'third' })).body.pushed, 0);
    const { client: frank } = await TestClient.login(t.wsUrl, 'frank@localhost', 'secret-pw', { resource: 'phone' });
    const [reg] = (await frank.request('push.list')).registrations;
    assert.equal(reg.failures, 2);
    assert.match(reg.lastError, /HTTP 400/);
    assert.match(reg.disabled.reason, /2 pushes in a row failed \(push_max_failures\); last: HTTP 400/);
    // Registering the token again enables it.
    const again = await frank.request('push.register', { provider: 'gw', token: 'frank-token' });
    assert.equal(again.replaced, true);
    assert.equal(again.registration.disabled, null);
    assert.equal(again.registration.failures, 0);
    await frank.close();
    assert.deepEqual(rx.bad, []);
  });

  test('the SDK: registerPush, listPush, the notification event, unregisterPush and setExternalToken', async () => {
    const sdk = new PresencedClient({ url: t.wsUrl, jid: 'dave@localhost', password: 'secret-pw', resource: 'sdk-phone', WebSocket, heartbeat: false });
    await sdk.connect();
    try {
      const reg = await sdk.registerPush({ provider: 'gw', token: 'dave-sdk-token', secondToken: 'dave-voip' });
      assert.equal(reg.provider, 'gw');
      assert.equal(reg.current, true);
      assert.equal(reg.resource, 'sdk-phone');
      const seen = new Promise<ServerNotification>((resolve) => sdk.once('notification', resolve));
      const n = await notify('dave@localhost', { title: 'Hi', body: 'From the SDK test', data: { a: 'b' } });
      // Its own device is active: not pushed (dave's offline Web Push device from an earlier test is).
      assert.ok(!n.body.devices.includes(reg.id), JSON.stringify(n.body));
      assert.deepEqual(await seen, { id: n.body.id, title: 'Hi', body: 'From the SDK test', data: { a: 'b' } });
      assert.ok((await sdk.listPush()).some((r) => r.id === reg.id));
      // MigratoryData's call: the same device's token rotated.
      await sdk.setExternalToken('gw', 'dave-sdk-token-2');
      const list = await sdk.listPush();
      assert.deepEqual(list.filter((r) => r.resource === 'sdk-phone').map((r) => [r.id, r.tokenHint]), [[reg.id, '…-token-2']]);
      assert.equal(await sdk.unregisterPush({ registration: reg.id }), 1);
      assert.equal(await sdk.unregisterPush({ token: 'dave-sdk-token-2' }), 0);
      await assert.rejects(sdk.registerPush({ provider: 'nope', token: 'x' }), (e: unknown) => e instanceof PresencedError && e.code === 'bad-request' && /knows: gw/.test(e.message));
    } finally {
      await sdk.close();
    }
  });

  test('the notify API: admin only, known accounts only, a checked body', async () => {
    assert.equal((await notify('alice@localhost', { body: 'x' }, '')).status, 401);
    assert.equal((await notify('alice@localhost', { body: 'x' }, 'Bearer not-the-admin-token')).status, 401);
    assert.equal((await notify('alice@localhost', { body: 'x' }, `Basic ${Buffer.from('alice@localhost:secret-pw').toString('base64')}`)).status, 401);
    const unknown = await notify('nobody@localhost', { body: 'x' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'not-found');
    for (const [body, why] of [
      [{}, /body/],
      [{ body: '' }, /body/],
      [{ body: 'x', extra: 1 }, /unknown field "extra"/],
      [{ body: 'x', urgency: 'now' }, /urgency/],
      [{ body: 'x', data: { k: 1 } }, /data/],
      [{ body: 'x', data: { 'bad key': 'v' } }, /data/],
      [{ body: 'x', collapseKey: 'has space' }, /collapseKey/],
      [{ body: 'x'.repeat(2049) }, /body/],
      [{ body: 'bell\u0007' }, /control characters/],
      ['{not json', /JSON/i],
      [[1, 2], /object/],
    ] as Array<[unknown, RegExp]>) {
      const r = await notify('alice@localhost', body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.error.code, 'bad-request');
      assert.match(r.body.error.message, why);
    }
    const big = await notify('alice@localhost', JSON.stringify({ body: 'x', data: Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v'.repeat(512)])) }));
    assert.equal(big.status, 413);
  });
});

describe('the notify API and XMPP sessions', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ xmpp_port: 0, xmpp_require_tls: false });
    await t.createAccount('alice@localhost');
  });
  after(async () => {
    await t.destroy();
  });

  test('an XMPP session gets the notification as a headline message from the server', async () => {
    const c = await XmppTestClient.login(`xmpp://127.0.0.1:${t.server.xmppPort}`, 'alice', 'secret-pw', 'desk');
    try {
      await c.xmpp.send(xml('presence'));
      const res = await fetch(`${t.url}/api/v1/accounts/alice@localhost/notify`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.config.admin_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ title: 'Maintenance <tonight>', body: 'Back at 02:00 & later' }),
      });
      assert.equal(res.status, 202);
      const r = (await res.json()) as { id: string; sessions: number; pushed: number };
      assert.equal(r.sessions, 1);
      assert.equal(r.pushed, 0);
      const m = await c.waitFor((s) => s.is('message') && s.attrs.type === 'headline', 'headline');
      assert.equal(m.attrs.from, 'localhost');
      assert.equal(m.attrs.to, 'alice@localhost/desk');
      assert.equal(m.attrs.id, r.id);
      assert.equal(m.getChildText('subject'), 'Maintenance <tonight>');
      assert.equal(m.getChildText('body'), 'Back at 02:00 & later');
    } finally {
      await c.stop();
    }
  });
});

describe('push provider configuration', () => {
  test('a bad push_providers entry stops the start with a message naming the provider and the field', async () => {
    for (const [providers, why] of [
      [{ pigeon: { type: 'carrier-pigeon' } }, /push_providers\.pigeon\.type must be one of .*webhook/],
      [{ gw: { type: 'webhook', url: 'https://push.example/hook' } }, /push_providers\.gw\.secret must be a non-empty string/],
      [{ gw: { type: 'webhook', url: 'https://push.example/hook', secret: 'plain' } }, /push_providers\.gw\.secret must be a Standard Webhooks secret/],
      [{ gw: { type: 'webhook', url: 'http://push.example/hook', secret: SECRET } }, /push_providers\.gw\.url must be https/],
      [{ gw: { type: 'webhook', url: 'https://push.example/hook', secret: SECRET, retries: 3 } }, /unknown field "retries"/],
    ] as Array<[Record<string, Record<string, unknown>>, RegExp]>) {
      const dir = mkdtempSync(join(tmpdir(), 'presenced-push-config-'));
      try {
        // The configuration is checked by each process as it starts: one server says it all (a test
        // cluster would start PostgreSQL databases and Redis servers for nothing each time).
        await assert.rejects(startSingleTestServer({ push_providers: providers }, dir), why);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });
});
