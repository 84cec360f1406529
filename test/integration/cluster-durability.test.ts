import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { ClusterServices, until } from '../helpers/cluster.js';
import { basic, Browserless, consent, pkce } from '../helpers/consent-flow.js';
import { freePort, stopAllPrivateServices } from '../helpers/private-services.js';
import { RawXmpp } from '../helpers/raw-xmpp.js';
import { buildDist, killAllServerProcesses, processAdmin, startServerProcess, type ServerProcess } from '../helpers/server-process.js';
import { Receiver, type Received } from '../helpers/webhook-receiver.js';
import { TestClient } from '../helpers/ws-client.js';

/**
 * Kill -9 of a node that has work under way: three presenced processes on one PostgreSQL database and
 * one Redis; node B is killed while an app's webhook request and a push request it sent are held open
 * by their receivers (it had claimed them), more of both wait behind them, and messages for an offline
 * user are being stored through it. The surviving nodes send every webhook update and every push, each
 * answered once (counted at the receivers by seq and by webhook-id), and the offline user, logging in
 * on another node, gets every message the sender had been told was taken, once.
 */

const LEASE_MS = 1_500;
/** Webhook and push requests time out after this: their claims' leases are this plus 30 s. */
const REQUEST_TIMEOUT_MS = 2_000;
const CLAIM_LEASE_MS = REQUEST_TIMEOUT_MS + 30_000;
const PUSH_SECRET = `whsec_${randomBytes(24).toString('base64')}`;
const REDIRECT = 'https://chess.example/callback';
const SM = 'urn:xmpp:sm:3';

let cluster: ClusterServices;
const hooks = new Receiver();
const pushes = new Receiver();
const clients: TestClient[] = [];
const raws: RawXmpp[] = [];
const xmppPorts = new Map<ServerProcess, number>();
let a: ServerProcess;
let b: ServerProcess;
let c: ServerProcess;

async function startNode(name: string): Promise<ServerProcess> {
  const xmppPort = await freePort();
  const n = await startServerProcess(cluster.dataDir(name), {
    ...cluster.processEnv(name, LEASE_MS),
    PRESENCED_XMPP_PORT: String(xmppPort),
    PRESENCED_XMPP_REQUIRE_TLS: 'false',
    PRESENCED_WEBHOOKS_ALLOW_PRIVATE: 'true',
    PRESENCED_WEBHOOK_FLUSH_MS: '5',
    PRESENCED_WEBHOOK_BATCH_MS: '20',
    PRESENCED_WEBHOOK_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    PRESENCED_PUSH_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    PRESENCED_PUSH_PROVIDERS: JSON.stringify({ gw: { type: 'webhook', url: pushes.url, secret: PUSH_SECRET } }),
  });
  xmppPorts.set(n, xmppPort);
  return n;
}

const sql = (text: string, ...args: Array<string | number>): Array<Record<string, any>> => cluster.postgres.query(new URL(cluster.store).pathname.slice(1), text, args);

async function login(node: ServerProcess, jid: string, extra: Record<string, unknown> = {}): Promise<TestClient> {
  const { client } = await TestClient.login(`${node.url.replace(/^http/, 'ws')}/ws`, jid, 'secret-pw', extra);
  clients.push(client);
  return client;
}

async function xmppLogin(node: ServerProcess, user: string, resource: string): Promise<RawXmpp> {
  const x = await RawXmpp.open(xmppPorts.get(node)!);
  raws.push(x);
  await x.loginPlain(user, 'secret-pw', resource);
  return x;
}

/** The requests a receiver answered 2xx (a held request whose sender died was never answered). */
const answered = (rx: Receiver): Received[] => rx.requests.filter((r) => r.answered >= 200 && r.answered < 300);
const held = (rx: Receiver): Received[] => rx.requests.filter((r) => r.answered === 0 && r.aborted !== true);

type Update = { uid: string; status: string; seq: number };

