import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createClient } from 'redis';
import { pushOf } from '../../src/features/push/push-feature.js';
import { ClusterServices, startClusterNode, until } from '../helpers/cluster.js';
import { stopAllPrivateServices, type PrivatePostgres, type PrivateRedis } from '../helpers/private-services.js';
import { RawXmpp } from '../helpers/raw-xmpp.js';
import type { TestServer } from '../helpers/server.js';
import { eventually, Receiver } from '../helpers/webhook-receiver.js';
import { XmppTestClient, befriend, xml, type Element } from '../helpers/xmpp-client.js';

/**
 * XMPP stanzas between nodes: three presenced nodes in this process on one private Redis and one
 * private PostgreSQL, real XMPP clients (xmpp.js, and raw streams where a test needs exact bytes or a
 * connection dropped without a goodbye) on different nodes.
 */

const PW = 'secret-pw';
const PUSH = 'urn:xmpp:push:0';
const COMMANDS = 'http://jabber.org/protocol/commands';
const DATA = 'jabber:x:data';
const SECRET = `whsec_${randomBytes(24).toString('base64')}`;
/** A lost connection stays online this long: time for a test to address a resource whose connection is gone. */
const GRACE_MS = 6_000;

let redis: PrivateRedis;
let pg: PrivatePostgres;
let cluster: ClusterServices;
const rx = new Receiver();
let a: TestServer;
let b: TestServer;
let c: TestServer;
const clients: XmppTestClient[] = [];
const raws: RawXmpp[] = [];

const port = (n: TestServer): number => n.server.xmppPort as number;
const name = (n: TestServer): string => n.config.node_id;

async function login(n: TestServer, user: string, resource: string): Promise<XmppTestClient> {
  const x = await XmppTestClient.login(`xmpp://127.0.0.1:${port(n)}`, user, PW, resource);
  clients.push(x);
  return x;
}

async function raw(n: TestServer, user: string, resource: string): Promise<RawXmpp> {
  const r = await RawXmpp.open(port(n));
  raws.push(r);
  await r.loginPlain(user, PW, resource);
  return r;
}

