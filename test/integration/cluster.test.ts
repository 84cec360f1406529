import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RequestFailed, TestClient, befriend } from '../helpers/ws-client.js';
import { XmppTestClient, befriend as befriendXmpp, xml } from '../helpers/xmpp-client.js';
import { ClusterServices, pushesAbout, startClusterNode, until, viewOf } from '../helpers/cluster.js';
import { stopAllPrivateServices, type PrivateRedis } from '../helpers/private-services.js';
import type { TestServer } from '../helpers/server.js';

/**
 * Three presenced nodes in this process, one Redis, one PostgreSQL database: a user on one node and a contact on
 * another cannot tell they are on different nodes. (Deaths of nodes need child processes:
 * cluster-failures.test.ts.)
 */

let cluster: ClusterServices;
let redis: PrivateRedis;
let a: TestServer;
let b: TestServer;
let c: TestServer;
const clients: TestClient[] = [];
const xmppClients: XmppTestClient[] = [];

async function login(node: TestServer, jid: string, extra: Record<string, unknown> = {}): Promise<{ client: TestClient; auth: any }> {
  const r = await TestClient.login(node.wsUrl, jid, 'secret-pw', extra);
  clients.push(r.client);
  return r;
}

before(async () => {
  cluster = await ClusterServices.start();
  redis = cluster.redis;
  // Bursts of presence changes race two nodes against each other: no rate limit in the way.
  const limits = { ws_rate_limit: 10_000, ws_rate_burst: 10_000 };
  a = await startClusterNode(cluster, 'node-a', limits);
  b = await startClusterNode(cluster, 'node-b', limits);
  c = await startClusterNode(cluster, 'node-c', limits);
  for (const u of ['ua', 'wa', 'ub', 'wb', 'uc', 'wc', 'ud', 'wd', 'ue', 'we', 'ue2', 'uf', 'wf', 'ug', 'wg', 'uh', 'wh', 'ui', 'wi0', 'wi1', 'wi2', 'wi3', 'wi4', 'wi5', 'wi6', 'wi7', 'wi8']) await a.createAccount(`${u}@localhost`);
});

after(async () => {
  for (const cl of clients) cl.destroy();
  for (const x of xmppClients) await x.stop().catch(() => {});
  for (const n of [a, b, c]) await n?.destroy();
  await cluster?.remove();
  await stopAllPrivateServices();
});

