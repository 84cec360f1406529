import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { get as httpGet, type ClientRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { appsOf } from '../../src/features/apps/apps-feature.js';
import { webhooksOf } from '../../src/features/apps/webhooks/index.js';
import { pushOf } from '../../src/features/push/push-feature.js';
import { CLUSTER_TOKEN_SECRET, until } from '../helpers/cluster.js';
import { basic, Browserless, consent, pkce } from '../helpers/consent-flow.js';
import { startPostgres, startRedis, stopAllPrivateServices, type PrivatePostgres, type PrivateRedis } from '../helpers/private-services.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { Receiver } from '../helpers/webhook-receiver.js';
import { TestClient } from '../helpers/ws-client.js';
import { XmppTestClient, xml } from '../helpers/xmpp-client.js';
import { buildDist, killAllServerProcesses, startServerProcess } from '../helpers/server-process.js';

/**
 * Apps, push and extensions on three nodes in this process, sharing one private PostgreSQL (store) and
 * one private Redis (bus): a user's changes reach an app by webhook and by stream whichever node
 * the user and the app are on, a revocation made on one node holds on every node, the start's
 * reconciliation corrects a user once however many nodes start together, an extension sees each event
 * once, and push counts and triggers do not depend on the node.
 */

const AUDIT = fileURLToPath(new URL('../../examples/extensions/audit-log.mjs', import.meta.url));
const PUSH_SECRET = `whsec_${randomBytes(24).toString('base64')}`;
const USERS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'henry', 'ivan', 'judy', 's1', 's2', 's3', 'rita', 'kim', 'm1', 'm2', 'm3', 'lena', 'mona'];

let redis: PrivateRedis;
let pg: PrivatePostgres;
const work = mkdtempSync(join(tmpdir(), 'presenced-cluster-features-'));
const auditPath = join(work, 'audit.jsonl');
const hooks = new Receiver();
const pushes = new Receiver();
const nodes = new Map<string, TestServer>();
const clients: TestClient[] = [];
const xmppClients: XmppTestClient[] = [];
const streams: NdjsonStream[] = [];

function config(name: string) {
  return {
    store: pg.url,
    bus: redis.url,
    node_id: name,
    // Long enough that a Redis command slower than its bound (a third of the lease, at most 2 s) on a busy
    // machine does not count as Redis being unreachable.
    node_lease_ms: 6_000,
    token_secret: CLUSTER_TOKEN_SECRET,
    xmpp_port: 0,
    ws_rate_limit: 10_000,
    ws_rate_burst: 10_000,
    webhooks_allow_private: true,
    webhook_flush_ms: 5,
    webhook_batch_ms: 20,
    webhook_backoff_base_ms: 20,
    push_providers: { gw: { type: 'webhook', url: pushes.url, secret: PUSH_SECRET } },
    push_rate_per_device_per_minute: 1,
    extensions_list: { audit: { module: AUDIT, settings: { path: auditPath } } },
  };
}

/** Starts (or starts again, on its data directory) the node `name`. */
async function startNode(name: string, dataDir?: string): Promise<TestServer> {
  const t = await startTestServer(config(name), dataDir);
  nodes.set(name, t);
  return t;
}

const node = (name: string): TestServer => nodes.get(name)!;

async function login(on: string, jid: string, extra: Record<string, unknown> = {}): Promise<TestClient> {
  // A node that lost Redis for a moment (a restart above, or a command slower than its timeout on a
  // busy machine) refuses logins until it is back, as documented: wait for it rather than fail.
  await until(`node ${on} connected to Redis`, () => node(on).server.engine.bus.stats?.connected === 1, 15_000);
  const { client } = await TestClient.login(node(on).wsUrl, jid, 'secret-pw', extra);
  clients.push(client);
  return client;
}

type Line = Record<string, any>;

