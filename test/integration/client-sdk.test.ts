import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import {
  PresencedClient,
  PresencedConnection,
  PresencedError,
  type ClientEvents,
  type ClientOptions,
  type ContactPresence,
  type RosterChange,
} from '../../packages/client/src/index.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const PASSWORD = 'secret-pw';
/** Nothing listens on port 1: connecting there fails at once, as with the network down. */
const UNREACHABLE = 'ws://127.0.0.1:1/ws';
/** Guards against hangs only; every wait below ends on an event, never on a clock. */
const WAIT_MS = 20_000;

/**
 * A WebSocket class for one client that records its sockets and can simulate a network outage: while
 * the gate is shut, new connections go nowhere.
 */
function gatedWebSocket() {
  const gate = { open: true, sockets: [] as WebSocket[] };
  class GatedWebSocket extends WebSocket {
    constructor(url: string) {
      super(gate.open ? url : UNREACHABLE);
      gate.sockets.push(this);
    }
  }
  return { gate, WebSocket: GatedWebSocket, last: () => gate.sockets[gate.sockets.length - 1]! };
}

/** Tracks the server's TCP sockets so a test can drop or stall one from the server's side. */
function serverSockets(t: TestServer) {
  const sockets = new Set<Socket>();
  t.server.http.server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return {
    /** The server's end of a client's WebSocket. */
    of(ws: WebSocket): Socket {
      const local = (ws as unknown as { _socket: Socket })._socket.localPort;
      const s = [...sockets].find((x) => x.remotePort === local);
      assert.ok(s, `no server socket for client port ${local}`);
      return s;
    },
  };
}

/** Every client a test made: closed at the end of the file, so a failed test's reconnecting clients cannot keep the process alive. */
const made = new Set<PresencedClient>();
after(async () => {
  for (const c of made) if (c.state !== 'closed') await c.close().catch(() => {});
});

function client(t: TestServer, jid: string, extra: Partial<ClientOptions> = {}): PresencedClient {
  const c = new PresencedClient({
    url: t.wsUrl,
    jid,
    password: PASSWORD,
    WebSocket,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    heartbeat: false,
    ...extra,
  });
  made.add(c);
  return c;
}

/** Resolves with the first `type` event matching `pred`. */
function nextEvent<K extends keyof ClientEvents>(
  c: PresencedClient,
  type: K,
  pred: (e: ClientEvents[K]) => boolean = () => true,
): Promise<ClientEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for a ${String(type)} event`));
    }, WAIT_MS);
    const off = c.on(type, (e) => {
      if (!pred(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

/** Resolves once `cond` holds on the client's view, checking now and after each presence or roster event. */
function until(c: PresencedClient, what: string, cond: () => boolean): Promise<void> {
  if (cond()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!cond()) return;
      clearTimeout(timer);
      offs.forEach((off) => off());
      resolve();
    };
    const offs = [c.on('presence', check), c.on('roster', check), c.on('connected', check)];
    const timer = setTimeout(() => {
      offs.forEach((off) => off());
      reject(new Error(`timed out waiting until ${what}; contacts: ${JSON.stringify([...c.contacts.values()])}`));
    }, WAIT_MS);
  });
}

const sees = (c: PresencedClient, jid: string, p: Partial<ContactPresence>) => {
  const got = c.contacts.get(jid);
  return got !== undefined && Object.entries(p).every(([k, v]) => (got as unknown as Record<string, unknown>)[k] === v);
};

/** Makes `a` see `b` the way a user would: subscribe, and `b` approves the request it is shown. */
async function follow(a: PresencedClient, b: PresencedClient): Promise<void> {
  const asked = nextEvent(b, 'subscriptionRequest', (e) => e.from === a.jid);
  await a.subscribe(b.jid!);
  await asked;
  await b.approve(a.jid!);
  await until(a, `${a.jid} sees ${b.jid}`, () => a.contacts.has(b.jid!) && a.roster.get(b.jid!)?.subscription !== 'none');
}

async function rejectsWith(p: Promise<unknown>, code: string, requestType?: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof PresencedError, `expected a PresencedError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (requestType !== undefined) assert.equal(e.requestType, requestType);
    return true;
  });
}