describe('presence across nodes', () => {
  test('a watcher on node B sees a user on node A come online, change status and go offline; every node answers alike', async () => {
    const { client: w } = await login(b, 'wa@localhost');
    const { client: u } = await login(a, 'ua@localhost', { resource: 'phone' });
    // The subscription handshake itself crosses nodes both ways (requests, answers, roster pushes).
    await befriend(u, 'ua@localhost', w, 'wa@localhost');
    await w.presenceOf('ua@localhost', (p) => p.online === true);
    await u.request('presence', { show: 'away', status: 'lunch' });
    const away = await w.presenceOf('ua@localhost', (p) => p.show === 'away');
    assert.equal(away.status, 'lunch');
    // Node C never held either session: its cached view follows the registry.
    for (const n of [a, b, c]) {
      const r = await n.admin('GET', '/presence/ua@localhost');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.show, 'away', `node ${n.config.node_id}: ${JSON.stringify(r.body)}`);
    }
    await u.close();
    const off = await w.presenceOf('ua@localhost', (p) => p.online === false);
    assert.equal(off.reason, 'graceful');
    // The last seen the other nodes give is the one node A wrote.
    await until('every node shows the same last seen', async () => {
      const seen = await Promise.all([a, b, c].map(async (n) => (await n.admin('GET', '/presence/ua@localhost')).body.lastSeen));
      return seen.every((s) => s !== null && s === off.lastSeen);
    });
    // Back on node C: a real online again.
    const { client: u2 } = await login(c, 'ua@localhost');
    await w.presenceOf('ua@localhost', (p) => p.online === true);
    await u2.close();
    await w.presenceOf('ua@localhost', (p) => p.online === false);
    // The bus's own metrics: what went from node to node.
    const metric = async (n: TestServer, name: string): Promise<number> => {
      const text = await (await fetch(`${n.url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${name} `));
      return Number(line?.split(' ')[1] ?? NaN);
    };
    assert.ok((await metric(a, 'presenced_bus_remote_deliveries_total')) > 0);
    assert.ok((await metric(b, 'presenced_bus_deliveries_received_total')) > 0);
    assert.equal(await metric(c, 'presenced_bus_connected'), 1);
  });

  test('one account on two nodes: the account shows its best session; watchers end on the truth', async () => {
    const { client: w } = await login(c, 'wb@localhost');
    const { client: low } = await login(a, 'ub@localhost', { resource: 'desk', presence: { show: 'away', priority: 0 } });
    await befriend(low, 'ub@localhost', w, 'wb@localhost');
    await w.presenceOf('ub@localhost', (p) => p.show === 'away');
    const { client: high } = await login(b, 'ub@localhost', { resource: 'phone', presence: { show: 'dnd', status: 'meeting', priority: 5 } });
    await w.presenceOf('ub@localhost', (p) => p.show === 'dnd');
    // Each session of the account hears of the other's changes, whichever node holds it.
    await high.request('presence', { show: 'xa', status: 'gone home', priority: 5 });
    await low.presenceOf('ub@localhost', (p) => p.show === 'xa');
    await w.presenceOf('ub@localhost', (p) => p.show === 'xa');
    high.destroy();
    await w.presenceOf('ub@localhost', (p) => p.show === 'away', );
    await low.close();
    const off = await w.presenceOf('ub@localhost', (p) => p.online === false);
    assert.equal(off.reason, 'graceful');
  });

  test('one account changing on two nodes at once: every watcher ends on the truth', async () => {
    const { client: w, auth } = await login(c, 'wf@localhost');
    const { client: x1 } = await login(a, 'uf@localhost', { resource: 'one' });
    await befriend(x1, 'uf@localhost', w, 'wf@localhost');
    const { client: x2 } = await login(b, 'uf@localhost', { resource: 'two' });
    const { client: w2 } = await login(a, 'wf@localhost', { resource: 'second' });
    for (let round = 0; round < 5; round++) {
      // Both sessions change as fast as they can, in parallel; each ends on a known presence.
      const shows = ['away', 'xa', 'dnd', 'chat', 'available'];
      const burst = (cl: TestClient, tag: string, last: Record<string, unknown>): Promise<unknown> =>
        Promise.all([
          ...Array.from({ length: 20 }, (_, i) => cl.request('presence', { show: shows[i % 5], status: `${tag}${i}`, priority: i % 3 })),
          cl.request('presence', last),
        ]);
      await Promise.all([burst(x1, 'a', { show: 'xa', status: 'one final', priority: 1 }), burst(x2, 'b', { show: 'chat', status: 'two final', priority: 2 })]);
      for (const [cl, au] of [[w, auth], [w2, null]] as const) {
        await until('the watcher ends on the top session', () => {
          const v = viewOf(cl, au, 'uf@localhost');
          return v?.online === true && v.show === 'chat' && v.status === 'two final';
        });
      }
    }
    // Both go at once: nobody is left believing the account online.
    x1.destroy();
    x2.destroy();
    for (const [cl, au] of [[w, auth], [w2, null]] as const) {
      await until('the watcher ends on offline', () => viewOf(cl, au, 'uf@localhost')?.online === false);
    }
    await w.barrier();
    assert.equal(viewOf(w, auth, 'uf@localhost')?.online, false);
  });

  test('subscriptions answered at once on three nodes are all kept, and every watcher hears the user go', async () => {
    // Each handshake changes the user's roster from the node of whoever acts: the user's answers run on
    // node A, the watchers' requests and answers on A, B and C. Computed from each node's cache, one
    // node's write could undo another's flag (the user would stop telling that watcher anything).
    const { client: u } = await login(a, 'ui@localhost');
    const nodes = [a, b, c];
    const watchers = await Promise.all(Array.from({ length: 9 }, async (_, i) => ({ jid: `wi${i}@localhost`, client: (await login(nodes[i % 3]!, `wi${i}@localhost`)).client })));
    // Both ask at once, and both answer as soon as asked: two answers about one pair run at the same
    // moment on two nodes.
    const answer = async (cl: TestClient, from: string): Promise<void> => {
      await cl.waitFor((p) => p.type === 'subscription' && p.from === from && p.kind === 'subscribe', `request from ${from}`);
      await cl.request('approve', { jid: from });
    };
    await Promise.all(
      watchers.map(async (w) => {
        await Promise.all([u.request('subscribe', { jid: w.jid }), w.client.request('subscribe', { jid: 'ui@localhost' })]);
        await Promise.all([answer(u, w.jid), answer(w.client, 'ui@localhost')]);
      }),
    );
    const rows = a.sql("SELECT contact, sub_to, sub_from FROM roster_items WHERE owner = 'ui@localhost' AND contact LIKE 'wi%' ORDER BY contact");
    assert.deepEqual(
      rows.map((r) => `${r.contact} ${r.sub_to} ${r.sub_from}`),
      watchers.map((w) => `${w.jid} 1 1`),
      'every subscription is mutual in the database',
    );
    for (const w of watchers) await w.client.presenceOf('ui@localhost', (p) => p.online === true);
    await u.close();
    for (const w of watchers) await w.client.presenceOf('ui@localhost', (p) => p.online === false);
  });

  test('an XMPP watcher sees each resource of a contact connected to two other nodes come and go', async () => {
    const xmppService = (n: TestServer): string => `${n.url.replace(/^http/, 'ws')}/xmpp-websocket`;
    const w = await XmppTestClient.login(xmppService(c), 'wg', 'secret-pw', 'watch');
    const u1 = await XmppTestClient.login(xmppService(a), 'ug', 'secret-pw', 'one');
    xmppClients.push(w, u1);
    await w.send(xml('presence', {}));
    await u1.send(xml('presence', {}));
    await befriendXmpp(u1, 'ug@localhost', w, 'wg@localhost');
    await u1.send(xml('presence', {}, xml('show', {}, 'away')));
    await w.waitFor((s) => s.is('presence') && s.attrs.from === 'ug@localhost/one' && s.getChildText('show') === 'away', 'resource one away');
    const u2 = await XmppTestClient.login(xmppService(b), 'ug', 'secret-pw', 'two');
    xmppClients.push(u2);
    await u2.send(xml('presence', {}, xml('show', {}, 'dnd')));
    await w.waitFor((s) => s.is('presence') && s.attrs.from === 'ug@localhost/two' && s.getChildText('show') === 'dnd', 'resource two dnd');
    // The first resource goes while the second stays: XMPP watchers hear of that one resource.
    await u1.stop();
    await w.waitFor((s) => s.is('presence') && s.attrs.from === 'ug@localhost/one' && s.attrs.type === 'unavailable', 'resource one unavailable');
    await u2.stop();
    await w.waitFor((s) => s.is('presence') && s.attrs.from === 'ug@localhost/two' && s.attrs.type === 'unavailable', 'resource two unavailable');
  });

  test('the same resource logging in on another node takes the session over; the old connection is told', async () => {
    const { client: w } = await login(a, 'wc@localhost');
    const { client: first } = await login(b, 'uc@localhost', { resource: 'tablet' });
    await befriend(first, 'uc@localhost', w, 'wc@localhost');
    await w.presenceOf('uc@localhost', (p) => p.online === true);
    const before = pushesAbout(w, 'uc@localhost').length;
    const { client: second } = await login(c, 'uc@localhost', { resource: 'tablet' });
    const closed = await first.closed;
    assert.equal(closed.code, 1000);
    assert.ok(first.all.some((m) => m.type === 'closing' && m.reason === 'replaced'));
    const sessions = await a.admin('GET', '/accounts/uc@localhost/sessions');
    assert.equal(sessions.body.sessions.length, 1, JSON.stringify(sessions.body));
    // Never offline in between for the watcher.
    await w.barrier();
    assert.ok(pushesAbout(w, 'uc@localhost').slice(before).every((p) => p.online === true));
    await second.close();
    await w.presenceOf('uc@localhost', (p) => p.online === false);
  });

  test('a block made on one node stops the fan-out done on another (caches follow)', async () => {
    const { client: w } = await login(b, 'wd@localhost');
    const { client: u } = await login(a, 'ud@localhost', { resource: 'one' });
    await befriend(u, 'ud@localhost', w, 'wd@localhost');
    await w.presenceOf('ud@localhost', (p) => p.online === true);
    // The user blocks the watcher from a second session, on node C; presence keeps changing on node A.
    const { client: u2 } = await login(c, 'ud@localhost', { resource: 'two', presence: { priority: -1 } });
    await u2.request('block', { jid: 'wd@localhost' });
    await w.presenceOf('ud@localhost', (p) => p.online === false);
    await until('node A knows of the block', async () => {
      await u.request('presence', { show: 'dnd', status: `probe ${Date.now()}` });
      await w.barrier();
      return pushesAbout(w, 'ud@localhost').at(-1)?.online === false;
    });
    const seen = pushesAbout(w, 'ud@localhost').length;
    await u.request('presence', { show: 'chat', status: 'after the block' });
    await u.barrier();
    await w.barrier();
    assert.equal(pushesAbout(w, 'ud@localhost').length, seen, 'nothing after the block');
  });
});

