import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { pushOf } from '../../src/features/push/push-feature.js';
import { RawXmpp } from '../helpers/raw-xmpp.js';
import { startTestServer, type SqlValue, type TestServer } from '../helpers/server.js';
import { eventually, Receiver } from '../helpers/webhook-receiver.js';
import { XmppTestClient, xml, type Element } from '../helpers/xmpp-client.js';

/**
 * XEP-0357 push from the XMPP side, with real clients (xmpp.js, and raw streams where xmpp.js has no
 * API: a stream dropped without closing, XEP-0352 nonzas) and the webhook provider as the local push
 * service, verified with standardwebhooks by the receiver: register-device at push.localhost, enable,
 * the four triggers and the away rule, disable, CSI, and bad input answered with stanza errors and
 * nothing stored.
 */

const SECRET = `whsec_${randomBytes(24).toString('base64')}`;
const PUSH = 'urn:xmpp:push:0';
const COMMANDS = 'http://jabber.org/protocol/commands';
const DATA = 'jabber:x:data';
const SERVICE = 'push.localhost';
const isBody = (body: string) => (s: Element) => s.is('message') && s.getChildText('body') === body;

interface PushBody {
  type: string;
  device: string;
  reason: string;
  count: number;
  sender?: string;
  body?: string;
}

