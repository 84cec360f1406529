import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { WebSocket } from 'ws';
import { PresencedClient, type ContactPresence } from '../../packages/client/src/index.js';
import { RawXmpp } from '../helpers/raw-xmpp.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from '../helpers/server.js';
import { befriend, TestClient } from '../helpers/ws-client.js';
import { buildDist, killAllServerProcesses, processAdmin, startServerProcess } from '../helpers/server-process.js';

/**
 * Presence truth seen from outside: what the server says about an account's last seen and last status,
 * asked through every door (admin API, HTTP presence API, native snapshot and presence.get, XMPP
 * XEP-0012), after an unavailable presence, a frozen client, and a kill -9.
 */

/** A stanza round trip: once the server answers this ping, it has handled every stanza sent before. */
async function xmppBarrier(x: RawXmpp, id: string): Promise<void> {
  x.write(`<iq type='get' id='${id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await x.waitFor(new RegExp(`<iq[^>]*id='${id}'`), `answer to ${id}`);
}

/** XEP-0012 last activity of `jid` as `asker` sees it: seconds and status text, or the error condition. */
async function lastActivity(asker: RawXmpp, jid: string, id: string): Promise<{ seconds: number; status: string } | { error: string }> {
  asker.write(`<iq type='get' id='${id}' to='${jid}'><query xmlns='jabber:iq:last'/></iq>`);
  const iq = await asker.waitFor(new RegExp(`<iq[^>]*id='${id}'[^>]*>.*?</iq>`, 's'), `XEP-0012 answer ${id}`);
  const q = /<query[^>]*seconds=['"](\d+)['"][^>]*?(?:\/>|>(.*?)<\/query>)/s.exec(iq);
  if (q) return { seconds: Number(q[1]), status: q[2] ?? '' };
  return { error: /<([a-z-]+) xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/.exec(iq)?.[1] ?? iq };
}

async function httpPresence(t: TestServer, jid: string): Promise<any> {
  const res = await fetch(`${t.url}/api/v1/presence/${encodeURIComponent(jid)}`);
  assert.equal(res.status, 200, `GET /api/v1/presence/${jid}`);
  return res.json();
}

describe('last status and last seen agree everywhere', () => {
  let t: TestServer;
  let xmppPort: number;
  const raws: RawXmpp[] = [];
  const clients: TestClient[] = [];
  /** alice's contact, watching her over the native protocol. */
  let wendy: TestClient;
  before(async () => {
    t = await startTestServer({ xmpp_port: 0, xmpp_require_tls: false, public_presence_default: true, grace_period_ms: 300, heartbeat_interval_ms: 200, idle_timeout_ms: 600 });
    xmppPort = t.server.xmppPort as number;
    for (const u of ['alice', 'wendy', 'xavier', 'frozen']) await t.createAccount(`${u}@localhost`);
    wendy = (await TestClient.login(t.wsUrl, 'wendy@localhost', 'secret-pw', { resource: 'native' })).client;
    clients.push(wendy);
    const { client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'setup' });
    await befriend(alice, 'alice@localhost', wendy, 'wendy@localhost');
    await alice.request('bye');
    await wendy.presenceOf('alice@localhost', (p) => !p.online);
  });
  after(async () => {
    for (const r of raws) r.close();
    for (const c of clients) await c.close().catch(() => {});
    await t.destroy();
  });

  async function xmppLogin(user: string, resource: string): Promise<RawXmpp> {
    const x = await RawXmpp.open(xmppPort);
    raws.push(x);
    await x.loginPlain(user, 'secret-pw', resource);
    return x;
  }

  test('bug 1: an XMPP unavailable presence with a status is the last status for XEP-0012 and the HTTP APIs', async () => {
    const xavier = await xmppLogin('xavier', 'desk');
    xavier.write(`<presence><status>working</status></presence>`);
    await xmppBarrier(xavier, 'b1');
    xavier.write(`<presence type='unavailable'><status>gone for the weekend</status></presence>`);
    await xmppBarrier(xavier, 'b2');

    const asker = await xmppLogin('wendy', 'xmpp');
    const last = await lastActivity(asker, 'xavier@localhost', 'last1');
    assert.ok('seconds' in last, `XEP-0012 answered ${JSON.stringify(last)}`);
    assert.equal(last.status, 'gone for the weekend');

    const pub = await httpPresence(t, 'xavier@localhost');
    assert.equal(pub.online, false);
    assert.equal(pub.status, 'gone for the weekend');
    assert.ok(pub.lastSeen !== null);
    const admin = await t.admin('GET', '/accounts/xavier@localhost/presence');
    assert.deepEqual([admin.body.status, admin.body.lastSeen], [pub.status, pub.lastSeen]);
  });

  test('bug 2 / finding 4: a connected-but-unavailable account has the same last seen and status through every door', async () => {
    const { client: alice1 } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'phone', presence: { status: 'on the train' } });
    await wendy.presenceOf('alice@localhost', (p) => p.online);
    await alice1.request('bye');
    const off = await wendy.presenceOf('alice@localhost', (p) => !p.online);
    assert.equal(off.status, 'on the train');
    assert.ok(off.lastSeen);

    // Alice comes back connected but not available (native `presence: false`).
    const { client: alice2 } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'phone', presence: false });
    clients.push(alice2);

    const admin = (await t.admin('GET', '/accounts/alice@localhost/presence')).body;
    const pub = await httpPresence(t, 'alice@localhost');
    const got = (await wendy.request('presence.get', { jids: ['alice@localhost'] })).contacts[0];
    const { client: wendy2, auth } = await TestClient.login(t.wsUrl, 'wendy@localhost', 'secret-pw', { resource: 'second' });
    clients.push(wendy2);
    const snap = auth.contacts.find((c: any) => c.jid === 'alice@localhost');
    const expected = { online: false, show: 'offline', status: 'on the train', lastSeen: off.lastSeen };
    const pick = (p: any) => ({ online: p.online, show: p.show, status: p.status, lastSeen: p.lastSeen });
    assert.deepEqual(pick(admin), expected, 'admin API');
    assert.deepEqual(pick(pub), expected, 'GET /api/v1/presence/{jid}');
    assert.deepEqual(pick(got), expected, 'native presence.get');
    assert.deepEqual(pick(snap), expected, 'native snapshot');

    const asker = await xmppLogin('wendy', 'xmpp2');
    const last = await lastActivity(asker, 'alice@localhost', 'last2');
    assert.ok('seconds' in last, `XEP-0012 answered ${JSON.stringify(last)}`);
    assert.equal(last.status, 'on the train');
    const age = (Date.now() - Date.parse(off.lastSeen)) / 1000;
    assert.ok(Math.abs(last.seconds - age) <= 2, `XEP-0012 says ${last.seconds}s ago, the APIs ${age}s`);
  });

  test('a frozen native client (no pongs) is last seen at its last frame, not when it was found dead, and watchers are told it timed out', async () => {
    // autoPong off: the client keeps its socket open but answers nothing, like a frozen phone.
    const frozen = await TestClient.connect(t.wsUrl, { autoPong: false });
    clients.push(frozen);
    await frozen.request('auth', { jid: 'frozen@localhost', password: 'secret-pw', resource: 'phone' });
    await befriend(frozen, 'frozen@localhost', wendy, 'wendy@localhost');
    await wendy.presenceOf('frozen@localhost', (p) => p.online);
    const sentAt = Date.now();
    await frozen.request('presence', { show: 'away', status: 'last words' });
    const answeredAt = Date.now();

    const off = await wendy.presenceOf('frozen@localhost', (p) => !p.online);
    const offlineAt = Date.now();
    const lastSeen = Date.parse(off.lastSeen);
    assert.equal(off.status, 'last words');
    assert.equal(off.reason, 'timeout');
    assert.ok(lastSeen >= sentAt - 5 && lastSeen <= answeredAt + 5, `last seen ${off.lastSeen} is not the last frame (${new Date(sentAt).toISOString()}..${new Date(answeredAt).toISOString()})`);
    // Found dead after idle_timeout_ms (600) of silence, then the grace period (300).
    assert.ok(offlineAt - lastSeen >= 600, `offline only ${offlineAt - lastSeen} ms after last seen`);
    assert.equal((await t.admin('GET', '/accounts/frozen@localhost/presence')).body.lastSeen, off.lastSeen);
  });

  test('a goodbye is pushed with reason graceful', async () => {
    const { client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'laptop' });
    await wendy.presenceOf('alice@localhost', (p) => p.online);
    await alice.close(1000);
    const off = await wendy.presenceOf('alice@localhost', (p) => !p.online);
    assert.equal(off.reason, 'graceful');
  });

  test('the client SDK hands the leave reason to the app with the presence event', async () => {
    const sdk = new PresencedClient({ url: t.wsUrl, jid: 'wendy@localhost', password: 'secret-pw', resource: 'sdk', WebSocket, heartbeat: false });
    await sdk.connect();
    try {
      const { client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'tablet' });
      const gone = new Promise<ContactPresence>((resolve) => {
        const off = sdk.on('presence', (p) => {
          if (p.jid !== 'alice@localhost' || p.available) return;
          off();
          resolve(p);
        });
      });
      await new Promise<void>((resolve) => {
        const off = sdk.on('presence', (p) => {
          if (p.jid === 'alice@localhost' && p.available) {
            off();
            resolve();
          }
        });
        if (sdk.contacts.get('alice@localhost')?.available) {
          off();
          resolve();
        }
      });
      alice.destroy(); // the connection is lost without a goodbye
      const p = await gone;
      assert.equal(p.reason, 'timeout');
      assert.equal(sdk.contacts.get('alice@localhost')?.lastSeen?.getTime(), p.lastSeen?.getTime());
    } finally {
      await sdk.close();
    }
  });
});

// ------------------------------------------------------------------------------ kill -9

interface Row {
  jid: string;
  online_since: number;
  last_heard: number;
  status: string | null;
}

function checkpointRows(dataDir: string): Row[] {
  const db = new Database(join(dataDir, 'presenced.sqlite'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('select jid, online_since, last_heard, status from presence_checkpoint order by jid').all() as Row[];
  } finally {
    db.close();
  }
}

describe('crash truth: kill -9 and restart', { timeout: 120_000 }, () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'presenced-crash-'));
  before(async () => {
    await buildDist();
  });
  after(() => {
    killAllServerProcesses();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('accounts online at the crash come back offline, last seen at their last activity with their last status', async () => {
    const first = await startServerProcess(dataDir, { PRESENCED_PRESENCE_CHECKPOINT_MS: '200' });
    const ws = first.url.replace(/^http/, 'ws') + '/ws';
    for (const jid of ['veteran@localhost', 'newcomer@localhost']) assert.equal((await processAdmin(first.url, 'POST', '/accounts', { jid, password: 'secret-pw' })).status, 201);

    // veteran has been online before: an older last seen exists.
    const { client: v1 } = await TestClient.login(ws, 'veteran@localhost', 'secret-pw', { resource: 'r', presence: { status: 'yesterday' } });
    await v1.request('bye');
    await v1.closed;
    const older = (await processAdmin(first.url, 'GET', '/accounts/veteran@localhost/presence')).body;
    assert.equal(older.online, false);
    assert.ok(older.lastSeen);

    const { client: veteran } = await TestClient.login(ws, 'veteran@localhost', 'secret-pw', { resource: 'r', presence: { status: 'back' } });
    const { client: newcomer } = await TestClient.login(ws, 'newcomer@localhost', 'secret-pw', { resource: 'r', presence: { show: 'dnd', status: 'first day' } });
    const activityAt = Date.now();
    await veteran.request('presence', { show: 'away', status: 'veteran last words' });
    await newcomer.request('presence', { show: 'xa', status: 'newcomer last words' });

    // Wait for the event: a checkpoint holding both accounts' last activity.
    for (;;) {
      const rows = checkpointRows(dataDir);
      const v = rows.find((r) => r.jid === 'veteran@localhost');
      const nc = rows.find((r) => r.jid === 'newcomer@localhost');
      if (v?.status === 'veteran last words' && nc?.status === 'newcomer last words' && v.last_heard >= activityAt && nc.last_heard >= activityAt) break;
      await delay(50);
    }
    const killedAt = Date.now();
    first.child.kill('SIGKILL');
    assert.equal((await first.exited).signal, 'SIGKILL');
    veteran.destroy();
    newcomer.destroy();
    // What the dead server last wrote down is the last activity it knew of.
    const rows = new Map(checkpointRows(dataDir).map((r) => [r.jid, r]));

    const second = await startServerProcess(dataDir, { PRESENCED_PRESENCE_CHECKPOINT_MS: '200' });
    try {
      for (const [jid, status] of [
        ['veteran@localhost', 'veteran last words'],
        ['newcomer@localhost', 'newcomer last words'],
      ] as const) {
        const row = rows.get(jid);
        assert.ok(row, `no checkpoint row for ${jid}`);
        const p = (await processAdmin(second.url, 'GET', `/accounts/${jid}/presence`)).body;
        assert.equal(p.online, false, `${jid} must not show online after the restart`);
        assert.equal(p.status, status);
        assert.equal(p.lastSeen, new Date(row.last_heard).toISOString());
        const at = Date.parse(p.lastSeen);
        assert.ok(at >= activityAt && at <= killedAt, `${jid} last seen ${p.lastSeen} is not its last activity before the crash`);
        const recovery = second.logs.find((l) => l.jid === jid && l.reason === 'crash-recovery');
        assert.ok(recovery, `no crash-recovery log line for ${jid}`);
      }
      const veteranNow = (await processAdmin(second.url, 'GET', '/accounts/veteran@localhost/presence')).body;
      assert.ok(Date.parse(veteranNow.lastSeen) > Date.parse(older.lastSeen), 'not the older last seen');
      assert.deepEqual(checkpointRows(dataDir), [], 'the recovered rows are gone');
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
    // A clean stop leaves nothing to recover.
    assert.deepEqual(checkpointRows(dataDir), []);
  });
});
