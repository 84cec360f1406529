import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestClient, befriend } from '../helpers/ws-client.js';
import { ClusterServices, pushesAbout, startClusterProcess, until } from '../helpers/cluster.js';
import { stopAllPrivateServices } from '../helpers/private-services.js';
import { buildDist, killAllServerProcesses, processAdmin, type LogRecord, type ServerProcess } from '../helpers/server-process.js';

/**
 * Three presenced processes on one PostgreSQL database and one Redis, and what happens to watchers when one of them dies (kill -9)
 * or is paused past its lease (SIGSTOP ... SIGCONT). Child processes, because only they can be killed
 * or stopped; bin/presenced.js runs dist/, which before() builds.
 */

const LEASE_MS = 1_500;
/** The documented bound from death to every watcher (default lease): the tests' deadline, not a measurement. */
const BOUND_MS = 10_000;

let cluster: ClusterServices;
const clients: TestClient[] = [];

function startNode(name: string): Promise<ServerProcess> {
  return startClusterProcess(cluster, name, LEASE_MS);
}

async function login(node: ServerProcess, jid: string): Promise<TestClient> {
  const { client } = await TestClient.login(`${node.url.replace(/^http/, 'ws')}/ws`, jid);
  clients.push(client);
  return client;
}

const logsWith = (n: ServerProcess, msg: string, pred: (r: LogRecord) => boolean = () => true): LogRecord[] =>
  n.logs.filter((r) => typeof r.msg === 'string' && r.msg.includes(msg) && pred(r));

let a: ServerProcess;
let b: ServerProcess;
let c: ServerProcess;

before(async () => {
  await buildDist();
  cluster = await ClusterServices.start();
  [a, b, c] = await Promise.all([startNode('node-a'), startNode('node-b'), startNode('node-c')]);
  for (const u of ['k1', 'k2', 'p1', 'wb', 'wc']) {
    const r = await processAdmin(a.url, 'POST', '/accounts', { jid: `${u}@localhost`, password: 'secret-pw' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
});

after(async () => {
  for (const cl of clients) cl.destroy();
  killAllServerProcesses();
  await cluster?.remove();
  await stopAllPrivateServices();
});

describe('a node dies', () => {
  test('kill -9: watchers on the other nodes see its users offline (node_down), once, declared by one node', async () => {
    const wb = await login(b, 'wb@localhost');
    const wc = await login(c, 'wc@localhost');
    const users = ['k1@localhost', 'k2@localhost'];
    for (const u of users) {
      const cu = await login(a, u);
      await befriend(cu, u, wb, 'wb@localhost');
      await befriend(cu, u, wc, 'wc@localhost');
      await wb.presenceOf(u, (p) => p.online === true);
      await wc.presenceOf(u, (p) => p.online === true);
    }
    a.child.kill('SIGKILL');
    await a.exited;
    for (const w of [wb, wc]) {
      for (const u of users) {
        const off = await w.waitFor((p) => p.type === 'presence' && p.jid === u && p.online === false, `${u} offline`, BOUND_MS);
        assert.equal(off.reason, 'node_down');
      }
    }
    // Exactly once: one offline each, and one node did the declaring (its events: one session.closed per session).
    await wb.barrier();
    await wc.barrier();
    for (const w of [wb, wc]) for (const u of users) assert.equal(pushesAbout(w, u).filter((p) => p.online === false).length, 1);
    const declarers = [b, c].filter((n) => logsWith(n, 'declaring its sessions offline').length > 0);
    assert.equal(declarers.length, 1, 'one node declared node-a down');
    const ended = [b, c].flatMap((n) => logsWith(n, 'session ended', (r) => r.reason === 'node_down'));
    assert.deepEqual(ended.map((r) => r.jid).sort(), users);
    // Its users reconnecting elsewhere are simply online again.
    await login(b, 'k1@localhost');
    await wc.presenceOf('k1@localhost', (p) => p.online === true);
  });

  test('a node paused past its lease comes back: no watcher ever sees its users online again; its clients are disconnected', async () => {
    // A new process takes the dead node's name (it waits for nothing: that lease is long gone).
    a = await startNode('node-a');
    const wb = await login(b, 'wb@localhost');
    const wc = await login(c, 'wc@localhost');
    const user = await login(a, 'p1@localhost');
    await befriend(user, 'p1@localhost', wb, 'wb@localhost');
    await befriend(user, 'p1@localhost', wc, 'wc@localhost');
    await wb.presenceOf('p1@localhost', (p) => p.online === true);
    await wc.presenceOf('p1@localhost', (p) => p.online === true);
    a.child.kill('SIGSTOP');
    try {
      for (const w of [wb, wc]) {
        const off = await w.waitFor((p) => p.type === 'presence' && p.jid === 'p1@localhost' && p.online === false, 'p1 offline', BOUND_MS);
        assert.equal(off.reason, 'node_down');
      }
    } finally {
      a.child.kill('SIGCONT');
    }
    // Back, it finds itself fenced: it closes its connections and joins again under a new epoch.
    const closed = await user.closed;
    assert.equal(closed.code, 1001);
    await until('node-a joined again', () => logsWith(a, 'joined the cluster again').length > 0, BOUND_MS);
    await wb.barrier();
    await wc.barrier();
    for (const w of [wb, wc]) {
      const seen = pushesAbout(w, 'p1@localhost');
      const offAt = seen.findIndex((p) => p.online === false);
      assert.ok(offAt >= 0);
      assert.deepEqual(seen.slice(offAt + 1), [], 'nothing about p1 after it went offline');
    }
    for (const n of [a, b, c]) {
      const s = await processAdmin(n.url, 'GET', '/accounts/p1@localhost/sessions');
      assert.deepEqual(s.body.sessions, [], `node ${n.url}`);
    }
    // Its user reconnects (here to the node that was paused): a real online.
    await login(a, 'p1@localhost');
    await wb.presenceOf('p1@localhost', (p) => p.online === true);
    await wc.presenceOf('p1@localhost', (p) => p.online === true);
  });
});
