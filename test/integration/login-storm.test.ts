import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Session } from '../../src/engine/engine.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { HEADER, RawXmpp } from '../helpers/raw-xmpp.js';
import { TestClient } from '../helpers/ws-client.js';

// Issue 15: sessions that log in during a login storm are not timed out by the idle sweep before it
// pinged them and gave them time to answer. The sweep runs on its own timer, but reads a clock the test
// moves forward: a jump of the clock is what a server whose event loop was busy with a storm for that
// long sees when its sweep finally runs.
const HEARTBEAT = 1_000;
const IDLE = 3_000;
/** Logins queue behind each other in a password pool of one: each PLAIN check is one PBKDF2 of this many. */
const ITERATIONS = 60_000;
const XMPP_CLIENTS = 20;
const NATIVE_CLIENTS = 20;
const PASSWORD = 'storm-pw';

let offset = 0;
const clock = (): number => Date.now() + offset;

/** Polls a condition of the server's state (there is no event for it) until it holds or the deadline passes. */
async function until(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An XMPP client that logs in with PLAIN and answers the server's XEP-0199 pings (unless told not to). */
class PingingXmpp {
  pings = 0;
  answering = true;
  private scanned = 0;
  private pingWaiters: Array<{ n: number; resolve: () => void }> = [];
  bound!: Promise<void>;

  constructor(
    readonly raw: RawXmpp,
    readonly user: string,
  ) {
    raw.socket.on('data', () => this.scan());
  }

  static start(port: number, user: string): PingingXmpp {
    const c = new PingingXmpp(new RawXmpp(connect(port, '127.0.0.1')), user);
    c.bound = c.raw.loginPlain(user, PASSWORD, 'storm');
    return c;
  }

  private scan(): void {
    const re = /<iq[^>]*id=['"](ping-[^'"]+)['"][^>]*><ping xmlns=['"]urn:xmpp:ping['"]/g;
    re.lastIndex = this.scanned;
    for (let m = re.exec(this.raw.text); m; m = re.exec(this.raw.text)) {
      this.scanned = re.lastIndex;
      this.pings++;
      if (this.answering) this.raw.write(`<iq type='result' id='${m[1]}' to='localhost'/>`);
    }
    for (const w of this.pingWaiters.filter((x) => this.pings >= x.n)) w.resolve();
    this.pingWaiters = this.pingWaiters.filter((x) => this.pings < x.n);
  }

  /** Resolves once `n` pings have arrived; rejects if the connection closes first. */
  pinged(n: number): Promise<void> {
    if (this.pings >= n) return Promise.resolve();
    return Promise.race([
      new Promise<void>((resolve) => this.pingWaiters.push({ n, resolve })),
      this.raw.closed.then(() => {
        throw new Error(`${this.user}: connection closed after ${this.pings} pings`);
      }),
    ]);
  }
}

/** A native client; the ws library answers WebSocket pings by itself, as browsers do. */
class PingingNative {
  pings = 0;
  closed = false;
  private waiters: Array<{ n: number; resolve: () => void }> = [];
  bound!: Promise<unknown>;

  constructor(
    readonly client: TestClient,
    readonly jid: string,
  ) {
    client.ws.on('ping', () => {
      this.pings++;
      for (const w of this.waiters.filter((x) => this.pings >= x.n)) w.resolve();
      this.waiters = this.waiters.filter((x) => this.pings < x.n);
    });
    void client.closed.then(() => (this.closed = true));
  }

  pinged(n: number): Promise<void> {
    if (this.pings >= n) return Promise.resolve();
    return Promise.race([
      new Promise<void>((resolve) => this.waiters.push({ n, resolve })),
      this.client.closed.then(() => {
        throw new Error(`${this.jid}: connection closed after ${this.pings} pings`);
      }),
    ]);
  }
}

describe('login storm: the idle sweep waits for its ping to be answered (issue 15)', () => {
  let t: TestServer;
  const timeouts: string[] = [];

  before(async () => {
    t = await startTestServer(
      {
        xmpp_port: 0,
        xmpp_require_tls: false,
        heartbeat_interval_ms: HEARTBEAT,
        idle_timeout_ms: IDLE,
        grace_period_ms: 0,
        password_pool_size: 1,
        password_cache_size: 0,
        scram_iterations: ITERATIONS,
        scrypt_cost: 10,
        login_throttle_max_delay_ms: 0,
      },
      undefined,
      { livenessClock: clock },
    );
    // One derivation for all the accounts; each login still costs its own PBKDF2 (the cache is off).
    const creds = await t.server.engine.passwords.derive(PASSWORD, { key: 'setup' });
    const users = [...Array.from({ length: XMPP_CLIENTS }, (_, i) => `x${i}`), ...Array.from({ length: NATIVE_CLIENTS }, (_, i) => `n${i}`), 'silent', 'late'];
    for (const u of users) await t.server.engine.store.createAccount({ jid: `${u}@localhost`, ...creds, createdAt: Date.now() });
    t.server.engine.events.on('session.closed', (e) => {
      if (e.reason === 'timeout') timeouts.push(`${e.jid}/${e.session.resource}`);
    });
  });
  after(async () => t.destroy());

  const sinkOf = (jid: string): { pingSentAt: number | null } | undefined =>
    (t.server.engine.localSessionsOf(jid)[0] as Session | undefined)?.sink as unknown as { pingSentAt: number | null } | undefined;

  test('clients bound while the storm still queues logins, then a sweep late by more than the idle timeout: all are pinged, answer, and stay', async () => {
    const port = t.server.xmppPort as number;
    const xmpp = Array.from({ length: XMPP_CLIENTS }, (_, i) => PingingXmpp.start(port, `x${i}`));
    const native = await Promise.all(
      Array.from({ length: NATIVE_CLIENTS }, async (_, i) => {
        const c = new PingingNative(await TestClient.connect(t.wsUrl), `n${i}@localhost`);
        c.bound = c.client.request('auth', { jid: c.jid, password: PASSWORD, resource: 'storm' });
        return c;
      }),
    );
    const pool = t.server.engine.passwords.pool;

    // The storm is under way: some sessions are bound, most logins still wait for their password check.
    await Promise.race([...xmpp.map((c) => c.bound), ...native.map((c) => c.bound)]);
    assert.ok(pool.queued > 0, 'logins still queued when the first session was bound');
    // The server's loop "stalls" for longer than the idle timeout: its next sweep finds the bound
    // sessions silent for more than idle_timeout_ms, and the queued logins far past the auth timeout.
    offset += IDLE + 500;

    await Promise.all([...xmpp.map((c) => c.bound), ...native.map((c) => c.bound)]);
    // Every session is pinged (those bound before the jump at once, the later ones once a heartbeat has
    // passed since they were bound), answers, and is still there.
    offset += HEARTBEAT;
    await Promise.all([...xmpp.map((c) => c.pinged(1)), ...native.map((c) => c.pinged(1))]);
    const jids = [...xmpp.map((c) => `${c.user}@localhost`), ...native.map((c) => c.jid)];
    await until('every ping answered', () => jids.every((j) => sinkOf(j)?.pingSentAt === null));
    assert.deepEqual(timeouts, [], 'no session timed out');

    // And again, a whole idle timeout later: a second ping each, nobody dropped.
    offset += IDLE + 500;
    await Promise.all([...xmpp.map((c) => c.pinged(2)), ...native.map((c) => c.pinged(2))]);
    await until('every second ping answered', () => jids.every((j) => sinkOf(j)?.pingSentAt === null));
    assert.deepEqual(timeouts, [], 'no session timed out');
    assert.ok(xmpp.every((c) => !c.raw.socket.destroyed) && native.every((c) => !c.closed), 'every connection is open');
    for (const c of xmpp) c.raw.close();
    await Promise.all(native.map((c) => c.client.close()));
  });

  test('a client that does not answer is still found dead: pinged, then ended once the ping went unanswered', async () => {
    const c = PingingXmpp.start(t.server.xmppPort as number, 'silent');
    c.answering = false;
    await c.bound;
    const closed = new Promise<string>((resolve) => t.server.engine.events.on('session.closed', (e) => e.jid === 'silent@localhost' && resolve(e.reason)));
    offset += IDLE + 500;
    await c.pinged(1);
    // Silent for longer than the idle timeout, but pinged just now: not yet dead.
    assert.notEqual(sinkOf('silent@localhost')?.pingSentAt ?? null, null);
    assert.ok(t.server.engine.localSessionsOf('silent@localhost').length === 1, 'not ended before its ping had time to be answered');
    offset += IDLE - HEARTBEAT;
    assert.equal(await closed, 'timeout');
    c.raw.close();
  });

  test("a login queued behind a storm is not timed out by the negotiation timeout: the server's time is not the client's", async () => {
    const pool = t.server.engine.passwords.pool;
    const port = t.server.xmppPort as number;
    // Others first, so that the late client's check waits its turn.
    const ahead = Array.from({ length: 10 }, (_, i) => PingingXmpp.start(port, `x${i}`));
    // The jump below also lands on these in the moments between their own steps, which are theirs.
    for (const c of ahead) c.bound.catch(() => {});
    await until('the storm fills the password pool', () => pool.queued >= 5);
    const late = new RawXmpp(connect(port, '127.0.0.1'));
    late.write(HEADER);
    await late.waitFor(/<\/stream:features>/);
    late.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0late\0${PASSWORD}`).toString('base64')}</auth>`);
    await until('the late login waits in the pool', () => pool.queuedFor('account:late@localhost') === 1);
    // Far past the negotiation timeout (30 s by default) while its check waits: it still gets in.
    offset += 60_000;
    await late.waitFor(/<success/);
    assert.doesNotMatch(late.text, /connection-timeout/);
    for (const c of ahead) c.raw.close();
    late.close();
  });
});

/** SCRAM-SHA-256 over a RawXmpp stream (RFC 5802, written from the RFC), up to <success/>. */
async function scramLogin(raw: RawXmpp, user: string, password: string): Promise<void> {
  raw.write(HEADER);
  await raw.waitFor(/<\/stream:features>/);
  const cnonce = randomBytes(12).toString('base64');
  const first = `n=${user},r=${cnonce}`;
  let from = raw.text.length;
  raw.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>${Buffer.from(`n,,${first}`).toString('base64')}</auth>`);
  const challenge = await raw.waitFor(/<challenge[^>]*>[^<]*<\/challenge>/, 'challenge', 20_000, from);
  const serverFirst = Buffer.from(challenge.replace(/<[^>]+>/g, ''), 'base64').toString();
  const a = Object.fromEntries(serverFirst.split(',').map((p) => [p[0], p.slice(2)]));
  const salted = pbkdf2Sync(password, Buffer.from(String(a.s), 'base64'), Number(a.i), 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const withoutProof = `c=biws,r=${a.r}`;
  const sig = createHmac('sha256', createHash('sha256').update(clientKey).digest()).update(`${first},${serverFirst},${withoutProof}`).digest();
  const proof = Buffer.from(clientKey.map((b, i) => b ^ (sig[i] as number)));
  from = raw.text.length;
  raw.write(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(`${withoutProof},p=${proof.toString('base64')}`).toString('base64')}</response>`);
  await raw.waitFor(/<success/, 'success', 20_000, from);
}

