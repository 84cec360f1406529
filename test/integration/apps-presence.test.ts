import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { appsOf } from '../../src/features/apps/apps-feature.js';
import { pairwiseId } from '../../src/features/apps/secrets.js';
import { basic, Browserless, consent, pkce, tokenRequest, type RegisteredApp } from '../helpers/consent-flow.js';
import { appsKeysOf } from '../helpers/secrets.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { buildDist, killAllServerProcesses, processAdmin, startServerProcess } from '../helpers/server-process.js';
import { Receiver, type Received } from '../helpers/webhook-receiver.js';
import { TestClient } from '../helpers/ws-client.js';

/**
 * Presence reaching third-party apps end to end: real grants through the consent flow, real clients
 * changing presence, a real webhook receiver verifying every request (standardwebhooks); revocation,
 * account deletion, and a kill -9 of the server.
 */

const CB = 'http://127.0.0.1:8123/cb';

interface Delivered {
  readonly uid: string;
  readonly status: string;
  readonly seq: number;
  readonly at: string;
  readonly statusText?: string;
  readonly lastSeen?: string;
}

async function registerHookedApp(base: string, owner: string, pw: string, rx: Receiver, name: string): Promise<RegisteredApp> {
  const res = await fetch(`${base}/api/v1/apps`, {
    method: 'POST',
    headers: { authorization: basic(owner, pw), 'content-type': 'application/json' },
    body: JSON.stringify({ name, homepage: 'https://chess.example/', redirectUris: [CB], webhookUrl: rx.url, webhookFormat: 'extended' }),
  });
  const b = (await res.json()) as { id: string; clientSecret: string; webhookSecret: string };
  assert.equal(res.status, 201, JSON.stringify(b));
  rx.secret = b.webhookSecret;
  return { id: b.id, clientSecret: b.clientSecret };
}

/** Consent (Allow) and the code exchanged, as an app's user would: the user's pairwise id from the token response. */
async function grant(base: string, app: RegisteredApp, jid: string, pw: string, scope: string): Promise<string> {
  const { verifier, challenge } = pkce();
  const back = await consent(new Browserless(base), { clientId: app.id, redirectUri: CB, challenge, method: 'S256', scope }, jid, pw);
  const code = back.searchParams.get('code');
  assert.ok(code, `no code in ${back.href}`);
  const tok = await tokenRequest({ url: base } as TestServer, app, { grant_type: 'authorization_code', code, redirect_uri: CB, code_verifier: verifier });
  assert.equal(tok.status, 200, JSON.stringify(tok.body));
  const info = await fetch(`${base}/oauth/userinfo`, { headers: { authorization: `Bearer ${tok.body.access_token as string}` } });
  return ((await info.json()) as { presence_uid: string }).presence_uid;
}

const deliveredOf = (rs: readonly Received[]): Delivered[] => rs.filter((r) => r.answered < 300).flatMap((r) => r.payload as Delivered[]);
const of = (rx: Receiver, uid: string) => deliveredOf(rx.requests).filter((d) => d.uid === uid);
const statuses = (rx: Receiver, uid: string) => of(rx, uid).map((d) => d.status);

/** Each user's updates carry seq 1, 2, 3... with no gap and no repeat. */
function assertSequences(rx: Receiver): void {
  const byUid = new Map<string, number[]>();
  for (const d of deliveredOf(rx.requests)) byUid.set(d.uid, [...(byUid.get(d.uid) ?? []), d.seq]);
  for (const [uid, seqs] of byUid) assert.deepEqual(seqs, seqs.map((_, i) => i + 1), `sequence of ${uid}`);
}

function pairwiseOf(t: TestServer, appId: string, jid: string): string {
  return pairwiseId(appsKeysOf(t).pairwise, appId, jid);
}

const FAST = { webhooks_allow_private: true, webhook_flush_ms: 5, webhook_batch_ms: 10, webhook_backoff_base_ms: 50, webhook_backoff_cap_ms: 2_000 } as const;

