import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { TestClient } from '../helpers/ws-client.js';
import { befriend, XmppTestClient, xml, type Element } from '../helpers/xmpp-client.js';

const XMPP = { xmpp_port: 0, xmpps_port: 0 };
const isMessage = (body: string) => (s: Element) => s.is('message') && s.getChildText('body') === body;


for (const transport of ['tcp', 'websocket'] as const) {
  describe(`XMPP interop with xmpp.js over ${transport === 'tcp' ? 'TCP + STARTTLS' : 'WebSocket (RFC 7395)'}`, () => {
    let t: TestServer;
    let service: string;
    const clients: XmppTestClient[] = [];
    const login = async (user: string, resource: string) => {
      const c = await XmppTestClient.login(service, user, 'secret-pw', resource);
      clients.push(c);
      return c;
    };
    before(async () => {
      // Over TCP, streams rest their XML parser whenever they have been quiet for a millisecond at a
      // sweep, so every step below also runs through parsers rebuilt after a rest.
      t = await startTestServer(transport === 'tcp' ? { ...XMPP, xmpp_parser_rest_ms: 1 } : XMPP);
      for (const u of ['alice', 'bob', 'carol']) await t.createAccount(`${u}@localhost`);
      service = transport === 'tcp' ? `xmpp://127.0.0.1:${t.server.xmppPort}` : `${t.url.replace(/^http/, 'ws')}/xmpp-websocket`;
    });
    after(async () => {
      for (const c of clients) await c.stop();
      await t.destroy();
    });

    test('SCRAM login binds the requested resource; a wrong password is refused', async () => {
      const a = await login('alice', 'laptop');
      assert.equal(a.jid, 'alice@localhost/laptop');
      await assert.rejects(XmppTestClient.login(service, 'alice', 'wrong-password', 'x'));
    });

    test('roster set is answered with a versioned roster push; get returns the item', async () => {
      const a = clients[0] as XmppTestClient;
      const push = a.waitFor((s) => s.is('iq') && s.attrs.type === 'set' && s.getChild('query', 'jabber:iq:roster') !== undefined, 'roster push');
      await a.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: 'jabber:iq:roster' }, xml('item', { jid: 'carol@localhost', name: 'Carol' }, xml('group', {}, 'Friends')))));
      const q = (await push).getChild('query', 'jabber:iq:roster') as Element;
      assert.ok(Number(q.attrs.ver) > 0);
      const item = q.getChild('item') as Element;
      assert.deepEqual([item.attrs.jid, item.attrs.name, item.attrs.subscription, item.getChildText('group')], ['carol@localhost', 'Carol', 'none', 'Friends']);
      const roster = await a.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
      const rq = roster.getChild('query', 'jabber:iq:roster') as Element;
      assert.equal(rq.attrs.ver, q.attrs.ver);
      assert.deepEqual(rq.getChildren('item').map((i) => i.attrs.jid), ['carol@localhost']);
      // XEP-0237: a client whose copy is current gets an empty result.
      const same = await a.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster', ver: q.attrs.ver })));
      assert.equal(same.getChild('query'), undefined);
    });

    test('subscribe/approve, then presence with show and status is seen by the contact', async () => {
      const a = clients[0] as XmppTestClient;
      const b = await login('bob', 'phone');
      await a.send(xml('presence', {}));
      await b.send(xml('presence', {}));
      await befriend(a, 'alice@localhost', b, 'bob@localhost');
      await b.send(xml('presence', {}, xml('show', {}, 'dnd'), xml('status', {}, 'In a meeting'), xml('priority', {}, '5')));
      const p = await a.presenceFrom('bob@localhost', (s) => s.getChildText('show') === 'dnd', 'dnd presence');
      assert.equal(p.attrs.from, 'bob@localhost/phone');
      assert.equal(p.getChildText('status'), 'In a meeting');
      assert.equal(p.getChildText('priority'), '5');
      const roster = await b.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
      const item = (roster.getChild('query') as Element).getChildren('item').find((i) => i.attrs.jid === 'alice@localhost');
      assert.equal(item?.attrs.subscription, 'both');
    });

    test('a message reaches the online contact', async () => {
      const [a, b] = clients as [XmppTestClient, XmppTestClient, XmppTestClient];
      await a.send(xml('message', { to: 'bob@localhost', type: 'chat', id: 'm1' }, xml('body', {}, 'hello bob')));
      const m = await b.waitFor(isMessage('hello bob'), 'message');
      assert.equal(m.attrs.from, 'alice@localhost/laptop');
      assert.equal(m.attrs.type, 'chat');
    });

    test('a message to an offline contact is delivered, with a delay stamp, when it comes back', async () => {
      const [a, b] = clients as [XmppTestClient, XmppTestClient];
      const gone = a.presenceFrom('bob@localhost', (s) => s.attrs.type === 'unavailable', 'unavailable');
      await b.stop();
      clients.splice(clients.indexOf(b), 1);
      await gone;
      await a.send(xml('message', { to: 'bob@localhost', type: 'chat' }, xml('body', {}, 'while you were away')));
      // A round trip on the same stream: the message has been handled (and stored) once the answer comes.
      await a.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
      const b2 = await login('bob', 'phone');
      await b2.send(xml('presence', {}));
      const m = await b2.waitFor(isMessage('while you were away'), 'offline message');
      assert.equal(m.attrs.from, 'alice@localhost/laptop');
      assert.ok(m.getChild('delay', 'urn:xmpp:delay')?.attrs.stamp);
    });

    if (transport === 'tcp') {
      test('quiet streams give their parser back and go on working when they speak again', async () => {
        const [a, b] = clients as [XmppTestClient, XmppTestClient];
        // Both streams idle: the metric shows their parsers resting (state, so polled, with a deadline).
        const deadline = Date.now() + 10_000;
        for (;;) {
          const text = await (await fetch(`${t.url}/metrics`)).text();
          const resting = Number(/^presenced_xmpp_parsers_resting (\d+)/m.exec(text)?.[1]);
          if (resting >= 2) break;
          assert.ok(Date.now() < deadline, `parsers resting: ${resting}`);
          await new Promise((r) => setTimeout(r, 20)); // one sweep tick; the metric is state, not an event
        }
        await a.send(xml('message', { to: 'bob@localhost', type: 'chat' }, xml('body', {}, 'after a rest')));
        assert.equal((await b.waitFor(isMessage('after a rest'), 'message after rest')).attrs.from, 'alice@localhost/laptop');
        await b.send(xml('presence', {}, xml('show', {}, 'away'), xml('status', {}, 'rested')));
        await a.presenceFrom('bob@localhost', (s) => s.getChildText('status') === 'rested', 'presence after rest');
      });
    }
  });
}