describe('client SDK: reconnecting restores presence, roster and contacts', () => {
  let t: TestServer;
  before(async () => {
    // No grace period: a dropped connection ends the session at once, so the client must restore it.
    t = await startTestServer({ grace_period_ms: 0 });
    for (const u of ['alice', 'bob', 'carol', 'dave']) await t.createAccount(`${u}@localhost`, PASSWORD);
  });
  after(async () => t.destroy());

  test('after the server drops the socket, presence is re-sent and changes made meanwhile arrive as events', async () => {
    const net = gatedWebSocket();
    const sockets = serverSockets(t);
    const alice = client(t, 'alice@localhost', { WebSocket: net.WebSocket, presence: { show: 'away', status: 'lunch' } });
    const bob = client(t, 'bob@localhost');
    const carol = client(t, 'carol@localhost');
    const dave = client(t, 'dave@localhost');
    const first = await alice.connect();
    assert.equal(first.reconnected, false);
    assert.equal(first.jid, 'alice@localhost');
    await Promise.all([bob.connect(), carol.connect(), dave.connect()]);
    await follow(alice, bob);
    await follow(bob, alice);
    await follow(alice, carol);
    await until(bob, 'bob sees alice away', () => sees(bob, 'alice@localhost', { available: true, show: 'away', status: 'lunch' }));
    assert.equal(alice.roster.get('bob@localhost')?.subscription, 'both');
    assert.equal(alice.roster.get('carol@localhost')?.subscription, 'to');

    // The network goes away and the server drops the connection.
    net.gate.open = false;
    const lost = nextEvent(alice, 'disconnected');
    sockets.of(net.last()).destroy();
    const d = await lost;
    assert.equal(d.willReconnect, true);
    assert.equal(alice.state, 'reconnecting');
    await until(bob, 'bob sees alice offline', () => sees(bob, 'alice@localhost', { available: false, show: 'offline' }));

    // While alice is away: bob changes, carol leaves, dave asks to see alice.
    await bob.setPresence({ show: 'dnd', status: 'busy', priority: 3 });
    await carol.close();
    await dave.subscribe('alice@localhost');

    const presence: ContactPresence[] = [];
    const roster: RosterChange[] = [];
    const attempts: number[] = [];
    alice.on('presence', (p) => presence.push(p));
    alice.on('roster', (r) => roster.push(r));
    alice.on('reconnecting', (r) => attempts.push(r.attempt));
    // Retries have been failing against the dead network meanwhile; wait for one more to be sure.
    await nextEvent(alice, 'reconnecting');

    net.gate.open = true;
    const back = await nextEvent(alice, 'connected');
    assert.equal(back.reconnected, true);
    assert.equal(back.resource, first.resource, 'the same resource is reused');
    assert.equal(alice.state, 'connected');
    assert.ok(attempts.length >= 1 && attempts.every((a, i) => i === 0 || a === attempts[i - 1]! + 1), `attempts ${attempts}`);

    // No app code ran: the client re-sent alice's presence ...
    await until(bob, 'bob sees alice back, still away', () => sees(bob, 'alice@localhost', { available: true, show: 'away', status: 'lunch' }));
    // ... and told alice what changed while she was away, before announcing the reconnect.
    const bobNow = presence.find((p) => p.jid === 'bob@localhost');
    assert.deepEqual(
      bobNow && { available: bobNow.available, show: bobNow.show, status: bobNow.status, priority: bobNow.priority },
      { available: true, show: 'dnd', status: 'busy', priority: 3 },
    );
    const carolNow = presence.find((p) => p.jid === 'carol@localhost');
    assert.ok(carolNow, 'an event for carol going offline');
    assert.equal(carolNow.available, false);
    assert.equal(carolNow.show, 'offline');
    assert.ok(carolNow.lastSeen instanceof Date, 'carol has a last-seen time');
    const daveItem = roster.find((r) => r.kind === 'changed' && r.item.jid === 'dave@localhost');
    assert.ok(daveItem && daveItem.kind === 'changed' && daveItem.item.pendingIn, 'the request from dave arrived as a roster change');
    assert.equal(presence.filter((p) => p.jid === 'bob@localhost').length, 1, 'one event per change, no duplicates');
    assert.equal(alice.contacts.get('bob@localhost')?.show, 'dnd');
    assert.equal(alice.contacts.get('carol@localhost')?.available, false);
    assert.equal(alice.roster.get('dave@localhost')?.pendingIn, true);

    // Live pushes keep flowing on the new connection.
    await bob.setPresence({ show: 'chat' });
    await until(alice, 'alice sees bob chatty', () => sees(alice, 'bob@localhost', { show: 'chat' }));

    await Promise.all([alice.close(), bob.close(), dave.close()]);
  });

  test('a stalled connection is found by the heartbeat and replaced; a request to it times out', async () => {
    const sockets = serverSockets(t);
    const watcher = client(t, 'bob@localhost', { resource: 'watcher' });
    await watcher.connect();

    const stuck = gatedWebSocket();
    // A login token: its login (no password hash to compute) fits the short request timeout on a busy machine.
    const daveToken = (await t.admin('POST', '/accounts/dave@localhost/tokens', { ttl: 600 })).body.token as string;
    const noHeartbeat = client(t, 'dave@localhost', { WebSocket: stuck.WebSocket, requestTimeoutMs: 300, password: undefined, token: daveToken });
    await noHeartbeat.connect();
    const stalledA = sockets.of(stuck.last());
    stalledA.pause(); // the server stops reading: the client's frames go unanswered
    await rejectsWith(noHeartbeat.ping(), 'timeout', 'ping');
    assert.equal(noHeartbeat.state, 'connected', 'one slow answer does not drop the connection');

    const net = gatedWebSocket();
    const alice = client(t, 'alice@localhost', { WebSocket: net.WebSocket, heartbeat: { intervalMs: 100, timeoutMs: 500 }, presence: { show: 'xa' } });
    await alice.connect();
    await until(watcher, 'bob sees alice xa', () => sees(watcher, 'alice@localhost', { show: 'xa' }));
    const stalled = sockets.of(net.last());
    const lost = nextEvent(alice, 'disconnected');
    const back = nextEvent(alice, 'connected');
    stalled.pause();
    const d = await lost;
    assert.equal(d.reason, 'heartbeat timeout');
    assert.equal(d.willReconnect, true);
    assert.equal((await back).reconnected, true);
    assert.equal(net.gate.sockets.length, 2, 'a new socket was opened');
    assert.equal(await alice.ping().then((x) => x instanceof Date), true);
    assert.ok(sees(watcher, 'alice@localhost', { available: true, show: 'xa' }));

    stalled.destroy();
    stalledA.destroy();
    await Promise.all([alice.close(), watcher.close(), noHeartbeat.close()]);
  });

  test('a second login with the same resource ends the first client without a reconnect war', async () => {
    const first = client(t, 'carol@localhost', { resource: 'desk' });
    await first.connect();
    const gone = nextEvent(first, 'disconnected');
    const second = client(t, 'carol@localhost', { resource: 'desk' });
    await second.connect();
    const d = await gone;
    assert.deepEqual([d.reason, d.willReconnect], ['replaced', false]);
    assert.equal(first.state, 'closed');
    await rejectsWith(first.ping(), 'disconnected', 'ping');
    await second.close();
  });

  test('close() says goodbye: contacts see the account offline at once, and nothing reconnects', async () => {
    const bob = client(t, 'bob@localhost');
    const alice = client(t, 'alice@localhost', { presence: { show: 'chat', status: 'here' } });
    await Promise.all([bob.connect(), alice.connect()]);
    await until(bob, 'bob sees alice', () => sees(bob, 'alice@localhost', { show: 'chat', status: 'here' }));
    const disconnected = nextEvent(alice, 'disconnected');
    await alice.close();
    assert.deepEqual({ ...(await disconnected) }, { code: 1000, reason: 'closed by client', willReconnect: false });
    assert.equal(alice.state, 'closed');
    await until(bob, 'bob sees alice offline', () => sees(bob, 'alice@localhost', { available: false }));
    assert.ok(bob.contacts.get('alice@localhost')?.lastSeen instanceof Date);
    await bob.close();
  });
});

