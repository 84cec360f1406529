import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { HEADER, RawXmpp } from '../helpers/raw-xmpp.js';
import { XmppTestClient, xml } from '../helpers/xmpp-client.js';

describe('bad input on the XMPP streams', () => {
  let t: TestServer;
  let port: number;
  let witness: XmppTestClient;
  const raws: RawXmpp[] = [];
  const open = async () => {
    const r = await RawXmpp.open(port);
    raws.push(r);
    return r;
  };
  /** The other session, connected since before the bad input, still gets answers. */
  const stillServing = async () => {
    const pong = await witness.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    assert.equal(pong.attrs.type, 'result');
  };

  before(async () => {
    t = await startTestServer({
      xmpp_port: 0,
      xmpps_port: 0,
      xmpp_require_tls: false,
      xmpp_stanza_timeout_ms: 500,
      // Short, for the slow-loris test, yet long enough for the witness's own login on a loaded machine
      // (under TEST_CLUSTER each chunk it sends first waits for the cluster to settle).
      xmpp_negotiation_timeout_ms: 10_000,
      max_auth_failures: 2,
    });
    port = t.server.xmppPort as number;
    await t.createAccount('alice@localhost');
    await t.createAccount('witness@localhost');
    witness = await XmppTestClient.login(`xmpp://127.0.0.1:${port}`, 'witness', 'secret-pw', 'w');
  });
  after(async () => {
    for (const r of raws) r.close();
    // Whatever before() got to: a server left running (TEST_CLUSTER: three nodes) keeps the file from ending.
    await witness?.stop();
    await t?.destroy();
  });

  test('malformed XML ends the stream with not-well-formed', async () => {
    const r = await open();
    r.write(HEADER);
    await r.waitFor(/<\/stream:features>/);
    r.write('<message><body>unclosed</message>');
    await r.streamError('not-well-formed');
    await stillServing();
  });

  test('a DTD with an entity declaration (billion laughs) gets restricted-xml', async () => {
    const r = await open();
    r.write(`<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>`);
    await r.streamError('restricted-xml');
    const r2 = await open();
    r2.write(HEADER);
    await r2.waitFor(/<\/stream:features>/);
    r2.write('<message><body>&lol2;</body></message>');
    await r2.streamError('not-well-formed');
    await stillServing();
  });

  test('a 10 MB stanza ends the stream with policy-violation before it is read whole', async () => {
    const r = await open();
    r.write(HEADER);
    await r.waitFor(/<\/stream:features>/);
    r.write("<message to='alice@localhost'><body>");
    const chunk = 'a'.repeat(64 * 1024);
    for (let i = 0; i < 160 && !r.socket.destroyed; i++) r.write(chunk);
    await r.streamError('policy-violation');
    await stillServing();
  });

  test('a stanza before authentication gets not-authorized', async () => {
    const r = await open();
    r.write(HEADER);
    await r.waitFor(/<\/stream:features>/);
    r.write("<message to='witness@localhost'><body>sneaky</body></message>");
    await r.streamError('not-authorized');
    assert.equal(witness.received.filter((s) => s.is('message')).length, 0);
    await stillServing();
  });

  test('a wrong password gets a SASL not-authorized failure, and too many close the stream', async () => {
    const r = await open();
    r.write(HEADER);
    await r.waitFor(/<\/stream:features>/);
    const bad = Buffer.from('\0alice\0wrong').toString('base64');
    r.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${bad}</auth>`);
    await r.waitFor(/<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized\/>/);
    r.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${bad}</auth>`);
    await r.streamError('policy-violation');
    const r2 = await open();
    r2.write(HEADER);
    await r2.waitFor(/<\/stream:features>/);
    r2.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>`);
    await r2.waitFor(/<invalid-mechanism\/>/);
    r2.close();
    await stillServing();
  });

  test('unknown namespaces: an iq payload gets service-unavailable, a top-level element unsupported-stanza-type', async () => {
    const r = await open();
    await r.loginPlain('alice', 'secret-pw', 'raw');
    r.write("<iq type='get' id='q1'><query xmlns='urn:example:nothing'/></iq>");
    await r.waitFor(/<iq[^>]*type='error'[^>]*id='q1'[^>]*>.*<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'\/>/s);
    r.write("<iq type='get' id='q2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    await r.waitFor(/<iq[^>]*type='result'[^>]*id='q2'/);
    r.write("<foo xmlns='urn:example:nothing'/>");
    await r.streamError('unsupported-stanza-type');
    await stillServing();
  });

  test('a wrong host, a wrong stream namespace', async () => {
    const r = await open();
    r.write("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.example' version='1.0'>");
    await r.streamError('host-unknown');
    const r2 = await open();
    r2.write("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>");
    await r2.streamError('invalid-namespace');
    await stillServing();
  });

  test('slow loris: a header never completed, and a trickled stanza, end with connection-timeout', async () => {
    const r = await open();
    r.write("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'");
    const r2 = await open();
    r2.write(HEADER);
    await r2.waitFor(/<\/stream:features>/);
    r2.write("<message to='witness@localhost'><body>");
    // Bytes keep coming, so the connection is never idle; the stanza just never ends.
    const trickle = setInterval(() => r2.write('a'), 50);
    try {
      await Promise.all([r.streamError('connection-timeout'), r2.streamError('connection-timeout')]);
    } finally {
      clearInterval(trickle);
    }
    await stillServing();
  });
});