describe('Redis restarting', () => {
  test('logins fail clearly while it is down, connected clients stay, and every view converges afterwards', async () => {
    const { client: w, auth: wAuth } = await login(c, 'we@localhost');
    const { client: stays } = await login(a, 'ue@localhost');
    const { client: leaves } = await login(b, 'ue2@localhost');
    await befriend(stays, 'ue@localhost', w, 'we@localhost');
    await befriend(leaves, 'ue2@localhost', w, 'we@localhost');
    await w.presenceOf('ue@localhost', (p) => p.online === true);
    await w.presenceOf('ue2@localhost', (p) => p.online === true);
    await redis.stop();
    // Every node's health check tells the load balancer to stop sending it new clients.
    for (const n of [a, b, c]) {
      const h = await until(`node ${n.config.node_id} unhealthy`, async () => {
        const r = await fetch(`${n.url}/healthz`);
        return r.status === 503 ? ((await r.json()) as { status: string; reasons: { bus?: string; store?: string } }) : null;
      });
      assert.equal(h.status, 'unavailable');
      assert.match(h.reasons.bus ?? '', /Redis is unreachable/);
      assert.equal(h.reasons.store, undefined);
    }
    // A new login: a clear error, not a crash nor a hang.
    const tryLogin = await TestClient.connect(b.wsUrl);
    clients.push(tryLogin);
    await until('login refused as unavailable', async () => {
      try {
        await tryLogin.request('auth', { jid: 'ue2@localhost', password: 'secret-pw', resource: 'x' });
        return false;
      } catch (e) {
        return e instanceof RequestFailed && e.error.code === 'unavailable';
      }
    });
    // Meanwhile one user leaves and the other changes status.
    await leaves.close();
    await stays.request('presence', { show: 'away', status: 'during the outage' });
    await redis.start();
    await until('the watcher sees the truth', () => {
      const s = viewOf(w, wAuth, 'ue@localhost');
      const l = viewOf(w, wAuth, 'ue2@localhost');
      return s?.online === true && s.show === 'away' && l?.online === false;
    }, 20_000);
    // Every node's registry holds exactly who is connected.
    for (const n of [a, b, c]) {
      await until(`node ${n.config.node_id} agrees`, async () => {
        const [s, l] = await Promise.all([n.admin('GET', '/accounts/ue@localhost/sessions'), n.admin('GET', '/accounts/ue2@localhost/sessions')]);
        return s.body.sessions.length === 1 && l.body.sessions.length === 0;
      });
    }
    for (const n of [a, b, c]) {
      const r = await fetch(`${n.url}/healthz`);
      assert.equal(r.status, 200, JSON.stringify(await r.json()));
    }
    // And logins work again.
    const { client: back } = await login(b, 'ue2@localhost');
    await w.presenceOf('ue2@localhost', (p) => p.online === true);
    await back.close();
  });
});

describe('PostgreSQL unavailable', () => {
  test('the health check says so (503, reason store) while live presence goes on, and recovers by itself', async () => {
    const { client: w } = await login(a, 'wh@localhost');
    const { client: u } = await login(b, 'uh@localhost');
    await befriend(u, 'uh@localhost', w, 'wh@localhost');
    await w.presenceOf('uh@localhost', (p) => p.online === true);
    await cluster.postgres.stop();
    try {
      for (const n of [a, b, c]) {
        const r = await fetch(`${n.url}/healthz`);
        assert.equal(r.status, 503);
        const h = (await r.json()) as { status: string; reasons: { bus?: string; store?: string } };
        assert.deepEqual(h.reasons, { store: 'the database is unavailable' }, JSON.stringify(h));
      }
      // Presence between connected sessions needs no database.
      await u.request('presence', { show: 'dnd', status: 'no database' });
      await w.presenceOf('uh@localhost', (p) => p.show === 'dnd');
    } finally {
      await cluster.postgres.start();
    }
    for (const n of [a, b, c]) {
      await until(`node ${n.config.node_id} healthy again`, async () => (await fetch(`${n.url}/healthz`)).status === 200);
    }
  });
});
