import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { PresenceError } from '../../src/core/errors.js';
import { freePort, startPostgres, stopAllPrivateServices, type PrivatePostgres } from '../helpers/private-services.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { HEADER, RawXmpp } from '../helpers/raw-xmpp.js';
import { befriend, RequestFailed, TestClient } from '../helpers/ws-client.js';

/**
 * The server with `store: postgres://...`: the core works on PostgreSQL end to end (accounts, native
 * login, roster, presence, last seen), survives PostgreSQL restarting under it, and refuses to start,
 * clearly, when PostgreSQL cannot be reached.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The features whose repositories are not on PostgreSQL in this branch yet. */
const CORE_ONLY = { apps: false, push: false } as const;

async function eventually<T>(fn: () => Promise<T>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe('the server on PostgreSQL', () => {
  let pg: PrivatePostgres;
  let url: string;
  let t: TestServer;
  const dirs: string[] = [];

  before(async () => {
    pg = await startPostgres();
    url = pg.createDatabase('server_store');
    t = await startTestServer({ store: url, node_id: 'node-a', xmpp_port: 0, xmpp_require_tls: false, ...CORE_ONLY });
    dirs.push(t.dataDir);
    for (const u of ['alice', 'bob', 'erin', 'frank']) await t.createAccount(`${u}@localhost`);
  });
  after(async () => {
    await t.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    await stopAllPrivateServices();
  });

  test('native login, roster and presence, with the state in PostgreSQL', async () => {
    const { client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'laptop' });
    const { client: bob } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'phone' });
    try {
      await befriend(alice, 'alice@localhost', bob, 'bob@localhost');
      const roster = await alice.request('roster.get');
      assert.deepEqual(roster.items.map((i: any) => [i.jid, i.subscription]), [['bob@localhost', 'both']]);
      await bob.request('presence', { show: 'dnd', status: 'busy on PostgreSQL' });
      const seen = await alice.presenceOf('bob@localhost', (p) => p.show === 'dnd');
      assert.equal(seen.status, 'busy on PostgreSQL');

      // Behind the server's back: the rows are in the database, not in data_dir.
      assert.equal(pg.psql('server_store', "select count(*) from accounts where jid in ('alice@localhost', 'bob@localhost')").trim(), '2');
      assert.equal(pg.psql('server_store', "select sub_to || ',' || sub_from from roster_items where owner = 'alice@localhost' and contact = 'bob@localhost'").trim(), '1,1');
      // subscribe, approved, asked back, approving: four changes of alice's roster, each counted.
      assert.equal(roster.version, 4);
      assert.equal(Number(pg.psql('server_store', "select version from roster_versions where owner = 'alice@localhost'")), roster.version);

      await bob.close();
      const off = await alice.presenceOf('bob@localhost', (p) => !p.online);
      assert.equal(off.status, 'busy on PostgreSQL');
      const stored = await eventually(async () => {
        const row = pg.psql('server_store', "select at || '|' || status from last_seen where jid = 'bob@localhost'").trim();
        assert.notEqual(row, '');
        return row;
      });
      assert.equal(stored, `${Date.parse(off.lastSeen)}|busy on PostgreSQL`);
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  test('PostgreSQL restarting: requests that need it get "unavailable" (503), live presence keeps working, and it recovers by itself', async () => {
    const { client: frank } = await TestClient.login(t.wsUrl, 'frank@localhost', 'secret-pw', { resource: 'r1' });
    const { client: erin } = await TestClient.login(t.wsUrl, 'erin@localhost', 'secret-pw', { resource: 'r1' });
    try {
      await befriend(frank, 'frank@localhost', erin, 'erin@localhost');
      await pg.stop();
      try {
        // Live presence is in memory: it still flows between connected sessions.
        await erin.request('presence', { show: 'away', status: 'database down' });
        assert.equal((await frank.presenceOf('erin@localhost', (p) => p.show === 'away')).status, 'database down');
        // What needs the database fails clearly.
        const list = await t.admin('GET', '/accounts');
        assert.equal(list.status, 503);
        assert.equal(list.body.error.code, 'unavailable');
        await assert.rejects(TestClient.login(t.wsUrl, 'frank@localhost', 'secret-pw', { resource: 'r2' }).then(({ client }) => client.close()), (e: unknown) => {
          assert.ok(e instanceof RequestFailed);
          assert.equal(e.error.code, 'unavailable');
          return true;
        });
        await assert.rejects(frank.request('block', { jid: 'mallory@localhost' }), (e: unknown) => e instanceof RequestFailed && e.error.code === 'unavailable');
        // XMPP logins: a temporary failure (try again later), not a wrong password.
        for (const [mechanism, initial] of [['PLAIN', '\0frank\0secret-pw'], ['SCRAM-SHA-1', 'n,,n=frank,r=clientnonce']] as const) {
          const x = await RawXmpp.open(t.server.xmppPort!);
          try {
            x.write(HEADER);
            await x.waitFor(/<\/stream:features>/);
            x.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='${mechanism}'>${Buffer.from(initial).toString('base64')}</auth>`);
            await x.waitFor(/<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure\/>/, `${mechanism}: temporary-auth-failure`);
          } finally {
            x.socket.destroy();
          }
        }
        // An account going offline (its session ended by the grace timer, its last seen not writable)
        // is shown offline all the same, and nothing fails unhandled.
        erin.ws.terminate();
        assert.equal((await frank.presenceOf('erin@localhost', (p) => !p.online)).status, 'database down');
      } finally {
        await pg.start();
      }
      // Back: the same server serves what needs the database again, without being restarted.
      const { client: again } = await eventually(() => TestClient.login(t.wsUrl, 'erin@localhost', 'secret-pw', { resource: 'r2' }));
      try {
        assert.equal((await t.admin('GET', '/accounts')).status, 200);
        await again.request('presence', { show: 'chat', status: 'database back' });
        assert.equal((await frank.presenceOf('erin@localhost', (p) => p.show === 'chat')).status, 'database back');
        assert.deepEqual((await again.request('roster.get')).items.map((i: any) => [i.jid, i.subscription]), [['frank@localhost', 'both']]);
        await frank.request('block', { jid: 'mallory@localhost' });
      } finally {
        await again.close();
      }
    } finally {
      await frank.close();
      await erin.close();
    }
  });

  test('after pg.restart(), another server process on the same database (a second node) sees the same accounts and rosters', async () => {
    await pg.restart();
    // The running node replaces the connections the restart cut by itself.
    await eventually(async () => assert.equal((await t.admin('GET', '/accounts')).status, 200));
    const other = await startTestServer({ store: url, node_id: 'node-b', ...CORE_ONLY });
    dirs.push(other.dataDir);
    try {
      await other.createAccount('carol@localhost');
      assert.equal((await t.admin('GET', '/accounts')).body.accounts.includes('carol@localhost'), true);
      const { client: onA } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'a' });
      const { client: onB } = await TestClient.login(other.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'b' });
      const [rosterA, rosterB] = [await onA.request('roster.get'), await onB.request('roster.get')];
      assert.ok(rosterA.items.length > 0);
      assert.deepEqual(rosterB, rosterA);
      await onA.close();
      await onB.close();
      // One account, one creation: the second is a conflict whichever node is asked.
      assert.equal((await t.admin('POST', '/accounts', { jid: 'carol@localhost', password: 'secret-pw' })).status, 409);
    } finally {
      await other.stop();
    }
  });
});

describe('starting with PostgreSQL unreachable', () => {
  test('startServer rejects with "unavailable" naming the server', async () => {
    const port = await freePort();
    await assert.rejects(startTestServer({ store: `postgres://presenced:pw-not-shown@127.0.0.1:${port}/presenced`, ...CORE_ONLY }), (e: unknown) => {
      assert.ok(e instanceof PresenceError);
      assert.equal(e.code, 'unavailable');
      assert.match(e.message, new RegExp(`cannot reach PostgreSQL at postgres://presenced:\\*\\*\\*@127\\.0\\.0\\.1:${port}/presenced`));
      assert.doesNotMatch(e.message, /pw-not-shown/);
      return true;
    });
  });

  test('`presenced start` prints one clear line and exits non-zero, without a stack trace', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'presenced-pgdown-'));
    try {
      const env: NodeJS.ProcessEnv = {};
      for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PRESENCED_')) env[k] = v;
      Object.assign(env, { PRESENCED_STORE: `postgres://127.0.0.1:${port}/presenced`, PRESENCED_DATA_DIR: dir, PRESENCED_HTTP_PORT: '0', PRESENCED_XMPP_PORT: '-1', PRESENCED_XMPPS_PORT: '-1', PRESENCED_LOG_LEVEL: 'silent' });
      // src/cli.ts through tsx, as bin/presenced.js runs dist/cli.js.
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', "const { main } = await import('./src/cli.ts'); process.exitCode = await main(['start']);"], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
      assert.equal(code, 1, stderr);
      assert.match(stderr, new RegExp(`^presenced: cannot reach PostgreSQL at postgres://127\\.0\\.0\\.1:${port}/presenced: .*ECONNREFUSED.* \\(unavailable\\)\\n$`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a store value that is not a PostgreSQL URL is refused by the configuration', async () => {
    await assert.rejects(startTestServer({ store: 'mysql://root:hunter2@db/presenced' }), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /store must be empty \(SQLite in data_dir\) or a PostgreSQL URL/);
      assert.doesNotMatch(e.message, /hunter2/);
      return true;
    });
  });
});
