import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RequestFailed, TestClient } from '../helpers/ws-client.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

async function expectError(p: Promise<unknown>, code: string): Promise<RequestFailed> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RequestFailed, `expected a protocol error, got ${String(e)}`);
    assert.equal(e.error.code, code, e.message);
    assert.ok(e.error.message.length > 0);
    return e;
  }
  assert.fail(`expected error ${code}`);
}

describe('bad input on the native protocol', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ ws_max_frame_bytes: 4096, ws_rate_limit: 20, ws_rate_burst: 20, ws_flood_strikes: 30 });
    await t.createAccount('mallory@localhost');
    await t.createAccount('victim@localhost');
  });
  after(async () => t.destroy());

  /** The server still serves everyone else: a fresh login works. */
  async function serverStillServes(): Promise<void> {
    const { client, auth } = await TestClient.login(t.wsUrl, 'victim@localhost');
    assert.equal(auth.jid, 'victim@localhost');
    await client.close();
  }

  test('malformed JSON gets bad-request with a null id and the connection stays open', async () => {
    const c = await TestClient.connect(t.wsUrl);
    c.sendRaw('{"id": 1, "type": "auth", ');
    const err = await c.waitFor((p) => p.type === 'error');
    assert.deepEqual([err.id, err.error.code], [null, 'bad-request']);
    c.sendRaw('[1,2,3]');
    assert.equal((await c.waitFor((p) => p.type === 'error')).error.code, 'bad-request');
    c.sendRaw('{"type":"ping"}');
    assert.match((await c.waitFor((p) => p.type === 'error')).error.message, /id/);
    c.sendRaw(Buffer.from([1, 2, 3]));
    assert.match((await c.waitFor((p) => p.type === 'error')).error.message, /binary/);
    await c.barrier();
    await c.close();
  });

  test('unknown request types and requests before auth are refused with their id', async () => {
    const c = await TestClient.connect(t.wsUrl);
    const e1 = await expectError(c.request('teleport'), 'unknown-type');
    assert.match(e1.message, /teleport/);
    await expectError(c.request('roster.get'), 'not-authenticated');
    await expectError(c.request('presence', { show: 'away' }), 'not-authenticated');
    await c.close();
  });

  test('wrong passwords get auth-failed, and too many close the connection', async () => {
    const c = await TestClient.connect(t.wsUrl);
    await expectError(c.request('auth', { jid: 'mallory@localhost', password: 'nope' }), 'auth-failed');
    const e = await expectError(c.request('auth', { jid: 'nobody@localhost', password: 'nope' }), 'auth-failed');
    assert.equal(e.error.message, 'wrong jid or password', 'unknown accounts and wrong passwords look the same');
    await expectError(c.request('auth', { jid: 'mallory@localhost', password: 'nope' }), 'auth-failed');
    const { code } = await c.closed;
    assert.equal(code, 1008);
    await serverStillServes();
  });

  test('bad JIDs and bad fields get bad-jid / bad-request', async () => {
    const { client: c } = await TestClient.login(t.wsUrl, 'mallory@localhost');
    for (const jid of ['', 'no spaces@localhost', 'a@b@c', '@localhost', 'x'.repeat(1100) + '@localhost', 'user@localhost/res']) {
      await expectError(c.request('subscribe', { jid }), 'bad-jid');
    }
    await expectError(c.request('subscribe', {}), 'bad-request');
    await expectError(c.request('subscribe', { jid: 42 }), 'bad-request');
    await expectError(c.request('subscribe', { jid: 'someone@remote.example' }), 'not-allowed');
    await expectError(c.request('presence', { show: 'sleeping' }), 'bad-request');
    await expectError(c.request('presence', { priority: 128 }), 'bad-request');
    await expectError(c.request('presence', { priority: 1.5 }), 'bad-request');
    await expectError(c.request('presence', { status: 'x'.repeat(2000) }), 'bad-request');
    await expectError(c.request('roster.set', { jid: 'victim@localhost', groups: 'nope' }), 'bad-request');
    await expectError(c.request('auth', { jid: 'mallory@localhost', password: 'secret-pw' }), 'already-authenticated');
    await expectError(c.request('push.register', { provider: 'fcm', token: 't' }), 'unsupported');
    assert.ok((await c.request('ping')).time, 'connection still usable after every error');
    await c.close();
  });

  test('status and roster text that XML cannot carry is refused with bad-request', async () => {
    const { client: c } = await TestClient.login(t.wsUrl, 'mallory@localhost');
    // XMPP watchers could not receive it (XML 1.0 forbids it), so it is refused where it enters.
    await expectError(c.request('presence', { status: 'bell\u0007' }), 'bad-request');
    await expectError(c.request('presence', { status: 'half \ud800 a pair' }), 'bad-request');
    await expectError(c.request('roster.set', { jid: 'victim@localhost', name: 'esc\u001b[31m' }), 'bad-request');
    assert.equal((await c.request('presence', { status: 'tabs\tand\nnewlines and 😀 are fine' })).status, 'tabs\tand\nnewlines and 😀 are fine');
    await c.close();
  });

  test('an oversized frame closes the connection with 1009 and the server keeps serving', async () => {
    const { client: c } = await TestClient.login(t.wsUrl, 'mallory@localhost', 'secret-pw', { resource: 'big' });
    c.sendRaw(JSON.stringify({ id: 1, type: 'presence', status: 'x'.repeat(10_000) }));
    const { code } = await c.closed;
    assert.equal(code, 1009);
    await serverStillServes();
  });

  test('a flood of requests is rate limited, then the connection is closed as flooding', async () => {
    const { client: c } = await TestClient.login(t.wsUrl, 'mallory@localhost', 'secret-pw', { resource: 'flood' });
    // Requests refused or cut off by the close never settle; only the frames received matter here.
    for (let i = 0; i < 200; i++) c.request('ping').catch(() => {});
    const { code, reason } = await c.closed;
    assert.equal(code, 1008);
    assert.equal(reason, 'flooding');
    const limited = c.all.filter((m) => m.type === 'error' && m.error.code === 'rate-limited').length;
    const ok = c.all.filter((m) => m.type === 'result').length;
    assert.ok(ok >= 1 && ok <= 25, `a burst's worth of requests is served (got ${ok})`);
    assert.ok(limited >= 29, `then requests are refused as rate-limited (got ${limited})`);
    await serverStillServes();
  });

  test('a connection that never authenticates is closed after the auth timeout', async () => {
    // A server of its own: a timeout short enough for a quick test would also cut the other tests'
    // connections between their requests on a slow machine.
    const quick = await startTestServer({ auth_timeout_ms: 500 });
    try {
      const c = await TestClient.connect(quick.wsUrl);
      const closing = await c.waitFor((p) => p.type === 'closing');
      assert.equal(closing.reason, 'auth-timeout');
      await c.closed;
    } finally {
      await quick.destroy();
    }
  });

  test('a password check still running when the auth timeout passes is answered, not cut off', async () => {
    const quick = await startTestServer({ auth_timeout_ms: 100 });
    try {
      await quick.createAccount('slowpoke@localhost');
      const c = await TestClient.connect(quick.wsUrl);
      // Pipelined: the second check starts after the first ended, and each takes a scrypt (tens of ms),
      // so the checks run past the 100 ms deadline; each still gets its answer.
      const first = c.request('auth', { jid: 'slowpoke@localhost', password: 'wrong' });
      const second = c.request('auth', { jid: 'slowpoke@localhost', password: 'wrong' });
      const third = c.request('auth', { jid: 'slowpoke@localhost', password: 'secret-pw' });
      await expectError(first, 'auth-failed');
      await expectError(second, 'auth-failed');
      const auth = (await third) as { jid: string };
      assert.equal(auth.jid, 'slowpoke@localhost');
      await c.close();
    } finally {
      await quick.destroy();
    }
  });
});
