import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { ClusterServices, startClusterNode, until, viewOf } from '../helpers/cluster.js';
import { basic, Browserless, consent, pkce } from '../helpers/consent-flow.js';
import { stopAllPrivateServices } from '../helpers/private-services.js';
import { RawXmpp } from '../helpers/raw-xmpp.js';
import type { TestServer } from '../helpers/server.js';
import { Receiver, type Received } from '../helpers/webhook-receiver.js';
import { RequestFailed, TestClient, befriend } from '../helpers/ws-client.js';

/**
 * PostgreSQL and Redis going away under load: three nodes in this process, users on every node
 * changing their presence without pause, watchers on every node. PostgreSQL restarted, then stopped
 * while the test checks what clients get meanwhile (clear errors for what needs the database, live
 * presence flowing between nodes), then started; Redis restarted. After each, without restarting
 * any node, everything works again by itself and every watcher's view is the truth.
 */

let cluster: ClusterServices;
let nodes: TestServer[];
const hooks = new Receiver();
const pushes = new Receiver();
const PUSH_SECRET = `whsec_${randomBytes(24).toString('base64')}`;
const clients: TestClient[] = [];
const raws: RawXmpp[] = [];
const REDIRECT = 'https://chess.example/callback';
const SHOWS = ['available', 'away', 'dnd', 'xa'] as const;

/** Users changing presence (user i on node i % 3) and their watchers (one per node). */
const USERS = ['u0', 'u1', 'u2', 'u3', 'u4', 'u5'].map((u) => `${u}@localhost`);
const WATCHERS = ['w0', 'w1', 'w2'].map((u) => `${u}@localhost`);
const users = new Map<string, TestClient>();
const watchers = new Map<string, { client: TestClient; auth: any }>();
/** What each user last had acknowledged: the truth the watchers must end on. */
const truth = new Map<string, { show: string; status: string }>();
const loadErrors: string[] = [];
let load: { stop: () => Promise<void>; changes: () => number } | null = null;