describe('client SDK: surviving a server restart', () => {
  test('a restart on the same data directory and port is survived with presence re-sent', async () => {
    const first = await startTestServer({ grace_period_ms: 0 });
    await first.createAccount('alice@localhost', PASSWORD);
    await first.createAccount('bob@localhost', PASSWORD);
    const alice = client(first, 'alice@localhost', { presence: { show: 'xa', status: 'restarting soon', priority: 7 } });
    const bob = client(first, 'bob@localhost');
    await Promise.all([alice.connect(), bob.connect()]);
    await follow(bob, alice);
    await until(bob, 'bob sees alice', () => sees(bob, 'alice@localhost', { show: 'xa', status: 'restarting soon', priority: 7 }));

    const aliceLost = nextEvent(alice, 'disconnected');
    const bobLost = nextEvent(bob, 'disconnected');
    await first.stop();
    for (const d of [await aliceLost, await bobLost]) {
      assert.equal(d.reason, 'shutdown');
      assert.equal(d.code, 1001);
      assert.equal(d.willReconnect, true);
    }

    const aliceBack = nextEvent(alice, 'connected');
    const bobBack = nextEvent(bob, 'connected');
    const second = await startTestServer({ grace_period_ms: 0, http_port: first.server.port }, first.dataDir);
    try {
      assert.equal((await aliceBack).reconnected, true);
      assert.equal((await bobBack).reconnected, true);
      // Whichever came back first, bob ends up seeing alice's presence as she had set it.
      await until(bob, 'bob sees alice after the restart', () =>
        sees(bob, 'alice@localhost', { available: true, show: 'xa', status: 'restarting soon', priority: 7 }),
      );
      assert.equal(alice.roster.get('bob@localhost')?.subscription, 'from');
      const viaServer = await second.admin('GET', '/accounts/alice@localhost/presence');
      assert.equal(viaServer.body.show, 'xa');
    } finally {
      // Closed whatever happened: a client left reconnecting would keep the test process alive.
      await Promise.all([alice.close(), bob.close()]);
      await second.destroy();
    }
  });
});