describe('apps: presence reaches the apps a user granted, and no other', () => {
  let t: TestServer;
  const chessRx = new Receiver();
  const goRx = new Receiver();
  let chess: RegisteredApp;
  let go: RegisteredApp;
  let aliceChess = '';
  let bobChess = '';
  let aliceGo = '';
  const clients: TestClient[] = [];

  before(async () => {
    await chessRx.listen();
    await goRx.listen();
    t = await startTestServer(FAST);
    for (const who of ['dev', 'alice', 'bob', 'mallory']) await t.createAccount(`${who}@localhost`, `${who}-pw`);
    chess = await registerHookedApp(t.url, 'dev@localhost', 'dev-pw', chessRx, 'Chess Club');
    go = await registerHookedApp(t.url, 'dev@localhost', 'dev-pw', goRx, 'Go Club');
  });
  after(async () => {
    for (const c of clients) c.destroy();
    await t.destroy();
    await chessRx.close();
    await goRx.close();
  });

  test('a grant tells the app where the user stands; ids are pairwise: unrelated across apps, stable across grants', async () => {
    aliceChess = await grant(t.url, chess, 'alice@localhost', 'alice-pw', 'presence.status');
    bobChess = await grant(t.url, chess, 'bob@localhost', 'bob-pw', 'presence');
    aliceGo = await grant(t.url, go, 'alice@localhost', 'alice-pw', 'presence');
    assert.notEqual(aliceChess, aliceGo);
    assert.notEqual(aliceChess, bobChess);
    assert.equal(await grant(t.url, chess, 'alice@localhost', 'alice-pw', 'presence.status'), aliceChess, 'the same id in one app across two grants');
    await chessRx.until(() => of(chessRx, aliceChess).length >= 1 && of(chessRx, bobChess).length >= 1, 'the initial updates');
    await goRx.until(() => of(goRx, aliceGo).length >= 1, 'the initial update');
    assert.equal(statuses(chessRx, aliceChess)[0], 'offline');
    assert.equal(statuses(chessRx, bobChess)[0], 'offline');
    assert.equal(statuses(goRx, aliceGo)[0], 'offline');
  });

  test('changes arrive in order under the pairwise id; status text only with presence.status; a user who never granted is never sent', async () => {
    const { client: mallory } = await TestClient.login(t.wsUrl, 'mallory@localhost', 'mallory-pw', { resource: 'm', presence: { status: 'look at me' } });
    clients.push(mallory);
    const { client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost', 'alice-pw', { resource: 'r', presence: { status: 'at work' } });
    clients.push(alice);
    const { client: bob } = await TestClient.login(t.wsUrl, 'bob@localhost', 'bob-pw', { resource: 'r', presence: { show: 'xa', status: 'bob private words' } });
    clients.push(bob);
    await alice.request('presence', { show: 'dnd', status: 'meeting' });
    await mallory.request('presence', { show: 'away' });
    await alice.request('bye');
    await alice.closed;
    await chessRx.until(() => statuses(chessRx, aliceChess).at(-1) === 'offline' && statuses(chessRx, aliceChess).length >= 4 && statuses(chessRx, bobChess).includes('away'), 'alice online, dnd, offline; bob away');
    await goRx.until(() => statuses(goRx, aliceGo).length >= 4, 'alice in the other app');

    // The repeated grant sent the current presence again: it may appear twice at the start.
    const alices = of(chessRx, aliceChess).filter((d, i, all) => i === 0 || d.status !== all[i - 1]!.status);
    assert.deepEqual(alices.map((d) => [d.status, d.statusText]), [
      ['offline', undefined],
      ['online', 'at work'],
      ['dnd', 'meeting'],
      ['offline', 'meeting'],
    ]);
    assert.ok(!Number.isNaN(Date.parse(alices.at(-1)!.lastSeen!)), 'offline carries last seen with presence.status');
    // bob granted `presence` only: the seed's words, nothing more.
    for (const d of of(chessRx, bobChess)) {
      assert.equal(d.statusText, undefined);
      assert.equal(d.lastSeen, undefined);
    }
    assert.deepEqual(statuses(chessRx, bobChess).slice(-1), ['away']);
    for (const d of of(goRx, aliceGo)) assert.equal(d.statusText, undefined);
    assert.deepEqual(statuses(goRx, aliceGo).filter((s, i, all) => i === 0 || s !== all[i - 1]), ['offline', 'online', 'dnd', 'offline']);

    // mallory never granted: no id of hers appears anywhere, in either app.
    const mallorys = [pairwiseOf(t, chess.id, 'mallory@localhost'), pairwiseOf(t, go.id, 'mallory@localhost')];
    for (const rx of [chessRx, goRx]) {
      assert.deepEqual(rx.bad, []);
      assertSequences(rx);
      for (const r of rx.requests) for (const m of mallorys) assert.equal(r.body.includes(m), false, 'mallory leaked');
      assert.deepEqual(new Set(deliveredOf(rx.requests).map((d) => d.uid)), new Set(rx === chessRx ? [aliceChess, bobChess] : [aliceGo]));
    }
  });

  test('revocation: once apps.revoke is answered, the app gets nothing more of that user, not even updates that were waiting', async () => {
    // The receiver is down: bob's and alice's next updates wait in the outbox. Retry-After keeps the
    // next attempt 2 s away, so no request is on the wire when the revocation is answered (one
    // already sent could still arrive after it: nothing can call that back).
    let down = true;
    chessRx.answer = () => (down ? { status: 503, headers: { 'retry-after': '2' } } : { status: 204 });
    const { client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost', 'alice-pw', { resource: 'r2', presence: { status: 'before revoking' } });
    clients.push(alice);
    const bob = clients[2]!;
    await bob.request('presence', { show: 'chat', status: 'back' });
    await chessRx.until((rs) => rs.some((r) => r.answered === 503 && r.body.includes(aliceChess)), 'a failed attempt with alice in it');
    assert.deepEqual(await alice.request('apps.revoke', { app: chess.id }), { app: chess.id, revoked: true });
    const revokedAt = Date.now();
    await alice.request('presence', { show: 'away', status: 'after revoking' });
    await bob.request('presence', { show: 'dnd' });
    down = false;
    // bob's newest update is the barrier: everything enqueued before it has been decided.
    await chessRx.until(() => statuses(chessRx, bobChess).at(-1) === 'dnd', "bob's dnd");
    for (const r of chessRx.requests.filter((x) => x.at >= revokedAt)) assert.equal(r.body.includes(aliceChess), false, 'alice sent after her revocation');
    // The other app she did not revoke still follows her.
    await goRx.until(() => statuses(goRx, aliceGo).at(-1) === 'away', 'alice away in the other app');
    assert.deepEqual(chessRx.bad, []);
  });

  test('deleting an account revokes all its grants', async () => {
    const rt = appsOf(t.server.engine)!;
    assert.equal(rt.index.accountOf(chess.id, bobChess), 'bob@localhost');
    clients[2]!.destroy();
    assert.equal((await t.admin('DELETE', '/accounts/bob@localhost')).status, 204);
    // The grants go right after the account, on the node that removed it, then on every node as each
    // hears of it (in a cluster, node 0 may not be the node that served the DELETE).
    const deadline = Date.now() + 10_000;
    while (rt.index.accountOf(chess.id, bobChess) !== undefined || Number(t.sql("select count(*) as n from grants where account = 'bob@localhost'")[0]?.n) !== 0) {
      assert.ok(Date.now() < deadline, "bob's grants still there 10 s after his account was deleted");
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(await rt.grants.isGranted(chess.id, 'bob@localhost', 'presence'), false);
  });
  test('deleting an app forgets its grants at once: its users\' changes are no longer written for it', async () => {
    const rt = appsOf(t.server.engine)!;
    assert.equal(rt.index.accountOf(go.id, aliceGo), 'alice@localhost');
    const res = await fetch(`${t.url}/api/v1/apps/${go.id}`, { method: 'DELETE', headers: { authorization: basic('dev@localhost', 'dev-pw') } });
    assert.equal(res.status, 204);
    assert.equal(rt.index.accountOf(go.id, aliceGo), undefined);
    assert.deepEqual(rt.index.appsFor('alice@localhost').map((a) => a.appId), []);
  });
});

describe('apps: kill -9 with updates pending', { timeout: 120_000 }, () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'presenced-apps-crash-'));
  const rx = new Receiver();
  before(async () => {
    await rx.listen();
    await buildDist();
  });
  after(async () => {
    killAllServerProcesses();
    await rx.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('the updates written before the crash are delivered after the restart, and the user online at the crash is reported offline', async () => {
    // Checkpoints often, so that the crash loses none of alice's presence (the default, 5 s, may lose the last seconds).
    const env = { PRESENCED_WEBHOOKS_ALLOW_PRIVATE: 'true', PRESENCED_WEBHOOK_FLUSH_MS: '5', PRESENCED_PRESENCE_CHECKPOINT_MS: '200' };
    // The first server writes updates but would send none for a minute.
    const first = await startServerProcess(dataDir, { ...env, PRESENCED_WEBHOOK_BATCH_MS: '60000' });
    for (const who of ['dev', 'alice']) assert.equal((await processAdmin(first.url, 'POST', '/accounts', { jid: `${who}@localhost`, password: `${who}-pw` })).status, 201);
    const app = await registerHookedApp(first.url, 'dev@localhost', 'dev-pw', rx, 'Chess Club');
    const uid = await grant(first.url, app, 'alice@localhost', 'alice-pw', 'presence.status');
    const ws = first.url.replace(/^http/, 'ws') + '/ws';
    const { client: alice } = await TestClient.login(ws, 'alice@localhost', 'alice-pw', { resource: 'r', presence: { status: 'hello' } });
    await alice.request('presence', { show: 'away', status: 'last words' });
    // Wait for the event: the three updates committed (what a kill -9 now leaves).
    const pending = (): Array<{ seq: number; body_json: string }> => {
      const db = new Database(join(dataDir, 'presenced.sqlite'), { readonly: true, fileMustExist: true });
      try {
        return db.prepare(`select l.seq, l.body_json from webhook_log l left join webhook_endpoints e on e.app_id = l.app_id
          where l.uid = ? and l.id > coalesce(e.delivered_through, 0) and l.superseded is null order by l.seq`).all(uid) as Array<{ seq: number; body_json: string }>;
      } finally {
        db.close();
      }
    };
    const checkpointed = (): boolean => {
      const db = new Database(join(dataDir, 'presenced.sqlite'), { readonly: true, fileMustExist: true });
      try {
        return db.prepare("select 1 from presence_checkpoint where jid = 'alice@localhost' and status = 'last words'").get() !== undefined;
      } finally {
        db.close();
      }
    };
    const deadline = Date.now() + 15_000;
    while (pending().length < 3 || !checkpointed()) {
      assert.ok(Date.now() < deadline, `only ${pending().length} updates written, checkpoint ${checkpointed()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    first.child.kill('SIGKILL');
    assert.equal((await first.exited).signal, 'SIGKILL');
    alice.destroy();
    assert.equal(rx.requests.length, 0);

    const second = await startServerProcess(dataDir, { ...env, PRESENCED_WEBHOOK_BATCH_MS: '10' });
    try {
      await rx.until(() => of(rx, uid).length >= 4, 'four updates');
      assert.deepEqual(rx.bad, []);
      const got = of(rx, uid);
      assert.deepEqual(got.map((d) => [d.seq, d.status, d.statusText]), [
        [1, 'offline', undefined],
        [2, 'online', 'hello'],
        [3, 'away', 'last words'],
        // Not left believing she is online: the restart reports her offline, with her last status.
        [4, 'offline', 'last words'],
      ]);
      assert.ok(got[3]!.lastSeen !== undefined);
      const p = (await processAdmin(second.url, 'GET', '/accounts/alice@localhost/presence')).body;
      assert.equal(got[3]!.lastSeen, p.lastSeen);
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  });
});