/** Connects from a loopback address of our choosing (the login throttle tells clients apart by address). */
function rawFrom(port: number, localAddress: string): RawXmpp {
  return new RawXmpp(connect({ port, host: '127.0.0.1', localAddress }));
}

function plainAuth(user: string, password: string): string {
  return `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString('base64')}</auth>`;
}

describe('login storm: what each way in costs the server, and a flood of guesses does not starve real users (issue 15)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({
      xmpp_port: 0,
      xmpp_require_tls: false,
      xmpp_registration: 'open',
      password_pool_size: 1,
      scrypt_cost: 10,
      scram_iterations: 20_000,
      login_throttle_account_free: 5,
      login_throttle_address_free: 5,
      login_throttle_max_delay_ms: 30_000,
    });
    const creds = await t.server.engine.passwords.derive(PASSWORD, { key: 'setup' });
    for (const u of ['alice', 'bob', 'victim', 'real1', 'real2', ...Array.from({ length: 30 }, (_, i) => `other${i}`)]) {
      await t.server.engine.store.createAccount({ jid: `${u}@localhost`, ...creds, createdAt: Date.now() });
    }
  });
  after(async () => t.destroy());

  const derivations = (): number => t.server.engine.passwords.pool.stats.derivations;

  test('SCRAM-SHA-256: no key derivation on the server, only HMACs against the stored keys', async () => {
    const before = derivations();
    const raw = rawFrom(t.server.xmppPort as number, '127.0.0.1');
    await scramLogin(raw, 'alice', PASSWORD);
    assert.equal(derivations(), before);
    raw.close();
  });

  test('PLAIN: one derivation at the first login, none at the next', async () => {
    const before = derivations();
    for (let i = 0; i < 2; i++) {
      const raw = rawFrom(t.server.xmppPort as number, '127.0.0.1');
      await raw.loginPlain('bob', PASSWORD, `r${i}`);
      raw.close();
    }
    assert.equal(derivations(), before + 1);
  });

  test('XEP-0077: registration derives the hash and both SCRAM keys once; the login that follows derives nothing', async () => {
    const raw = rawFrom(t.server.xmppPort as number, '127.0.0.1');
    raw.write(HEADER);
    await raw.waitFor(/<\/stream:features>/);
    const before = derivations();
    raw.write(`<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>newbie</username><password>fresh-pw</password></query></iq>`);
    await raw.waitFor(/<iq[^>]*id=['"]reg['"][^>]*type=['"]result['"]|<iq[^>]*type=['"]result['"][^>]*id=['"]reg['"]/);
    assert.equal(derivations(), before + 3);
    const from = raw.text.length;
    raw.write(plainAuth('newbie', 'fresh-pw'));
    await raw.waitFor(/<success/, 'success', 20_000, from);
    assert.equal(derivations(), before + 3);
    raw.close();
  });

  for (const flood of ['one account', 'many accounts'] as const) {
    test(`a flood of wrong PLAIN passwords against ${flood} from one address: a real user elsewhere waits a turn or two, and the flood is dropped once throttled`, async () => {
      const port = t.server.xmppPort as number;
      const pool = t.server.engine.passwords.pool;
      const dropped0 = pool.stats.dropped;
      const before = derivations();
      const guesses = Array.from({ length: 30 }, (_, i) => {
        // Each flood from an address of its own: the first leaves its address throttled.
        const raw = rawFrom(port, flood === 'one account' ? '127.0.0.3' : '127.0.0.4');
        raw.write(HEADER);
        return { raw, user: flood === 'one account' ? 'victim' : `other${i}` };
      });
      await Promise.all(guesses.map((g) => g.raw.waitFor(/<\/stream:features>/)));
      for (const g of guesses) g.raw.write(plainAuth(g.user, 'guess'));
      await until('the flood is queued', () => pool.queued >= 20);
      const real = rawFrom(port, '127.0.0.2');
      // Not logged in before: its password is not in the verified-password cache.
      await real.loginPlain(flood === 'one account' ? 'real1' : 'real2', PASSWORD, 'desk');
      // A real user's check is served within a few turns, not after the thirty guesses.
      assert.ok(derivations() - before <= 8, `${derivations() - before} derivations before the real user was in`);
      // Every guess is answered: refused after a derivation, or refused at its turn once the address was throttled.
      await Promise.all(guesses.map((g) => g.raw.waitFor(/<failure/)));
      const temporary = guesses.filter((g) => /temporary-auth-failure/.test(g.raw.text)).length;
      assert.ok(pool.stats.dropped - dropped0 >= 20, `${pool.stats.dropped - dropped0} guesses dropped without a derivation`);
      assert.ok(temporary >= 20, `${temporary} guesses told to wait (temporary-auth-failure)`);
      for (const g of guesses) g.raw.close();
      real.close();
    });
  }
});
