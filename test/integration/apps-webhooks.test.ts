import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { webhooksOf } from '../../src/features/apps/webhooks/index.js';
import { appsOf } from '../../src/features/apps/apps-feature.js';
import type { WebhookUpdate } from '../../src/features/apps/webhooks/outbox.js';
import type { AppStatus } from '../../src/features/apps/webhooks/presence-source.js';
import { ADMIN_TOKEN, metricSum, startTestServer, type TestServer } from '../helpers/server.js';
import { eventually, Receiver } from '../helpers/webhook-receiver.js';

const basic = (jid: string, pw = 'secret-pw') => `Basic ${Buffer.from(`${jid}:${pw}`).toString('base64')}`;

async function call(t: TestServer, method: string, path: string, auth: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${t.url}/api/v1/apps${path}`, {
    method,
    headers: { authorization: auth, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const appBody = (url: string, format: 'pairs' | 'extended' = 'extended') => ({
  name: 'Chess Club',
  homepage: 'https://chess.example/',
  redirectUris: ['https://chess.example/callback'],
  webhookUrl: url,
  webhookFormat: format,
});

async function registerApp(t: TestServer, rx: Receiver, format: 'pairs' | 'extended' = 'extended', url = rx.url): Promise<string> {
  const r = await call(t, 'POST', '', basic('alice@localhost'), appBody(url, format));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  rx.secret = r.body.webhookSecret;
  return r.body.id as string;
}

/**
 * Grants `local`@localhost's presence to the app the short way (the grant row and the in-memory index,
 * without the consent flow and the initial update a real grant sends), so that these tests control
 * exactly which updates are enqueued. Returns the user's pairwise id in the app.
 */
async function grantQuietly(t: TestServer, appId: string, local: string): Promise<string> {
  const jid = `${local}@localhost`;
  if (!(await t.server.engine.accountExists(jid))) await t.createAccount(jid);
  const rt = appsOf(t.server.engine)!;
  // Stored as GrantService stores it, with the pairwise id: a cluster node's worker looks the users up by it before it sends.
  await rt.grants.repo.upsertGrant(appId, jid, ['presence', 'presence.status'], Date.now(), rt.service.pairwiseId(appId, jid));
  return rt.index.add(appId, jid, ['presence', 'presence.status']).uid;
}

const grantAll = (t: TestServer, appId: string, ...locals: string[]) => Promise.all(locals.map((l) => grantQuietly(t, appId, l)));

const update = (appId: string, uid: string, status: AppStatus, extra: Partial<WebhookUpdate> = {}): WebhookUpdate => ({ appId, uid, status, at: Date.now(), ...extra });

function perUid(list: ReadonlyArray<{ uid: string; seq: number; status: AppStatus }>): Map<string, Array<{ seq: number; status: AppStatus }>> {
  const m = new Map<string, Array<{ seq: number; status: AppStatus }>>();
  for (const u of list) m.set(u.uid, [...(m.get(u.uid) ?? []), { seq: u.seq, status: u.status }]);
  return m;
}

const FAST = { webhooks_allow_private: true, webhook_flush_ms: 5, webhook_batch_ms: 20, webhook_backoff_base_ms: 20, webhook_backoff_cap_ms: 2000 } as const;

describe('app webhooks', () => {
  let t: TestServer;
  let rx: Receiver;

  before(async () => {
    t = await startTestServer(FAST);
    await t.createAccount('alice@localhost');
    await t.createAccount('bob@localhost');
    rx = new Receiver();
    await rx.listen();
  });
  after(async () => {
    await t.destroy();
    await rx.close();
  });

  test('signed, batched updates arrive in order per user, with seq and times (extended format)', async () => {
    rx.requests.length = 0;
    rx.answer = () => ({ status: 200, body: 'ok' });
    const appId = await registerApp(t, rx);
    const hooks = webhooksOf(t.server.engine)!;
    const users = await grantAll(t, appId, 'u1', 'u2', 'u3');
    const statuses: AppStatus[] = ['online', 'away', 'dnd', 'online', 'offline'];
    for (const s of statuses) hooks.outbox.enqueue(users.map((uid) => update(appId, uid, s, s === 'away' ? { statusText: 'brb' } : {})));
    await hooks.outbox.flushed;
    await rx.until(() => rx.delivered().length === 15, '15 updates');
    assert.deepEqual(rx.bad, []);
    for (const [uid, got] of perUid(rx.delivered())) {
      assert.deepEqual(got, statuses.map((status, i) => ({ seq: i + 1, status })), `updates of ${uid}`);
    }
    const first = (rx.requests[0]!.payload as Array<Record<string, unknown>>)[0]!;
    assert.equal(typeof first.at, 'string');
    assert.ok(rx.delivered().some((u) => (u as { statusText?: string }).statusText === 'brb'));
    // Batched: far fewer requests than updates.
    assert.ok(rx.requests.length < 15, `${rx.requests.length} requests`);
    const view = await call(t, 'GET', `/${appId}/webhook`, basic('alice@localhost'));
    assert.equal(view.status, 200);
    assert.equal(view.body.state, 'ok');
    assert.equal(view.body.pending, 0);
    // Whichever node sent them (under TEST_CLUSTER any node's worker may).
    assert.ok((await metricSum(t, 'presenced_webhook_deliveries_total{result="delivered"}')) > 0, 'deliveries counted');
    assert.equal(await metricSum(t, 'presenced_webhook_pending'), 0);
  });

  test('the pairs format is the seed\'s array of ["UID","status"]', async () => {
    rx.requests.length = 0;
    rx.answer = () => ({ status: 202 });
    const appId = await registerApp(t, rx, 'pairs');
    const hooks = webhooksOf(t.server.engine)!;
    const [p1, p2] = await grantAll(t, appId, 'p1', 'p2');
    hooks.outbox.enqueue([update(appId, p1!, 'online'), update(appId, p2!, 'dnd')]);
    await rx.until((rs) => rs.length >= 1, 'one request');
    assert.deepEqual(rx.bad, []);
    assert.deepEqual(rx.requests[0]!.payload, [[p1, 'online'], [p2, 'dnd']]);
  });

  test('receiver down then up: Retry-After honoured, the retry keeps its webhook-id, updates collapse to the newest per user, all arrive in order', async () => {
    rx.requests.length = 0;
    let down = true;
    rx.answer = () => (down ? { status: 503, headers: { 'retry-after': '1' }, body: 'maintenance' } : { status: 200 });
    const appId = await registerApp(t, rx);
    const hooks = webhooksOf(t.server.engine)!;
    const [u1, u2] = await grantAll(t, appId, 'u1', 'u2');
    hooks.outbox.enqueue([update(appId, u1!, 'online')]);
    await rx.until((rs) => rs.length >= 1, 'the first attempt');
    // The endpoint is failing now: these wait, and collapse to the newest of each user.
    hooks.outbox.enqueue([update(appId, u1!, 'away'), update(appId, u2!, 'online')]);
    hooks.outbox.enqueue([update(appId, u1!, 'dnd'), update(appId, u2!, 'away')]);
    await hooks.outbox.flushed;
    await rx.until((rs) => rs.length >= 2, 'the second attempt');
    down = false;
    await rx.until((rs) => rs.some((r) => r.answered === 200), 'a delivered request');
    assert.deepEqual(rx.bad, []);
    const [a1, a2, a3] = rx.requests;
    assert.deepEqual(rx.requests.map((r) => r.answered), [503, 503, 200]);
    // Retry-After: 1 (second): no attempt sooner than that after the previous answer.
    assert.ok(a2!.at - a1!.answeredAt >= 1000, `second attempt ${a2!.at - a1!.answeredAt} ms after the 503`);
    assert.ok(a3!.at - a2!.answeredAt >= 1000, `third attempt ${a3!.at - a2!.answeredAt} ms after the 503`);
    // The same updates again: the same webhook-id, so the receiver can recognise a retry.
    assert.equal(a3!.headers['webhook-id'], a2!.headers['webhook-id']);
    assert.notEqual(a2!.headers['webhook-id'], a1!.headers['webhook-id']);
    const sent = (a3!.payload as Array<{ uid: string; status: string; seq: number }>).map(({ uid, status, seq }) => ({ uid, status, seq }));
    assert.deepEqual(sent, [
      { uid: u1, status: 'dnd', seq: 3 },
      { uid: u2, status: 'away', seq: 2 },
    ]);
    await eventually(async () => {
      const v = await call(t, 'GET', `/${appId}/webhook`, basic('alice@localhost'));
      assert.equal(v.body.state, 'ok');
      assert.equal(v.body.pending, 0);
    });
    const log = await call(t, 'GET', `/${appId}/webhook/deliveries`, basic('alice@localhost'));
    assert.deepEqual(log.body.deliveries.map((d: { status: number }) => d.status), [503, 503, 200]);
    assert.equal(log.body.deliveries[0].responseExcerpt, 'maintenance');
    assert.equal(log.body.deliveries[0].error, 'HTTP 503');
  });

  test('replay re-sends delivered updates of a time range, with their seq', async () => {
    rx.requests.length = 0;
    rx.answer = () => ({ status: 200 });
    const appId = await registerApp(t, rx);
    const hooks = webhooksOf(t.server.engine)!;
    const from = Date.now();
    const [r1] = await grantAll(t, appId, 'r1');
    hooks.outbox.enqueue([update(appId, r1!, 'online'), update(appId, r1!, 'away')]);
    await rx.until(() => rx.delivered().length === 2, 'two updates');
    const r = await call(t, 'POST', `/${appId}/webhook/replay`, basic('alice@localhost'), { from: new Date(from).toISOString(), to: Date.now() });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.replayed, 2);
    await rx.until(() => rx.delivered().length === 4, 'the replayed updates');
    assert.deepEqual(rx.delivered().slice(2).map((u) => [u.uid, u.status, u.seq]), [[r1, 'online', 1], [r1, 'away', 2]]);
    assert.equal((await call(t, 'POST', `/${appId}/webhook/replay`, basic('alice@localhost'), { from: 'yesterday', to: 1 })).status, 400);
    assert.equal((await call(t, 'POST', `/${appId}/webhook/replay`, basic('alice@localhost'), { from: 10, to: 1 })).status, 400);
    assert.equal((await call(t, 'POST', `/${appId}/webhook/replay`, basic('bob@localhost'), { from: 1, to: 10 })).status, 404);
  });
});

describe('app webhooks: a receiver that never recovers', () => {
  let t: TestServer;
  let rx: Receiver;
  before(async () => {
    t = await startTestServer({ ...FAST, webhook_retry_window_ms: 300, webhook_backoff_cap_ms: 50 });
    await t.createAccount('alice@localhost');
    await t.createAccount('bob@localhost');
    rx = new Receiver();
    await rx.listen();
  });
  after(async () => {
    await t.destroy();
    await rx.close();
  });

  test('is disabled after the retry window, its log readable by the owner only, and enabling it again delivers what was kept', async () => {
    let broken = true;
    rx.answer = () => (broken ? { status: 500, body: 'x'.repeat(2000) } : { status: 200 });
    const appId = await registerApp(t, rx);
    const [n1, n2] = await grantAll(t, appId, 'n1', 'n2');
    webhooksOf(t.server.engine)!.outbox.enqueue([update(appId, n1!, 'online'), update(appId, n2!, 'away')]);
    await eventually(async () => assert.equal((await call(t, 'GET', `/${appId}/webhook`, basic('alice@localhost'))).body.state, 'disabled'));
    const v = await call(t, 'GET', `/${appId}/webhook`, basic('alice@localhost'));
    assert.match(v.body.disabledReason, /no successful delivery since .* last: HTTP 500/);
    assert.equal(v.body.pending, 2);
    assert.ok(rx.requests.length >= 2);
    const log = await call(t, 'GET', `/${appId}/webhook/deliveries?limit=1000`, basic('alice@localhost'));
    assert.equal(log.status, 200);
    assert.equal(log.body.deliveries.length, rx.requests.length);
    assert.equal(log.body.deliveries[0].status, 500);
    assert.equal(Buffer.byteLength(log.body.deliveries[0].responseExcerpt), 512);
    assert.equal(typeof log.body.deliveries[0].latencyMs, 'number');
    const admin = await call(t, 'GET', `/${appId}/webhook/deliveries`, `Bearer ${ADMIN_TOKEN}`);
    assert.equal(admin.status, 200);
    for (const path of [`/${appId}/webhook`, `/${appId}/webhook/deliveries`]) {
      const r = await call(t, 'GET', path, basic('bob@localhost'));
      assert.equal(r.status, 404, path);
      assert.equal(JSON.stringify(r.body).includes(appId), false);
    }
    assert.equal((await call(t, 'POST', `/${appId}/webhook/enable`, basic('bob@localhost'))).status, 404);
    assert.equal((await call(t, 'GET', `/nope/webhook`, basic('alice@localhost'))).status, 404);
    broken = false;
    const e = await call(t, 'POST', `/${appId}/webhook/enable`, basic('alice@localhost'));
    assert.equal(e.status, 200);
    assert.notEqual(e.body.state, 'disabled');
    await rx.until(() => rx.delivered().length === 2, 'the kept updates');
    assert.deepEqual(rx.bad, []);
  });
});

describe('app webhooks: SSRF', () => {
  let t: TestServer;
  let connections = 0;
  const tcp = createTcpServer((s) => {
    connections++;
    s.destroy();
  });
  before(async () => {
    t = await startTestServer({ webhook_flush_ms: 5, webhook_batch_ms: 5 });
    await t.createAccount('alice@localhost');
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  });
  after(async () => {
    await t.destroy();
    await new Promise((r) => tcp.close(r));
  });

  test('a webhook at a loopback address is refused: plain http at registration, https at delivery, with the reason in the log', async () => {
    const port = (tcp.address() as AddressInfo).port;
    const plain = await call(t, 'POST', '', basic('alice@localhost'), appBody(`http://127.0.0.1:${port}/hook`));
    assert.equal(plain.status, 400);
    const r = await call(t, 'POST', '', basic('alice@localhost'), appBody(`https://127.0.0.1:${port}/hook`));
    assert.equal(r.status, 201);
    const appId = r.body.id as string;
    webhooksOf(t.server.engine)!.outbox.enqueue([update(appId, await grantQuietly(t, appId, 's1'), 'online')]);
    let log: any;
    await eventually(async () => {
      log = (await call(t, 'GET', `/${appId}/webhook/deliveries`, basic('alice@localhost'))).body;
      assert.ok(log.deliveries.length >= 1, `no delivery attempt logged yet: ${JSON.stringify(log).slice(0, 200)}`);
    });
    // Retried with backoff like any failure (the owner may fix the URL), each attempt refused the same way.
    assert.equal(log.deliveries[0].status, null);
    assert.match(log.deliveries[0].error, /^refused: 127\.0\.0\.1 resolves to 127\.0\.0\.1, a loopback address/);
    assert.equal(connections, 0);
    const v = await call(t, 'GET', `/${appId}/webhook`, basic('alice@localhost'));
    assert.equal(v.body.state, 'failing');
    assert.ok((await metricSum(t, 'presenced_webhook_deliveries_total{result="refused"}')) > 0, 'refusals counted');
    assert.equal((await call(t, 'GET', `/${appId}/webhook/deliveries?limit=0`, basic('alice@localhost'))).status, 400);
    assert.equal((await call(t, 'GET', `/${appId}/webhook/deliveries?since=soon`, basic('alice@localhost'))).status, 400);
  });

  test('a host name that resolves to loopback is refused too', async () => {
    const r = await call(t, 'POST', '', basic('alice@localhost'), appBody('https://localhost:1/hook'));
    const appId = r.body.id as string;
    webhooksOf(t.server.engine)!.outbox.enqueue([update(appId, await grantQuietly(t, appId, 's2'), 'online')]);
    await eventually(async () => {
      const log = (await call(t, 'GET', `/${appId}/webhook/deliveries`, basic('alice@localhost'))).body;
      assert.match(log.deliveries[0]?.error ?? '', /^refused: localhost resolves to .*loopback/);
    });
  });
});