/** `p`, or a failure naming `what` when it has not settled within `ms`: a hang is reported where it is. */
function within<T>(what: string, p: Promise<T>, ms = 15_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

async function login(node: TestServer, jid: string, extra: Record<string, unknown> = {}): Promise<{ client: TestClient; auth: any }> {
  const r = await within(`login of ${jid} on ${node.config.node_id}`, TestClient.login(node.wsUrl, jid, 'secret-pw', extra));
  clients.push(r.client);
  return r;
}

async function xmppLogin(node: TestServer, user: string, resource: string): Promise<RawXmpp> {
  const x = await RawXmpp.open(node.server.xmppPort!);
  raws.push(x);
  await within(`XMPP login of ${user} on ${node.config.node_id}`, x.loginPlain(user, 'secret-pw', resource));
  return x;
}

/** Every user changes presence in turn, as fast as its node answers; every answer is recorded as the truth. */
function startLoad(): void {
  let running = true;
  let n = 0;
  const loops = USERS.map(async (jid) => {
    const client = users.get(jid)!;
    while (running) {
      const show = SHOWS[n % SHOWS.length]!;
      const status = `change ${++n}`;
      try {
        await within(`${jid}'s presence change`, client.request('presence', { show, status }), 10_000);
        truth.set(jid, { show, status });
      } catch (e) {
        loadErrors.push(`${jid}: ${e instanceof RequestFailed ? JSON.stringify(e.error) : String(e)}`);
      }
      // Pacing, not synchronisation: keeps six loops from starving the nodes that share this process.
      await new Promise((r) => setTimeout(r, 10));
    }
  });
  load = {
    changes: () => n,
    async stop() {
      running = false;
      await within('the users\' last presence changes', Promise.all(loops));
      load = null;
    },
  };
}

/** Load paused: every watcher, on every node, ends on each user's last acknowledged presence. */
async function convergedOnTruth(what: string, askNodes = true): Promise<void> {
  for (const [wjid, w] of watchers) {
    await until(`${wjid} sees the truth ${what}`, () =>
      USERS.every((u) => {
        const v = viewOf(w.client, w.auth, u);
        const t = truth.get(u);
        return v?.online === true && t !== undefined && v.show === t.show && v.status === t.status;
      }),
    20_000);
  }
  // Each node's registry, through the admin API (which reads the account from the database).
  for (const n of askNodes ? nodes : []) {
    for (const u of USERS) {
      const s = await within(`sessions of ${u} on ${n.config.node_id}`, n.admin('GET', `/accounts/${u}/sessions`));
      assert.equal(s.status, 200, `sessions of ${u} on ${n.config.node_id} ${what}`);
      assert.equal(s.body.sessions.length, 1, `${u} has its one session on ${n.config.node_id} ${what}`);
    }
  }
}

async function healthy(what: string): Promise<void> {
  for (const n of nodes) await until(`${n.config.node_id} healthy ${what}`, async () => (await within('/healthz', fetch(`${n.url}/healthz`))).status === 200, 20_000);
}

/** What needs the database works again on every node: a login, a roster change, an XMPP login. */
async function databaseWorks(tag: string): Promise<void> {
  for (const [i, n] of nodes.entries()) {
    const { client } = await login(n, `r${i}@localhost`, { resource: tag });
    await within(`r${i}'s subscription on ${n.config.node_id}`, client.request('subscribe', { jid: `r${(i + 1) % 3}@localhost` }));
    const x = await xmppLogin(n, `r${i}`, `x-${tag}`);
    x.write(`<iq type='get' id='roster-${tag}'><query xmlns='jabber:iq:roster'/></iq>`);
    await x.waitFor(new RegExp(`id='roster-${tag}'[^>]*type='result'|type='result'[^>]*id='roster-${tag}'`), `roster read over XMPP on ${n.config.node_id}`);
    x.close();
    await client.close();
  }
  // The subscriptions asked for were written.
  for (let i = 0; i < 3; i++) {
    const rows = nodes[0]!.sql('SELECT pending_out FROM roster_items WHERE owner = ? AND contact = ?', `r${i}@localhost`, `r${(i + 1) % 3}@localhost`);
    assert.equal(rows.length, 1, `r${i} asked r${(i + 1) % 3} (${tag})`);
  }
}

type Update = { uid: string; status: string; seq: number; statusText?: string };
const updates = (): Update[] => hooks.delivered() as Update[];

before(async () => {
  cluster = await ClusterServices.start();
  await hooks.listen();
  await pushes.listen();
  pushes.secret = PUSH_SECRET;
  const overrides = {
    // Nodes sharing this process's event loop with the load, on a busy machine: a lease long enough
    // that none is declared dead (nothing here waits for a lease; cluster-failures.test.ts does).
    node_lease_ms: 10_000,
    push_providers: { gw: { type: 'webhook', url: pushes.url, secret: PUSH_SECRET } },
    ws_rate_limit: 10_000,
    ws_rate_burst: 10_000,
    xmpp_port: 0,
    xmpp_require_tls: false,
    webhooks_allow_private: true,
    webhook_flush_ms: 5,
    webhook_batch_ms: 20,
    webhook_backoff_base_ms: 20,
    webhook_backoff_cap_ms: 500,
  };
  nodes = [];
  for (const name of ['node-a', 'node-b', 'node-c']) nodes.push(await startClusterNode(cluster, name, overrides));
  for (const u of [...USERS, ...WATCHERS, 'owner@localhost', 'r0@localhost', 'r1@localhost', 'r2@localhost', 'late@localhost', 'pd@localhost']) await nodes[0]!.createAccount(u);
  // An app with a webhook, granted by u0.
  const res = await fetch(`${nodes[0]!.url}/api/v1/apps`, {
    method: 'POST',
    headers: { authorization: basic('owner@localhost', 'secret-pw'), 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Chess Club', homepage: 'https://chess.example/', redirectUris: [REDIRECT], webhookUrl: hooks.url, webhookFormat: 'extended' }),
  });
  const app = (await res.json()) as { id: string; webhookSecret: string };
  assert.equal(res.status, 201, JSON.stringify(app));
  hooks.secret = app.webhookSecret;
  const back = await consent(new Browserless(nodes[1]!.url), { clientId: app.id, redirectUri: REDIRECT, challenge: pkce().challenge, method: 'S256', scope: 'presence presence.status' }, 'u0@localhost', 'secret-pw');
  assert.ok(back.searchParams.get('code'));
  // pd's phone, registered for pushes while pd is offline.
  const { client: phone } = await login(nodes[2]!, 'pd@localhost', { resource: 'phone' });
  await phone.request('push.register', { provider: 'gw', token: 'pd-phone' });
  await phone.close();
  for (const [i, w] of WATCHERS.entries()) watchers.set(w, await login(nodes[i]!, w));
  for (const [i, u] of USERS.entries()) {
    const { client } = await login(nodes[i % 3]!, u, { presence: { show: 'available' } });
    users.set(u, client);
    for (const [w, { client: wc }] of watchers) await befriend(client, u, wc, w);
  }
});

after(async () => {
  // Clients first: a request a node never answers then fails, and the load stops.
  for (const cl of clients) cl.destroy();
  await load?.stop().catch(() => {});
  for (const x of raws) x.close();
  for (const n of nodes ?? []) await n.destroy();
  await hooks.close();
  await pushes.close();
  await cluster?.remove();
  await stopAllPrivateServices();
});

describe('the shared services going away under load', { timeout: 150_000 }, () => {
  test('PostgreSQL restarted: presence goes on, everything that needs the database works again by itself', { timeout: 45_000 }, async () => {
    startLoad();
    const before = load!.changes();
    await cluster.postgres.restart();
    await healthy('after the restart');
    await databaseWorks('restart');
    await until('presence changing meanwhile', () => load!.changes() > before + 50);
    await load!.stop();
    assert.deepEqual(loadErrors, [], 'no presence change refused');
    await convergedOnTruth('after PostgreSQL restarted');
  });

  test('PostgreSQL down for a while: clear errors for what needs it, live presence between nodes goes on; back, it all recovers', { timeout: 60_000 }, async () => {
    startLoad();
    const wx = await xmppLogin(nodes[1]!, 'w1', 'desk');
    // A webhook request and a push in flight as the database goes: answered while it is down, so that
    // recording them has to wait for it (not sent again after their leases).
    hooks.holding = true;
    pushes.holding = true;
    const heldNow = (rx: Receiver): Received[] => rx.requests.filter((r) => r.answered === 0 && r.aborted !== true);
    await hooks.until(() => heldNow(hooks).length === 1, 'a webhook request in flight');
    assert.equal((await within('notify', nodes[1]!.admin('POST', '/accounts/pd@localhost/notify', { body: 'during' }))).status, 202);
    await pushes.until(() => heldNow(pushes).length === 1, 'a push in flight');
    await cluster.postgres.stop();
    hooks.release();
    pushes.release();
    try {
      for (const n of nodes) {
        const id = n.config.node_id;
        await until(`${id} reports the database unavailable`, async () => {
          const r = await within('/healthz', fetch(`${n.url}/healthz`));
          return r.status === 503 && ((await r.json()) as { reasons: { store?: string } }).reasons.store !== undefined;
        });
        // HTTP: 503 with a JSON error body.
        const created = await within(`account creation on ${id}`, n.admin('POST', '/accounts', { jid: `new-${id}@localhost`, password: 'secret-pw' }));
        assert.equal(created.status, 503, `account creation on ${id}: ${JSON.stringify(created.body)}`);
        assert.equal(created.body?.error?.code, 'unavailable', JSON.stringify(created.body));
        // Native: a login is refused with the code unavailable.
        const fresh = await TestClient.connect(n.wsUrl);
        clients.push(fresh);
        await assert.rejects(within(`native login on ${id}`, fresh.request('auth', { jid: 'late@localhost', password: 'secret-pw' })), (e: unknown) => e instanceof RequestFailed && e.error.code === 'unavailable', `native login on ${id}`);
        fresh.destroy();
        // XMPP: a login is refused as a temporary failure.
        const x = await RawXmpp.open(n.server.xmppPort!);
        raws.push(x);
        x.write("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>");
        await x.waitFor(/<\/stream:features>/);
        x.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from('\0late\0secret-pw').toString('base64')}</auth>`);
        await x.waitFor(/<failure[^>]*><temporary-auth-failure\/>/, `XMPP login on ${id} refused as temporary`);
        x.close();
      }
      // A connected native client's roster change: the code unavailable.
      const w0 = watchers.get('w0@localhost')!.client;
      await assert.rejects(within('native roster change', w0.request('subscribe', { jid: 'late@localhost' })), (e: unknown) => e instanceof RequestFailed && e.error.code === 'unavailable', 'native roster change');
      // A connected XMPP client's roster change: an error of type wait.
      wx.write(`<iq type='set' id='rs-1'><query xmlns='jabber:iq:roster'><item jid='late@localhost'/></query></iq>`);
      const err = await wx.waitFor(/<iq[^>]*id='rs-1'[\s\S]*?<\/iq>/, 'the roster set answered');
      assert.match(err, /type='error'/);
      assert.match(err, /<error[^>]*type='wait'/);
      // Live presence between nodes: u1 (on node-b) is seen by the watchers on node-a and node-c.
      const before = load!.changes();
      await until('presence flowing while the database is down', () => load!.changes() > before + 30);
      await load!.stop();
      assert.deepEqual(loadErrors, [], 'no presence change refused while the database is down');
      await convergedOnTruth('while PostgreSQL is down', false);
      // u0's last change is made while the database is down: the app must get it once it is back.
      await within('u0\'s change during the outage', users.get('u0@localhost')!.request('presence', { show: 'dnd', status: 'while the database was down' }));
      truth.set('u0@localhost', { show: 'dnd', status: 'while the database was down' });
    } finally {
      await cluster.postgres.start();
    }
    await healthy('after PostgreSQL came back');
    await databaseWorks('back');
    // The XMPP client's roster change works again, on the same stream.
    wx.write(`<iq type='set' id='rs-2'><query xmlns='jabber:iq:roster'><item jid='late@localhost'/></query></iq>`);
    await wx.waitFor(/<iq[^>]*id='rs-2'[^>]*type='result'|<iq[^>]*type='result'[^>]*id='rs-2'/, 'the roster set accepted after the outage');
    // The webhook catches up: u0's change made during the outage arrives, and seqs run without a gap or repeat.
    await hooks.until(() => updates().at(-1)?.statusText === 'while the database was down', 'u0\'s change made during the outage, by webhook', 30_000);
    const seqs = updates().map((u) => u.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), 'each update once, in order');
    await convergedOnTruth('after PostgreSQL came back');
    // The push answered while the database was down: recorded once it was back, never sent again.
    await until('the push queue empty', () => nodes[0]!.sql('SELECT count(*) AS n FROM push_outbox')[0]?.n === 0, 20_000);
    const answeredPushes = pushes.requests.filter((r) => r.answered >= 200 && r.answered < 300);
    assert.equal(answeredPushes.length, 1, `the push answered once: ${pushes.requests.map((r) => r.answered).join(',')}`);
    assert.equal(hooks.bad.length + pushes.bad.length, 0, 'every request verified');
  });

  test('Redis restarted under load: every view converges on the truth, logins work again', { timeout: 45_000 }, async () => {
    startLoad();
    const before = load!.changes();
    await cluster.redis.restart();
    await healthy('after Redis restarted');
    await until('presence changing after Redis is back', () => load!.changes() > before + 50, 20_000);
    await load!.stop();
    // A change refused while Redis was away is refused clearly, and is not the truth (only acknowledged ones are recorded).
    assert.ok(loadErrors.every((e) => e.includes('unavailable')), `presence changes refused only as unavailable: ${loadErrors.slice(0, 5).join('; ')}`);
    await convergedOnTruth('after Redis restarted');
    await databaseWorks('redis');
  });
});
