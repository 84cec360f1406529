import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { HEADER, RawXmpp } from '../helpers/raw-xmpp.js';
import { XmppTestClient, xml, type Element } from '../helpers/xmpp-client.js';

const SM = 'urn:xmpp:sm:3';

/**
 * Resolves once `cond` holds. For states the server announces to no one (an ended resumption window
 * shows only in storage): polls every 20 ms, and fails after `timeoutMs`.
 */
async function until(cond: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Opens a raw stream, authenticates bob with PLAIN and resumes `id` (acknowledging `h`). */
async function resumeAs(port: number, user: string, id: string, h: number): Promise<RawXmpp> {
  const r = await RawXmpp.open(port);
  r.write(HEADER);
  await r.waitFor(/<\/stream:features>/);
  r.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0secret-pw`).toString('base64')}</auth>`);
  await r.waitFor(/<success/);
  r.text = '';
  r.write(HEADER);
  await r.waitFor(/<\/stream:features>/);
  r.write(`<resume xmlns='${SM}' previd='${id}' h='${h}'/>`);
  await r.waitFor(/<resumed xmlns='urn:xmpp:sm:3'[^>]*\/>/);
  return r;
}

/** Logs in with PLAIN, enables resumable stream management, sends `presence`; resolves with the resumption id. */
async function smLogin(r: RawXmpp, user: string, resource: string, presence: string): Promise<string> {
  await r.loginPlain(user, 'secret-pw', resource);
  r.write(`<enable xmlns='${SM}' resume='true'/>`);
  const id = /id='([^']+)'/.exec(await r.waitFor(/<enabled[^>]*>/))?.[1];
  assert.ok(id);
  r.write(presence);
  await r.waitFor(new RegExp(`<presence[^>]*from='${user}@localhost/${resource}'`));
  return id;
}

