import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawXmpp } from '../helpers/raw-xmpp.js';
import { befriend, XmppTestClient, xml, type Element } from '../helpers/xmpp-client.js';


const ping = (c: XmppTestClient) => c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
const presence = (show: string | null, priority: number, status?: string) =>
  xml('presence', {}, ...(show ? [xml('show', {}, show)] : []), xml('priority', {}, String(priority)), ...(status ? [xml('status', {}, status)] : []));

describe('XMPP: resources, routing, blocking, discovery, liveness', () => {
  let t: TestServer;
  let service: string;
  const clients: XmppTestClient[] = [];
  const login = async (user: string, resource: string) => {
    const c = await XmppTestClient.login(service, user, 'secret-pw', resource);
    clients.push(c);
    return c;
  };
  let alice: XmppTestClient;
  let bobPhone: XmppTestClient;

  before(async () => {
    t = await startTestServer({ xmpp_port: 0, xmpps_port: 0, xmpp_require_tls: false, heartbeat_interval_ms: 200, idle_timeout_ms: 600, grace_period_ms: 300 });
    for (const u of ['alice', 'bob', 'carol']) await t.createAccount(`${u}@localhost`);
    service = `xmpp://127.0.0.1:${t.server.xmppPort}`;
    alice = await login('alice', 'desk');
    bobPhone = await login('bob', 'phone');
    await alice.send(xml('presence', {}));
    await bobPhone.send(presence(null, 5));
    await befriend(alice, 'alice@localhost', bobPhone, 'bob@localhost');
    await alice.presenceFrom('bob@localhost', (s) => s.attrs.from === 'bob@localhost/phone' && s.attrs.type === undefined);
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await t.destroy();
  });

  test('every resource of a contact is seen, and one leaving is seen while the account stays online', async () => {
    const laptop = await login('bob', 'laptop');
    await laptop.send(presence('away', 1, 'on the laptop'));
    const p = await alice.presenceFrom('bob@localhost', (s) => s.attrs.from === 'bob@localhost/laptop' && s.attrs.type === undefined, 'laptop presence');
    assert.equal(p.getChildText('show'), 'away');
    // The new resource is told about the account's other resource.
    await laptop.waitFor((s) => s.is('presence') && s.attrs.from === 'bob@localhost/phone', 'own other resource');
    await laptop.stop();
    clients.splice(clients.indexOf(laptop), 1);
    await alice.presenceFrom('bob@localhost', (s) => s.attrs.from === 'bob@localhost/laptop' && s.attrs.type === 'unavailable', 'laptop unavailable');
  });

  test('bare-JID messages go to the highest non-negative priority; negative priority only by full JID', async () => {
    const hidden = await login('bob', 'hidden');
    await hidden.send(presence(null, -1));
    const low = await login('bob', 'low');
    await low.send(presence(null, 1));
    await ping(hidden);
    await ping(low);
    await alice.send(xml('message', { to: 'bob@localhost', type: 'chat' }, xml('body', {}, 'to the bare jid')));
    await bobPhone.waitFor((s) => s.is('message') && s.getChildText('body') === 'to the bare jid', 'message on top resource');
    await alice.send(xml('message', { to: 'bob@localhost/hidden', type: 'chat' }, xml('body', {}, 'to the full jid')));
    await hidden.waitFor((s) => s.is('message') && s.getChildText('body') === 'to the full jid', 'message on full jid');
    await ping(alice);
    await ping(low);
    assert.deepEqual(low.received.filter((s) => s.is('message')).length, 0);
    assert.deepEqual(hidden.received.filter((s) => s.is('message') && s.getChildText('body') === 'to the bare jid').length, 0);
    for (const c of [hidden, low]) {
      await c.stop();
      clients.splice(clients.indexOf(c), 1);
    }
  });

  test('binding a connected resource again replaces the old stream with a conflict error', async () => {
    const first = await login('carol', 'same');
    const second = await login('carol', 'same');
    await first.streamError('conflict');
    assert.equal(second.jid, 'carol@localhost/same');
    await ping(second);
  });

  test('XEP-0191: block, pushes, blocklist, and the blocked contact sees us unavailable', async () => {
    const push = alice.waitFor((s) => s.is('iq') && s.attrs.type === 'set' && s.getChild('block', 'urn:xmpp:blocking') !== undefined, 'block push');
    const gone = bobPhone.presenceFrom('alice@localhost', (s) => s.attrs.type === 'unavailable', 'unavailable after block');
    await alice.iq(xml('iq', { type: 'set' }, xml('block', { xmlns: 'urn:xmpp:blocking' }, xml('item', { jid: 'bob@localhost' }))));
    await push;
    await gone;
    const list = await alice.iq(xml('iq', { type: 'get' }, xml('blocklist', { xmlns: 'urn:xmpp:blocking' })));
    assert.deepEqual((list.getChild('blocklist') as Element).getChildren('item').map((i) => i.attrs.jid), ['bob@localhost']);
    // XEP-0191 §3.5: a message to a blocked contact is not routed; the error says why.
    const refused = alice.waitFor((s) => s.is('message') && s.attrs.type === 'error' && s.attrs.id === 'to-blocked', 'blocked error');
    await alice.send(xml('message', { to: 'bob@localhost', type: 'chat', id: 'to-blocked' }, xml('body', {}, 'hello?')));
    const error = (await refused).getChild('error') as Element;
    assert.equal(error.attrs.type, 'cancel');
    assert.ok(error.getChild('not-acceptable', 'urn:ietf:params:xml:ns:xmpp-stanzas'));
    assert.ok(error.getChild('blocked', 'urn:xmpp:blocking:errors'));
    await alice.iq(xml('iq', { type: 'set' }, xml('unblock', { xmlns: 'urn:xmpp:blocking' })));
    await bobPhone.presenceFrom('alice@localhost', (s) => s.attrs.type === undefined, 'available after unblock');
  });

  test('disco#info, version and last activity of the server and of an offline contact', async () => {
    const info = await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const q = info.getChild('query') as Element;
    assert.equal(q.getChild('identity')?.attrs.category, 'server');
    assert.ok(q.getChildren('feature').some((f) => f.attrs.var === 'urn:xmpp:blocking'));
    const version = await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'jabber:iq:version' })));
    assert.equal(version.getChild('query')?.getChildText('name'), 'presenced');

    await bobPhone.send(presence(null, 5, 'see you tomorrow'));
    await alice.presenceFrom('bob@localhost', (s) => s.getChildText('status') === 'see you tomorrow');
    await bobPhone.stop();
    clients.splice(clients.indexOf(bobPhone), 1);
    await alice.presenceFrom('bob@localhost', (s) => s.attrs.from === 'bob@localhost/phone' && s.attrs.type === 'unavailable');
    const last = await alice.iq(xml('iq', { type: 'get', to: 'bob@localhost' }, xml('query', { xmlns: 'jabber:iq:last' })));
    const lq = last.getChild('query') as Element;
    assert.ok(Number(lq.attrs.seconds) >= 0);
    assert.equal(lq.getText(), 'see you tomorrow');
    await assert.rejects(alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'urn:example:unknown' }))));
  });

  test('a client that stops answering is pinged, dropped, and shown offline after the grace period', async () => {
    const dead = new RawXmpp(await RawXmpp.connectRaw(t.server.xmppPort as number));
    await dead.loginPlain('bob', 'secret-pw', 'zombie');
    dead.write("<presence><status>zombie</status></presence>");
    await alice.presenceFrom('bob@localhost', (s) => s.attrs.from === 'bob@localhost/zombie' && s.attrs.type === undefined, 'zombie online');
    // The raw client never answers the server's XEP-0199 ping.
    await dead.waitFor(/<ping xmlns='urn:xmpp:ping'\/>/, 'server ping');
    await alice.presenceFrom('bob@localhost', (s) => s.attrs.from === 'bob@localhost/zombie' && s.attrs.type === 'unavailable', 'zombie offline');
    await dead.closed;
  });
});