/** The outbox's pending rows as the database holds them: after their app's delivery position, not superseded. */
const PENDING_SQL = `select l.uid, l.seq from webhook_log l left join webhook_endpoints e on e.app_id = l.app_id
  where l.id > coalesce(e.delivered_through, 0) and l.superseded is null order by l.id`;

describe('app webhooks: durability', () => {
  test('shutdown writes the updates still in memory before the store closes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'presenced-webhooks-'));
    const rx = new Receiver();
    await rx.listen();
    try {
      // Nothing would be written for 10 s, nor sent for 10 minutes: only the shutdown writes them.
      const a = await startTestServer({ ...FAST, webhook_flush_ms: 10_000, webhook_batch_ms: 600_000 }, dir);
      await a.createAccount('alice@localhost');
      const appId = await registerApp(a, rx);
      const z1 = await grantQuietly(a, appId, 'z1');
      webhooksOf(a.server.engine)!.outbox.enqueue([update(appId, z1, 'online'), update(appId, z1, 'away')]);
      await a.stop();
      assert.deepEqual(a.sql(PENDING_SQL).map((r) => ({ uid: r.uid, seq: Number(r.seq) })), [
        { uid: z1, seq: 1 },
        { uid: z1, seq: 2 },
      ]);
    } finally {
      await rx.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('updates written to the outbox survive the server and are delivered by the next one, after a dead worker\'s lease', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'presenced-webhooks-'));
    const rx = new Receiver();
    await rx.listen();
    rx.answer = () => ({ status: 200 });
    try {
      // The first server never gets to send: its batches wait 10 minutes.
      const a = await startTestServer({ ...FAST, webhook_batch_ms: 600_000 }, dir);
      await a.createAccount('alice@localhost');
      const appId = await registerApp(a, rx);
      const hooks = webhooksOf(a.server.engine)!;
      const [d1, d2] = await grantAll(a, appId, 'd1', 'd2');
      for (const s of ['online', 'away', 'offline'] as const) hooks.outbox.enqueue([update(appId, d1!, s), update(appId, d2!, s)]);
      await hooks.outbox.flushed;
      // Committed: this is what a kill -9 now would leave.
      assert.equal(a.sql(PENDING_SQL).length, 6);
      await a.stop();
      // As if a worker had died holding the app: its lease must run out first.
      const leaseEnd = Date.now() + 400;
      a.sql('insert into webhook_endpoints (app_id, failures, claimed_by, claimed_until) values (?, 0, ?, ?) on conflict (app_id) do update set claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until', appId, 'dead-worker', leaseEnd);
      assert.equal(rx.requests.length, 0);
      const b = await startTestServer(FAST, dir);
      try {
        await rx.until(() => rx.delivered().length === 6, 'the six updates');
        assert.ok(rx.requests[0]!.at >= leaseEnd, 'sent before the lease ran out');
        assert.deepEqual(rx.bad, []);
        for (const [, got] of perUid(rx.delivered())) assert.deepEqual(got, [{ seq: 1, status: 'online' }, { seq: 2, status: 'away' }, { seq: 3, status: 'offline' }]);
      } finally {
        await b.stop();
      }
    } finally {
      await rx.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