const count = (text: string, needle: string): number => text.split(needle).length - 1;

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

  test('a dropped stream is resumed after its session ended: unacknowledged stanzas come again, queued messages follow', async () => {
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
    const closed = sessionClosed('bob@localhost', 'mobile');
    r.close();
    await r.closed;
    // No grace period here: watchers see bob go at once (no ghost for the resumption window)...
    await closed;
    assert.equal((await t.server.engine.presenceOf('bob@localhost')).online, false);
    // ...but the stream stays resumable, and what is sent to it meanwhile is kept.
    await alice.send(xml('message', { to: 'bob@localhost/mobile', type: 'chat' }, xml('body', {}, 'two')));
    await ping();

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
    r.close();
    // The unacknowledged message is stored when the window (3 s here) ends, not when the session does.
    await until(async () => (await t.server.engine.store.getOfflineMessages('bob@localhost', 100)).some((m) => m.xml.includes('<body>three</body>')), 'unacked message stored offline', 10_000);
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

describe('XEP-0198 without ghosts: presence truth and message reliability are separate promises', () => {
  const HEARTBEAT = 200;
  const IDLE = 500;
  const GRACE = 1500;
  let t: TestServer;
  let alice: XmppTestClient;
  const raws: RawXmpp[] = [];
  const port = () => t.server.xmppPort as number;
  const fromBob = (resource: string) => (s: Element) => s.is('presence') && s.attrs.from === `bob@localhost/${resource}`;

  before(async () => {
    t = await startTestServer({
      xmpp_port: 0,
      xmpps_port: -1,
      xmpp_require_tls: false,
      heartbeat_interval_ms: HEARTBEAT,
      idle_timeout_ms: IDLE,
      grace_period_ms: GRACE,
      xmpp_sm_resume_timeout_ms: 60_000,
    });
    await t.createAccount('alice@localhost');
    await t.createAccount('bob@localhost');
    // Mutual contacts, set up through the engine as the protocols do.
    for (const [a, b] of [['alice@localhost', 'bob@localhost'], ['bob@localhost', 'alice@localhost']] as const) {
      await t.server.engine.subscription(a, b, 'subscribe');
      await t.server.engine.subscription(b, a, 'subscribed');
    }
    alice = await XmppTestClient.login(`xmpp://127.0.0.1:${port()}`, 'alice', 'secret-pw', 'desk');
    await alice.send(xml('presence', {}));
  });
  after(async () => {
    for (const r of raws) r.close();
    await alice.stop();
    await t.destroy();
  });

  test('a resumable client frozen past the grace period goes unavailable; its resume brings it back with its status and every message', async () => {
    const r = await RawXmpp.open(port());
    raws.push(r);
    const id = await smLogin(r, 'bob', 'mobile', '<presence><show>away</show><status>on the train</status><priority>5</priority></presence>');
    await alice.waitFor((s) => fromBob('mobile')(s) && s.attrs.type === undefined, 'bob available');
    // From here bob is frozen: the raw client answers nothing (no pings, no acks) and sends nothing.
    const frozenAt = Date.now();
    await alice.send(xml('message', { to: 'bob@localhost/mobile', type: 'chat' }, xml('body', {}, 'm1')));
    const gone = await alice.waitFor((s) => fromBob('mobile')(s) && s.attrs.type === 'unavailable', 'bob unavailable', 10_000);
    assert.ok(gone);
    const elapsed = Date.now() - frozenAt;
    assert.ok(elapsed <= IDLE + GRACE + HEARTBEAT / 2 + 1000, `unavailable after ${elapsed} ms`);
    assert.equal((await t.server.engine.presenceOf('bob@localhost')).online, false);
    // While it is away: to the vanished full JID (RFC 6121 §8.5.3.2.1: treated as the bare JID) and to the bare JID.
    await alice.send(xml('message', { to: 'bob@localhost/mobile', type: 'chat' }, xml('body', {}, 'm2')));
    await alice.send(xml('message', { to: 'bob@localhost', type: 'chat' }, xml('body', {}, 'm3')));
    await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));

    // h=1: the frozen client had handled its presence echo only, not m1.
    const back = alice.waitFor((s) => fromBob('mobile')(s) && s.attrs.type === undefined, 'bob available again');
    const r2 = await resumeAs(port(), 'bob', id, 1);
    raws.push(r2);
    const again = await back;
    assert.equal(again.getChildText('status'), 'on the train');
    assert.equal(again.getChildText('show'), 'away');
    assert.equal(again.getChildText('priority'), '5');
    await r2.waitFor(/<body>m1<\/body>/, 'unacknowledged m1 again');
    await r2.waitFor(/<body>m2<\/body>/, 'stored m2');
    await r2.waitFor(/<body>m3<\/body>/, 'stored m3');
    // The server handles a stream's stanzas in order: once this answer is in, everything due was sent.
    r2.write(`<iq type='get' id='barrier' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await r2.waitFor(/<iq[^>]*id='barrier'/);
    for (const m of ['m1', 'm2', 'm3']) assert.equal(count(r2.text, `<body>${m}</body>`), 1, `${m} delivered once`);
    // The resumed client also learns its contacts' current presence, as after a fresh login.
    assert.match(r2.text, /<presence[^>]*from='alice@localhost\/desk'/);
    assert.equal((await t.server.engine.presenceOf('bob@localhost')).status, 'on the train');
    const left = alice.waitFor((s) => fromBob('mobile')(s) && s.attrs.type === 'unavailable', 'bob leaves');
    r2.write(`<a xmlns='${SM}' h='100'/></stream:stream>`);
    await left;
  });

  test('a resume inside the grace period shows watchers nothing', async () => {
    const r = await RawXmpp.open(port());
    raws.push(r);
    const id = await smLogin(r, 'bob', 'tablet', '<presence><status>at my desk</status></presence>');
    await alice.waitFor((s) => fromBob('tablet')(s) && s.attrs.type === undefined, 'bob/tablet available');
    const before = alice.received.length;
    r.close(); // the network drops: the server notices at once, and the grace period starts
    await r.closed;
    const r2 = await resumeAs(port(), 'bob', id, 1);
    raws.push(r2);
    // Proving an absence needs a bounded wait: past the grace period (plus a margin), alice must still
    // have received no presence at all from bob/tablet.
    await new Promise((resolve) => setTimeout(resolve, GRACE + 500));
    const seen = alice.received.slice(before).filter(fromBob('tablet'));
    assert.deepEqual(seen.map((s) => s.toString()), []);
    assert.equal((await t.server.engine.presenceOf('bob@localhost')).online, true);
    const left = alice.waitFor((s) => fromBob('tablet')(s) && s.attrs.type === 'unavailable', 'bob/tablet leaves');
    r2.write(`<a xmlns='${SM}' h='100'/></stream:stream>`);
    await left;
  });
});

describe('XEP-0198 unacknowledged queue bound (adversarial finding 10)', () => {
  const MAX_UNACKED = 50;
  const MAX_OFFLINE = 20;
  const SENT = 100;
  let t: TestServer;
  const raws: RawXmpp[] = [];

  before(async () => {
    t = await startTestServer({ xmpp_port: 0, xmpps_port: -1, xmpp_require_tls: false, xmpp_sm_max_unacked: MAX_UNACKED, xmpp_max_offline_messages: MAX_OFFLINE, xmpp_sm_resume_timeout_ms: 60_000 });
    await t.createAccount('alice@localhost');
    await t.createAccount('greedy@localhost');
    // alice may see greedy: only such a sender is told that storage is full (anyone else learns nothing).
    await t.server.engine.subscription('alice@localhost', 'greedy@localhost', 'subscribe');
    await t.server.engine.subscription('greedy@localhost', 'alice@localhost', 'subscribed');
  });
  after(async () => {
    for (const r of raws) r.close();
    await t.destroy();
  });

  test('a client that never acknowledges has its stream ended at the bound; offline storage stays within its limit; the rest bounce to a sender who may see the account', async () => {
    const r = await RawXmpp.open(t.server.xmppPort as number);
    raws.push(r);
    await smLogin(r, 'greedy', 'hoarder', '<presence/>');
    // The sender has no stream management, so the bounces cannot overflow its own queue.
    const alice = await RawXmpp.open(t.server.xmppPort as number);
    raws.push(alice);
    await alice.loginPlain('alice', 'secret-pw', 'desk');
    let burst = '';
    for (let i = 0; i < SENT; i++) burst += `<message to='greedy@localhost/hoarder' type='chat' id='g${i}'><body>n${i}</body></message>`;
    alice.write(burst);
    await r.streamError('resource-constraint');
    // What the server held for the client never exceeded the bound (plus the stanza that crossed it).
    assert.ok(count(r.text, '<message') <= MAX_UNACKED + 1, `${count(r.text, '<message')} messages written to a client that never acked`);
    // Every message is either stored offline or bounced to its sender: nothing is lost silently.
    const stored = () => t.server.engine.store.countOfflineMessages('greedy@localhost');
    await until(async () => count(alice.text, '<service-unavailable') + (await stored()) >= SENT, 'every message stored or bounced', 20_000);
    assert.equal(count(alice.text, "type='error'"), SENT - MAX_OFFLINE);
    assert.equal(await t.server.engine.store.countOfflineMessages('greedy@localhost'), MAX_OFFLINE);
  });
});