describe('client SDK: errors are typed rejections', () => {
  let t: TestServer;
  let alice: PresencedClient;
  before(async () => {
    t = await startTestServer();
    await t.createAccount('alice@localhost', PASSWORD);
    alice = client(t, 'alice@localhost');
    await alice.connect();
  });
  after(async () => {
    await alice.close();
    await t.destroy();
  });

  test('bad JIDs, bad presence, foreign domains', async () => {
    await rejectsWith(alice.subscribe('not a jid@@localhost'), 'bad-jid', 'subscribe');
    await rejectsWith(alice.block('@localhost'), 'bad-jid', 'block');
    await rejectsWith(alice.subscribe('someone@elsewhere.example'), 'not-allowed', 'subscribe');
    await rejectsWith(alice.setPresence({ show: 'sleepy' as never }), 'bad-request', 'presence');
    assert.deepEqual(alice.presence, {}, 'a refused presence is not kept for the next login');
    await rejectsWith(alice.request('no.such.request'), 'unknown-type');
  });

  test('setExternalToken surfaces the server answer unsupported', async () => {
    await rejectsWith(alice.setExternalToken('fcm', 'device-token-1'), 'unsupported', 'push.register');
  });

  test('a request before auth is not-authenticated', async () => {
    const conn = await PresencedConnection.open(t.wsUrl, WebSocket);
    await rejectsWith(conn.request('roster.get'), 'not-authenticated', 'roster.get');
    const pong = await conn.request<{ time: string }>('ping');
    assert.ok(!Number.isNaN(Date.parse(pong.time)));
    conn.close();
    assert.equal((await conn.whenClosed).code, 1000);
  });

  test('a wrong password rejects connect() with auth-failed and nothing retries', async () => {
    const bad = client(t, 'alice@localhost', { password: 'wrong' });
    await rejectsWith(bad.connect(), 'auth-failed', 'auth');
    assert.equal(bad.state, 'closed');
    await rejectsWith(bad.getRoster(), 'disconnected', 'roster.get');
  });

  test('an unreachable server rejects connect() with disconnected', async () => {
    const c = new PresencedClient({ url: UNREACHABLE, jid: 'alice@localhost', password: PASSWORD, WebSocket });
    await rejectsWith(c.connect(), 'disconnected');
    assert.equal(c.state, 'closed');
  });

  test('auth-failed on a reconnect (password changed) stops reconnecting and emits an error', async () => {
    await t.createAccount('erin@localhost', PASSWORD);
    const sockets = serverSockets(t);
    const net = gatedWebSocket();
    const erin = client(t, 'erin@localhost', { WebSocket: net.WebSocket });
    await erin.connect();
    const r = await t.admin('PUT', '/accounts/erin@localhost/password', { password: 'a-new-password' });
    assert.equal(r.status, 204);
    const failed = nextEvent(erin, 'error');
    let reconnected = false;
    erin.on('connected', () => (reconnected = true));
    sockets.of(net.last()).destroy();
    const e = await failed;
    assert.ok(e instanceof PresencedError);
    assert.equal(e.code, 'auth-failed');
    assert.equal(erin.state, 'closed');
    assert.equal(reconnected, false);
    await rejectsWith(erin.ping(), 'disconnected');
  });

  test('a token login works and is reused on reconnect', async () => {
    const issued = await t.admin('POST', '/accounts/alice@localhost/tokens', {});
    assert.equal(issued.status, 201);
    const sockets = serverSockets(t);
    const net = gatedWebSocket();
    const c = new PresencedClient({ url: t.wsUrl, token: issued.body.token, WebSocket: net.WebSocket, reconnect: { initialDelayMs: 20, maxDelayMs: 200 } });
    const ev = await c.connect();
    assert.equal(ev.jid, 'alice@localhost');
    const back = nextEvent(c, 'connected');
    sockets.of(net.last()).destroy();
    assert.equal((await back).reconnected, true);
    await c.close();
  });
});
