import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Rng, randomValue, NASTY_STRINGS } from '../helpers/fuzz.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RequestFailed, TestClient } from '../helpers/ws-client.js';

/** Every code the native protocol documents (docs/native-protocol.md, core/errors.ts). */
const CODES = new Set(['bad-request', 'bad-jid', 'unknown-type', 'not-authenticated', 'already-authenticated', 'auth-failed', 'not-found', 'not-allowed', 'conflict', 'rate-limited', 'unsupported']);
/** Close codes the server may end a fuzzed connection with: a goodbye, a policy violation, a frame too big. */
const CLOSES = new Set([1000, 1008, 1009]);
const TYPES = ['auth', 'presence', 'roster.get', 'roster.set', 'roster.remove', 'subscribe', 'approve', 'deny', 'unsubscribe', 'block', 'unblock', 'blocks.get', 'presence.get', 'push.register', 'ping', 'bye', 'teleport', ''];
const SEED = Number(process.env.FUZZ_SEED ?? 20261129);
const FRAMES = 2000;

/** A request whose fields are drawn at random, sometimes well-formed, mostly not. */
function randomRequest(r: Rng, id: number): Record<string, unknown> {
  const msg: Record<string, unknown> = { id, type: r.pick(TYPES) };
  const n = r.int(4);
  for (let i = 0; i < n; i++) msg[r.pick(['jid', 'show', 'status', 'priority', 'name', 'groups', 'jids', 'password', 'resource', 'token', 'presence'])] = randomValue(r);
  return msg;
}

/** Frames that are not requests at all: truncated, wrong JSON types, bad ids, binary. */
function randomGarbage(r: Rng): string | Buffer {
  const valid = JSON.stringify(randomRequest(r, r.int(1000)));
  switch (r.int(6)) {
    case 0:
      return valid.slice(0, r.int(valid.length));
    case 1:
      return JSON.stringify(randomValue(r));
    case 2:
      return JSON.stringify({ id: randomValue(r), type: 'ping' });
    case 3:
      return r.bytes(1 + r.int(64));
    case 4:
      return '{"id":1,"type":"ping",' + '"a":['.repeat(200 + r.int(2000));
    default:
      return r.pick(NASTY_STRINGS);
  }
}

describe('bounded fuzz run of the native protocol', () => {
  let t: TestServer;
  before(async () => {
    // Limits high enough (and no login throttle: its own tests cover it) that the fuzzer reaches the
    // handlers instead of the flood guard.
    t = await startTestServer({ ws_rate_limit: 100_000, ws_rate_burst: 100_000, max_auth_failures: 100, ws_max_frame_bytes: 16_384, login_throttle_max_delay_ms: 0 });
    for (let i = 0; i < 10; i++) await t.createAccount(`u${i}@localhost`);
  });
  after(async () => t.destroy());

  test(`${FRAMES} random frames (seed ${SEED}) get an answer or a documented close, and the server keeps its truth`, async () => {
    const r = new Rng(SEED);
    // A watcher outside the fuzzing that must keep seeing u0 correctly.
    const { client: watcher } = await TestClient.login(t.wsUrl, 'u9@localhost');
    const { client: u0 } = await TestClient.login(t.wsUrl, 'u0@localhost', 'secret-pw', { resource: 'steady' });
    await watcher.request('subscribe', { jid: 'u0@localhost' });
    await u0.request('approve', { jid: 'u9@localhost' });
    await watcher.presenceOf('u0@localhost');

    let conn: TestClient | null = null;
    let id = 1;
    const stats = { answered: 0, errors: 0, closes: 0 };
    const open = async (): Promise<TestClient> => {
      const c = await TestClient.connect(t.wsUrl);
      // A quarter of the connections fuzz before authenticating, the rest after.
      if (r.chance(0.75)) await c.request('auth', { jid: `u${1 + r.int(8)}@localhost`, password: 'secret-pw', resource: `f${r.int(3)}` });
      return c;
    };
    let sent = 0;
    while (sent < FRAMES) {
      conn ??= await open();
      const c: TestClient = conn;
      const batch: Array<Promise<unknown>> = [];
      const size = 1 + r.int(20);
      for (let i = 0; i < size && sent < FRAMES; i++, sent++) {
        if (r.chance(0.2)) {
          c.sendRaw(randomGarbage(r));
          continue;
        }
        const req = randomRequest(r, id++);
        const { id: _id, type, ...body } = req;
        batch.push(c.request(String(type), body));
      }
      const settled = await Promise.allSettled(batch);
      let closed = false;
      for (const s of settled) {
        if (s.status === 'fulfilled') stats.answered++;
        else if (s.reason instanceof RequestFailed) {
          stats.errors++;
          assert.ok(CODES.has(s.reason.error.code), `seed ${SEED}: undocumented error code ${s.reason.error.code}: ${s.reason.message}`);
          assert.ok(s.reason.error.message.length > 0, `seed ${SEED}: error without a message`);
        } else closed = true;
      }
      if (!closed) {
        // Garbage frames are answered with id null; a round trip shows the connection still works.
        try {
          await c.barrier();
        } catch {
          closed = true;
        }
      }
      if (!closed && r.chance(0.05)) {
        // A fresh connection now and then, so both sides of authentication get fuzzed.
        await c.close();
        conn = null;
      } else if (closed) {
        const { code } = await c.closed;
        assert.ok(CLOSES.has(code), `seed ${SEED}: connection closed with unexpected code ${code}`);
        stats.closes++;
        conn = null;
      }
    }
    await conn?.close();
    assert.ok(stats.answered > 100 && stats.errors > 200 && stats.closes > 0, `seed ${SEED}: the fuzzer reached the handlers (${JSON.stringify(stats)})`);

    // The server is healthy and its view of u0 is still the truth for the watcher.
    const health = await fetch(`${t.url}/healthz`);
    assert.equal(health.status, 200);
    await u0.request('presence', { show: 'dnd', status: 'after the fuzz' });
    const p = await watcher.presenceOf('u0@localhost', (x) => x.show === 'dnd');
    assert.equal(p.status, 'after the fuzz');
    const seen = (await watcher.request('presence.get', { jids: ['u0@localhost'] })).contacts[0];
    const truth = (await t.admin('GET', '/accounts/u0@localhost/presence')).body;
    assert.deepEqual([seen.online, seen.show, seen.status], [truth.online, truth.show, truth.status]);
    await u0.close();
    await watcher.close();
  });
});
