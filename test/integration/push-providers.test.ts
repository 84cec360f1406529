import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { decodeProtectedHeader, decodeJwt } from 'jose';
import { pino } from 'pino';
import webpush from 'web-push';
import { ApnsProvider, createProvider, ProviderConfigError, registerProviderType, vapidPublicKeyOf, WebPushProvider, type PushMessage, type PushProvider, type PushTarget, type SendResult } from '../../src/features/push/providers/index.js';
import { ApnsAnswers, ApnsFake } from '../helpers/push-fakes/apns-fake.js';
import { makeP8, makeServiceAccount, makeTlsCert } from '../helpers/push-fakes/common.js';
import { FcmAnswers, FcmFake, FCM_SCOPE } from '../helpers/push-fakes/fcm-fake.js';
import { WebPushAnswers, WebPushFake } from '../helpers/push-fakes/webpush-fake.js';

const log = pino({ level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'push-providers-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const msg = (over: Partial<PushMessage> = {}): PushMessage => ({ reason: 'message', count: 3, collapseKey: 'chat-alice', urgency: 'high', ttlSeconds: 60, ...over });

function expectOutcome<O extends SendResult['outcome']>(r: SendResult, outcome: O): Extract<SendResult, { outcome: O }> {
  assert.equal(r.outcome, outcome, `expected ${outcome}, got ${JSON.stringify(r)}`);
  assert.ok(r.latencyMs >= 0);
  return r as Extract<SendResult, { outcome: O }>;
}

/** A port nothing listens on (bound, then released). */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('FCM provider against the local FCM', () => {
  const fake = new FcmFake();
  let saFile = '';
  const providers: PushProvider[] = [];
  const make = (): PushProvider => {
    const p = createProvider('android', { type: 'fcm', serviceAccountFile: saFile, endpoint: fake.base }, { dataDir: dir, log });
    providers.push(p);
    return p;
  };
  const token = (n: number | string) => `fcm-token-${n}:APA91b${'x'.repeat(100)}`;

  before(async () => {
    await fake.listen();
    const sa = makeServiceAccount(mkdtempSync(join(dir, 'fcm-')), fake.tokenUri);
    saFile = sa.file;
    fake.trust(sa);
  });
  after(async () => {
    for (const p of providers) await p.close();
    await fake.close();
  });

  test('a push arrives with the message fields, on an access token obtained with the service account', async () => {
    const p = make();
    assert.equal(p.type, 'fcm');
    const r = expectOutcome(await p.send({ provider: 'android', token: token(1) }, msg({ sender: 'alice@example.com', body: 'hello', data: { room: 'r1' } })), 'sent');
    assert.equal(r.status, 200);
    assert.match(r.id ?? '', /^projects\/presenced-test\/messages\/\d+$/);
    assert.deepEqual(fake.bad, []);
    assert.equal(fake.tokenRequests.length, 1);
    const claims = fake.tokenRequests[0]!.claims;
    assert.equal(claims.scope, FCM_SCOPE);
    assert.ok((claims.exp as number) - (claims.iat as number) <= 3600);
    const m = fake.received.at(-1)!.message;
    assert.equal(m.token, token(1));
    assert.deepEqual(m.data, { room: 'r1', reason: 'message', count: '3', sender: 'alice@example.com', body: 'hello' });
    assert.deepEqual(m.android, { priority: 'HIGH', collapse_key: 'chat-alice', ttl: '60s' });
    assert.equal(m.apns?.headers?.['apns-collapse-id'], 'chat-alice');
    assert.equal(m.apns?.headers?.['apns-priority'], '5');
  });

  test('only what the message carries goes on the wire: no sender or body unless given; normal urgency; reserved data keys dropped', async () => {
    const p = make();
    expectOutcome(await p.send({ provider: 'android', token: token(2) }, msg({ reason: 'clear', count: 0, urgency: 'normal', ttlSeconds: 0, data: { from: 'x', 'google.foo': 'y', ok: 'z' } })), 'sent');
    const m = fake.received.at(-1)!.message;
    assert.deepEqual(m.data, { ok: 'z', reason: 'clear', count: '0' });
    assert.equal(m.android?.priority, 'NORMAL');
    assert.equal(m.android?.ttl, '0s');
    assert.deepEqual(fake.bad, []);
  });

  test('one token request for many concurrent sends', async () => {
    const before = fake.tokenRequests.length;
    const p = make();
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => p.send({ provider: 'android', token: token(`c${i}`) }, msg())));
    for (const r of results) expectOutcome(r, 'sent');
    assert.equal(fake.tokenRequests.length - before, 1);
    const tokens = new Set(fake.received.slice(-40).map((r) => r.accessToken));
    assert.equal(tokens.size, 1);
  });

  test('a short-lived access token is renewed before it expires, never used expired', async () => {
    fake.tokenLifetimeS = 2;
    try {
      const before = fake.tokenRequests.length;
      const p = make();
      const started = Date.now();
      const deadline = started + 8_000;
      // Polls: sends until the provider has asked for a second token.
      while (fake.tokenRequests.length - before < 2) {
        assert.ok(Date.now() < deadline, 'the access token was not renewed');
        expectOutcome(await p.send({ provider: 'android', token: token('short') }, msg()), 'sent');
        await delay(50);
      }
      // Renewed at half its life at the earliest (1 s of 2), and no send was refused as unauthenticated.
      assert.ok(fake.tokenRequests.at(-1)!.at - fake.tokenRequests.at(-2)!.at >= 900);
      assert.deepEqual(fake.bad, []);
    } finally {
      fake.tokenLifetimeS = 3600;
    }
  });

  test('401: a new token once, and the push retried with it; refused again: failed', async () => {
    const p = make();
    expectOutcome(await p.send({ provider: 'android', token: token(3) }, msg()), 'sent');
    const before = fake.tokenRequests.length;
    fake.revokeTokens();
    expectOutcome(await p.send({ provider: 'android', token: token(3) }, msg()), 'sent');
    assert.equal(fake.tokenRequests.length - before, 1);
    assert.equal(fake.bad.length, 1);
    assert.match(fake.bad[0]!, /unknown access token/);
    fake.bad.length = 0;
    const unauth = { status: 401, body: JSON.stringify({ error: { code: 401, status: 'UNAUTHENTICATED', message: 'no' } }) };
    fake.next(unauth, unauth);
    const r = expectOutcome(await p.send({ provider: 'android', token: token(3) }, msg()), 'failed');
    assert.equal(r.status, 401);
  });

  test("the service's answers: UNREGISTERED and a bad token are dead, 429 retried after Retry-After, 5xx retried, a bad message failed", async () => {
    const p = make();
    fake.byToken.set(token('gone'), FcmAnswers.unregistered());
    fake.byToken.set(token('bad'), FcmAnswers.invalidToken());
    fake.byToken.set(token('slow'), FcmAnswers.quota(7));
    fake.byToken.set(token('down'), FcmAnswers.unavailable());
    fake.byToken.set(token('err'), FcmAnswers.internal());
    fake.byToken.set(token('msg'), FcmAnswers.invalidMessage());
    const send = (t: string) => p.send({ provider: 'android', token: token(t) }, msg());
    const gone = expectOutcome(await send('gone'), 'dead');
    assert.equal(gone.status, 404);
    assert.equal(gone.reason, 'UNREGISTERED');
    expectOutcome(await send('bad'), 'dead');
    const slow = expectOutcome(await send('slow'), 'retry');
    assert.equal(slow.status, 429);
    assert.equal(slow.retryAfterMs, 7000);
    assert.equal(expectOutcome(await send('down'), 'retry').status, 503);
    assert.equal(expectOutcome(await send('err'), 'retry').status, 500);
    const bad = expectOutcome(await send('msg'), 'failed');
    assert.equal(bad.status, 400);
  });

  test('a send interrupted by its signal is retried, not failed', async () => {
    const p = make();
    expectOutcome(await p.send({ provider: 'android', token: token(6) }, msg()), 'sent');
    const n = fake.received.length;
    const r = expectOutcome(await p.send({ provider: 'android', token: token(6) }, msg(), AbortSignal.abort()), 'retry');
    assert.equal(fake.received.length, n);
    assert.match(r.error, /interrupted/);
  });

  test('the token endpoint refusing the account fails the push; an unreachable FCM is retried', async () => {
    const p = make();
    fake.tokenAnswers.push({ status: 400, body: JSON.stringify({ error: 'invalid_grant', error_description: 'Invalid JWT Signature.' }) });
    const r = expectOutcome(await p.send({ provider: 'android', token: token(4) }, msg()), 'failed');
    assert.match(r.error, /invalid_grant/);
    const port = await deadPort();
    const down = createProvider('android', { type: 'fcm', serviceAccountFile: saFile, endpoint: `http://127.0.0.1:${port}` }, { dataDir: dir, log });
    providers.push(down);
    const d = expectOutcome(await down.send({ provider: 'android', token: token(5) }, msg()), 'retry');
    assert.equal(d.status, null);
  });
});

