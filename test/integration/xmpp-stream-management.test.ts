import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { HEADER, RawXmpp } from '../helpers/raw-xmpp.js';
import { XmppTestClient, xml } from '../helpers/xmpp-client.js';

const SM = 'urn:xmpp:sm:3';

describe('XEP-0198 stream management', () => {
  let t: TestServer;
  let alice: XmppTestClient;
  const raws: RawXmpp[] = [];
  const open = async () => {
    const r = await RawXmpp.open(t.server.xmppPort as number);
    raws.push(r);
    return r;
  };
  const ping = () => alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  /** Resolves when the engine ends the session `resource` of `jid`. */
  const sessionClosed = (jid: string, resource: string) =>
    new Promise<void>((resolve) => t.server.engine.events.on('session.closed', (e) => e.jid === jid && e.session.resource === resource && resolve()));

  before(async () => {
    // No grace period: without stream management a dropped session would end at once.
    t = await startTestServer({ xmpp_port: 0, xmpps_port: 0, xmpp_require_tls: false, grace_period_ms: 0, xmpp_sm_resume_timeout_ms: 3000 });
    await t.createAccount('alice@localhost');
    await t.createAccount('bob@localhost');
    alice = await XmppTestClient.login(`xmpp://127.0.0.1:${t.server.xmppPort}`, 'alice', 'secret-pw', 'desk');
  });
  after(async () => {
    for (const r of raws) r.close();
    await alice.stop();
    await t.destroy();
  });

  test('a dropped stream is resumed: the session stayed online, unacknowledged stanzas come again, queued messages follow', async () => {
    const r = await open();
    await r.loginPlain('bob', 'secret-pw', 'mobile');
    r.write(`<enable xmlns='${SM}' resume='true'/>`);
    const id = /<enabled xmlns='urn:xmpp:sm:3' id='([^']+)' resume='true'/.exec(await r.waitFor(/<enabled[^>]*>/))?.[0].match(/id='([^']+)'/)?.[1];
    assert.ok(id);
    r.write('<presence/>');
    await r.waitFor(/<presence[^>]*from='bob@localhost\/mobile'/);
    await alice.send(xml('message', { to: 'bob@localhost/mobile', type: 'chat' }, xml('body', {}, 'one')));
    await r.waitFor(/<body>one<\/body>/);
    // The server asks for an ack; we never give it, and the network "drops".
    await r.waitFor(/<r xmlns='urn:xmpp:sm:3'\/>/);
    r.close();
    await r.closed;
    await alice.send(xml('message', { to: 'bob@localhost/mobile', type: 'chat' }, xml('body', {}, 'two')));
    await ping();
    assert.ok(t.server.engine.localSessionsOf('bob@localhost').some((s) => s.resource === 'mobile'), 'session kept for resumption');
    assert.equal((await t.server.engine.presenceOf('bob@localhost')).online, true);

    const r2 = await open();
    r2.write(HEADER);
    await r2.waitFor(/<\/stream:features>/);
    r2.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from('\0bob\0secret-pw').toString('base64')}</auth>`);
    await r2.waitFor(/<success/);
    r2.text = '';
    r2.write(HEADER);
    const features = await r2.waitFor(/<stream:features.*<\/stream:features>/s);
    assert.match(features, /<sm xmlns='urn:xmpp:sm:3'\/>/);
    // h=1 would acknowledge the presence echo only; h=0 asks for everything again.
    r2.write(`<resume xmlns='${SM}' previd='${id}' h='1'/>`);
    await r2.waitFor(/<resumed xmlns='urn:xmpp:sm:3' previd='[^']+' h='1'\/>/);
    await r2.waitFor(/<body>one<\/body>/, 'unacked message again');
    const two = await r2.waitFor(/<message[^>]*>(?:(?!<\/message>).)*<body>two<\/body>(?:(?!<\/message>).)*<\/message>/s, 'queued message');
    assert.match(two, /<delay xmlns='urn:xmpp:delay'/);
    r2.write(`<r xmlns='${SM}'/>`);
    await r2.waitFor(/<a xmlns='urn:xmpp:sm:3' h='1'\/>/);
    r2.write(`<a xmlns='${SM}' h='10'/>`);
    r2.write(`</stream:stream>`);
    await r2.closed;
  });

  test('a resumption id from someone else, or unknown, fails with item-not-found', async () => {
    const r = await open();
    await r.loginPlain('bob', 'secret-pw', 'x');
    r.text = '';
    r.write(`<resume xmlns='${SM}' previd='nonsense' h='0'/>`);
    await r.waitFor(/<failed xmlns='urn:xmpp:sm:3'><item-not-found/);
    r.close();
  });

  test('when the resumption window ends, the session goes offline and unacknowledged messages are stored offline', async () => {
    const r = await open();
    await r.loginPlain('bob', 'secret-pw', 'tablet');
    r.write(`<enable xmlns='${SM}' resume='true'/>`);
    await r.waitFor(/<enabled[^>]*>/);
    r.write('<presence/>');
    await r.waitFor(/<presence[^>]*from='bob@localhost\/tablet'/);
    await alice.send(xml('message', { to: 'bob@localhost/tablet', type: 'chat' }, xml('body', {}, 'three')));
    await r.waitFor(/<body>three<\/body>/);
    const closed = sessionClosed('bob@localhost', 'tablet');
    r.close();
    await closed;
    const b = await XmppTestClient.login(`xmpp://127.0.0.1:${t.server.xmppPort}`, 'bob', 'secret-pw', 'laptop');
    try {
      await b.send(xml('presence', {}));
      const m = await b.waitFor((s) => s.is('message') && s.getChildText('body') === 'three', 'stored unacked message');
      assert.ok(m.getChild('delay', 'urn:xmpp:delay'));
    } finally {
      await b.stop();
    }
  });
});