/** An app's NDJSON presence stream, read line by line as it arrives. */
class NdjsonStream {
  readonly lines: Line[] = [];
  ended = false;
  #waiters: Array<() => void> = [];
  private constructor(private readonly req: ClientRequest) {}

  static async open(t: TestServer, app: App, lastEventId?: string): Promise<NdjsonStream> {
    const headers: Record<string, string> = { authorization: basic(app.id, app.clientSecret) };
    if (lastEventId !== undefined) headers['last-event-id'] = lastEventId;
    const req = httpGet(`${t.url}/${app.id}/presence.json`, { headers, agent: false });
    const s = new NdjsonStream(req);
    streams.push(s);
    const res = await new Promise<IncomingMessage>((resolve, reject) => req.once('response', resolve).once('error', reject));
    assert.equal(res.statusCode, 200);
    let rest = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      rest += chunk;
      let nl: number;
      while ((nl = rest.indexOf('\n')) >= 0) {
        s.lines.push(JSON.parse(rest.slice(0, nl)) as Line);
        rest = rest.slice(nl + 1);
      }
      s.#wake();
    });
    const done = (): void => {
      s.ended = true;
      s.#wake();
    };
    res.once('close', done);
    res.once('error', done);
    return s;
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  async until(check: (lines: readonly Line[]) => boolean, what: string, ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check(this.lines)) {
      if (Date.now() > deadline || this.ended) throw new Error(`stream: ${this.ended ? 'ended' : 'timed out'} waiting for ${what}; lines: ${JSON.stringify(this.lines).slice(-1500)}`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50).unref();
      });
    }
  }

  presence(uid?: string): Line[] {
    return this.lines.filter((l) => l.type === 'presence' && (uid === undefined || l.uid === uid));
  }

  close(): void {
    this.req.destroy();
  }
}

interface App {
  readonly id: string;
  readonly clientSecret: string;
  readonly webhookSecret: string;
}

let app: App;
const REDIRECT = 'https://chess.example/callback';

/** The user's pairwise id in the app (every node computes the same: the apps secret is the cluster's). */
const uidOf = (jid: string): string => appsOf(node('a').server.engine)!.service.pairwiseId(app.id, jid);

/** The consent flow on `on`'s pages, answered "allow". */
async function grant(on: string, jid: string): Promise<void> {
  const { challenge } = pkce();
  const back = await consent(new Browserless(node(on).url), { clientId: app.id, redirectUri: REDIRECT, challenge, method: 'S256', scope: 'presence presence.status' }, jid, 'secret-pw');
  assert.ok(back.searchParams.get('code'), `consent of ${jid} on node ${on} redirects with a code`);
}

type Delivered = { uid: string; status: string; seq: number; statusText?: string };
const deliveredTo = (jid: string): Delivered[] => (hooks.delivered() as Delivered[]).filter((u) => u.uid === uidOf(jid));

