import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { pushOf } from '../../src/features/push/push-feature.js';
import { buildDist, killAllServerProcesses, processAdmin, startServerProcess } from '../helpers/server-process.js';
import { metricSum, startTestServer, type TestServer } from '../helpers/server.js';
import { eventually, Receiver } from '../helpers/webhook-receiver.js';
import { TestClient } from '../helpers/ws-client.js';

/**
 * The push queue's guarantees: Retry-After is honoured, a newer push replaces the waiting one with the
 * same collapse key, the privacy settings decide what a push carries, and a kill -9 with pushes waiting
 * loses none and sends none twice.
 */

const SECRET = `whsec_${randomBytes(24).toString('base64')}`;

const readRows = (dataDir: string, sqlText: string, ...args: unknown[]): any[] => {
  const d = new Database(join(dataDir, 'presenced.sqlite'), { readonly: true, fileMustExist: true });
  try {
    return d.prepare(sqlText).all(...args);
  } finally {
    d.close();
  }
};

describe('push queue', () => {
  let t: TestServer;
  const rx = new Receiver();
  const of = (device: string) => rx.requests.filter((r) => (r.payload as { device?: string } | null)?.device === device);

  before(async () => {
    rx.secret = SECRET;
    await rx.listen();
    t = await startTestServer({
      webhooks_allow_private: true,
      push_providers: { gw: { type: 'webhook', url: rx.url, secret: SECRET } },
      push_backoff_base_ms: 10,
    });
    for (const u of ['alice', 'bob', 'carol']) await t.createAccount(`${u}@localhost`);
  });
  after(async () => {
    await t.destroy();
    await rx.close();
  });

  const registerOffline = async (jid: string, token: string): Promise<string> => {
    const { client } = await TestClient.login(t.wsUrl, jid, 'secret-pw', { resource: 'phone' });
    const r = await client.request('push.register', { provider: 'gw', token });
    await client.close();
    // Offline everywhere: under TEST_CLUSTER the session may have been on another node than node 0,
    // whose push policy the tests call directly (not through a client, which the harness would settle).
    await eventually(async () => assert.equal((await t.server.engine.sessionsOf(jid)).length, 0, `${jid} still has a session`));
    return r.id as string;
  };

  test('429 with Retry-After: the push is retried, and no sooner than the receiver asked', async () => {
    await registerOffline('alice@localhost', 'alice-token');
    let first = true;
    rx.answer = () => {
      if (!first) return { status: 204 };
      first = false;
      return { status: 429, headers: { 'retry-after': '2' } };
    };
    try {
      const push = pushOf(t.server.engine)!;
      const queued = await push.enqueue('alice@localhost', { count: 3 }, { reason: 'message', trigger: 'offline-message' });
      assert.equal(queued.length, 1);
      await rx.until(() => of('alice-token').length >= 2, 'the retry', 20_000);
    } finally {
      rx.answer = () => ({ status: 204 });
    }
    const [a, b] = of('alice-token');
    assert.equal(a!.answered, 429);
    assert.equal(b!.answered, 204);
    assert.ok(b!.at - a!.answeredAt >= 1990, `retried ${b!.at - a!.answeredAt} ms after the 429`);
    // The same push both times: the receiver can tell it is a retry.
    assert.equal(a!.headers['webhook-id'], b!.headers['webhook-id']);
    assert.deepEqual(a!.payload, b!.payload);
    // Counted by whichever node's worker sent it (under TEST_CLUSTER, any of them).
    assert.equal(await metricSum(t, 'presenced_push_failed_total{provider="gw",outcome="retry"}'), 1);
    assert.ok((await metricSum(t, 'presenced_push_sent_total{provider="gw"}')) >= 1);
    assert.ok((await metricSum(t, 'presenced_push_latency_seconds_count{provider="gw"}')) >= 2);
  });

  test('per-device order: one push at a time per device, in the order queued, none overtaking one that backs off; another device is not held up', async () => {
    const { client } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'phone' });
    const phone = (await client.request('push.register', { provider: 'gw', token: 'bob-phone' })).id as string;
    await client.close();
    const { client: c2 } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'tablet' });
    const tablet = (await c2.request('push.register', { provider: 'gw', token: 'bob-tablet' })).id as string;
    await c2.close();
    let first = true;
    rx.answer = () => {
      if (!first) return { status: 204 };
      first = false;
      return { status: 429, headers: { 'retry-after': '1' } };
    };
    const push = pushOf(t.server.engine)!;
    const count = (r: { payload: unknown }) => (r.payload as { count: number }).count;
    try {
      await push.enqueue('bob@localhost', { count: 1, collapseKey: 'k1' }, { reason: 'message', onlyDevices: [phone] });
      await rx.until(() => of('bob-phone').length >= 1, 'the first push, refused with 429');
      // Queued while the first backs off: they wait behind it, whatever their due time.
      await push.enqueue('bob@localhost', { count: 2, collapseKey: 'k2' }, { reason: 'message', onlyDevices: [phone] });
      await push.enqueue('bob@localhost', { count: 3, collapseKey: 'k3' }, { reason: 'message', onlyDevices: [phone] });
      await push.enqueue('bob@localhost', { count: 7, collapseKey: 'k7' }, { reason: 'message', onlyDevices: [tablet] });
      await rx.until(() => of('bob-phone').length >= 4, 'the retry and the two later pushes', 20_000);
    } finally {
      rx.answer = () => ({ status: 204 });
    }
    const phoneReqs = of('bob-phone');
    assert.deepEqual(phoneReqs.map(count), [1, 1, 2, 3]);
    assert.deepEqual(phoneReqs.map((r) => r.answered), [429, 204, 204, 204]);
    // One at a time: each request only after the previous one was answered.
    for (let i = 1; i < phoneReqs.length; i++) assert.ok(phoneReqs[i]!.at >= phoneReqs[i - 1]!.answeredAt, `request ${i} overlapped the one before`);
    assert.ok(phoneReqs[1]!.at - phoneReqs[0]!.answeredAt >= 990, 'the retry came before Retry-After');
    // The tablet's push did not wait for the phone's backoff.
    const tabletReqs = of('bob-tablet');
    assert.deepEqual(tabletReqs.map(count), [7]);
    assert.ok(tabletReqs[0]!.at < phoneReqs[1]!.at, 'the other device waited for the backoff');
    await eventually(async () => assert.equal(await push.registrations.pendingCount(), 0));
  });

  test('privacy: a message push carries neither sender nor text by default; with both settings on, text only when not encrypted', async () => {
    await registerOffline('bob@localhost', 'bob-token');
    const push = pushOf(t.server.engine)!;
    await push.enqueue('bob@localhost', { count: 1, sender: 'carol@localhost', body: 'secret words' }, { reason: 'message' });
    await rx.until(() => of('bob-token').length >= 1, 'the first push');
    const first = of('bob-token')[0]!;
    assert.deepEqual(first.payload, { type: 'push', provider: 'gw', device: 'bob-token', reason: 'message', count: 1, collapseKey: 'messages', urgency: 'high', ttl: 86_400 });
    assert.ok(!first.body.includes('secret words') && !first.body.includes('carol@'));
    assert.deepEqual(t.sql("SELECT message_json FROM push_outbox WHERE message_json LIKE '%secret%'"), []);

    const open = await startTestServer({ push: true, push_include_sender: true, push_include_body: true, push_providers: {} });
    try {
      const s = pushOf(open.server.engine)!.service;
      const m = s.messageOf({ count: 2, sender: 'carol@localhost', body: 'hi' }, 'message', 'p_1');
      assert.equal(m.sender, 'carol@localhost');
      assert.equal(m.body, 'hi');
      const enc = s.messageOf({ count: 2, sender: 'carol@localhost', body: 'hi', encrypted: true }, 'message', 'p_2');
      assert.equal(enc.sender, 'carol@localhost');
      assert.equal(enc.body, undefined);
      const clear = s.messageOf({ count: 5, sender: 'carol@localhost', body: 'hi' }, 'clear', 'p_3');
      assert.deepEqual(clear, { reason: 'clear', count: 0, collapseKey: 'messages', urgency: 'normal', ttlSeconds: 86_400 });
    } finally {
      await open.destroy();
    }
  });

  test('coalescing: one waiting push per device and collapse key, the newest content in the oldest place', async () => {
    const reg = await registerOffline('carol@localhost', 'carol-token');
    const repo = pushOf(t.server.engine)!.registrations;
    const service = pushOf(t.server.engine)!.service;
    const msg = (count: number) => service.messageOf({ count }, 'message', 'p_x');
    // Written straight to the queue so that the worker cannot send between the writes.
    const now = Date.now() + 60_000;
    await repo.enqueue([{ registrationId: reg, account: 'carol@localhost', trigger: 'offline-message', message: msg(1), pushId: 'p_1' }], now);
    await repo.enqueue([{ registrationId: reg, account: 'carol@localhost', trigger: 'offline-message', message: msg(2), pushId: 'p_2' }], now);
    await repo.enqueue([{ registrationId: reg, account: 'carol@localhost', trigger: 'clear', message: service.messageOf({}, 'clear', 'p_3'), pushId: 'p_3' }], now);
    const rows: any[] = t.sql('SELECT push_id, trigger, message_json FROM push_outbox WHERE registration_id = ?', reg);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].push_id, 'p_1');
    assert.equal(rows[0].trigger, 'clear');
    assert.equal(JSON.parse(rows[0].message_json).count, 0);
    assert.equal(JSON.parse(rows[0].message_json).reason, 'clear');
  });
});

