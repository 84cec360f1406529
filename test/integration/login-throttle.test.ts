import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { HEADER, RawXmpp } from '../helpers/raw-xmpp.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from '../helpers/server.js';
import { RequestFailed, TestClient } from '../helpers/ws-client.js';

/**
 * Finding 13 of issue 10: failed logins are throttled per account and per source address on every
 * front door, with a clear error and a metric, and the real user is not locked out. Each scenario
 * uses its own loopback addresses (127.0.0.0/8 is all local), so they do not share counts.
 */

const SASL = "xmlns='urn:ietf:params:xml:ns:xmpp-sasl'";
const plain = (user: string, pw: string): string => Buffer.from(`\0${user}\0${pw}`).toString('base64');
const basic = (jid: string, pw: string): string => `Basic ${Buffer.from(`${jid}:${pw}`).toString('base64')}`;

interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** An HTTP request from a chosen local address (fetch cannot choose it). */
function http(url: string, method: string, headers: Record<string, string>, localAddress: string, body?: string): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, localAddress, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('login throttling on every front door (issue 10, finding 13)', () => {
  let t: TestServer;
  let xmppPort: number;

  before(async () => {
    t = await startTestServer({
      xmpp_port: 0,
      xmpp_require_tls: false,
      max_auth_failures: 3,
      login_throttle_account_free: 3,
      login_throttle_address_free: 5,
      // Long enough that no wait runs out during the test: what is refused stays refused.
      login_throttle_max_delay_ms: 600_000,
    });
    xmppPort = t.server.xmppPort as number;
    for (const u of ['xvictim', 'nvictim', 'hvictim', 'tvictim']) await t.createAccount(`${u}@localhost`, 'right-pw');
  });
  after(async () => {
    await t.destroy();
  });

  async function xmppFrom(localAddress: string): Promise<RawXmpp> {
    const socket = connect({ port: xmppPort, host: '127.0.0.1', localAddress });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const r = new RawXmpp(socket);
    r.write(HEADER);
    await r.waitFor(/<\/stream:features>/);
    return r;
  }

  /** One SASL PLAIN attempt on a fresh stream; returns the failure or success element. */
  async function saslPlain(localAddress: string, user: string, pw: string): Promise<string> {
    const r = await xmppFrom(localAddress);
    r.write(`<auth ${SASL} mechanism='PLAIN'>${plain(user, pw)}</auth>`);
    const answer = await r.waitFor(/<success[^>]*\/>|<success[^>]*>.*?<\/success>|<failure[^>]*>.*?<\/failure>/s);
    r.close();
    return answer;
  }

  async function metric(door: string): Promise<number> {
    const text = await (await fetch(`${t.url}/metrics`)).text();
    const m = new RegExp(`^presenced_login_throttled_total\\{door="${door}"\\} (\\d+)`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  }

  test('XMPP SASL: a guessing address gets temporary-auth-failure, even with the right password; a clean address logs in', async () => {
    const attacker = '127.0.0.10';
    // Many wrong passwords over many connections from one address, as in the finding.
    const answers: string[] = [];
    for (let c = 0; c < 10; c++) {
      const r = await xmppFrom(attacker);
      for (let i = 0; i < 3; i++) {
        r.text = '';
        r.write(`<auth ${SASL} mechanism='PLAIN'>${plain('xvictim', `guess-${c}-${i}`)}</auth>`);
        const m = await r.waitFor(/<failure[^>]*>(.*?)<\/failure>/s, 'a SASL failure');
        answers.push(/<failure[^>]*>(.*?)<\/failure>/s.exec(m)?.[1] ?? m);
      }
      await r.streamError('policy-violation');
    }
    assert.ok(answers.slice(0, 3).every((a) => a.startsWith('<not-authorized/>')), answers.slice(0, 3).join(' | '));
    const refused = answers.filter((a) => a.startsWith('<temporary-auth-failure/>'));
    assert.ok(refused.length >= 20, `most guesses are refused, not checked: ${answers.join(' | ')}`);
    assert.match(refused[0] as string, /<text>too many failed logins; try again in \d+ s<\/text>/);

    // The right password from the guessing address is refused too...
    assert.match(await saslPlain(attacker, 'xvictim', 'right-pw'), /<temporary-auth-failure\/>/);
    // ...and so is SCRAM, refused before any exchange.
    const r = await xmppFrom(attacker);
    r.write(`<auth ${SASL} mechanism='SCRAM-SHA-1'>${Buffer.from('n,,n=xvictim,r=abcdefgh').toString('base64')}</auth>`);
    await r.waitFor(/<failure[^>]*><temporary-auth-failure\/>/);
    r.close();

    // The real user, from an address that never failed, is let in: slow down, do not lock.
    assert.match(await saslPlain('127.0.0.11', 'xvictim', 'right-pw'), /<success/);
    assert.ok((await metric('xmpp')) >= 20);
  });

  test("XMPP SASL: an address that failed on a throttled account waits for the account's delay (SCRAM too)", async () => {
    // Four addresses fail once each: the account is over its 3 free failures, no address is over its 5.
    for (let i = 0; i < 4; i++) assert.match(await saslPlain(`127.0.1.${i + 1}`, 'xvictim', 'wrong'), /<not-authorized\/>/);
    assert.match(await saslPlain('127.0.1.1', 'xvictim', 'right-pw'), /<temporary-auth-failure\/>/);
    const r = await xmppFrom('127.0.1.2');
    r.write(`<auth ${SASL} mechanism='SCRAM-SHA-256'>${Buffer.from('n,,n=xvictim,r=abcdefgh').toString('base64')}</auth>`);
    await r.waitFor(/<failure[^>]*><temporary-auth-failure\/><text>too many failed logins/);
    r.close();
    // Another account from the same addresses is not held back by xvictim's count.
    await t.createAccount('bystander@localhost', 'right-pw');
    assert.match(await saslPlain('127.0.1.1', 'bystander', 'right-pw'), /<success/);
  });

  test('native auth: rate-limited after repeated failures from one address; a clean address passes', async () => {
    const attacker = '127.0.2.1';
    const codes: string[] = [];
    for (let c = 0; c < 4; c++) {
      const client = await TestClient.connect(t.wsUrl, { localAddress: attacker });
      for (let i = 0; i < 3; i++) {
        try {
          await client.request('auth', { jid: 'nvictim@localhost', password: `guess-${c}-${i}` });
          codes.push('ok');
        } catch (e) {
          codes.push(e instanceof RequestFailed ? e.error.code : String(e));
        }
      }
      await client.closed;
    }
    assert.deepEqual(codes.slice(0, 3), ['auth-failed', 'auth-failed', 'auth-failed']);
    assert.ok(codes.filter((c) => c === 'rate-limited').length >= 6, codes.join(','));

    const again = await TestClient.connect(t.wsUrl, { localAddress: attacker });
    const err = await again.request('auth', { jid: 'nvictim@localhost', password: 'right-pw' }).catch((e: unknown) => e);
    assert.ok(err instanceof RequestFailed, 'the right password from the guessing address is refused');
    assert.equal(err.error.code, 'rate-limited');
    assert.match(err.error.message, /too many failed logins; try again in \d+ s/);
    await again.close();

    const real = await TestClient.connect(t.wsUrl, { localAddress: '127.0.2.2' });
    const ok = await real.request('auth', { jid: 'nvictim@localhost', password: 'right-pw' });
    assert.equal(ok.jid, 'nvictim@localhost');
    await real.close();
    assert.ok((await metric('native')) >= 6);
  });

  test('HTTP Basic on the presence endpoints: 429 with Retry-After and a JSON error', async () => {
    const attacker = '127.0.3.1';
    const url = `${t.url}/plugins/presence/status?jid=hvictim@localhost&type=text`;
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await http(url, 'GET', { authorization: basic('hvictim@localhost', `guess${i}`) }, attacker)).status);
    assert.deepEqual(statuses.slice(0, 3), [401, 401, 401]);
    assert.ok(statuses.includes(429), statuses.join(','));
    const refused = await http(url, 'GET', { authorization: basic('hvictim@localhost', 'right-pw') }, attacker);
    assert.equal(refused.status, 429);
    assert.match(String(refused.headers['retry-after']), /^\d+$/);
    assert.ok(Number(refused.headers['retry-after']) >= 1);
    const body = JSON.parse(refused.body);
    assert.equal(body.error.code, 'rate-limited');
    assert.match(body.error.message, /too many failed logins/);
    const api = await http(`${t.url}/api/v1/presence/hvictim@localhost`, 'GET', { authorization: basic('hvictim@localhost', 'right-pw') }, attacker);
    assert.equal(api.status, 429, 'the JSON API is the same door');

    const real = await http(url, 'GET', { authorization: basic('hvictim@localhost', 'right-pw') }, '127.0.3.2');
    assert.equal(real.status, 200);
    assert.ok((await metric('http')) >= 2);
  });

  test('token issuance (POST /api/v1/presence/token) and the admin token are throttled too', async () => {
    const attacker = '127.0.4.1';
    const mint = (pw: string, from: string) => http(`${t.url}/api/v1/presence/token`, 'POST', { authorization: basic('tvictim@localhost', pw) }, from);
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await mint(`guess${i}`, attacker)).status);
    assert.deepEqual(statuses.slice(0, 3), [401, 401, 401]);
    const refused = await mint('right-pw', attacker);
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers['retry-after']) >= 1);
    assert.equal(JSON.parse(refused.body).error.code, 'rate-limited');
    assert.equal((await mint('right-pw', '127.0.4.2')).status, 201);

    // Bad login tokens count against the address as well.
    const badTokens: number[] = [];
    for (let i = 0; i < 8; i++) {
      badTokens.push((await http(`${t.url}/api/v1/presence/token`, 'POST', { authorization: 'Bearer pd1.garbage.x' }, '127.0.4.3')).status);
    }
    assert.ok(badTokens.includes(429), badTokens.join(','));

    // Guessing the admin token: 429 after the address's free failures, while the right one still works elsewhere.
    const adminStatuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      adminStatuses.push((await http(`${t.url}/api/v1/accounts`, 'GET', { authorization: `Bearer guess-${i}` }, '127.0.4.4')).status);
    }
    assert.deepEqual(adminStatuses.slice(0, 5), [401, 401, 401, 401, 401]);
    assert.equal(adminStatuses.at(-1), 429);
    const adminRefused = await http(`${t.url}/api/v1/accounts`, 'GET', { authorization: `Bearer ${ADMIN_TOKEN}` }, '127.0.4.4');
    assert.equal(adminRefused.status, 429);
    assert.ok(Number(adminRefused.headers['retry-after']) >= 1);
    assert.equal((await http(`${t.url}/api/v1/accounts`, 'GET', { authorization: `Bearer ${ADMIN_TOKEN}` }, '127.0.4.5')).status, 200);
  });
});