before(async () => {
  [redis, pg] = await Promise.all([startRedis(), startPostgres()]);
  await hooks.listen();
  await pushes.listen();
  pushes.secret = PUSH_SECRET;
  // Three nodes starting at once on an empty database: each migration once, one secret for the apps.
  await Promise.all(['a', 'b', 'c'].map((n) => startNode(n)));
  for (const u of USERS) await node('a').createAccount(`${u}@localhost`);
  const res = await fetch(`${node('b').url}/api/v1/apps`, {
    method: 'POST',
    headers: { authorization: basic('alice@localhost', 'secret-pw'), 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Chess Club', homepage: 'https://chess.example/', redirectUris: [REDIRECT], webhookUrl: hooks.url, webhookFormat: 'extended' }),
  });
  const body = (await res.json()) as App;
  assert.equal(res.status, 201, JSON.stringify(body));
  app = { id: body.id, clientSecret: body.clientSecret, webhookSecret: body.webhookSecret };
  hooks.secret = app.webhookSecret;
});

after(async () => {
  killAllServerProcesses();
  for (const s of streams) s.close();
  for (const c of clients) c.destroy();
  for (const x of xmppClients) await x.stop().catch(() => {});
  for (const t of nodes.values()) await t.destroy();
  await hooks.close();
  await pushes.close();
  await stopAllPrivateServices();
  rmSync(work, { recursive: true, force: true });
});

describe('apps across nodes', () => {
  test('an app registered on B, consented on A, is told every change of the user in order, whichever node the user is on', async () => {
    for (const n of ['a', 'b', 'c']) {
      const r = await fetch(`${node(n).url}/api/v1/apps/${app.id}/presence`, {
        method: 'POST',
        headers: { authorization: basic(app.id, app.clientSecret), 'content-type': 'application/json' },
        body: JSON.stringify({ uids: ['nobody'] }),
      });
      assert.equal(r.status, 200, `node ${n} knows the app's client secret`);
    }
    await grant('a', 'bob@localhost');
    // Every node knew of the grant before the consent answered: bob's changes on B and C are logged.
    const steps: Array<[string, () => Promise<unknown>]> = [];
    let bob: TestClient | null = null;
    for (const [on, show] of [['b', 'away'], ['c', 'dnd'], ['a', 'xa']] as const) {
      steps.push(['online', async () => (bob = await login(on, 'bob@localhost', { presence: { show: 'available' } }))]);
      steps.push([show === 'xa' ? 'away' : show, () => bob!.request('presence', { show })]);
      steps.push(['offline', () => bob!.close()]);
    }
    await hooks.until(() => deliveredTo('bob@localhost').length === 1, 'the grant\'s first update');
    assert.equal(deliveredTo('bob@localhost')[0]!.status, 'offline');
    let expected = ['offline'];
    for (const [status, step] of steps) {
      await step();
      expected = [...expected, status];
      await hooks.until(() => deliveredTo('bob@localhost').length >= expected.length, `bob ${status}`);
    }
    const got = deliveredTo('bob@localhost');
    assert.deepEqual(got.map((u) => u.status), expected);
    assert.deepEqual(got.map((u) => u.seq), expected.map((_, i) => i + 1), 'each update once, seq without gaps');
    assert.deepEqual(hooks.bad, []);
  });

  test('a node that writes late: its rows older than what the log holds for the user are left out, the app ends on the truth', async () => {
    // Node D gathers its webhook updates for 1.5 s before writing them: it writes late, as a busy node might.
    const d = await startTestServer({ ...config('d'), webhook_flush_ms: 1_500 });
    nodes.set('d', d);
    await grant('c', 'rita@localhost');
    await hooks.until(() => deliveredTo('rita@localhost').length === 1, 'rita\'s first update');
    const onD = await login('d', 'rita@localhost', { resource: 'phone', presence: { show: 'available' } });
    await onD.close();
    // Back at once on A, which writes within milliseconds: online, then D's online and offline, older.
    const onA = await login('a', 'rita@localhost', { resource: 'phone', presence: { show: 'away', status: 'here' } });
    await hooks.until(() => deliveredTo('rita@localhost').some((u) => u.statusText === 'here'), 'rita back on A');
    await webhooksOf(d.server.engine)!.outbox.flush();
    webhooksOf(d.server.engine)!.worker.wake();
    await until('nothing of the app left to deliver', async () => (await webhooksOf(d.server.engine)!.store.pendingCount(app.id)) === 0);
    const got = deliveredTo('rita@localhost');
    assert.deepEqual(got.at(-1), { ...got.at(-1), status: 'away', statusText: 'here' }, 'the app ends where rita is');
    assert.deepEqual(got.map((u) => u.seq), got.map((_, i) => i + 1), 'each update once, seq without gaps');
    await onA.close();
    await d.destroy();
    nodes.delete('d');
  });

  test('a stream opened on C sees a user connected to A; it resumes on B from its Last-Event-ID with exactly the missed lines', async () => {
    await grant('b', 'carol@localhost');
    const carol = await login('a', 'carol@localhost', { presence: { show: 'available' } });
    await hooks.until(() => deliveredTo('carol@localhost').at(-1)?.status === 'online', 'carol online, logged');
    const onC = await NdjsonStream.open(node('c'), app);
    await onC.until((l) => l.some((x) => x.type === 'live'), 'the live line');
    await carol.request('presence', { show: 'away', status: 'one' });
    await carol.request('presence', { show: 'dnd', status: 'two' });
    await onC.until((l) => l.some((x) => x.type === 'presence' && x.statusText === 'two'), 'carol\'s changes on C');
    const seen = onC.presence(uidOf('carol@localhost')).filter((x) => x.snapshot !== true);
    assert.deepEqual(seen.map((x) => x.statusText), ['one', 'two']);
    const cursor = seen.at(-1)!.cursor as string;
    onC.close();
    // Missed while no stream was open: logged by A (and delivered by webhook, which tells they are in the log).
    for (const text of ['three', 'four', 'five']) await carol.request('presence', { show: 'available', status: text });
    await hooks.until(() => deliveredTo('carol@localhost').some((u) => u.statusText === 'five'), 'carol\'s missed changes logged');
    const onB = await NdjsonStream.open(node('b'), app, cursor);
    await onB.until((l) => l.some((x) => x.type === 'live'), 'the resumed stream going live');
    const live = onB.lines.findIndex((x) => x.type === 'live');
    assert.deepEqual(onB.lines[0], { type: 'resume', since: cursor });
    const missed = onB.lines.slice(1, live);
    assert.deepEqual(missed.map((x) => [x.type, x.uid, x.statusText]), ['three', 'four', 'five'].map((t) => ['presence', uidOf('carol@localhost'), t]));
    assert.deepEqual(missed.map((x) => x.seq), [seen.at(-1)!.seq + 1, seen.at(-1)!.seq + 2, seen.at(-1)!.seq + 3]);
    await carol.request('presence', { show: 'away', status: 'six' });
    await onB.until((l) => l.some((x) => x.statusText === 'six'), 'the next change on B');
    assert.equal(onB.presence().filter((x) => x.statusText === 'six').length, 1, 'once');
    onB.close();
  });

  test('revoked on B: nothing more of the user reaches the app, by webhook or by the stream open on C', async () => {
    await grant('a', 'dave@localhost');
    await grant('a', 'erin@localhost');
    const dave = await login('a', 'dave@localhost', { presence: { show: 'available' } });
    const erin = await login('a', 'erin@localhost', { presence: { show: 'available' } });
    const onC = await NdjsonStream.open(node('c'), app);
    await onC.until((l) => l.some((x) => x.type === 'live'), 'the live line');
    await dave.request('presence', { show: 'away', status: 'before' });
    await onC.until((l) => l.some((x) => x.uid === uidOf('dave@localhost') && x.statusText === 'before'), 'dave before the revocation, on C');
    await hooks.until(() => deliveredTo('dave@localhost').some((u) => u.statusText === 'before'), 'dave before the revocation, by webhook');
    const linesBefore = onC.lines.length;
    const hooksBefore = deliveredTo('dave@localhost').length;
    const res = await fetch(`${node('b').url}/api/v1/me/apps/${app.id}`, { method: 'DELETE', headers: { authorization: basic('dave@localhost', 'secret-pw') } });
    assert.equal(res.status, 204);
    // Changes of dave on A right after the answer, then one of erin on A as a marker: once the marker
    // reached the stream and the webhook, whatever of dave's came before it would have too.
    for (const text of ['after 1', 'after 2', 'after 3']) await dave.request('presence', { show: 'dnd', status: text });
    await dave.close();
    await erin.request('presence', { show: 'away', status: 'marker' });
    await onC.until((l) => l.some((x) => x.uid === uidOf('erin@localhost') && x.statusText === 'marker'), 'erin\'s marker on C');
    await hooks.until(() => deliveredTo('erin@localhost').some((u) => u.statusText === 'marker'), 'erin\'s marker by webhook');
    assert.deepEqual(onC.lines.slice(linesBefore).filter((x) => x.uid === uidOf('dave@localhost')), [], 'the stream on C says nothing more of dave');
    assert.equal(deliveredTo('dave@localhost').length, hooksBefore, 'no webhook carries dave any more');
    // Every node answers for dave as for a stranger.
    for (const n of ['a', 'b', 'c']) {
      const r = await fetch(`${node(n).url}/api/v1/apps/${app.id}/presence`, {
        method: 'POST',
        headers: { authorization: basic(app.id, app.clientSecret), 'content-type': 'application/json' },
        body: JSON.stringify({ uids: [uidOf('dave@localhost')] }),
      });
      assert.deepEqual(((await r.json()) as { users: unknown[] }).users, [{ uid: uidOf('dave@localhost'), status: null }], `node ${n}`);
    }
    onC.close();
    await erin.close();
  });

  test('Redis restarts: webhooks go on, a revocation made meanwhile holds on every node, the streams catch up', async () => {
    await grant('a', 'lena@localhost');
    await grant('a', 'mona@localhost');
    const lena = await login('a', 'lena@localhost', { presence: { show: 'available' } });
    const mona = await login('c', 'mona@localhost', { presence: { show: 'available' } });
    const onC = await NdjsonStream.open(node('c'), app);
    await onC.until((l) => l.some((x) => x.type === 'live'), 'the live line');
    await mona.request('presence', { show: 'away', status: 'before' });
    await onC.until((l) => l.some((x) => x.uid === uidOf('mona@localhost') && x.statusText === 'before'), 'mona before, on C');
    await hooks.until(() => deliveredTo('mona@localhost').some((u) => u.statusText === 'before'), 'mona before, by webhook');
    const linesBefore = onC.lines.length;
    const monaHooks = deliveredTo('mona@localhost').length;
    await redis.stop();
    // Revoked on B while no node hears the others: C, where mona is connected, logs her changes still.
    const res = await fetch(`${node('b').url}/api/v1/me/apps/${app.id}`, { method: 'DELETE', headers: { authorization: basic('mona@localhost', 'secret-pw') } });
    assert.equal(res.status, 204);
    await mona.request('presence', { show: 'dnd', status: 'during' });
    await lena.request('presence', { show: 'away', status: 'during' });
    await hooks.until(() => deliveredTo('lena@localhost').some((u) => u.statusText === 'during'), 'lena by webhook while Redis is down');
    await redis.start();
    await onC.until((l) => l.some((x) => x.uid === uidOf('lena@localhost') && x.statusText === 'during'), 'lena\'s change while Redis was down, on C', 30_000);
    await lena.request('presence', { show: 'available', status: 'marker' });
    await onC.until((l) => l.some((x) => x.uid === uidOf('lena@localhost') && x.statusText === 'marker'), 'the marker on C');
    await hooks.until(() => deliveredTo('lena@localhost').some((u) => u.statusText === 'marker'), 'the marker by webhook');
    assert.deepEqual(onC.lines.slice(linesBefore).filter((x) => x.uid === uidOf('mona@localhost')), [], 'the stream on C says nothing more of mona');
    assert.equal(deliveredTo('mona@localhost').length, monaHooks, 'no webhook carries mona any more');
    const lenaLines = onC.presence(uidOf('lena@localhost')).filter((x) => x.snapshot !== true).map((x) => x.seq);
    assert.deepEqual(lenaLines, [...new Set(lenaLines)].sort((x, y) => x - y), 'lena\'s lines once each, in order');
    onC.close();
    await lena.close();
    await mona.close();
  });

  test('the client secret rotated on A ends the streams opened with the old one on B and C at once', async () => {
    const onB = await NdjsonStream.open(node('b'), app);
    const onC = await NdjsonStream.open(node('c'), app);
    await onB.until((l) => l.some((x) => x.type === 'live'), 'B live');
    await onC.until((l) => l.some((x) => x.type === 'live'), 'C live');
    const res = await fetch(`${node('a').url}/api/v1/apps/${app.id}/secret`, { method: 'POST', headers: { authorization: basic('alice@localhost', 'secret-pw') } });
    assert.equal(res.status, 200);
    app = { ...app, clientSecret: ((await res.json()) as { clientSecret: string }).clientSecret };
    // Well within the keep-alive period (15 s), which would find it too.
    for (const s of [onB, onC]) {
      await until('the stream ends', () => s.ended, 5_000);
      assert.deepEqual(s.lines.at(-1), { type: 'end', reason: 'client secret changed' });
    }
  });

  test('nodes starting together correct a user once, and never say offline of a user online on another node', async () => {
    await grant('c', 'frank@localhost');
    await grant('c', 'grace@localhost');
    await hooks.until(() => deliveredTo('grace@localhost').length >= 1 && deliveredTo('frank@localhost').length >= 1, 'first updates');
    const grace = await login('a', 'grace@localhost', { presence: { show: 'available' } });
    await hooks.until(() => deliveredTo('grace@localhost').at(-1)?.status === 'online', 'grace online');
    // As if a whole cluster had died while frank was online: the log says online, nobody holds him.
    const store = webhooksOf(node('a').server.engine)!.store;
    const [fake] = await store.append([{ appId: app.id, uid: uidOf('frank@localhost'), at: Date.now(), body: JSON.stringify({ status: 'online' }), dueAt: Date.now() }], Date.now());
    webhooksOf(node('a').server.engine)!.worker.wake();
    await hooks.until(() => deliveredTo('frank@localhost').at(-1)?.status === 'online', 'the fake online');
    const dirs = { b: node('b').dataDir, c: node('c').dataDir };
    await Promise.all([node('b').stop(), node('c').stop()]);
    await Promise.all([startNode('b', dirs.b), startNode('c', dirs.c)]);
    // Both ran the reconciliation before they started listening, one after the other.
    const since = await store.since(app.id, fake!.id, 1_000);
    const ofFrank = since.filter((u) => u.uid === uidOf('frank@localhost')).map((u) => (JSON.parse(u.body) as { status: string }).status);
    assert.deepEqual(ofFrank, ['offline'], 'frank corrected once');
    assert.deepEqual(since.filter((u) => u.uid === uidOf('grace@localhost')), [], 'grace, online on A, left alone');
    await hooks.until(() => deliveredTo('frank@localhost').at(-1)?.status === 'offline', 'the correction delivered');
    await grace.close();
  });
});

type AuditLine = { jid: string; event: string; resource?: string; reason?: string; protocol?: string };
const audit = (jid: string): AuditLine[] =>
  existsSync(auditPath)
    ? readFileSync(auditPath, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as AuditLine)
        .filter((l) => l.jid === jid)
    : [];

describe('extensions across nodes', () => {

  test('each event is handled once, by the node where it happened: a connection taken over on another node included', async () => {
    const onA = await login('a', 'henry@localhost', { resource: 'phone', presence: { show: 'available' } });
    await onA.request('presence', { show: 'away' });
    // The same full JID logs in on B: A's connection ends (replaced), the session goes on at B.
    const onB = await login('b', 'henry@localhost', { resource: 'phone', presence: { show: 'away' } });
    await onA.closed;
    await onB.request('bye');
    await onB.closed;
    // A marker after everything on each node: once its line is written, that node's earlier events are too.
    for (const [n, marker] of [['a', 's1'], ['b', 's2'], ['c', 's3']] as const) {
      const m = await login(n, `${marker}@localhost`);
      await m.close();
    }
    await until('every node\'s extension reached its marker', () => ['s1', 's2', 's3'].every((m) => audit(`${m}@localhost`).some((l) => l.event === 'disconnect')), 15_000);
    const lines = audit('henry@localhost').map((l) => [l.event, l.resource ?? null, l.reason ?? null]);
    assert.deepEqual(lines.filter((l) => l[0] === 'connect'), [['connect', 'phone', null], ['connect', 'phone', null]], 'connected on A, then on B: two connects, not three');
    assert.deepEqual(lines.filter((l) => l[0] === 'disconnect'), [['disconnect', 'phone', 'replaced'], ['disconnect', 'phone', 'graceful']]);
    // Online and away on A; the takeover changes nothing watchers see; offline on B.
    assert.deepEqual(audit('henry@localhost').filter((l) => l.event === 'presence').map((l) => (l as { show?: string }).show), ['available', 'away', 'offline'], 'each presence change once');
  });
});

describe('push across nodes', () => {
  const pushesTo = (token: string) => pushes.requests.map((r) => r.payload as { device?: string } | null).filter((p) => p?.device === token);

  test('the per-device limit counts the pushes every node sends', async () => {
    const ivan = await login('a', 'ivan@localhost', { resource: 'phone' });
    const reg = (await ivan.request('push.register', { provider: 'gw', token: 'ivan-phone' })) as { id: string };
    const judy = await login('a', 'judy@localhost', { resource: 'phone' });
    await judy.request('push.register', { provider: 'gw', token: 'judy-phone' });
    await ivan.close();
    await judy.close();
    assert.equal((await node('a').admin('POST', '/accounts/ivan@localhost/notify', { body: 'one' })).status, 202);
    await pushes.until(() => pushesTo('ivan-phone').length === 1, 'the first push');
    // B and C counted it (push_rate_per_device_per_minute is 1): a second push waits, whichever node queues it.
    await until('every node counts the push sent by A', () => ['b', 'c'].every((n) => pushOf(node(n).server.engine)!.worker.isLimited(reg.id)));
    assert.equal((await node('b').admin('POST', '/accounts/ivan@localhost/notify', { body: 'two' })).status, 202);
    assert.equal((await node('b').admin('POST', '/accounts/judy@localhost/notify', { body: 'marker' })).status, 202);
    await pushes.until(() => pushesTo('judy-phone').length === 1, 'the marker push, sent by a pass after the second was queued');
    assert.equal(pushesTo('ivan-phone').length, 1, 'the second push to ivan waits for the minute');
    assert.ok((await pushOf(node('b').server.engine)!.registrations.pendingCount()) >= 1);
  });

  test('XEP-0357 push enabled on A fires once for a message stored offline by B', async () => {
    const xmppOf = (n: string) => `xmpp://127.0.0.1:${node(n).server.xmppPort}`;
    const COMMANDS = 'http://jabber.org/protocol/commands';
    const DATA = 'jabber:x:data';
    const tablet = await XmppTestClient.login(xmppOf('a'), 'henry', 'secret-pw', 'tablet');
    xmppClients.push(tablet);
    const res = await tablet.iq(
      xml('iq', { type: 'set', to: 'push.localhost' }, xml('command', { xmlns: COMMANDS, node: 'register-device', action: 'execute' }, xml('x', { xmlns: DATA, type: 'submit' }, xml('field', { var: 'provider' }, xml('value', {}, 'gw')), xml('field', { var: 'device-token' }, xml('value', {}, 'henry-tablet'))))),
    );
    const pushNode = res.getChild('command', COMMANDS)?.getChild('x', DATA)?.getChildren('field').find((f) => f.attrs.var === 'node')?.getChildText('value');
    assert.ok(pushNode);
    await tablet.iq(xml('iq', { type: 'set' }, xml('enable', { xmlns: 'urn:xmpp:push:0', jid: 'push.localhost', node: pushNode })));
    await tablet.stop();
    const sender = await XmppTestClient.login(xmppOf('b'), 'judy', 'secret-pw', 'desk');
    xmppClients.push(sender);
    await sender.send(xml('message', { to: 'henry@localhost', type: 'chat' }, xml('body', {}, 'are you there?')));
    await pushes.until(() => pushesTo('henry-tablet').length === 1, 'the push for the stored message');
    // Every trigger that fired anywhere has queued its pushes, and none of henry's is left to send.
    for (const n of ['a', 'b', 'c']) await pushOf(node(n).server.engine)!.xmppSettled();
    await until('henry\'s pushes all sent', () => pg.psql(pg.database, "SELECT count(*) FROM push_outbox WHERE account = 'henry@localhost'").trim() === '0');
    assert.equal(pushesTo('henry-tablet').length, 1, 'once');
  });
});

describe('a node killed', () => {
  test('its user goes offline once: one webhook, one node_down for the extensions, from the node that declared it', async () => {
    await buildDist();
    const dir = mkdtempSync(join(work, 'node-k-'));
    const k = await startServerProcess(dir, {
      PRESENCED_STORE: pg.url,
      PRESENCED_BUS: redis.url,
      PRESENCED_NODE_ID: 'k',
      PRESENCED_NODE_LEASE_MS: '6000',
      PRESENCED_TOKEN_SECRET: CLUSTER_TOKEN_SECRET,
      PRESENCED_WEBHOOKS_ALLOW_PRIVATE: 'true',
      PRESENCED_WEBHOOK_FLUSH_MS: '5',
      PRESENCED_WEBHOOK_BATCH_MS: '20',
      PRESENCED_PUSH_PROVIDERS: JSON.stringify(config('k').push_providers),
      PRESENCED_EXTENSIONS_LIST: JSON.stringify(config('k').extensions_list),
    });
    await grant('b', 'kim@localhost');
    await hooks.until(() => deliveredTo('kim@localhost').length === 1, 'kim\'s first update');
    const { client: kim } = await TestClient.login(`${k.url.replace(/^http/, 'ws')}/ws`, 'kim@localhost', 'secret-pw', { presence: { show: 'available' } });
    clients.push(kim);
    await hooks.until(() => deliveredTo('kim@localhost').at(-1)?.status === 'online', 'kim online, from the node about to die');
    // Killed once the delivery is recorded: a node killed between a webhook's answer and its record
    // leaves the app's lease to run out (webhook_timeout_ms + 30 s), and the batch is sent again.
    await until('the delivery recorded', () => pg.psql(pg.database, `SELECT head = delivered_through AND claimed_by IS NULL FROM webhook_endpoints WHERE app_id = '${app.id}'`).trim() === 't');
    k.child.kill('SIGKILL');
    await k.exited;
    await hooks.until(() => deliveredTo('kim@localhost').at(-1)?.status === 'offline', 'kim offline, declared by another node', 20_000);
    // The declaring node emitted the close before the presence change: a marker on every node after it.
    for (const [n, marker] of [['a', 'm1'], ['b', 'm2'], ['c', 'm3']] as const) {
      const m = await login(n, `${marker}@localhost`);
      await m.close();
    }
    await until('every node\'s extension reached its marker', () => ['m1', 'm2', 'm3'].every((m) => audit(`${m}@localhost`).some((l) => l.event === 'disconnect')), 15_000);
    const lines = audit('kim@localhost');
    assert.deepEqual(lines.filter((l) => l.event === 'connect').map((l) => l.protocol), ['native'], 'the connect, by the node that died');
    assert.deepEqual(lines.filter((l) => l.event === 'disconnect').map((l) => l.reason), ['node_down'], 'one node_down, by the one node that declared it');
    const got = deliveredTo('kim@localhost');
    assert.deepEqual(got.map((u) => u.status), ['offline', 'online', 'offline']);
    assert.deepEqual(got.map((u) => u.seq), [1, 2, 3]);
  });
});
