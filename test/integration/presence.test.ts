import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { befriend, TestClient } from '../helpers/ws-client.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('live presence between contacts over the native protocol', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ grace_period_ms: 300, heartbeat_interval_ms: 100, idle_timeout_ms: 400 });
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) await t.createAccount(`${u}@localhost`);
  });
  after(async () => t.destroy());

  test('subscribe/approve makes contacts who see each other and status text live', async () => {
    const { client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'laptop' });
    const { client: bob } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'phone' });

    await alice.request('subscribe', { jid: 'Bob@LocalHost', name: 'Bob', groups: ['Friends'] });
    const req = await bob.waitFor((p) => p.type === 'subscription' && p.from === 'alice@localhost', 'request');
    assert.equal(req.kind, 'subscribe');
    const aliceItem = await alice.waitFor((p) => p.type === 'roster' && p.item?.jid === 'bob@localhost' && p.item.pendingOut, 'roster push');
    assert.equal(aliceItem.item.subscription, 'none');

    const approved = await bob.request('approve', { jid: 'alice@localhost' });
    assert.equal(approved.subscription, 'from');
    // Approval sends bob's current presence to alice at once.
    const p1 = await alice.presenceOf('bob@localhost', (p) => p.online);
    assert.equal(p1.show, 'available');
    const ra = await alice.request('roster.get');
    const item = ra.items.find((i: any) => i.jid === 'bob@localhost');
    assert.deepEqual([item.subscription, item.name, item.groups, item.pendingOut], ['to', 'Bob', ['Friends'], false]);

    await bob.request('subscribe', { jid: 'alice@localhost' });
    await alice.waitFor((p) => p.type === 'subscription' && p.from === 'bob@localhost' && p.kind === 'subscribe', 'request');
    await alice.request('approve', { jid: 'bob@localhost' });
    const p2 = await bob.presenceOf('alice@localhost', (p) => p.online);
    assert.equal(p2.show, 'available');
    assert.equal((await bob.request('roster.get')).items[0].subscription, 'both');

    await bob.request('presence', { show: 'dnd', status: 'In a meeting', priority: 5 });
    const p3 = await alice.presenceOf('bob@localhost', (p) => p.show === 'dnd');
    assert.equal(p3.status, 'In a meeting');
    assert.equal(p3.priority, 5);

    await alice.request('presence', { show: 'away', status: 'lunch' });
    const p4 = await bob.presenceOf('alice@localhost', (p) => p.show === 'away');
    assert.equal(p4.status, 'lunch');

    // A fresh login receives the contacts' current presence in the auth result.
    const { client: alice2, auth } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'desk', presence: { priority: -1 } });
    const bobSeen = auth.contacts.find((c: any) => c.jid === 'bob@localhost');
    assert.deepEqual([bobSeen.online, bobSeen.show, bobSeen.status], [true, 'dnd', 'In a meeting']);
    // alice's second session has lower priority: her account presence stays 'away' from the laptop.
    await bob.barrier();
    assert.equal(bob.queuedPresence('alice@localhost').length, 0, 'a lower-priority session must not change what watchers see');

    await alice2.close();
    await alice.close();
    const off = await bob.presenceOf('alice@localhost', (p) => !p.online);
    assert.equal(off.show, 'offline');
    assert.equal(off.status, 'lunch', 'last status is kept');
    assert.ok(off.lastSeen && !Number.isNaN(Date.parse(off.lastSeen)));
    await bob.close();
  });

  test('requests pipelined behind auth run after it, in the order sent', async () => {
    const c = await TestClient.connect(t.wsUrl);
    const results = await Promise.all([
      c.request('auth', { jid: 'carol@localhost', password: 'secret-pw', resource: 'pipe' }),
      c.request('roster.set', { jid: 'erin@localhost', name: 'Erin' }),
      c.request('presence', { show: 'away', status: 'first' }),
      c.request('presence', { show: 'dnd', status: 'second' }),
      c.request('roster.get'),
    ]);
    assert.equal(results[0].jid, 'carol@localhost');
    assert.deepEqual(results[3], { show: 'dnd', status: 'second', priority: 0 });
    assert.deepEqual(results[4].items.map((i: any) => [i.jid, i.name]), [['erin@localhost', 'Erin']]);
    const presence = await t.admin('GET', '/accounts/carol@localhost/presence');
    assert.deepEqual([presence.body.show, presence.body.status], ['dnd', 'second']);
    await c.request('roster.remove', { jid: 'erin@localhost' });
    await c.close();
  });

  test('a killed connection (no goodbye) shows offline to the watcher after the grace period', async () => {
    const { client: carol } = await TestClient.login(t.wsUrl, 'carol@localhost');
    const { client: dave } = await TestClient.login(t.wsUrl, 'dave@localhost');
    await befriend(carol, 'carol@localhost', dave, 'dave@localhost');
    await dave.presenceOf('carol@localhost', (p) => p.online);
    dave.pushes.length = 0;

    carol.destroy();
    // The bound: grace period (300 ms) after the socket is gone; allow scheduling slack on a busy CI.
    const off = await dave.waitFor((p) => p.type === 'presence' && p.jid === 'carol@localhost' && !p.online, 'offline', 300 + 3000);
    assert.equal(off.show, 'offline');
    await dave.close();
  });

  test('a half-open connection (peer silent, answers no pings) is detected by the idle timeout', async () => {
    const { client: erin } = await TestClient.login(t.wsUrl, 'erin@localhost');
    const { client: frank } = await TestClient.login(t.wsUrl, 'frank@localhost');
    await befriend(erin, 'erin@localhost', frank, 'frank@localhost');
    await frank.presenceOf('erin@localhost', (p) => p.online);

    // A client that ignores pings: its connection looks open but nobody is there.
    // A login token: the login (no password hash to compute) ends well inside the 400 ms idle timeout.
    const token = (await t.admin('POST', '/accounts/erin@localhost/tokens', { ttl: 600 })).body.token as string;
    const silent = await TestClient.connect(t.wsUrl, { autoPong: false });
    await silent.request('auth', { token, resource: 'ghost' });
    await erin.close(); // erin's other session leaves cleanly; only the silent one keeps her online
    await frank.barrier();
    frank.pushes.length = 0;
    const closedAt = silent.closed;
    const off = await frank.waitFor((p) => p.type === 'presence' && p.jid === 'erin@localhost' && !p.online, 'offline', 400 + 300 + 3000);
    assert.equal(off.online, false);
    const { code } = await closedAt;
    assert.equal(code, 1006, 'the server terminates a dead connection without a closing handshake');
    await frank.close();
  });
});