describe('APNs provider against the local APNs (HTTP/2, TLS)', () => {
  let fake: ApnsFake;
  let p8 = '';
  let caFile = '';
  const providers: ApnsProvider[] = [];
  const devToken = (n: number) => n.toString(16).padStart(64, 'a');
  const make = (over: Record<string, unknown> = {}): ApnsProvider => {
    const p = createProvider('ios', { type: 'apns', keyFile: p8, keyId: 'ABC123DEFG', teamId: 'TEAM123456', topic: 'im.presenced.app', environment: 'sandbox', endpoint: fake.endpoint, caFile, ...over }, { dataDir: dir, log });
    assert.ok(p instanceof ApnsProvider);
    providers.push(p);
    return p;
  };
  const target = (n: number): PushTarget => ({ provider: 'ios', token: devToken(n) });

  before(async () => {
    const d = mkdtempSync(join(dir, 'apns-'));
    const key = makeP8(d);
    const tls = makeTlsCert(d);
    p8 = key.file;
    caFile = tls.certFile;
    fake = new ApnsFake({ key: tls.key, cert: tls.cert, publicKey: key.publicKey, keyId: 'ABC123DEFG', teamId: 'TEAM123456', topic: 'im.presenced.app' });
    await fake.listen();
  });
  after(async () => {
    for (const p of providers) await p.close();
    await fake.close();
  });

  test('a push arrives with the APNs headers, the payload and a verified provider token', async () => {
    const p = make();
    const before = Math.floor(Date.now() / 1000);
    const r = expectOutcome(await p.send(target(1), msg({ sender: 'alice@example.com', body: 'hello', data: { room: 'r1' } })), 'sent');
    assert.equal(r.status, 200);
    assert.match(r.id ?? '', /^[0-9A-F-]{36}$/);
    assert.deepEqual(fake.bad, []);
    const got = fake.received.at(-1)!;
    assert.equal(got.deviceToken, devToken(1));
    assert.equal(got.headers['apns-topic'], 'im.presenced.app');
    assert.equal(got.headers['apns-push-type'], 'alert');
    assert.equal(got.headers['apns-priority'], '10');
    assert.equal(got.headers['apns-collapse-id'], 'chat-alice');
    const exp = Number(got.headers['apns-expiration']);
    assert.ok(exp >= before + 60 && exp <= before + 62, `apns-expiration ${exp}`);
    assert.deepEqual(got.payload, { room: 'r1', reason: 'message', count: 3, sender: 'alice@example.com', aps: { alert: { title: 'alice@example.com', body: 'hello' }, badge: 3, sound: 'default', 'mutable-content': 1 } });
    assert.deepEqual(decodeProtectedHeader(got.jwt), { alg: 'ES256', kid: 'ABC123DEFG' });
    assert.equal(decodeJwt(got.jwt).iss, 'TEAM123456');
  });

  test('without sender and body the alert is generic; a count of 0 only clears the badge', async () => {
    const p = make();
    expectOutcome(await p.send(target(2), msg({ urgency: 'normal', ttlSeconds: 0 })), 'sent');
    let got = fake.received.at(-1)!;
    assert.deepEqual(got.payload, { reason: 'message', count: 3, aps: { alert: { body: 'New message' }, badge: 3, sound: 'default', 'mutable-content': 1 } });
    assert.equal(got.headers['apns-priority'], '5');
    assert.equal(got.headers['apns-expiration'], '0');
    expectOutcome(await p.send(target(2), msg({ reason: 'clear', count: 0 })), 'sent');
    got = fake.received.at(-1)!;
    assert.deepEqual(got.payload, { reason: 'clear', count: 0, aps: { badge: 0 } });
    const long = 'k'.repeat(100);
    expectOutcome(await p.send(target(2), msg({ collapseKey: long })), 'sent');
    assert.ok(Buffer.byteLength(fake.received.at(-1)!.headers['apns-collapse-id'] as string) <= 64);
    assert.deepEqual(fake.bad, []);
  });

  test('many pushes share one HTTP/2 connection, concurrently, under one provider token', async () => {
    const p = make();
    const before = fake.received.length;
    const sessionsBefore = fake.sessionsOpened;
    fake.maxInFlight = 0;
    // The fake answers only once 50 requests are open at the same time: that needs multiplexing.
    fake.holdUntil = 50;
    try {
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => p.send(target(1000 + i), msg())));
      for (const r of results) expectOutcome(r, 'sent');
    } finally {
      fake.holdUntil = 0;
    }
    assert.equal(fake.received.length - before, 200);
    assert.ok(fake.maxInFlight >= 50, `at most ${fake.maxInFlight} requests at once`);
    assert.equal(p.sessionsOpened, 1);
    assert.equal(fake.sessionsOpened - sessionsBefore, 1);
    assert.equal(new Set(fake.received.slice(-200).map((r) => r.session)).size, 1);
    assert.equal(new Set(fake.received.slice(-200).map((r) => r.jwt)).size, 1);
  });

  test("APNs's answers: 410 Unregistered and 400 BadDeviceToken are dead, 429 with Retry-After and 5xx retried, 413 failed", async () => {
    const p = make();
    fake.byToken.set(devToken(410), ApnsAnswers.unregistered());
    fake.byToken.set(devToken(400), ApnsAnswers.badDeviceToken());
    fake.byToken.set(devToken(429), ApnsAnswers.tooMany(9));
    fake.byToken.set(devToken(500), ApnsAnswers.internal());
    fake.byToken.set(devToken(503), ApnsAnswers.unavailable());
    fake.byToken.set(devToken(413), ApnsAnswers.payloadTooLarge());
    const gone = expectOutcome(await p.send(target(410), msg()), 'dead');
    assert.equal(gone.status, 410);
    assert.equal(gone.reason, 'Unregistered');
    const bad = expectOutcome(await p.send(target(400), msg()), 'dead');
    assert.equal(bad.reason, 'BadDeviceToken');
    const slow = expectOutcome(await p.send(target(429), msg()), 'retry');
    assert.equal(slow.status, 429);
    assert.equal(slow.retryAfterMs, 9000);
    assert.equal(expectOutcome(await p.send(target(500), msg()), 'retry').status, 500);
    assert.equal(expectOutcome(await p.send(target(503), msg()), 'retry').status, 503);
    assert.equal(expectOutcome(await p.send(target(413), msg()), 'failed').status, 413);
    // A token that is not hex never leaves the server (it would change the request path).
    const n = fake.received.length;
    expectOutcome(await p.send({ provider: 'ios', token: '../../x' }, msg()), 'failed');
    assert.equal(fake.received.length, n);
  });

  test('ExpiredProviderToken: a new provider token, and the push retried once with it', async () => {
    const p = make();
    expectOutcome(await p.send(target(7), msg()), 'sent');
    const old = fake.received.at(-1)!.jwt;
    fake.expiredJwts.add(old);
    expectOutcome(await p.send(target(7), msg()), 'sent');
    const renewed = fake.received.at(-1)!.jwt;
    assert.notEqual(renewed, old);
    // Then reused.
    expectOutcome(await p.send(target(8), msg()), 'sent');
    assert.equal(fake.received.at(-1)!.jwt, renewed);
  });

  test('after a GOAWAY the next push goes on a new connection', async () => {
    const p = make();
    expectOutcome(await p.send(target(9), msg()), 'sent');
    assert.equal(p.sessionsOpened, 1);
    const s = fake.received.at(-1)!.session;
    fake.goaway();
    // Polls until the provider has noticed the GOAWAY (it arrives asynchronously).
    const deadline = Date.now() + 5000;
    for (;;) {
      expectOutcome(await p.send(target(9), msg()), 'sent');
      if (fake.received.at(-1)!.session !== s) break;
      assert.ok(Date.now() < deadline, 'still on the old connection');
      await delay(20);
    }
    assert.equal(p.sessionsOpened, 2);
  });

  test('no answer within timeoutMs, or a shutdown signal: retry, and the connection stays usable', async () => {
    const p = make({ timeoutMs: 300 });
    // The fake holds every answer until a thousand requests are open: a lone push gets none.
    fake.holdUntil = 1000;
    try {
      const r = expectOutcome(await p.send(target(11), msg()), 'retry');
      assert.match(r.error, /no answer within 300 ms/);
      const open = fake.inFlight;
      const ctl = new AbortController();
      const pending = p.send(target(12), msg(), ctl.signal);
      await fake.until(() => fake.inFlight > open, 'the request to reach the fake');
      ctl.abort();
      assert.match(expectOutcome(await pending, 'retry').error, /interrupted/);
    } finally {
      fake.holdUntil = 0;
      fake.release();
    }
    expectOutcome(await p.send(target(13), msg()), 'sent');
    assert.equal(p.sessionsOpened, 1);
  });

  test('an unreachable APNs is retried; a server with an unknown certificate too (TLS refused)', async () => {
    const port = await deadPort();
    const down = make({ endpoint: `https://127.0.0.1:${port}` });
    assert.equal(expectOutcome(await down.send(target(1), msg()), 'retry').status, null);
    const untrusted = make({ caFile: undefined });
    const r = expectOutcome(await untrusted.send(target(1), msg()), 'retry');
    assert.match(r.error, /certificate/i);
  });
});