describe('push over XMPP (XEP-0357, Tigase push component, CSI)', () => {
  let t: TestServer;
  const rx = new Receiver();
  const clients: XmppTestClient[] = [];
  const raws: RawXmpp[] = [];
  const service = () => `xmpp://127.0.0.1:${t.server.xmppPort}`;
  const rows = (sqlText: string, ...args: SqlValue[]): any[] => t.sql(sqlText, ...args);
  const pushesTo = (token: string): PushBody[] => rx.requests.map((r) => r.payload as PushBody | null).filter((p): p is PushBody => p?.device === token);
  /** Every trigger fired so far has queued its pushes and the queue has sent them. */
  const settled = async () => {
    const push = pushOf(t.server.engine)!;
    await push.xmppSettled();
    await eventually(async () => assert.equal(await push.registrations.pendingCount(), 0));
  };
  const offlineCount = (jid: string): number => (rows('SELECT count(*) AS n FROM offline_messages WHERE recipient = ?', jid)[0] as { n: number }).n;
  const login = async (user: string, resource: string): Promise<XmppTestClient> => {
    const c = await XmppTestClient.login(service(), user, 'secret-pw', resource);
    clients.push(c);
    return c;
  };
  const raw = async (user: string, resource: string): Promise<RawXmpp> => {
    const r = await RawXmpp.open(t.server.xmppPort!);
    raws.push(r);
    await r.loginPlain(user, 'secret-pw', resource);
    return r;
  };

  const commandIq = (node: string, fields: Record<string, string | undefined>) =>
    xml(
      'iq',
      { type: 'set', to: SERVICE },
      xml(
        'command',
        { xmlns: COMMANDS, node, action: 'execute' },
        xml('x', { xmlns: DATA, type: 'submit' }, ...Object.entries(fields).flatMap(([k, v]) => (v === undefined ? [] : [xml('field', { var: k }, xml('value', {}, v))]))),
      ),
    );
  const registerDevice = async (c: XmppTestClient, token: string, provider = 'gw'): Promise<string> => {
    const res = await c.iq(commandIq('register-device', { provider, 'device-token': token }));
    const cmd = res.getChild('command', COMMANDS);
    assert.equal(cmd?.attrs.status, 'completed');
    const node = cmd?.getChild('x', DATA)?.getChildren('field').find((f) => f.attrs.var === 'node')?.getChildText('value');
    assert.ok(node, 'register-device answers the node');
    return node;
  };
  const enable = (c: XmppTestClient, node: string, attrs: Record<string, string> = {}, ...children: Element[]) =>
    c.iq(xml('iq', { type: 'set' }, xml('enable', { xmlns: PUSH, jid: SERVICE, node, ...attrs }, ...children)));
  const expectError = async (p: Promise<unknown>, condition: string, text?: RegExp) => {
    await assert.rejects(p, (e: Error & { condition?: string; text?: string }) => {
      assert.equal(e.condition, condition, e.message);
      if (text) assert.match(e.text ?? '', text);
      return true;
    });
  };

  before(async () => {
    rx.secret = SECRET;
    await rx.listen();
    t = await startTestServer({
      xmpp_port: 0,
      xmpp_require_tls: false,
      webhooks_allow_private: true,
      xmpp_sm_resume_timeout_ms: 60_000,
      push_providers: { gw: { type: 'webhook', url: rx.url, secret: SECRET } },
    });
    for (const u of ['alice', 'bob', 'carol', 'erin', 'frank', 'gina', 'hank', 'mallory']) await t.createAccount(`${u}@localhost`);
  });

  after(async () => {
    for (const c of clients) await c.stop();
    for (const r of raws) r.close();
    await t?.destroy();
    await rx.close();
  });

  test('disco: the account advertises push and Tigase\'s away extension; push.localhost is a push service with two commands', async () => {
    const alice = await login('alice', 'disco');
    const info = await alice.iq(xml('iq', { type: 'get', to: 'alice@localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const features = info.getChild('query')!.getChildren('feature').map((f) => f.attrs.var);
    assert.ok(features.includes(PUSH), String(features));
    assert.ok(features.includes('tigase:push:away:0'), String(features));

    const items = await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' })));
    assert.deepEqual(items.getChild('query')!.getChildren('item').map((i) => i.attrs.jid), [SERVICE]);

    const svc = await alice.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const identity = svc.getChild('query')!.getChild('identity')!;
    assert.deepEqual([identity.attrs.category, identity.attrs.type], ['pubsub', 'push']);
    assert.ok(svc.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === COMMANDS));

    const cmds = await alice.iq(xml('iq', { type: 'get', to: SERVICE }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items', node: COMMANDS })));
    assert.deepEqual(cmds.getChild('query')!.getChildren('item').map((i) => i.attrs.node).sort(), ['register-device', 'unregister-device']);

    // Executing without a form gets the form to fill in, listing the configured providers.
    const form = await alice.iq(xml('iq', { type: 'set', to: SERVICE }, xml('command', { xmlns: COMMANDS, node: 'register-device', action: 'execute' })));
    const x = form.getChild('command', COMMANDS)!.getChild('x', DATA)!;
    assert.equal(x.attrs.type, 'form');
    const provider = x.getChildren('field').find((f) => f.attrs.var === 'provider')!;
    assert.deepEqual(provider.getChildren('option').map((o) => o.getChildText('value')), ['gw']);
    await alice.stop();
  });

  test('register-device, enable, offline: a message wakes the device with the count only; fetching the messages sends count 0', async () => {
    const phone = await login('alice', 'phone');
    const token = `alice-phone-${randomBytes(6).toString('hex')}`;
    const node = await registerDevice(phone, token);
    await enable(phone, node);
    const [row] = rows('SELECT node, xmpp_jid, resource, away, source FROM push_registrations WHERE account = ?', 'alice@localhost');
    assert.deepEqual(row, { node, xmpp_jid: SERVICE, resource: 'phone', away: 0, source: 'xmpp' });
    await phone.stop();

    const bob = await login('bob', 'desk');
    await bob.send(xml('message', { to: 'alice@localhost', type: 'chat' }, xml('body', {}, 'are you there?')));
    await rx.until(() => pushesTo(token).length === 1, 'the push for the offline message');
    const first = pushesTo(token)[0]!;
    assert.equal(first.reason, 'message');
    assert.equal(first.count, 1);
    // Privacy defaults: neither who wrote nor what.
    assert.equal(first.sender, undefined);
    assert.equal(first.body, undefined);
    assert.ok(!rx.requests.some((r) => r.body.includes('are you there')), 'the text never reaches the push service');

    await bob.send(xml('message', { to: 'alice@localhost', type: 'chat' }, xml('body', {}, 'hello?')));
    await rx.until(() => pushesTo(token).length === 2, 'the second push');
    assert.equal(pushesTo(token)[1]!.count, 2, 'message-count is what waits');

    // Another device of alice fetches the offline messages: the phone's badge is cleared.
    const desktop = await login('alice', 'desktop');
    await desktop.send(xml('presence'));
    await desktop.waitFor(isBody('hello?'), 'the offline messages');
    await rx.until(() => pushesTo(token).length === 3, 'the clear push');
    const clear = pushesTo(token)[2]!;
    assert.equal(clear.reason, 'clear');
    assert.equal(clear.count, 0);
    await settled();
    assert.equal(pushesTo(token).length, 3, 'exactly one push per message and one clear');

    // unregister-device removes the registration.
    await desktop.iq(commandIq('unregister-device', { provider: 'gw', 'device-token': token }));
    assert.equal(rows('SELECT count(*) AS n FROM push_registrations WHERE account = ?', 'alice@localhost')[0].n, 0);
    await desktop.stop();
    await bob.stop();
  });

  test("away='true': every resource away pushes the away registrations only; one available resource, or away turned off, none", async () => {
    const phone = await login('carol', 'phone');
    const laptop = await login('carol', 'laptop');
    const bob = await login('bob', 'away-test');
    const awayToken = `carol-phone-${randomBytes(6).toString('hex')}`;
    const plainToken = `carol-laptop-${randomBytes(6).toString('hex')}`;
    const awayNode = await registerDevice(phone, awayToken);
    await enable(phone, awayNode, { away: 'true' });
    await enable(laptop, await registerDevice(laptop, plainToken));
    assert.equal(rows('SELECT away FROM push_registrations WHERE node = ?', awayNode)[0].away, 1);

    await phone.send(xml('presence', {}, xml('show', {}, 'away')));
    await laptop.send(xml('presence', {}, xml('show', {}, 'xa')));
    await phone.waitFor((s) => s.is('presence') && s.attrs.from === 'carol@localhost/laptop' && s.getChildText('show') === 'xa', 'laptop xa');

    await bob.send(xml('message', { to: 'carol@localhost', type: 'chat' }, xml('body', {}, 'all away')));
    await phone.waitFor(isBody('all away'), 'the message, live');
    await rx.until(() => pushesTo(awayToken).length === 1, 'the away push');
    assert.equal(pushesTo(awayToken)[0]!.reason, 'message');
    await settled();
    assert.equal(pushesTo(plainToken).length, 0, 'a registration without away is not pushed while its session is connected');

    // dnd with a negative priority still counts as away; chat counts as present.
    await laptop.send(xml('presence', {}, xml('show', {}, 'chat')));
    await phone.waitFor((s) => s.is('presence') && s.attrs.from === 'carol@localhost/laptop' && s.getChildText('show') === 'chat', 'laptop chat');
    await bob.send(xml('message', { to: 'carol@localhost', type: 'chat' }, xml('body', {}, 'one present')));
    await phone.waitFor(isBody('one present'), 'the message, live');
    await settled();
    assert.equal(pushesTo(awayToken).length, 1, 'one resource available: no push');

    await laptop.send(xml('presence', {}, xml('show', {}, 'dnd'), xml('priority', {}, '-1')));
    await phone.waitFor((s) => s.is('presence') && s.attrs.from === 'carol@localhost/laptop' && s.getChildText('show') === 'dnd', 'laptop dnd');
    await bob.send(xml('message', { to: 'carol@localhost', type: 'chat' }, xml('body', {}, 'away again')));
    await phone.waitFor(isBody('away again'), 'the message, live');
    await rx.until(() => pushesTo(awayToken).length === 2, 'the second away push');

    // enable again without away: Tigase's way to turn it off (the same jid and node: replaced, not added).
    await enable(phone, awayNode);
    assert.equal(rows('SELECT away FROM push_registrations WHERE node = ?', awayNode)[0].away, 0);
    assert.equal(rows('SELECT count(*) AS n FROM push_registrations WHERE account = ?', 'carol@localhost')[0].n, 2);
    await bob.send(xml('message', { to: 'carol@localhost', type: 'chat' }, xml('body', {}, 'still away')));
    await phone.waitFor(isBody('still away'), 'the message, live');
    await settled();
    assert.equal(pushesTo(awayToken).length, 2, 'away turned off: no push');
    for (const c of [phone, laptop, bob]) await c.stop();
  });

  test('a stream-management session held detached: what it never acknowledged, and what arrives meanwhile, wake its device', async () => {
    const token = `erin-phone-${randomBytes(6).toString('hex')}`;
    const phone = await raw('erin', 'phone');
    phone.write(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
    await phone.waitFor(/<enabled [^>]*resume='true'/);
    phone.write(`<presence/>`);
    phone.write(
      `<iq type='set' id='reg' to='${SERVICE}'><command xmlns='${COMMANDS}' node='register-device' action='execute'><x xmlns='${DATA}' type='submit'><field var='provider'><value>gw</value></field><field var='device-token'><value>${token}</value></field></x></command></iq>`,
    );
    const node = /<field var='node'><value>([^<]+)<\/value>/.exec(await phone.waitFor(/<field var='node'><value>[^<]+<\/value>/))![1];
    phone.write(`<iq type='set' id='en'><enable xmlns='${PUSH}' jid='${SERVICE}' node='${node}'/></iq>`);
    await phone.waitFor(/<iq [^>]*id='en'[^>]*type='result'|<iq [^>]*type='result'[^>]*id='en'/);
    // Another resource stays online, so nothing is stored offline: only the held stream can cause a push.
    const desktop = await login('erin', 'desktop');
    await desktop.send(xml('presence'));
    const bob = await login('bob', 'sm-test');

    await bob.send(xml('message', { to: 'erin@localhost', type: 'chat' }, xml('body', {}, 'first')));
    await phone.waitFor(/first<\/body>/);
    await desktop.waitFor(isBody('first'), 'first, on the desktop');
    await settled();
    assert.equal(pushesTo(token).length, 0, 'the phone is connected and active');

    // The phone loses its connection without closing its stream, the message unacknowledged.
    phone.socket.destroy();
    await rx.until(() => pushesTo(token).length === 1, 'the push for the unacknowledged message');
    assert.equal(pushesTo(token)[0]!.count, 1);

    await bob.send(xml('message', { to: 'erin@localhost', type: 'chat' }, xml('body', {}, 'second')));
    await desktop.waitFor(isBody('second'), 'second, on the desktop');
    await rx.until(() => pushesTo(token).length === 2, 'the push for the message that arrived while held');
    assert.equal(offlineCount('erin@localhost'), 0, 'delivered live to the desktop, not stored');
    await settled();
    assert.equal(pushesTo(token).length, 2);
    await desktop.stop();
    await bob.stop();
  });

  test('disable stops the pushes; the device stays registered for a later enable', async () => {
    const token = `frank-${randomBytes(6).toString('hex')}`;
    let frank = await login('frank', 'phone');
    const node = await registerDevice(frank, token);
    await enable(frank, node);
    await frank.stop();
    const bob = await login('bob', 'disable-test');
    await bob.send(xml('message', { to: 'frank@localhost', type: 'chat' }, xml('body', {}, 'one')));
    await rx.until(() => pushesTo(token).length === 1, 'the push while enabled');

    frank = await login('frank', 'phone');
    await frank.iq(xml('iq', { type: 'set' }, xml('disable', { xmlns: PUSH, jid: SERVICE })));
    assert.equal(rows('SELECT xmpp_jid FROM push_registrations WHERE node = ?', node)[0].xmpp_jid, null);
    await frank.stop();
    await bob.send(xml('message', { to: 'frank@localhost', type: 'chat' }, xml('body', {}, 'two')));
    await eventually(async () => assert.equal(offlineCount('frank@localhost'), 2));
    await settled();
    assert.equal(pushesTo(token).length, 1, 'no push once disabled');
    await bob.stop();
  });

  test('CSI: an inactive client gets presence later (the newest per contact, before any message) and its device is pushed; an active one is not', async () => {
    const token = `gina-${randomBytes(6).toString('hex')}`;
    const gina = await raw('gina', 'phone');
    assert.match(gina.text, /<csi xmlns='urn:xmpp:csi:0'\/>/, 'the stream feature is offered');
    gina.write(`<presence/>`);
    gina.write(
      `<iq type='set' id='reg' to='${SERVICE}'><command xmlns='${COMMANDS}' node='register-device'><x xmlns='${DATA}' type='submit'><field var='provider'><value>gw</value></field><field var='device-token'><value>${token}</value></field></x></command></iq>`,
    );
    const node = /<field var='node'><value>([^<]+)<\/value>/.exec(await gina.waitFor(/<field var='node'><value>[^<]+<\/value>/))![1];
    gina.write(`<iq type='set' id='en'><enable xmlns='${PUSH}' jid='${SERVICE}' node='${node}'/></iq>`);
    await gina.waitFor(/id='en'[^>]*type='result'|type='result'[^>]*id='en'/);
    const hank = await login('hank', 'desk');
    const bob = await login('bob', 'csi-test');
    const fromHank = () => (gina.text.match(/<presence[^>]*from='hank@localhost\/desk'/g) ?? []).length;

    // Active: a message is delivered live and nothing is pushed.
    await bob.send(xml('message', { to: 'gina@localhost', type: 'chat' }, xml('body', {}, 'while active')));
    await gina.waitFor(/while active<\/body>/);
    await settled();
    assert.equal(pushesTo(token).length, 0);

    gina.write(`<inactive xmlns='urn:xmpp:csi:0'/>`);
    // hank's stanzas are handled in order: once his ping is answered, his presences were routed.
    const ping = async () => hank.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    // Her stanzas are handled in order: once her ping is answered, her <inactive/> was.
    gina.write(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await gina.waitFor(/id='p1'/);
    for (const show of ['away', 'xa', 'dnd']) await hank.send(xml('presence', { to: 'gina@localhost/phone' }, xml('show', {}, show)));
    await ping();
    assert.equal(fromHank(), 0, 'presence is held while inactive');

    gina.write(`<active xmlns='urn:xmpp:csi:0'/>`);
    await gina.waitFor(/<presence[^>]*from='hank@localhost\/desk'[^>]*>.*?<\/presence>/);
    gina.write(`<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await gina.waitFor(/id='p2'/);
    assert.equal(fromHank(), 1, 'only the newest presence per contact');
    assert.match(gina.text, /from='hank@localhost\/desk'[^>]*><show>dnd<\/show>/);

    // Inactive again: a message brings the held presence first, and the device is pushed.
    gina.write(`<inactive xmlns='urn:xmpp:csi:0'/>`);
    gina.write(`<iq type='get' id='p3' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await gina.waitFor(/id='p3'/);
    await hank.send(xml('presence', { to: 'gina@localhost/phone' }, xml('show', {}, 'chat')));
    await ping();
    assert.equal(fromHank(), 1);
    await bob.send(xml('message', { to: 'gina@localhost', type: 'chat' }, xml('body', {}, 'while inactive')));
    const at = gina.text.length;
    await gina.waitFor(/while inactive<\/body>/, 'the message', 20_000, at);
    const tail = gina.text.slice(at);
    assert.ok(tail.indexOf('<show>chat</show>') >= 0 && tail.indexOf('<show>chat</show>') < tail.indexOf('while inactive'), 'held presence comes before the message');
    await rx.until(() => pushesTo(token).length === 1, 'the push for the inactive client');
    assert.equal(pushesTo(token)[0]!.reason, 'message');

    // CSI is an activity rule of the core's policy: the notify API pushes the inactive client's device too, not the active one's.
    const notify = async () => {
      const res = await fetch(`${t.url}/api/v1/accounts/gina@localhost/notify`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.config.admin_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ body: 'from the operator' }),
      });
      assert.equal(res.status, 202);
      return ((await res.json()) as { pushed: number }).pushed;
    };
    assert.equal(await notify(), 1);
    gina.write(`<active xmlns='urn:xmpp:csi:0'/>`);
    gina.write(`<iq type='get' id='p4' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await gina.waitFor(/id='p4'/);
    assert.equal(await notify(), 0);
    await hank.stop();
    await bob.stop();
  });

  test('bad input: each a clear stanza error, nothing stored', async () => {
    const m = await login('mallory', 'x');
    const bobC = await login('bob', 'victim');
    const bobNode = await registerDevice(bobC, `bob-${randomBytes(6).toString('hex')}`);
    await enable(bobC, bobNode);
    const before = rows('SELECT * FROM push_registrations ORDER BY id');
    const iq = (child: Element, to?: string) => m.iq(xml('iq', { type: 'set', ...(to ? { to } : {}) }, child));
    const node = bobNode;

    await expectError(iq(xml('enable', { xmlns: PUSH, jid: SERVICE })), 'bad-request', /needs the node/);
    await expectError(iq(xml('enable', { xmlns: PUSH, node })), 'bad-request', /needs a jid/);
    await expectError(iq(xml('enable', { xmlns: PUSH, jid: 'push-5.client.example', node })), 'feature-not-implemented', /no server-to-server.*push\.localhost/);
    await expectError(iq(xml('enable', { xmlns: PUSH, jid: SERVICE, node, away: 'maybe' })), 'bad-request', /away/);
    // Someone else's node is as unknown as a node that does not exist.
    await expectError(iq(xml('enable', { xmlns: PUSH, jid: SERVICE, node })), 'item-not-found', /register-device/);
    await expectError(iq(xml('enable', { xmlns: PUSH, jid: SERVICE, node: 'no-such-node' })), 'item-not-found');
    // Enabling for another account.
    await expectError(iq(xml('enable', { xmlns: PUSH, jid: SERVICE, node }), 'bob@localhost'), 'forbidden', /own/);
    await expectError(iq(xml('disable', { xmlns: PUSH, jid: SERVICE }), 'bob@localhost'), 'forbidden');
    // Malformed publish-options forms.
    const field = (v: string | undefined, value: string) => xml('field', v === undefined ? {} : { var: v }, xml('value', {}, value));
    const fType = field('FORM_TYPE', 'http://jabber.org/protocol/pubsub#publish-options');
    const forms: Array<[Element[], RegExp]> = [
      [[xml('x', { xmlns: DATA, type: 'form' }, fType)], /type must be submit/],
      [[xml('x', { xmlns: DATA, type: 'submit' }, field('FORM_TYPE', 'urn:example'))], /FORM_TYPE/],
      [[xml('x', { xmlns: DATA, type: 'submit' }, fType, field(undefined, 'x'))], /var/],
      [[xml('x', { xmlns: DATA, type: 'submit' }, fType, field('secret', 'a'), field('secret', 'b'))], /twice/],
      [[xml('x', { xmlns: DATA, type: 'submit' }, fType), xml('x', { xmlns: DATA, type: 'submit' }, fType)], /at most one/],
      [[xml('surprise', { xmlns: 'urn:example' })], /only a publish-options/],
      [[xml('x', { xmlns: DATA, type: 'submit' }, fType, field('secret', 'x'.repeat(5000)))], /longer than/],
    ];
    for (const [children, re] of forms) await expectError(iq(xml('enable', { xmlns: PUSH, jid: SERVICE, node }, ...children)), 'bad-request', re);

    // register-device: unknown provider, oversized and missing tokens, unknown fields, unknown commands.
    await expectError(m.iq(commandIq('register-device', { provider: 'nope', 'device-token': 'abc' })), 'bad-request', /unknown push provider "nope".*gw/);
    await expectError(m.iq(commandIq('register-device', { provider: 'gw', 'device-token': 'a'.repeat(4097) })), 'bad-request', /device-token.*4096/);
    await expectError(m.iq(commandIq('register-device', { provider: 'gw', 'device-token': 'has space' })), 'bad-request', /printable/);
    await expectError(m.iq(commandIq('register-device', { provider: 'gw' })), 'bad-request', /device-token is required/);
    await expectError(m.iq(commandIq('register-device', { provider: 'gw', 'device-token': 'abc', colour: 'red' })), 'bad-request', /unknown field colour/);
    await expectError(m.iq(commandIq('drop-tables', { provider: 'gw', 'device-token': 'abc' })), 'item-not-found');
    await expectError(m.iq(commandIq('unregister-device', { provider: 'gw', 'device-token': 'never-registered' })), 'item-not-found');
    // A disable of a service nothing can be enabled with changes nothing and is fine.
    await iq(xml('disable', { xmlns: PUSH, jid: 'push-5.client.example' }));

    assert.deepEqual(rows('SELECT * FROM push_registrations ORDER BY id'), before, 'nothing stored, nothing changed');
    assert.equal(rows('SELECT count(*) AS n FROM push_registrations WHERE account = ?', 'mallory@localhost')[0].n, 0);
    await m.stop();
    await bobC.stop();
  });

  test('durable: after a restart an enabled device is still pushed, and the triggers know its account', async () => {
    const token = `alice-durable-${randomBytes(6).toString('hex')}`;
    const phone = await login('alice', 'phone');
    await enable(phone, await registerDevice(phone, token));
    await phone.stop();
    for (const c of clients.splice(0)) await c.stop();
    for (const r of raws.splice(0)) r.close();
    const config = t.config;
    await t.stop();
    t = await startTestServer({ ...config, http_port: 0, xmpp_port: 0 }, t.dataDir);
    const bob = await login('bob', 'after-restart');
    await bob.send(xml('message', { to: 'alice@localhost', type: 'chat' }, xml('body', {}, 'after the restart')));
    await rx.until(() => pushesTo(token).length === 1, 'the push after the restart');
    assert.equal(pushesTo(token)[0]!.reason, 'message');
    await bob.stop();
  });
});