describe('grace period and visibility', () => {
  let t: TestServer;
  before(async () => {
    // A long grace period: the reconnect below must land inside it even on a slow machine.
    t = await startTestServer({ grace_period_ms: 10_000 });
    for (const u of ['gina', 'hank', 'ivan']) await t.createAccount(`${u}@localhost`);
  });
  after(async () => t.destroy());

  test('a reconnect of the same resource inside the grace period shows watchers no flap', async () => {
    const { client: gina } = await TestClient.login(t.wsUrl, 'gina@localhost', 'secret-pw', { resource: 'mobile', presence: { status: 'on the train' } });
    const { client: hank } = await TestClient.login(t.wsUrl, 'hank@localhost');
    await befriend(gina, 'gina@localhost', hank, 'hank@localhost');
    await hank.presenceOf('gina@localhost', (p) => p.online);
    await hank.barrier();
    hank.pushes.length = 0;

    gina.destroy();
    await gina.closed;
    const { client: gina2, auth } = await TestClient.login(t.wsUrl, 'gina@localhost', 'secret-pw', { resource: 'mobile', presence: { status: 'on the train' } });
    assert.equal(auth.resource, 'mobile');
    await hank.barrier();
    assert.deepEqual(hank.queuedPresence('gina@localhost'), [], 'no offline/online flap for the watcher');

    // The session lives on: a change after the reconnect reaches the watcher.
    await gina2.request('presence', { show: 'chat', status: 'back' });
    const p = await hank.presenceOf('gina@localhost', (x) => x.show === 'chat');
    assert.equal(p.status, 'back');
    const sessions = await t.admin('GET', '/accounts/gina@localhost/sessions');
    assert.equal(sessions.body.sessions.length, 1);
    await gina2.close();
    await hank.close();
  });

  test('a goodbye (bye request) ends the session at once, without waiting for the grace period', async () => {
    const { client: hank } = await TestClient.login(t.wsUrl, 'hank@localhost', 'secret-pw', { resource: 'w' });
    const { client: gina } = await TestClient.login(t.wsUrl, 'gina@localhost', 'secret-pw', { resource: 'leaving' });
    await hank.presenceOf('gina@localhost', (p) => p.online);
    assert.deepEqual(await gina.request('bye'), {});
    assert.equal((await gina.closed).code, 1000);
    // The 10 s grace period would outlast this wait: offline here proves the goodbye skipped it.
    const off = await hank.presenceOf('gina@localhost', (p) => !p.online);
    assert.ok(off.lastSeen);
    await hank.close();
  });

  test('a non-contact never receives presence', async () => {
    const { client: gina } = await TestClient.login(t.wsUrl, 'gina@localhost');
    const { client: ivan, auth } = await TestClient.login(t.wsUrl, 'ivan@localhost');
    assert.deepEqual(auth.contacts, []);
    await gina.request('presence', { show: 'away', status: 'secret plans' });
    // Even asking for it: a subscription request that is not approved shows nothing.
    await ivan.request('subscribe', { jid: 'gina@localhost' });
    await gina.request('presence', { show: 'xa', status: 'still secret' });
    await gina.close();
    await ivan.barrier();
    assert.deepEqual(ivan.queuedPresence(), []);
    assert.deepEqual((await ivan.request('presence.get')).contacts, []);
    await ivan.close();
  });

  test('blocking hides presence both ways and refuses subscription requests', async () => {
    const { client: hank } = await TestClient.login(t.wsUrl, 'hank@localhost', 'secret-pw', { resource: 'b2' });
    const { client: gina } = await TestClient.login(t.wsUrl, 'gina@localhost', 'secret-pw', { resource: 'b1' });
    await hank.presenceOf('gina@localhost', (p) => p.online);
    await gina.request('block', { jid: 'hank@localhost' });
    const hidden = await hank.presenceOf('gina@localhost', (p) => !p.online);
    assert.equal(hidden.lastSeen, null, 'a blocked contact learns nothing, not even last seen');
    await gina.request('presence', { show: 'dnd' });
    await hank.barrier();
    assert.deepEqual(hank.queuedPresence('gina@localhost'), []);
    await assert.rejects(gina.request('subscribe', { jid: 'hank@localhost' }), /not-allowed/);
    assert.deepEqual((await gina.request('blocks.get')).jids, ['hank@localhost']);
    await gina.request('unblock', { jid: 'hank@localhost' });
    const back = await hank.presenceOf('gina@localhost', (p) => p.online);
    assert.equal(back.show, 'dnd');
    await gina.close();
    await hank.close();
  });
});