let probes = 0;
/** Everything the server had to send `r` before a ping it answers now was written before the answer. */
async function roundTrip(r: RawXmpp): Promise<void> {
  const id = `rt-${++probes}`;
  const from = r.text.length;
  r.write(`<iq type='get' id='${id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await r.waitFor(new RegExp(`<iq[^>]*id='${id}'`), `round trip ${id}`, 20_000, from);
}

/** The complete stanza answering iq `id` in r's transcript. */
function answerTo(r: RawXmpp, id: string): Promise<string> {
  return r.waitFor(new RegExp(`<iq[^>]*id='${id}'[^>]*(?:/>|>[\\s\\S]*?</iq>)`), `answer to ${id}`);
}

function attrsOf(tag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of tag.matchAll(/\s([\w:-]+)=(?:'([^']*)'|"([^"]*)")/g)) out[m[1] as string] = (m[2] ?? m[3]) as string;
  return out;
}

/** A raw client that answers every iq get/set from another account with an empty result, as a real client answers pings. */
function autoAnswer(r: RawXmpp): void {
  let seen = 0;
  r.socket.on('data', () => {
    for (;;) {
      const i = r.text.indexOf('<iq ', seen);
      if (i < 0) return;
      const end = r.text.indexOf('>', i);
      if (end < 0) return;
      seen = end;
      const at = attrsOf(r.text.slice(i, end + 1));
      if ((at.type === 'get' || at.type === 'set') && at.from?.includes('@') && at.id) r.write(`<iq type='result' id='${at.id}' to='${at.from}'/>`);
    }
  });
}

/** Mutual subscription made through a node's engine, as the clients' stanzas would make it. */
async function friends(n: TestServer, x: string, y: string): Promise<void> {
  await n.server.engine.subscription(x, y, 'subscribe');
  await n.server.engine.subscription(y, x, 'subscribed');
  await n.server.engine.subscription(y, x, 'subscribe');
  await n.server.engine.subscription(x, y, 'subscribed');
}

/** Resolves once `node` holds the session `jid/resource` with its connection gone (waiting out the grace period). */
async function lingering(node: TestServer, jid: string, resource: string): Promise<void> {
  await until(`${jid}/${resource} lingering on ${name(node)}`, () => node.server.engine.localSessionsOf(jid).some((s) => s.resource === resource && s.sink === null));
}

/** Resolves once node `n`'s registry replica shows `jid/resource` on node `on`. */
async function seen(n: TestServer, jid: string, resource: string, on: TestServer): Promise<void> {
  await until(`${name(n)} sees ${jid}/${resource} on ${name(on)}`, async () => (await n.server.engine.sessionsOf(jid)).some((s) => s.resource === resource && s.node === name(on)));
}

function offlineCount(jid: string): number {
  return Number(pg.psql(new URL(cluster.store).pathname.slice(1), `SELECT count(*) FROM offline_messages WHERE recipient = '${jid}'`).trim());
}

const isBody = (body: string) => (s: Element) => s.is('message') && s.getChildText('body') === body;
const chat = (to: string, body: string) => xml('message', { to, type: 'chat' }, xml('body', {}, body));

before(async () => {
  cluster = await ClusterServices.start();
  redis = cluster.redis;
  pg = cluster.postgres;
  rx.secret = SECRET;
  await rx.listen();
  const config = {
    xmpp_port: 0,
    xmpp_require_tls: false,
    grace_period_ms: GRACE_MS,
    xmpp_sm_resume_timeout_ms: 60_000,
    webhooks_allow_private: true,
    push_providers: { gw: { type: 'webhook', url: rx.url, secret: SECRET } },
  };
  a = await startClusterNode(cluster, 'x-node-a', config);
  b = await startClusterNode(cluster, 'x-node-b', config);
  c = await startClusterNode(cluster, 'x-node-c', config);
  const users = ['alice', 'bob', 'iqa', 'iqb', 'dpa', 'dpb', 'sender', 'off', 'twice', 'con', 'other', 'del', 'pwc', 'gina', 'hank', 'smu'];
  for (const u of users) await a.createAccount(`${u}@localhost`, PW);
});

after(async () => {
  for (const x of clients) await x.stop();
  for (const r of raws) r.close();
  for (const n of [a, b, c]) await n?.destroy();
  await rx.close();
  await stopAllPrivateServices();
});

describe('XMPP stanzas across nodes', () => {
  test('messages to the bare JID go to the top priority resources wherever they are; full JIDs to that resource', async () => {
    const alice = await login(a, 'alice', 'desk');
    const phone = await login(b, 'bob', 'phone');
    await alice.send(xml('presence'));
    await phone.send(xml('presence', {}, xml('priority', {}, '5')));
    // The subscription handshake crosses nodes too; afterwards alice may address bob's resources directly.
    await befriend(alice, 'alice@localhost', phone, 'bob@localhost');
    const laptop = await login(c, 'bob', 'laptop');
    const hidden = await login(a, 'bob', 'hidden');
    await laptop.send(xml('presence', {}, xml('priority', {}, '1')));
    await hidden.send(xml('presence', {}, xml('priority', {}, '-1')));
    for (const r of ['phone', 'laptop', 'hidden']) {
      await alice.presenceFrom('bob@localhost', (s) => s.attrs.from === `bob@localhost/${r}` && s.attrs.type === undefined, `bob/${r} available`);
    }

    await alice.send(chat('bob@localhost', 'to the bare jid'));
    const got = await phone.waitFor(isBody('to the bare jid'), 'bare message on the top resource');
    assert.equal(got.attrs.from, 'alice@localhost/desk');
    assert.equal(got.attrs.to, 'bob@localhost');
    // Per recipient, alice's stanzas keep their order: once a later one arrived, an earlier one would have.
    await alice.send(chat('bob@localhost/laptop', 'marker 1'));
    await alice.send(chat('bob@localhost/hidden', 'marker 1'));
    await laptop.waitFor(isBody('marker 1'), 'full-JID message on another node');
    await hidden.waitFor(isBody('marker 1'), 'full-JID message to a negative priority, on the sender node');
    assert.equal(laptop.received.filter(isBody('to the bare jid')).length, 0);
    assert.equal(hidden.received.filter(isBody('to the bare jid')).length, 0);

    // Two resources on two nodes share the top priority: both get a bare-JID message, once.
    await phone.send(xml('presence', {}, xml('priority', {}, '1')));
    await alice.presenceFrom('bob@localhost', (s) => s.attrs.from === 'bob@localhost/phone' && s.getChildText('priority') === '1', 'phone at priority 1');
    await until('node A routes by the new priority', async () => (await a.server.engine.sessionsOf('bob@localhost')).some((s) => s.resource === 'phone' && s.priority === 1));
    await alice.send(chat('bob@localhost', 'to both'));
    await phone.waitFor(isBody('to both'), 'bare message on the phone');
    await laptop.waitFor(isBody('to both'), 'bare message on the laptop');
    await alice.send(chat('bob@localhost/phone', 'marker 2'));
    await alice.send(chat('bob@localhost/laptop', 'marker 2'));
    await phone.waitFor(isBody('marker 2'), 'marker');
    await laptop.waitFor(isBody('marker 2'), 'marker');
    assert.equal(phone.received.filter(isBody('to both')).length + laptop.received.filter(isBody('to both')).length, 0, 'each got it once');

    // Chat both ways: bob answers from the laptop on node C to alice's full JID on node A.
    await laptop.send(chat('alice@localhost/desk', 'hello back'));
    assert.equal((await alice.waitFor(isBody('hello back'), 'answer')).attrs.from, 'bob@localhost/laptop');
    for (const x of [alice, phone, laptop, hidden]) await x.stop();
  });

  test('an iq to a full JID on another node is answered; when that resource went, the error travels back and is the one for no resource at all', async () => {
    await friends(b, 'iqa@localhost', 'iqb@localhost');
    const req = await raw(a, 'iqa', 'r');
    req.write('<presence/>');
    const target = await raw(b, 'iqb', 'res');
    autoAnswer(target);
    target.write('<presence/>');
    await roundTrip(target);
    await seen(a, 'iqb@localhost', 'res', b);
    await until('iqa sees iqb available', () => /<presence[^>]*from='iqb@localhost\/res'/.test(req.text));

    req.write(`<iq type='get' id='ping-1' to='iqb@localhost/res'><ping xmlns='urn:xmpp:ping'/></iq>`);
    const answered = await answerTo(req, 'ping-1');
    assert.match(answered, /type='result'/);
    assert.equal(attrsOf(answered).from, 'iqb@localhost/res');
    // The target was handed the request from the requester's full JID, by its own node.
    assert.match(target.text, /<iq[^>]*from='iqa@localhost\/r'[^>]*id='ping-1'|<iq[^>]*id='ping-1'[^>]*from='iqa@localhost\/r'/);

    // The target's connection drops without a goodbye: its session waits out the grace period on node B,
    // still listed (and available) in every node's registry, but nobody there can answer.
    target.socket.destroy();
    await lingering(b, 'iqb@localhost', 'res');
    assert.ok((await a.server.engine.sessionsOf('iqb@localhost')).some((s) => s.resource === 'res' && s.available), 'node A still routes to it');
    const normalise = (text: string, id: string, to: string): string => text.replace(` id='${id}'`, '').replaceAll(to, 'TARGET');
    req.write(`<iq type='get' id='ping-2' to='iqb@localhost/res'><ping xmlns='urn:xmpp:ping'/></iq>`);
    const gone = normalise(await answerTo(req, 'ping-2'), 'ping-2', 'iqb@localhost/res');
    assert.match(gone, /type='error'/);
    assert.match(gone, /<service-unavailable /);
    // The same as for a resource that never was, and for an account that does not exist (decided on node A).
    req.write(`<iq type='get' id='ping-3' to='iqb@localhost/never'><ping xmlns='urn:xmpp:ping'/></iq>`);
    assert.equal(normalise(await answerTo(req, 'ping-3'), 'ping-3', 'iqb@localhost/never'), gone);
    req.write(`<iq type='get' id='ping-4' to='nobody-here@localhost/res'><ping xmlns='urn:xmpp:ping'/></iq>`);
    assert.equal(normalise(await answerTo(req, 'ping-4'), 'ping-4', 'nobody-here@localhost/res'), gone);
  });

  test('directed presence crosses nodes and shows the resource to its addressee alone, until it is withdrawn', async () => {
    const dpa = await raw(a, 'dpa', 'r');
    dpa.write('<presence/>');
    const dpb = await raw(c, 'dpb', 'r');
    autoAnswer(dpb);
    dpb.write('<presence/>');
    await roundTrip(dpb);
    await seen(a, 'dpb@localhost', 'r', c);
    const ping = async (id: string): Promise<string> => {
      dpa.write(`<iq type='get' id='${id}' to='dpb@localhost/r'><ping xmlns='urn:xmpp:ping'/></iq>`);
      return (await answerTo(dpa, id)).replace(` id='${id}'`, '');
    };
    // Not subscribed: dpb's resource is not there for dpa.
    const hidden = await ping('dp-1');
    assert.match(hidden, /<service-unavailable /);

    dpb.write(`<presence to='dpa@localhost/r'><status>just for you</status></presence>`);
    await dpa.waitFor(/<presence[^>]*from='dpb@localhost\/r'[^>]*>.*?just for you/, 'directed presence from node C');
    // Only node C knows dpb sent it: node A forwards the ping there, and node C lets it through.
    assert.match(await ping('dp-2'), /type='result'/);

    dpb.write(`<presence type='unavailable' to='dpa@localhost/r'/>`);
    await dpa.waitFor(/<presence[^>]*from='dpb@localhost\/r'[^>]*type='unavailable'|<presence[^>]*type='unavailable'[^>]*from='dpb@localhost\/r'/, 'directed unavailable');
    assert.equal(await ping('dp-3'), hidden, 'withdrawn: the same answer as before');

    // Sent again, then dpb's stream ends: dpa hears it leave, across nodes.
    const sentAgain = dpa.text.length;
    dpb.write(`<presence to='dpa@localhost'/>`);
    // Node C let the ping through only once it handled dpb's presence: wait until dpa has it.
    await dpa.waitFor(/<presence[^>]*from='dpb@localhost\/r'(?![^>]*type=)[^>]*\/?>/, 'directed presence again', 20_000, sentAgain);
    assert.match(await ping('dp-4'), /type='result'/);
    const before = dpa.text.length;
    dpb.write('</stream:stream>');
    await dpa.waitFor(/<presence[^>]*from='dpb@localhost\/r'[^>]*type='unavailable'/, 'unavailable when dpb leaves', 20_000, before);
  });

  test('a message nobody can take is stored once, by one node, and delivered at the next login on any node', async () => {
    const sender = await login(a, 'sender', 'desk');
    await sender.send(xml('presence'));
    await sender.send(chat('off@localhost', 'while nobody was there'));
    await eventually(async () => assert.equal(offlineCount('off@localhost'), 1));
    // A chat state alone is not worth keeping. The sender's stanzas are handled in order: once its ping is
    // answered, the chat state was routed.
    await sender.send(xml('message', { to: 'off@localhost', type: 'chat' }, xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })));
    await sender.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    assert.equal(offlineCount('off@localhost'), 1);

    // A resource on node B whose connection just dropped: node A routes the next message there, node B
    // finds nobody to take it and stores it (the decision taken once, there).
    const gone = await raw(b, 'off', 'phone');
    gone.write('<presence/>');
    // Its initial presence fetched the stored message, from node B.
    await gone.waitFor(/while nobody was there<\/body>/, 'the stored message at login on node B');
    await eventually(async () => assert.equal(offlineCount('off@localhost'), 0));
    await seen(a, 'off@localhost', 'phone', b);
    gone.socket.destroy();
    await lingering(b, 'off@localhost', 'phone');
    await sender.send(chat('off@localhost', 'while its connection was gone'));
    await sender.send(chat('off@localhost/phone', 'to the full jid of the gone resource'));
    await eventually(async () => assert.equal(offlineCount('off@localhost'), 2));

    const back = await login(c, 'off', 'tablet');
    await back.send(xml('presence'));
    for (const body of ['while its connection was gone', 'to the full jid of the gone resource']) {
      const m = await back.waitFor(isBody(body), body);
      assert.equal(m.attrs.from, 'sender@localhost/desk');
      assert.ok(m.getChild('delay', 'urn:xmpp:delay'), 'delivered from storage');
    }
    await eventually(async () => assert.equal(offlineCount('off@localhost'), 0));
    await back.send(xml('message', { to: 'sender@localhost/desk', type: 'chat' }, xml('body', {}, 'got them')));
    await sender.waitFor(isBody('got them'), 'answer');
    assert.equal(back.received.filter((s) => s.is('message') && /^(while|to the)/.test(s.getChildText('body') ?? '')).length, 0, 'each once');
    await sender.stop();
    await back.stop();
  });

  test('two resources announcing themselves at the same moment on two nodes: the stored messages go out once', async () => {
    const sender = await login(a, 'sender', 'burst');
    await sender.send(xml('presence'));
    // Enough that handing them out takes a while: the two nodes' deliveries would overlap.
    const N = 300;
    for (let i = 0; i < N; i++) await sender.send(chat('twice@localhost', `stored ${i}`));
    // Each is a transaction of its own on PostgreSQL: on a loaded machine that takes a while.
    await eventually(async () => assert.equal(offlineCount('twice@localhost'), N, 'every message stored'), 90_000);
    const [onB, onC] = await Promise.all([raw(b, 'twice', 'one'), raw(c, 'twice', 'two')]);
    // Both initial presences leave at once; each node would read the same rows if nothing took turns.
    onB.write('<presence/>');
    onC.write('<presence/>');
    await eventually(async () => assert.equal(offlineCount('twice@localhost'), 0, 'every message handed out'), 60_000);
    await Promise.all([roundTrip(onB), roundTrip(onC)]);
    const got = (r: RawXmpp): string[] => [...r.text.matchAll(/<body>(stored \d+)<\/body>/g)].map((m) => m[1] as string);
    const all = [...got(onB), ...got(onC)];
    assert.equal(all.length, N, `each stored message handed out once (one: ${got(onB).length}, two: ${got(onC).length})`);
    assert.equal(new Set(all).size, N);
    await sender.stop();
  });

  test('the same resource bound on another node replaces the old stream (conflict); stanzas follow the new one', async () => {
    const first = await login(a, 'con', 'same');
    const other = await login(c, 'other', 'desk');
    const second = await login(b, 'con', 'same');
    await first.streamError('conflict');
    await second.send(xml('presence'));
    await seen(c, 'con@localhost', 'same', b);
    await other.send(xml('message', { to: 'con@localhost/same', type: 'chat' }, xml('body', {}, 'after the takeover')));
    await second.waitFor(isBody('after the takeover'), 'message on the new stream');
    assert.equal(second.jid, 'con@localhost/same');
    await second.stop();
    await other.stop();
  });

  test('a stream held for resumption on one node ends when its resource is bound on another: what it never acknowledged is stored for it', async () => {
    const sender = await login(c, 'other', 'sm-sender');
    const held = await raw(a, 'smu', 'phone');
    held.write(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
    await held.waitFor(/<enabled [^>]*resume='true'/);
    held.write('<presence/>');
    await roundTrip(held);
    await seen(c, 'smu@localhost', 'phone', a);
    await sender.send(chat('smu@localhost', 'never acknowledged'));
    await held.waitFor(/never acknowledged<\/body>/);
    // Lost without a goodbye and never acknowledged: node A holds the stream for resumption (60 s).
    held.socket.destroy();
    await lingering(a, 'smu@localhost', 'phone');
    // The client comes back through the balancer to node B, cannot resume there, and binds the resource
    // afresh: node A ends the held stream at once, as a fresh bind on node A would, storing the message.
    const again = await login(b, 'smu', 'phone');
    await eventually(async () => assert.equal(offlineCount('smu@localhost'), 1));
    await again.send(xml('presence'));
    const m = await again.waitFor(isBody('never acknowledged'), 'the unacknowledged message, from storage');
    assert.ok(m.getChild('delay', 'urn:xmpp:delay'));
    await eventually(async () => assert.equal(offlineCount('smu@localhost'), 0));
    await again.stop();
    await sender.stop();
  });

  test('malformed stanza deliveries in a node\'s stream are dropped; the node goes on serving', async () => {
    const target = await raw(b, 'iqb', 'bad-input');
    target.write('<presence/>');
    await roundTrip(target);
    const r = createClient({ url: redis.url });
    await r.connect();
    try {
      const stanza = (xml: unknown, route: unknown, resource = 'bad-input') => ({ d: { kind: 'stanza', node: name(b), xml, route }, resource });
      const fine = (body: string) => `<message xmlns='jabber:client' from='iqa@localhost/r' to='iqb@localhost/bad-input' type='chat'><body>${body}</body></message>`;
      const bad = [
        stanza(42, { from: 'iqa@localhost/r', ifGone: 'drop' }),
        stanza(fine('bad route: from'), { from: 5, ifGone: 'drop' }),
        stanza(fine('bad route: ifGone'), { from: 'iqa@localhost/r', ifGone: 'explode' }),
        stanza(fine('bad route: hops'), { from: 'iqa@localhost/r', ifGone: 'drop', hops: -1 }),
        stanza(fine('bad route: hook'), { from: 'iqa@localhost/r', ifGone: 'drop', hook: [1] }),
        // Unreadable, for a resource that is not there: it cannot be bounced or routed again.
        stanza('<message><body>unclosed', { from: 'iqa@localhost/r', ifGone: 'bounce' }, 'nobody'),
        stanza('<message><body>unclosed', { from: 'iqa@localhost/r', ifGone: 'bare', tried: [] }, 'nobody'),
        stanza(fine('valid after the bad ones'), { from: 'iqa@localhost/r', ifGone: 'drop' }),
      ];
      const batch = { o: name(a), e: '1', d: bad.map((x) => x.d), i: bad.map((x, n) => ['iqb@localhost', n, x.resource]) };
      await r.sendCommand(['XADD', `pd:n:{${name(b)}}:in`, '*', 'b', JSON.stringify(batch)]);
      await target.waitFor(/valid after the bad ones<\/body>/, 'the valid delivery after the malformed ones');
      assert.doesNotMatch(target.text, /bad route/);
      await roundTrip(target);
    } finally {
      await r.quit();
    }
  });

  test('deleting an account or changing its password ends its streams on every node', async () => {
    const pwb = await login(b, 'pwc', 'one');
    const pwc = await login(c, 'pwc', 'two');
    assert.equal((await a.admin('PUT', '/accounts/pwc@localhost/password', { password: 'another-password' })).status, 204);
    await pwb.streamError('not-authorized');
    await pwc.streamError('not-authorized');
    await until('pwc offline everywhere', async () => (await a.server.engine.sessionsOf('pwc@localhost')).length === 0);

    const delb = await login(b, 'del', 'one');
    const delc = await login(c, 'del', 'two');
    assert.equal((await a.admin('DELETE', '/accounts/del@localhost')).status, 204);
    await delb.streamError('not-authorized');
    await delc.streamError('not-authorized');
    await until('del offline everywhere', async () => (await a.server.engine.sessionsOf('del@localhost')).length === 0);
  });

  test('a message routed to another node triggers one push, from the node that knows the client is inactive', async () => {
    const token = `gina-${randomBytes(6).toString('hex')}`;
    const pushes = () => rx.requests.map((r) => r.payload as { device?: string; reason?: string } | null).filter((p) => p?.device === token);
    const settled = async () => {
      for (const n of [a, b, c]) await pushOf(n.server.engine)!.xmppSettled();
      await eventually(async () => assert.equal(await pushOf(a.server.engine)!.registrations.pendingCount(), 0));
    };
    const gina = await raw(b, 'gina', 'phone');
    gina.write('<presence/>');
    gina.write(
      `<iq type='set' id='reg' to='push.localhost'><command xmlns='${COMMANDS}' node='register-device' action='execute'><x xmlns='${DATA}' type='submit'><field var='provider'><value>gw</value></field><field var='device-token'><value>${token}</value></field></x></command></iq>`,
    );
    const node = /<field var='node'><value>([^<]+)<\/value>/.exec(await gina.waitFor(/<field var='node'><value>[^<]+<\/value>/))![1];
    gina.write(`<iq type='set' id='en'><enable xmlns='${PUSH}' jid='push.localhost' node='${node}'/></iq>`);
    await gina.waitFor(/id='en'[^>]*type='result'|type='result'[^>]*id='en'/);
    const hank = await login(a, 'hank', 'desk');
    await seen(a, 'gina@localhost', 'phone', b);

    // Active: delivered live, no push.
    await hank.send(chat('gina@localhost', 'while active'));
    await gina.waitFor(/while active<\/body>/);
    await settled();
    assert.equal(pushes().length, 0);

    // Inactive (XEP-0352): only node B knows it. The message goes from node A to node B, which pushes, once.
    gina.write(`<inactive xmlns='urn:xmpp:csi:0'/>`);
    await roundTrip(gina);
    await hank.send(chat('gina@localhost', 'while inactive'));
    await gina.waitFor(/while inactive<\/body>/);
    await rx.until(() => pushes().length === 1, 'the push for the message to an inactive client');
    await settled();
    assert.equal(pushes().length, 1);
    assert.equal(pushes()[0]!.reason, 'message');
    await hank.stop();
  });
});