before(async () => {
  await buildDist();
  cluster = await ClusterServices.start();
  await hooks.listen();
  await pushes.listen();
  pushes.secret = PUSH_SECRET;
  [a, b, c] = await Promise.all([startNode('node-a'), startNode('node-b'), startNode('node-c')]);
  for (const u of ['owner', 'wu', 'pu', 'sx', 'ou']) {
    const r = await processAdmin(a.url, 'POST', '/accounts', { jid: `${u}@localhost`, password: 'secret-pw' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
});

after(async () => {
  for (const cl of clients) cl.destroy();
  for (const x of raws) x.close();
  killAllServerProcesses();
  await hooks.close();
  await pushes.close();
  await cluster?.remove();
  await stopAllPrivateServices();
});

describe('kill -9 of a node with work under way', { timeout: 120_000 }, () => {
  test('webhooks, pushes and offline messages: none lost, none answered twice', async (t) => {
    // An app with a webhook, granted by wu; its first update (wu offline) is delivered before anything else.
    const res = await fetch(`${a.url}/api/v1/apps`, {
      method: 'POST',
      headers: { authorization: basic('owner@localhost', 'secret-pw'), 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Chess Club', homepage: 'https://chess.example/', redirectUris: [REDIRECT], webhookUrl: hooks.url, webhookFormat: 'extended' }),
    });
    const app = (await res.json()) as { id: string; webhookSecret: string };
    assert.equal(res.status, 201, JSON.stringify(app));
    hooks.secret = app.webhookSecret;
    const back = await consent(new Browserless(a.url), { clientId: app.id, redirectUri: REDIRECT, challenge: pkce().challenge, method: 'S256', scope: 'presence presence.status' }, 'wu@localhost', 'secret-pw');
    assert.ok(back.searchParams.get('code'), 'consent redirects with a code');
    await hooks.until(() => answered(hooks).length === 1, 'the grant\'s first update');
    // pu's phone, registered for pushes while pu is offline.
    const phone = await login(b, 'pu@localhost', { resource: 'phone' });
    await phone.request('push.register', { provider: 'gw', token: 'pu-phone' });
    await phone.close();

    // From here the receivers hold what they get: node B's requests stay in flight.
    hooks.holding = true;
    pushes.holding = true;

    // Webhooks: wu on B changes status several times; B's worker sends the first batch (held), the
    // rest waits behind it (one request in flight per app).
    const wu = await login(b, 'wu@localhost', { presence: { show: 'available' } });
    await hooks.until(() => held(hooks).length === 1, 'B\'s first webhook request, held');
    for (const [show, status] of [['away', 'one'], ['dnd', 'two'], ['available', 'three']] as const) await wu.request('presence', { show, status });
    // Pushes: three notifications queued on B; B sends the first (held), the others wait (one in flight per device).
    for (const body of ['one', 'two', 'three']) {
      const r = await processAdmin(b.url, 'POST', '/accounts/pu@localhost/notify', { body });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.equal(r.body.pushed, 1);
    }
    await pushes.until(() => held(pushes).length === 1, 'B\'s first push request, held');
    // The updates written behind the held batch are in the log (B's webhook source wrote them).
    await until('wu\'s later updates logged', () => Number(sql('SELECT max(seq) AS m FROM webhook_seq')[0]?.m ?? 0) >= 5 || null);

    // Offline messages: sx on B stores messages for ou (offline). What B acknowledged (XEP-0198) is stored.
    const sx = await xmppLogin(b, 'sx', 'desk');
    sx.write(`<enable xmlns='${SM}'/>`);
    await sx.waitFor(/<enabled /, 'stream management enabled');
    const msg = (i: number): string => `<message to='ou@localhost' type='chat' id='m${i}'><body>msg-${i}</body></message>`;
    const FIRST = 20;
    const MORE = 30;
    sx.write(Array.from({ length: FIRST }, (_, i) => msg(i + 1)).join('') + `<r xmlns='${SM}'/>`);
    await sx.waitFor(new RegExp(`<a xmlns='${SM}' h='${FIRST}'/>`), 'the first messages acknowledged');
    // More, with the request for an acknowledgement behind them: B dies while storing them.
    sx.write(Array.from({ length: MORE }, (_, i) => msg(FIRST + i + 1)).join('') + `<r xmlns='${SM}'/>`);
    const storedForOu = (): number => Number(sql("SELECT count(*) AS n FROM offline_messages WHERE recipient = 'ou@localhost'")[0]?.n ?? 0);
    await until('B storing the later messages', () => storedForOu() > FIRST, 5_000);

    b.child.kill('SIGKILL');
    assert.equal((await b.exited).signal, 'SIGKILL');
    const storedAtKill = storedForOu();
    // The held requests were B's: its death closed their connections before they were answered.
    await hooks.until(() => hooks.requests.some((r) => r.aborted === true) && held(hooks).length === 0, 'the held webhook request aborted by B\'s death');
    await pushes.until(() => pushes.requests.some((r) => r.aborted === true) && held(pushes).length === 0, 'the held push request aborted by B\'s death');
    hooks.release();
    pushes.release();
    const acked = Math.max(...[...sx.text.matchAll(new RegExp(`<a xmlns='${SM}' h='(\\d+)'/>`, 'g'))].map((m) => Number(m[1])));
    assert.ok(acked >= FIRST);

    // wu's session on B is declared offline by a surviving node: the last update the app gets.
    const updates = (): Update[] => answered(hooks).flatMap((r) => r.payload as Update[]);
    await hooks.until(() => updates().at(-1)?.status === 'offline' && updates().length > 1, 'wu offline, after B\'s claim ran out', CLAIM_LEASE_MS + 30_000);
    // Every push, after B's lease on the first ran out.
    const pushIdOf = (r: Received): string => String(r.headers['webhook-id']);
    await pushes.until(() => new Set(answered(pushes).map(pushIdOf)).size === 3, 'the three pushes answered', CLAIM_LEASE_MS + 30_000);

    // Webhooks: every seq from 1 to the last, each answered once, in order.
    const got = updates();
    const seqs = got.map((u) => u.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), `each update once, in order: ${JSON.stringify(got)}`);
    assert.equal(got[0]?.status, 'offline', 'the grant\'s update');
    assert.equal(got.filter((u) => u.status === 'offline').length, 2, 'offline at the grant, and once more when B died');
    // What B had in flight went again as it was, under the same webhook-id (a receiver that took the
    // first request can tell the second for a repeat), answered once.
    const cut = hooks.requests.filter((r) => r.aborted === true);
    assert.ok(cut.length > 0);
    for (const r of cut) {
      const again = answered(hooks).filter((x) => x.headers['webhook-id'] === r.headers['webhook-id']);
      assert.equal(again.length, 1, `B's cut request ${String(r.headers['webhook-id'])} answered once when sent again`);
      assert.equal(again[0]!.body, r.body, 'with the same updates');
    }
    // Pushes: each of the three answered once (a push's webhook-id stays the same when it is sent again).
    const sent = answered(pushes);
    assert.equal(sent.length, 3, `each push answered once: ${sent.map(pushIdOf).join(', ')}`);
    assert.deepEqual(sent.map((r) => (r.payload as { body?: string }).body).sort(), ['one', 'three', 'two']);
    for (const r of sent) assert.equal((r.payload as { device?: string }).device, 'pu-phone');
    const aborted = pushes.requests.filter((r) => r.aborted === true).map(pushIdOf);
    assert.ok(aborted.length > 0 && aborted.every((id) => sent.some((r) => pushIdOf(r) === id)), 'the push B had in flight was sent again, under its id');
    await until('the push queue empty', () => sql('SELECT count(*) AS n FROM push_outbox')[0]?.n === 0);

    // ou logs in on C: every message B acknowledged, each once; of those B had not acknowledged, at most once.
    const ou = await xmppLogin(c, 'ou', 'phone');
    ou.write('<presence/>');
    await until('ou\'s stored messages delivered', () => storedForOu() === 0 && /msg-1</.test(ou.text));
    // Anything written before the ping's answer has arrived before it.
    ou.write(`<iq type='get' id='ping-1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await ou.waitFor(/id='ping-1'[^>]*type='result'|type='result'[^>]*id='ping-1'/, 'the ping answered');
    const received = [...ou.text.matchAll(/msg-(\d+)<\/body>/g)].map((m) => Number(m[1]));
    assert.equal(new Set(received).size, received.length, `no message twice: ${received.join(',')}`);
    assert.equal(received.length, storedAtKill, 'every message stored when B died is delivered');
    for (let i = 1; i <= acked; i++) assert.ok(received.includes(i), `acknowledged message ${i} delivered`);
    assert.ok(received.every((i) => i >= 1 && i <= FIRST + MORE), 'only messages that were sent');
    t.diagnostic(`messages acknowledged by B: ${acked} of ${FIRST + MORE}; stored when it died: ${storedAtKill}; delivered on C: ${received.length}`);
    ou.close();
    assert.equal(hooks.bad.length + pushes.bad.length, 0, `every request verified: ${[...hooks.bad, ...pushes.bad].join('; ')}`);
  });

  test('stored messages being delivered on a node with stream management when it dies: the next login elsewhere gets exactly those not acknowledged', async () => {
    // The previous test's session of ou on C must be gone from A's view first: a message A still routed
    // to it would be stored by C (which finds it gone), out of order with those A stores itself.
    await until('ou offline as node A sees it', async () => (await processAdmin(a.url, 'GET', '/accounts/ou@localhost/sessions')).body.sessions.length === 0);
    const sender = await xmppLogin(a, 'sx', 'laptop');
    const N = 10;
    sender.write(Array.from({ length: N }, (_, i) => `<message to='ou@localhost' type='chat' id='n${i + 1}'><body>note-${i + 1}</body></message>`).join(''));
    await until('the notes stored', () => sql("SELECT count(*) AS n FROM offline_messages WHERE recipient = 'ou@localhost'")[0]?.n === N);
    // ou on C, with stream management: C sends the stored messages and keeps them until acknowledged.
    const ou = await xmppLogin(c, 'ou', 'phone');
    ou.write(`<enable xmlns='${SM}'/>`);
    await ou.waitFor(/<enabled[^>]*\/>/, 'stream management enabled');
    const from = ou.text.search(/<enabled[^>]*\/>/);
    ou.write('<presence/>');
    await ou.waitFor(new RegExp(`note-${N}</body>`), 'every note sent on C');
    // Acknowledge the stanzas up to and including the fourth note (h counts every stanza since <enabled/>).
    const after = ou.text.slice(from);
    const stanzas = [...after.matchAll(/<(message|presence|iq)[\s>]/g)];
    const fourth = after.indexOf('note-4</body>');
    const h = stanzas.filter((m) => (m.index ?? 0) < fourth).length;
    ou.write(`<a xmlns='${SM}' h='${h}'/>`);
    await until('the acknowledged notes removed from storage', () => sql("SELECT count(*) AS n FROM offline_messages WHERE recipient = 'ou@localhost'")[0]?.n === N - 4);
    c.child.kill('SIGKILL');
    await c.exited;
    await ou.closed;
    // On A: the six notes C sent but never had acknowledged, each once; none of the first four.
    const again = await xmppLogin(a, 'ou', 'tablet');
    again.write('<presence/>');
    await until('ou\'s notes delivered on A', () => sql("SELECT count(*) AS n FROM offline_messages WHERE recipient = 'ou@localhost'")[0]?.n === 0);
    again.write(`<iq type='get' id='ping-2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await again.waitFor(/id='ping-2'[^>]*type='result'|type='result'[^>]*id='ping-2'/, 'the ping answered');
    const notes = [...again.text.matchAll(/note-(\d+)<\/body>/g)].map((m) => Number(m[1]));
    assert.deepEqual(notes, [5, 6, 7, 8, 9, 10], 'the unacknowledged notes, each once, in order');
  });
});