describe('login throttling behind a reverse proxy (http_trust_proxy)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ http_trust_proxy: true, login_throttle_account_free: 100, login_throttle_address_free: 3, login_throttle_max_delay_ms: 600_000 });
    await t.createAccount('proxied@localhost', 'right-pw');
  });
  after(async () => {
    await t.destroy();
  });

  test('clients are counted by the address the proxy added, whatever they put in front of it', async () => {
    const url = `${t.url}/api/v1/presence/proxied@localhost`;
    const via = (client: string, pw: string, forged = '203.0.113.9') =>
      http(url, 'GET', { authorization: basic('proxied@localhost', pw), 'x-forwarded-for': `${forged}, ${client}` }, '127.0.0.1');
    const statuses: number[] = [];
    // The guesser changes the entry it controls every time; the proxy's entry stays its real address.
    for (let i = 0; i < 6; i++) statuses.push((await via('198.51.100.7', `guess${i}`, `203.0.113.${i}`)).status);
    assert.deepEqual(statuses.slice(0, 4), [401, 401, 401, 401]);
    assert.equal(statuses.at(-1), 429);
    assert.equal((await via('198.51.100.7', 'right-pw')).status, 429);
    // Another client behind the same proxy is not held back.
    assert.equal((await via('198.51.100.8', 'right-pw')).status, 200);
  });
});