describe('push queue: kill -9 with pushes waiting', { timeout: 240_000 }, () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'presenced-push-crash-'));
  const rx = new Receiver();
  before(async () => {
    rx.secret = SECRET;
    await rx.listen();
    await buildDist();
  });
  after(async () => {
    killAllServerProcesses();
    await rx.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('the pushes written before the crash are each sent once after the restart', async () => {
    const env = {
      PRESENCED_WEBHOOKS_ALLOW_PRIVATE: 'true',
      // The JSON kind from the environment: the provider object as JSON text.
      PRESENCED_PUSH_PROVIDERS: JSON.stringify({ gw: { type: 'webhook', url: rx.url, secret: SECRET } }),
    };
    // The first server sends one push per device per minute: the later ones wait in the queue.
    const first = await startServerProcess(dataDir, { ...env, PRESENCED_PUSH_RATE_PER_DEVICE_PER_MINUTE: '1' });
    assert.equal((await processAdmin(first.url, 'POST', '/accounts', { jid: 'alice@localhost', password: 'alice-pw' })).status, 201);
    const ws = first.url.replace(/^http/, 'ws') + '/ws';
    const { client } = await TestClient.login(ws, 'alice@localhost', 'alice-pw', { resource: 'phone' });
    await client.request('push.register', { provider: 'gw', token: 'crash-token' });
    await client.request('bye');
    await client.closed;
    const ids: string[] = [];
    for (const body of ['one', 'two', 'three']) {
      const r = await processAdmin(first.url, 'POST', '/accounts/alice@localhost/notify', { body });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.equal(r.body.pushed, 1);
      ids.push(r.body.id as string);
    }
    // The first is sent and gone from the queue; two wait for the rate limit (not leased).
    await rx.until((rs) => rs.length >= 1, 'the first push');
    const waiting = () => readRows(dataDir, 'SELECT claimed_by FROM push_outbox');
    await eventually(async () => assert.equal(waiting().length, 2));
    assert.deepEqual(waiting().map((r) => r.claimed_by), [null, null]);
    first.child.kill('SIGKILL');
    assert.equal((await first.exited).signal, 'SIGKILL');
    assert.equal(rx.requests.length, 1);

    const second = await startServerProcess(dataDir, env);
    try {
      await rx.until((rs) => rs.length >= 3, 'the two waiting pushes');
      await eventually(async () => assert.equal(readRows(dataDir, 'SELECT count(*) AS n FROM push_outbox')[0].n, 0));
      // Nothing more arrives: the queue is empty, and every push was answered 2xx.
      const m = await (await fetch(`${second.url}/metrics`)).text();
      assert.match(m, /presenced_push_pending 0/);
      assert.deepEqual(rx.bad, []);
      const got = rx.requests.map((r) => (r.payload as { body: string; data: { notification: string } }));
      assert.deepEqual(got.map((p) => p.body), ['one', 'two', 'three']);
      assert.deepEqual(got.map((p) => p.data.notification), ids);
      assert.equal(new Set(rx.requests.map((r) => r.headers['webhook-id'])).size, 3);
      // Each push logged with its trigger, never its text.
      const sentLogs = second.logs.filter((l) => l.msg === 'push sent');
      assert.equal(sentLogs.length, 2);
      for (const l of sentLogs) {
        assert.equal(l.trigger, 'notify');
        assert.ok(!JSON.stringify(l).includes('two') && !JSON.stringify(l).includes('three'), JSON.stringify(l));
      }
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  });
});