describe('Web Push provider against a local push service', () => {
  const fake = new WebPushFake();
  const providers: PushProvider[] = [];
  let dataDir = '';
  const make = (over: Record<string, unknown> = {}, dd = dataDir): WebPushProvider => {
    const p = createProvider('web', { type: 'webpush', subject: 'mailto:ops@example.com', endpointHosts: ['127.0.0.1'], allowInsecureEndpoints: true, ...over }, { dataDir: dd, log });
    assert.ok(p instanceof WebPushProvider);
    providers.push(p);
    return p;
  };
  const target = (s: { endpoint: string; keys: { p256dh: string; auth: string } }): PushTarget => ({ provider: 'web', token: s.endpoint, keys: s.keys });

  before(async () => {
    await fake.listen();
    dataDir = mkdtempSync(join(dir, 'webpush-'));
  });
  after(async () => {
    for (const p of providers) await p.close();
    await fake.close();
  });

  test('the payload decrypted by the subscription equals what was sent; VAPID verified; TTL, Urgency, Topic set', async () => {
    const p = make();
    const sub = fake.subscribe(p.applicationServerKey);
    const r = expectOutcome(await p.send(target(sub), msg({ sender: 'alice@example.com', body: 'héllo ✓', title: 'Alice', data: { room: 'r1' } })), 'sent');
    assert.equal(r.status, 201);
    assert.match(r.id ?? '', /\/message\/\d+$/);
    assert.deepEqual(fake.bad, []);
    const got = fake.received.at(-1)!;
    assert.deepEqual(JSON.parse(got.plaintext), { reason: 'message', count: 3, sender: 'alice@example.com', title: 'Alice', body: 'héllo ✓', data: { room: 'r1' } });
    assert.equal(got.headers.ttl, '60');
    assert.equal(got.headers.urgency, 'high');
    assert.equal(got.headers.topic, 'chat-alice');
    assert.equal(got.vapidKey, p.applicationServerKey);
    assert.equal(got.claims.aud, fake.origin);
    assert.equal(got.claims.sub, 'mailto:ops@example.com');
    assert.ok((got.claims.exp as number) <= Date.now() / 1000 + 24 * 3600);
  });

  test('a collapse key that is not a valid Topic is hashed to 32 base64url characters; privacy: no sender or body unless given', async () => {
    const p = make();
    const sub = fake.subscribe();
    expectOutcome(await p.send(target(sub), msg({ collapseKey: 'chat:alice@example.com/with spaces and more than 32 chars', urgency: 'normal' })), 'sent');
    const got = fake.received.at(-1)!;
    assert.match(got.headers.topic as string, /^[A-Za-z0-9_-]{32}$/);
    assert.equal(got.headers.urgency, 'normal');
    assert.deepEqual(JSON.parse(got.plaintext), { reason: 'message', count: 3 });
  });

  test('VAPID keys are generated once into the data directory (0600) and reused by the next provider', async () => {
    const dd = mkdtempSync(join(dir, 'vapid-'));
    const a = make({}, dd);
    const file = join(dd, 'vapid-keys.json');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const stored = JSON.parse(readFileSync(file, 'utf8')) as { publicKey: string };
    assert.equal(stored.publicKey, a.applicationServerKey);
    assert.equal(vapidPublicKeyOf(a), a.applicationServerKey);
    const b = make({}, dd);
    assert.equal(b.applicationServerKey, a.applicationServerKey);
    // A browser that subscribed with the first provider's key takes pushes from the second.
    const sub = fake.subscribe(a.applicationServerKey);
    expectOutcome(await b.send(target(sub), msg()), 'sent');
    // And another data directory means other keys, refused by that subscription.
    const other = make({}, mkdtempSync(join(dir, 'vapid-other-')));
    assert.notEqual(other.applicationServerKey, a.applicationServerKey);
    expectOutcome(await other.send(target(sub), msg()), 'failed');
    fake.bad.length = 0;
  });

  test('processes starting together on one data directory agree on one VAPID key pair', async () => {
    const dd = mkdtempSync(join(dir, 'vapid-race-'));
    const module = new URL('../../src/features/push/providers/webpush.ts', import.meta.url).href;
    const script = `import { loadOrCreateVapidKeys } from ${JSON.stringify(module)}; process.stdout.write(loadOrCreateVapidKeys(${JSON.stringify(dd)}, 'race').publicKey);`;
    const run = () =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.on('error', reject);
        child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`))));
      });
    const keys = await Promise.all([run(), run(), run(), run()]);
    assert.equal(new Set(keys).size, 1, keys.join(' '));
    assert.equal(keys[0], make({}, dd).applicationServerKey);
  });

  test('independent oracle: the web-push package encrypts and signs with our VAPID keys, and the fake decrypts and verifies it', async () => {
    const dd = mkdtempSync(join(dir, 'vapid-oracle-'));
    const p = make({}, dd);
    const keys = JSON.parse(readFileSync(join(dd, 'vapid-keys.json'), 'utf8')) as { publicKey: string; privateKey: string };
    const sub = fake.subscribe(p.applicationServerKey);
    const payload = JSON.stringify({ reason: 'notify', count: 1, body: 'from web-push' });
    const req = webpush.generateRequestDetails(sub, payload, { vapidDetails: { subject: 'mailto:ops@example.com', publicKey: keys.publicKey, privateKey: keys.privateKey }, TTL: 30, topic: 'oracle' });
    const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]));
    const res = await fetch(req.endpoint, { method: req.method, headers, body: new Uint8Array(req.body!) });
    assert.equal(res.status, 201, fake.bad.join('; '));
    assert.equal(fake.received.at(-1)!.plaintext, payload);
    // And keys made by web-push are accepted as configured keys.
    const theirs = webpush.generateVAPIDKeys();
    const q = make({ vapidPublicKey: theirs.publicKey, vapidPrivateKey: theirs.privateKey });
    assert.equal(q.applicationServerKey, theirs.publicKey);
    const sub2 = fake.subscribe(theirs.publicKey);
    expectOutcome(await q.send(target(sub2), msg()), 'sent');
    assert.deepEqual(fake.bad, []);
  });

  test("the push service's answers: 404 and 410 dead, 429 with Retry-After and 5xx retried, 413 failed", async () => {
    const p = make();
    const subs = Array.from({ length: 5 }, () => fake.subscribe());
    fake.byToken.set(subs[0]!.endpoint, WebPushAnswers.gone());
    fake.byToken.set(subs[1]!.endpoint, WebPushAnswers.notFound());
    fake.byToken.set(subs[2]!.endpoint, WebPushAnswers.tooMany(11));
    fake.byToken.set(subs[3]!.endpoint, WebPushAnswers.internal());
    fake.byToken.set(subs[4]!.endpoint, WebPushAnswers.tooLarge());
    assert.equal(expectOutcome(await p.send(target(subs[0]!), msg()), 'dead').status, 410);
    assert.equal(expectOutcome(await p.send(target(subs[1]!), msg()), 'dead').status, 404);
    const slow = expectOutcome(await p.send(target(subs[2]!), msg()), 'retry');
    assert.equal(slow.retryAfterMs, 11_000);
    assert.equal(expectOutcome(await p.send(target(subs[3]!), msg()), 'retry').status, 500);
    assert.equal(expectOutcome(await p.send(target(subs[4]!), msg()), 'failed').status, 413);
    // Retry-After as an HTTP date (RFC 9110 allows both forms).
    const later = fake.subscribe();
    fake.byToken.set(later.endpoint, { status: 503, headers: { 'retry-after': new Date(Date.now() + 30_000).toUTCString() } });
    const dated = expectOutcome(await p.send(target(later), msg()), 'retry');
    assert.ok(dated.retryAfterMs !== undefined && dated.retryAfterMs > 27_000 && dated.retryAfterMs <= 30_000, `retryAfterMs ${dated.retryAfterMs}`);
    assert.deepEqual(fake.bad, []);
  });

  test('endpoints outside the known push services, plain http, and bad keys are refused without a request', async () => {
    const strict = make({ endpointHosts: undefined, allowInsecureEndpoints: undefined });
    const sub = fake.subscribe();
    const n = fake.received.length + fake.bad.length;
    const r = expectOutcome(await strict.send(target(sub), msg()), 'failed');
    assert.match(r.error, /https/);
    assert.match(strict.checkSubscription({ token: 'https://127.0.0.1:9/push/x', keys: sub.keys }) ?? '', /not a known push service/);
    assert.equal(strict.checkSubscription({ token: 'https://fcm.googleapis.com/fcm/send/abc', keys: sub.keys }), null);
    assert.equal(strict.checkSubscription({ token: 'https://updates.push.services.mozilla.com/wpush/v2/abc', keys: sub.keys }), null);
    const p = make();
    expectOutcome(await p.send({ provider: 'web', token: sub.endpoint }, msg()), 'failed');
    expectOutcome(await p.send({ provider: 'web', token: sub.endpoint, keys: { p256dh: 'AAAA', auth: sub.keys.auth } }, msg()), 'failed');
    assert.equal(fake.received.length + fake.bad.length, n);
  });
});

describe('provider configuration', () => {
  const cfgDir = mkdtempSync(join(tmpdir(), 'push-config-'));
  after(() => rmSync(cfgDir, { recursive: true, force: true }));
  const deps = { dataDir: cfgDir, log };
  const refused = (config: unknown, pattern: RegExp) => {
    assert.throws(
      () => createProvider('p1', config, deps),
      (e: unknown) => e instanceof ProviderConfigError && pattern.test(e.message) && e.message.includes('"p1"'),
      `expected ${pattern}`,
    );
  };

  test('unknown or missing type', () => {
    refused({ type: 'gcm' }, /unknown type "gcm" \(known: fcm, apns, webpush/);
    refused({}, /type is required/);
    refused('fcm', /must be an object/);
  });

  test('FCM: missing, unreadable or incomplete service-account file', () => {
    refused({ type: 'fcm' }, /serviceAccountFile is required/);
    refused({ type: 'fcm', serviceAccountFile: join(cfgDir, 'nope.json') }, /serviceAccountFile cannot be read .*ENOENT/);
    const f = join(cfgDir, 'sa.json');
    writeFileSync(f, '{not json');
    refused({ type: 'fcm', serviceAccountFile: f }, /is not JSON/);
    writeFileSync(f, JSON.stringify({ type: 'service_account', project_id: 'x', client_email: 'a@b', token_uri: 'https://oauth2.googleapis.com/token', private_key: 'garbage' }));
    refused({ type: 'fcm', serviceAccountFile: f }, /unreadable private_key/);
    writeFileSync(f, JSON.stringify({ type: 'service_account', client_email: 'a@b', token_uri: 'https://oauth2.googleapis.com/token' }));
    refused({ type: 'fcm', serviceAccountFile: f }, /has no "project_id"/);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    writeFileSync(f, JSON.stringify({ type: 'service_account', project_id: 'x', client_email: 'a@b', token_uri: 'https://oauth2.googleapis.com/token', private_key: ec }));
    refused({ type: 'fcm', serviceAccountFile: f }, /not an RSA key/);
    const ok = makeServiceAccount(cfgDir, 'https://oauth2.googleapis.com/token');
    refused({ type: 'fcm', serviceAccountFile: ok.file, endpoint: 'ftp://x' }, /endpoint must be an http or https URL/);
  });

  test('APNs: key file, ids, topic and environment', () => {
    const key = makeP8(cfgDir);
    const base = { type: 'apns', keyFile: key.file, keyId: 'ABC123DEFG', teamId: 'TEAM123456', topic: 'im.presenced.app', environment: 'production' };
    const p = createProvider('p1', base, deps);
    assert.equal(p.type, 'apns');
    void p.close();
    refused({ ...base, keyFile: join(cfgDir, 'missing.p8') }, /keyFile cannot be read/);
    const rsa = join(cfgDir, 'rsa.p8');
    writeFileSync(rsa, generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    refused({ ...base, keyFile: rsa }, /not an EC P-256 key/);
    const junk = join(cfgDir, 'junk.p8');
    writeFileSync(junk, 'not a key');
    refused({ ...base, keyFile: junk }, /not a readable private key/);
    refused({ ...base, keyId: undefined }, /keyId is required/);
    refused({ ...base, teamId: '' }, /teamId must be a non-empty string/);
    refused({ ...base, topic: 5 }, /topic must be a non-empty string/);
    refused({ ...base, environment: 'development' }, /environment must be "production" or "sandbox"/);
    refused({ ...base, environment: undefined }, /environment is required/);
    refused({ ...base, caFile: join(cfgDir, 'no-ca.pem') }, /caFile cannot be read/);
  });

  test('Web Push: subject, one key without the other, keys that do not match, a damaged key file', () => {
    refused({ type: 'webpush' }, /subject is required/);
    refused({ type: 'webpush', subject: 'ops@example.com' }, /subject must be a mailto: address or an https: URL/);
    const k = webpush.generateVAPIDKeys();
    const k2 = webpush.generateVAPIDKeys();
    refused({ type: 'webpush', subject: 'mailto:a@b.c', vapidPublicKey: k.publicKey }, /vapidPrivateKey is required with the other VAPID key/);
    refused({ type: 'webpush', subject: 'mailto:a@b.c', vapidPublicKey: k.publicKey, vapidPrivateKey: k2.privateKey }, /does not belong to the private key/);
    refused({ type: 'webpush', subject: 'mailto:a@b.c', vapidPublicKey: 'abc', vapidPrivateKey: k.privateKey }, /uncompressed P-256 point/);
    refused({ type: 'webpush', subject: 'mailto:a@b.c', endpointHosts: 'fcm.googleapis.com' }, /endpointHosts must be a list/);
    const dd = mkdtempSync(join(cfgDir, 'damaged-'));
    writeFileSync(join(dd, 'vapid-keys.json'), '{"publicKey": 1}');
    assert.throws(() => createProvider('p1', { type: 'webpush', subject: 'mailto:a@b.c' }, { dataDir: dd, log }), (e: unknown) => e instanceof ProviderConfigError && /vapid-keys\.json is damaged/.test(e.message));
  });

  test('registerProviderType adds a type (the core registers the webhook provider this way)', async () => {
    let built = '';
    registerProviderType('webhook', (name, config) => {
      built = `${name}:${String(config.url)}`;
      return { name, type: 'webhook', send: async () => ({ outcome: 'sent', status: 200, latencyMs: 0 }), close: async () => undefined };
    });
    const p = createProvider('gw', { type: 'webhook', url: 'https://gw.example/push' }, deps);
    assert.equal(built, 'gw:https://gw.example/push');
    assert.equal(p.type, 'webhook');
  });
});