describe('restart', () => {
  test('accounts, rosters and last-seen survive a restart', async () => {
    const t = await startTestServer({ grace_period_ms: 0 });
    await t.createAccount('jane@localhost');
    await t.createAccount('kurt@localhost');
    const { client: jane } = await TestClient.login(t.wsUrl, 'jane@localhost');
    const { client: kurt } = await TestClient.login(t.wsUrl, 'kurt@localhost', 'secret-pw', { presence: { show: 'away', status: 'gone fishing' } });
    await befriend(jane, 'jane@localhost', kurt, 'kurt@localhost');
    await kurt.close();
    const off = await jane.presenceOf('kurt@localhost', (p) => !p.online);
    await jane.close();
    await t.stop();

    const t2 = await startTestServer({}, t.dataDir);
    try {
      const { client, auth } = await TestClient.login(t2.wsUrl, 'jane@localhost');
      const kurtSeen = auth.contacts.find((c: any) => c.jid === 'kurt@localhost');
      assert.deepEqual([kurtSeen.online, kurtSeen.status, kurtSeen.lastSeen], [false, 'gone fishing', off.lastSeen]);
      const roster = await client.request('roster.get');
      assert.deepEqual(roster.items.map((i: any) => [i.jid, i.subscription]), [['kurt@localhost', 'both']]);
      assert.ok(roster.version > 0);
      await client.close();
    } finally {
      await t2.destroy();
    }
  });
});

describe('login snapshot and racing changes', () => {
  test('a change that reaches a session while its login snapshot is assembled arrives after the snapshot', async () => {
    const t = await startTestServer();
    try {
      await t.createAccount('lena@localhost');
      await t.createAccount('milo@localhost');
      const { client: milo } = await TestClient.login(t.wsUrl, 'milo@localhost');
      const { client: lena0 } = await TestClient.login(t.wsUrl, 'lena@localhost');
      await befriend(lena0, 'lena@localhost', milo, 'milo@localhost');
      await lena0.close();
      // The moment lena's new session exists and before its snapshot is taken, milo's presence changes
      // (delivered through the bus of the engine that holds the session, whichever node it is on, as a
      // contact's change racing the login would be).
      const offs = t.nodes.map(({ server: { engine } }) => {
        const off = engine.events.on('session.opened', (e) => {
          if (e.jid !== 'lena@localhost') return;
          for (const o of offs) o();
          engine.bus.deliver('lena@localhost', {
            kind: 'presence',
            from: 'milo@localhost',
            presence: { jid: 'milo@localhost', online: true, show: 'dnd', status: 'newer than the snapshot', priority: 0, resource: 'r', lastSeen: null },
            session: null,
          });
        });
        return off;
      });
      const lena = await TestClient.connect(t.wsUrl);
      await lena.request('auth', { jid: 'lena@localhost', password: 'secret-pw' });
      await lena.barrier();
      const result = lena.all.findIndex((f) => f.type === 'result' && f.result?.contacts !== undefined);
      const push = lena.all.findIndex((f) => f.type === 'presence' && f.status === 'newer than the snapshot');
      assert.ok(result >= 0 && push >= 0, JSON.stringify(lena.all));
      assert.ok(push > result, `the racing change came before the snapshot that it is newer than: ${JSON.stringify(lena.all)}`);
      await lena.close();
      await milo.close();
    } finally {
      await t.destroy();
    }
  });
});