describe('XMPP: offline messages survive a restart', () => {
  test('stored before stop, delivered after start on the same data directory', async () => {
    let t = await startTestServer(XMPP);
    const dir = t.dataDir;
    try {
      await t.createAccount('alice@localhost');
      await t.createAccount('bob@localhost');
      const a = await XmppTestClient.login(`xmpp://127.0.0.1:${t.server.xmppPort}`, 'alice', 'secret-pw', 'laptop');
      await a.send(xml('message', { to: 'bob@localhost', type: 'chat' }, xml('body', {}, 'across a restart')));
      await a.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
      await a.stop();
      await t.stop();
      t = await startTestServer(XMPP, dir);
      const b = await XmppTestClient.login(`${t.url.replace(/^http/, 'ws')}/xmpp-websocket`, 'bob', 'secret-pw', 'phone');
      await b.send(xml('presence', {}));
      const m = await b.waitFor(isMessage('across a restart'), 'offline message');
      assert.equal(m.attrs.from, 'alice@localhost/laptop');
      await b.stop();
      // Delivered means deleted: a later login gets nothing again.
      const b2 = await XmppTestClient.login(`xmpp://127.0.0.1:${t.server.xmppPort}`, 'bob', 'secret-pw', 'other');
      await b2.send(xml('presence', {}));
      await b2.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
      assert.equal(b2.received.filter((s) => s.is('message')).length, 0);
      await b2.stop();
    } finally {
      await t.destroy();
    }
  });
});

describe('XMPP and native-protocol clients of two contacts see each other', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer(XMPP);
    await t.createAccount('xena@localhost');
    await t.createAccount('nate@localhost');
  });
  after(async () => t.destroy());

  test('presence flows both ways between an XMPP session and a native session', async () => {
    const x = await XmppTestClient.login(`xmpp://127.0.0.1:${t.server.xmppPort}`, 'xena', 'secret-pw', 'desk');
    const { client: n } = await TestClient.login(t.wsUrl, 'nate@localhost', 'secret-pw', { resource: 'app' });
    try {
      await x.send(xml('presence', {}));
      await x.send(xml('presence', { to: 'nate@localhost', type: 'subscribe' }));
      await n.waitFor((p) => p.type === 'subscription' && p.from === 'xena@localhost' && p.kind === 'subscribe', 'request');
      await n.request('approve', { jid: 'xena@localhost' });
      await n.request('subscribe', { jid: 'xena@localhost' });
      await x.waitFor((s) => s.is('presence') && s.attrs.type === 'subscribe' && s.attrs.from === 'nate@localhost', 'request');
      await x.send(xml('presence', { to: 'nate@localhost', type: 'subscribed' }));

      await n.request('presence', { show: 'away', status: 'out' });
      const p = await x.presenceFrom('nate@localhost', (s) => s.getChildText('show') === 'away', 'away');
      assert.equal(p.attrs.from, 'nate@localhost/app');
      assert.equal(p.getChildText('status'), 'out');

      await x.send(xml('presence', {}, xml('show', {}, 'xa'), xml('status', {}, 'gone fishing')));
      const np = await n.presenceOf('xena@localhost', (q) => q.show === 'xa');
      assert.equal(np.status, 'gone fishing');

      await x.stop();
      const off = await n.presenceOf('xena@localhost', (q) => !q.online);
      assert.equal(off.show, 'offline');
    } finally {
      n.ws.close();
    }
  });
});
