import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { describe, test } from 'node:test';
import { startTestServer } from '../helpers/server.js';
import { HEADER, RawXmpp } from '../helpers/raw-xmpp.js';
import { XmppTestClient } from '../helpers/xmpp-client.js';

const plainAuth = (user: string, pw: string) =>
  `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${pw}`).toString('base64')}</auth>`;

describe('XMPP TLS: STARTTLS required, direct TLS, the generated certificate, registration', () => {
  test('plaintext streams are offered STARTTLS only and refused SASL; direct TLS offers PLAIN and logs in', async () => {
    const t = await startTestServer({ xmpp_port: 0, xmpps_port: 0 });
    try {
      await t.createAccount('alice@localhost');
      const r = await RawXmpp.open(t.server.xmppPort as number);
      r.write(HEADER);
      const features = await r.waitFor(/<stream:features.*<\/stream:features>/s);
      assert.match(features, /<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required\/><\/starttls>/);
      assert.doesNotMatch(features, /mechanism/);
      r.write(plainAuth('alice', 'secret-pw'));
      await r.waitFor(/<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><encryption-required\/>/);
      r.close();

      const socket = tlsConnect({ port: t.server.xmppsPort as number, host: '127.0.0.1', servername: 'localhost', rejectUnauthorized: false });
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', resolve);
        socket.once('error', reject);
      });
      const tls = new RawXmpp(socket);
      tls.write(HEADER);
      const secureFeatures = await tls.waitFor(/<stream:features.*<\/stream:features>/s);
      assert.match(secureFeatures, /<mechanism>PLAIN<\/mechanism>/);
      assert.match(secureFeatures, /<mechanism>SCRAM-SHA-256<\/mechanism>/);
      assert.doesNotMatch(secureFeatures, /starttls/);
      tls.write(plainAuth('alice', 'secret-pw'));
      await tls.waitFor(/<success/);
      tls.close();
    } finally {
      await t.destroy();
    }
  });

  test('the self-signed certificate is generated once and reused after a restart', async () => {
    let t = await startTestServer({ xmpp_port: 0, xmpps_port: -1 });
    const dir = t.dataDir;
    try {
      const cert = readFileSync(join(dir, 'tls', 'self-signed.crt'), 'utf8');
      assert.match(cert, /BEGIN CERTIFICATE/);
      await t.stop();
      t = await startTestServer({ xmpp_port: 0, xmpps_port: -1 }, dir);
      assert.equal(readFileSync(join(dir, 'tls', 'self-signed.crt'), 'utf8'), cert);
    } finally {
      await t.destroy();
    }
  });

  test('XEP-0077: open registration creates an account that can then log in; closed refuses', async () => {
    const t = await startTestServer({ xmpp_port: 0, xmpps_port: -1, xmpp_require_tls: false, xmpp_registration: 'open' });
    try {
      const r = await RawXmpp.open(t.server.xmppPort as number);
      r.write(HEADER);
      assert.match(await r.waitFor(/<stream:features.*<\/stream:features>/s), /<register xmlns='http:\/\/jabber.org\/features\/iq-register'\/>/);
      r.write("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>");
      await r.waitFor(/<iq[^>]*type='result'[^>]*id='r1'[^>]*>.*<password/s);
      r.write("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>newbie</username><password>n3w-pass</password></query></iq>");
      await r.waitFor(/<iq[^>]*type='result'[^>]*id='r2'/);
      r.write("<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>newbie</username><password>other</password></query></iq>");
      await r.waitFor(/<iq[^>]*type='error'[^>]*id='r3'.*<conflict/s);
      r.close();
      const c = await XmppTestClient.login(`xmpp://127.0.0.1:${t.server.xmppPort}`, 'newbie', 'n3w-pass', 'first');
      assert.equal(c.jid, 'newbie@localhost/first');
      await c.stop();
    } finally {
      await t.destroy();
    }
    const closed = await startTestServer({ xmpp_port: 0, xmpps_port: -1, xmpp_require_tls: false });
    try {
      const r = await RawXmpp.open(closed.server.xmppPort as number);
      r.write(HEADER);
      assert.doesNotMatch(await r.waitFor(/<stream:features.*<\/stream:features>/s), /iq-register/);
      r.write("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>x</username><password>y</password></query></iq>");
      await r.waitFor(/<iq[^>]*type='error'[^>]*id='r1'.*<service-unavailable/s);
      r.close();
    } finally {
      await closed.destroy();
    }
  });
});
