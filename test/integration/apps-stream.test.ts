import assert from 'node:assert/strict';
import { get as httpGet, type ClientRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { EventSource } from 'eventsource';
import { appsOf } from '../../src/features/apps/apps-feature.js';
import { encodeCursor } from '../../src/features/apps/stream/cursor.js';
import { TestClient } from '../helpers/ws-client.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const basic = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;

interface App {
  readonly id: string;
  readonly clientSecret: string;
}

async function registerApp(t: TestServer, name = 'Chess Club'): Promise<App> {
  const res = await fetch(`${t.url}/api/v1/apps`, {
    method: 'POST',
    headers: { authorization: basic('alice@localhost', 'secret-pw'), 'content-type': 'application/json' },
    body: JSON.stringify({ name, homepage: 'https://chess.example/', redirectUris: ['https://chess.example/callback'] }),
  });
  const body = (await res.json()) as App;
  assert.equal(res.status, 201, JSON.stringify(body));
  return { id: body.id, clientSecret: body.clientSecret };
}

const appAuth = (app: App) => basic(app.id, app.clientSecret);

async function presenceOfMany(t: TestServer, app: App, uids: string[], auth = appAuth(app)): Promise<{ status: number; body: any }> {
  const res = await fetch(`${t.url}/api/v1/apps/${app.id}/presence`, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/json' },
    body: JSON.stringify({ uids }),
  });
  return { status: res.status, body: await res.json() };
}

/** Retries a check until it passes: waits for an effect that follows asynchronously (no fixed sleep). */
async function eventually<T>(check: () => Promise<T> | T, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

type Line = Record<string, any>;

/**
 * An NDJSON stream read line by line as it arrives (node:http rather than fetch: closing it destroys
 * its connection outright, where an aborted fetch may leave its pool holding a connection open).
 */
class NdjsonStream {
  readonly lines: Line[] = [];
  ended = false;
  #waiters: Array<() => void> = [];

  private constructor(private readonly req: ClientRequest) {}

  static async open(url: string, headers: Record<string, string>): Promise<NdjsonStream> {
    const req = httpGet(url, { headers, agent: false });
    const s = new NdjsonStream(req);
    const res = await new Promise<IncomingMessage>((resolve, reject) => req.once('response', resolve).once('error', reject));
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] ?? '', /^application\/x-ndjson/);
    s.#read(res);
    return s;
  }

  #read(res: IncomingMessage): void {
    let rest = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      rest += chunk;
      let nl: number;
      while ((nl = rest.indexOf('\n')) >= 0) {
        this.lines.push(JSON.parse(rest.slice(0, nl)) as Line);
        rest = rest.slice(nl + 1);
      }
      this.#wake();
    });
    const done = (): void => {
      this.ended = true;
      this.#wake();
    };
    res.once('end', done);
    res.once('close', done);
    res.once('error', done);
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Resolves once the lines received satisfy `check`. */
  async until(check: (lines: readonly Line[]) => boolean, what: string, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check(this.lines)) {
      if (Date.now() > deadline || this.ended) throw new Error(`stream: ${this.ended ? 'ended' : 'timed out'} waiting for ${what}; lines: ${JSON.stringify(this.lines).slice(-2000)}`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, Math.max(0, deadline - Date.now()) + 1).unref();
      });
    }
  }

  presence(uid?: string): Line[] {
    return this.lines.filter((l) => l.type === 'presence' && (uid === undefined || l.uid === uid));
  }

  close(): void {
    this.req.destroy();
  }
}

interface SseEvent {
  readonly type: string;
  readonly id: string;
  readonly data: Line;
}

const SSE_TYPES = ['snapshot', 'resume', 'presence', 'live', 'keepalive', 'end'];

/** An EventSource (the `eventsource` package) sending the app's credentials, and optionally a Last-Event-ID to resume from. */
function openSse(url: string, app: App, lastEventId?: string): { es: EventSource; events: SseEvent[]; errors: Array<{ code?: number }>; until(check: (e: readonly SseEvent[]) => boolean, what: string): Promise<void> } {
  const events: SseEvent[] = [];
  const errors: Array<{ code?: number }> = [];
  const es = new EventSource(url, {
    fetch: (input, init) =>
      fetch(input, {
        ...init,
        headers: {
          ...(init.headers as Record<string, string>),
          authorization: appAuth(app),
          // The first connection resumes from a given cursor; later ones send what the EventSource tracked.
          ...(lastEventId !== undefined && (init.headers as Record<string, string>)['Last-Event-ID'] === undefined ? { 'last-event-id': lastEventId } : {}),
        },
      }),
  });
  for (const type of SSE_TYPES) es.addEventListener(type, (e) => events.push({ type, id: e.lastEventId, data: JSON.parse(e.data) as Line }));
  es.addEventListener('error', (e) => errors.push({ code: e.code }));
  return {
    es,
    events,
    errors,
    async until(check, what) {
      await eventually(() => assert.ok(check(events), `${what}; events: ${JSON.stringify(events).slice(-2000)}`));
    },
  };
}

/** Per user, the seq numbers must go up by exactly one from line to line: none missed, none twice. */
function assertContiguous(lines: ReadonlyArray<{ uid: string; seq: number }>, startAfter: ReadonlyMap<string, number>): void {
  const last = new Map(startAfter);
  for (const l of lines) {
    const prev = last.get(l.uid);
    if (prev !== undefined) assert.equal(l.seq, prev + 1, `uid ${l.uid}: seq ${l.seq} after ${prev}`);
    last.set(l.uid, l.seq);
  }
}

/** A metric summed over the server's nodes (under TEST_CLUSTER a stream is served by whichever node the balancer chose). */
async function metric(t: TestServer, name: string): Promise<number> {
  let sum = 0;
  for (const n of t.nodes) {
    const text = await (await fetch(`${n.url}/metrics`)).text();
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
    if (m !== null) sum += Number(m[1]);
  }
  return sum;
}

describe('app presence stream', () => {
  let t: TestServer;
  let app: App;
  let bob: TestClient;
  let carol: TestClient;
  let dave: TestClient;
  const uid: Record<string, string> = {};

  before(async () => {
    t = await startTestServer({ stream_keepalive_ms: 300 });
    for (const u of ['alice', 'bob', 'carol', 'dave']) await t.createAccount(`${u}@localhost`);
    app = await registerApp(t);
    const apps = appsOf(t.server.engine)!;
    for (const u of ['bob', 'carol', 'dave']) uid[u] = apps.service.pairwiseId(app.id, `${u}@localhost`);
    bob = (await TestClient.login(t.wsUrl, 'bob@localhost')).client;
    carol = (await TestClient.login(t.wsUrl, 'carol@localhost')).client;
    dave = (await TestClient.login(t.wsUrl, 'dave@localhost')).client;
    await apps.grants.grant(app.id, 'bob@localhost', ['presence', 'presence.status']);
    await apps.grants.grant(app.id, 'carol@localhost', ['presence']);
    // A new grant writes the user's current presence to the app's log.
    await eventually(async () => {
      const r = await presenceOfMany(t, app, [uid.bob!, uid.carol!]);
      assert.deepEqual(r.body.users.map((u: any) => u.status), ['online', 'online']);
    });
  });
  after(async () => {
    await bob.close();
    await carol.close();
    await dave.close();
    await t.destroy();
  });

  test('NDJSON: a snapshot of the granted users, its end with a cursor, then each change as it happens', async () => {
    const s = await NdjsonStream.open(`${t.url}/${app.id}/presence.json`, { authorization: appAuth(app) });
    await s.until((ls) => ls.some((l) => l.type === 'live'), 'the end of the snapshot');
    assert.deepEqual(s.lines[0], { type: 'snapshot', users: 2, fresh: false });
    const snap = s.presence();
    assert.deepEqual(snap.map((l) => l.uid).sort(), [uid.bob, uid.carol].sort());
    for (const l of snap) {
      assert.equal(l.snapshot, true);
      assert.equal(l.status, 'online');
      assert.ok(Number.isInteger(l.seq) && l.seq >= 1);
      assert.ok(!Number.isNaN(Date.parse(l.at)));
    }
    const live = s.lines[3]!;
    assert.equal(live.type, 'live');
    assert.match(live.cursor, /^[0-9a-z]+\.[0-9a-z]+$/);

    await dave.request('presence', { show: 'dnd', status: 'never granted' });
    await bob.request('presence', { show: 'away', status: 'lunch' });
    await s.until((ls) => ls.some((l) => l.type === 'presence' && l.uid === uid.bob && l.status === 'away'), "bob's change");
    const change = s.presence(uid.bob).at(-1)!;
    assert.equal(change.statusText, 'lunch');
    assert.equal(change.seq, snap.find((l) => l.uid === uid.bob)!.seq + 1);
    assert.match(change.cursor, /^[0-9a-z]+\.[0-9a-z]+$/);
    assert.equal(change.snapshot, undefined);

    // carol granted `presence` only: her status text is not shown.
    await carol.request('presence', { show: 'xa', status: 'secret text' });
    await s.until((ls) => ls.some((l) => l.type === 'presence' && l.uid === uid.carol && l.status === 'away'), "carol's change");
    assert.equal(s.presence(uid.carol).at(-1)!.statusText, undefined);
    assert.ok(!JSON.stringify(s.lines).includes(uid.dave!), 'a user who never granted the app never appears');
    s.close();
    await bob.request('presence', { show: 'available', status: null });
    await carol.request('presence', { show: 'available', status: null });
  });

  test('an idle stream sends keep-alive lines whose cursor resumes without a snapshot', async () => {
    const s = await NdjsonStream.open(`${t.url}/api/v1/apps/${app.id}/presence.json`, { authorization: appAuth(app) });
    await s.until((ls) => ls.filter((l) => l.type === 'keepalive').length >= 2, 'two keep-alives');
    const ka = s.lines.find((l) => l.type === 'keepalive')!;
    assert.match(ka.cursor, /^[0-9a-z]+\.[0-9a-z]+$/);
    s.close();
    const r = await NdjsonStream.open(`${t.url}/${app.id}/presence.json?since=${ka.cursor}`, { authorization: appAuth(app) });
    await r.until((ls) => ls.some((l) => l.type === 'live'), 'caught up');
    assert.deepEqual(r.lines[0], { type: 'resume', since: ka.cursor });
    r.close();
  });

  test('SSE: the same stream as Server-Sent Events with the cursor as event id', async () => {
    const c = openSse(`${t.url}/api/v1/apps/${app.id}/presence.json`, app);
    try {
      await c.until((es) => es.some((e) => e.type === 'live'), 'the end of the snapshot');
      assert.equal(c.events[0]!.type, 'snapshot');
      assert.equal(c.events[0]!.data.users, 2);
      const live = c.events.find((e) => e.type === 'live')!;
      assert.equal(live.id, live.data.cursor);
      await bob.request('presence', { show: 'dnd', status: 'meeting' });
      await c.until((es) => es.some((e) => e.type === 'presence' && e.data.status === 'dnd'), "bob's change");
      const ev = c.events.find((e) => e.type === 'presence' && e.data.status === 'dnd')!;
      assert.equal(ev.id, ev.data.cursor);
      assert.deepEqual([ev.data.uid, ev.data.statusText], [uid.bob, 'meeting']);
    } finally {
      c.es.close();
    }
  });

  test('SSE reconnect with Last-Event-ID: exactly the missed updates, none twice, then live', async () => {
    const first = openSse(`${t.url}/${app.id}/presence.json`, app);
    await first.until((es) => es.some((e) => e.type === 'live'), 'live');
    await bob.request('presence', { show: 'away', status: 'one' });
    await first.until((es) => es.some((e) => e.type === 'presence' && e.data.statusText === 'one'), 'update one');
    // What an EventSource sends as Last-Event-ID when it reconnects: the id of the last event that had one.
    const lastId = first.events.filter((e) => e.id !== '').at(-1)!.id;
    assert.equal(lastId, first.events.at(-1)!.data.cursor);
    const seen = new Map<string, number>();
    for (const e of first.events) if (e.type === 'presence') seen.set(e.data.uid, e.data.seq);
    first.es.close();

    // Missed while disconnected: several changes of two users.
    await bob.request('presence', { show: 'available', status: 'two' });
    await carol.request('presence', { show: 'dnd' });
    await bob.request('presence', { show: 'dnd', status: 'three' });
    await carol.request('presence', { show: 'available' });
    await eventually(async () => {
      const r = await presenceOfMany(t, app, [uid.bob!, uid.carol!]);
      assert.deepEqual(r.body.users.map((u: any) => u.status), ['dnd', 'online']);
    });

    const again = openSse(`${t.url}/${app.id}/presence.json`, app, lastId);
    try {
      await again.until((es) => es.some((e) => e.type === 'live'), 'caught up');
      assert.deepEqual(again.events[0]!.data, { type: 'resume', since: lastId });
      const replayed = again.events.filter((e) => e.type === 'presence').map((e) => e.data);
      assert.deepEqual(replayed.map((d) => [d.uid === uid.bob ? 'bob' : 'carol', d.status]), [
        ['bob', 'online'],
        ['carol', 'dnd'],
        ['bob', 'dnd'],
        ['carol', 'online'],
      ]);
      assertContiguous(replayed as Array<{ uid: string; seq: number }>, seen);
      // Then live, with no gap and nothing twice.
      await bob.request('presence', { show: 'available', status: 'four' });
      await again.until((es) => es.some((e) => e.type === 'presence' && e.data.statusText === 'four'), 'live update');
      const all = again.events.filter((e) => e.type === 'presence').map((e) => e.data);
      assert.equal(all.length, 5);
      assertContiguous(all as Array<{ uid: string; seq: number }>, seen);
    } finally {
      again.es.close();
    }
  });

  test('a cursor older than the retention, malformed or from the future gets a fresh snapshot, marked as such', async () => {
    const retention = t.config.stream_retention_ms;
    const cases: Array<[string, string]> = [
      [encodeCursor(1, Date.now() - retention - 60_000), 'cursor expired'],
      ['not-a-cursor', 'malformed cursor'],
      ['%00%ff', 'malformed cursor'],
      [encodeCursor(1, Date.now() + 3_600_000), 'unknown cursor'],
      [encodeCursor(1e12, Date.now()), 'unknown cursor'],
    ];
    for (const [since, reason] of cases) {
      const s = await NdjsonStream.open(`${t.url}/${app.id}/presence.json?since=${since}`, { authorization: appAuth(app) });
      await s.until((ls) => ls.some((l) => l.type === 'live'), `snapshot for ${since}`);
      assert.deepEqual(s.lines[0], { type: 'snapshot', users: 2, fresh: true, reason }, since);
      s.close();
    }
    // The same through SSE's Last-Event-ID.
    const c = openSse(`${t.url}/${app.id}/presence.json`, app, encodeCursor(1, Date.now() - retention - 1));
    try {
      await c.until((es) => es.some((e) => e.type === 'live'), 'snapshot');
      assert.deepEqual(c.events[0]!.data, { type: 'snapshot', users: 2, fresh: true, reason: 'cursor expired' });
    } finally {
      c.es.close();
    }
  });

  test('presence of many users in one call: granted users answered, others exactly like unknown ids', async () => {
    const r = await presenceOfMany(t, app, [uid.bob!, uid.dave!, 'no-such-uid', uid.carol!, uid.bob!]);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.users.map((u: any) => u.uid), [uid.bob, uid.dave, 'no-such-uid', uid.carol]);
    const [b, d, unknown, c] = r.body.users;
    assert.equal(b.status, 'online');
    assert.equal(b.statusText, 'four');
    assert.ok(Number.isInteger(b.seq) && !Number.isNaN(Date.parse(b.at)));
    assert.equal(c.statusText, undefined);
    assert.deepEqual(d, { uid: uid.dave, status: null });
    assert.deepEqual(unknown, { uid: 'no-such-uid', status: null });

    const tooMany = await presenceOfMany(t, app, Array.from({ length: 1001 }, (_, i) => `u${i}`));
    assert.equal(tooMany.status, 400);
    assert.equal(tooMany.body.error.code, 'bad-request');
    const bearer = await presenceOfMany(t, app, [uid.bob!], `Bearer ${app.clientSecret}`);
    assert.equal(bearer.body.users[0].status, 'online');
  });

  test('bad credentials: 401 with a JSON error; an unknown app looks exactly like a wrong secret', async () => {
    const other = await registerApp(t, 'Other');
    const paths = (id: string) => [`/${id}/presence.json`, `/api/v1/apps/${id}/presence.json`];
    const bodies: string[] = [];
    for (const path of [...paths(app.id), ...paths('app_doesnotexist')]) {
      for (const auth of [basic(app.id, 'pcs_wrong'), basic('app_doesnotexist', app.clientSecret), basic(other.id, other.clientSecret), `Bearer pcs_wrong`, 'Digest abc', basic(app.id, '')]) {
        const res = await fetch(t.url + path, { headers: { authorization: auth } });
        assert.equal(res.status, 401, `${path} ${auth}`);
        assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
        assert.match(res.headers.get('www-authenticate') ?? '', /^Basic /);
        bodies.push(await res.text());
      }
      const none = await fetch(t.url + path);
      assert.equal(none.status, 401);
      assert.equal(((await none.json()) as any).error.code, 'not-authenticated');
    }
    assert.equal(new Set(bodies).size, 1, `one answer for every wrong credential: ${[...new Set(bodies)].join(' | ')}`);
    assert.equal(JSON.parse(bodies[0]!).error.code, 'auth-failed');
    const post = await presenceOfMany(t, { id: 'app_doesnotexist', clientSecret: app.clientSecret }, [uid.bob!]);
    assert.equal(post.status, 401);
    assert.equal(JSON.stringify(post.body), bodies[0]);
    const wrong = await presenceOfMany(t, app, [uid.bob!], basic(app.id, 'pcs_wrong'));
    assert.equal(JSON.stringify(wrong.body), bodies[0]);
    // An EventSource refused is told so and does not retry.
    const c = openSse(`${t.url}/${app.id}/presence.json`, { id: app.id, clientSecret: 'pcs_wrong' });
    await eventually(() => assert.equal(c.errors[0]?.code, 401));
    assert.equal(c.es.readyState, EventSource.CLOSED);
  });

  test('revocation: once revoke resolves, no line for that user, live or replayed, while others still flow', async () => {
    const apps = appsOf(t.server.engine)!;
    const erinJid = 'erin@localhost';
    await t.createAccount(erinJid);
    const erin = (await TestClient.login(t.wsUrl, erinJid)).client;
    await apps.grants.grant(app.id, erinJid, ['presence']);
    const erinUid = apps.service.pairwiseId(app.id, erinJid);
    const s = await NdjsonStream.open(`${t.url}/${app.id}/presence.json`, { authorization: appAuth(app) });
    try {
      await s.until((ls) => ls.some((l) => l.type === 'presence' && l.uid === erinUid), "erin's granted presence");
      const before = s.lines.find((l) => l.type === 'live')!.cursor as string;
      await erin.request('presence', { show: 'dnd' });
      await s.until((ls) => ls.some((l) => l.uid === erinUid && l.status === 'dnd'), "erin's change while granted");
      const seen = s.lines.length;

      assert.equal(await apps.grants.revoke(app.id, erinJid), true);
      await erin.request('presence', { show: 'away' });
      await erin.request('presence', { show: 'available' });
      await bob.request('presence', { show: 'away', status: 'after revoke' });
      await s.until((ls) => ls.some((l) => l.statusText === 'after revoke'), "bob's change after the revoke");
      assert.deepEqual(s.lines.slice(seen).filter((l) => l.uid === erinUid), []);
      // Erin's rows logged while she was granted are not replayed to the app after the revoke either.
      const r = await NdjsonStream.open(`${t.url}/${app.id}/presence.json?since=${before}`, { authorization: appAuth(app) });
      await r.until((ls) => ls.some((l) => l.type === 'live'), 'replay');
      assert.equal(r.lines[0]!.type, 'resume');
      assert.ok(r.presence(uid.bob).length >= 1);
      assert.deepEqual(r.presence(erinUid), []);
      r.close();
      const snap = await NdjsonStream.open(`${t.url}/${app.id}/presence.json`, { authorization: appAuth(app) });
      await snap.until((ls) => ls.some((l) => l.type === 'live'), 'snapshot');
      assert.deepEqual(snap.presence(erinUid), []);
      snap.close();
      assert.deepEqual((await presenceOfMany(t, app, [erinUid])).body.users, [{ uid: erinUid, status: null }]);
    } finally {
      s.close();
      await erin.close();
    }
  });

  test('a deleted app or a rotated client secret ends its streams with a reason', async () => {
    const temp = await registerApp(t, 'Temp');
    const s1 = await NdjsonStream.open(`${t.url}/${temp.id}/presence.json`, { authorization: appAuth(temp) });
    await s1.until((ls) => ls.some((l) => l.type === 'live'), 'live');
    const rot = await fetch(`${t.url}/api/v1/apps/${temp.id}/secret`, { method: 'POST', headers: { authorization: basic('alice@localhost', 'secret-pw') } });
    const { clientSecret } = (await rot.json()) as { clientSecret: string };
    await s1.until((ls) => ls.some((l) => l.type === 'end'), 'the end line');
    assert.deepEqual(s1.lines.at(-1), { type: 'end', reason: 'client secret changed' });
    await s1.until(() => s1.ended, 'the end of the response');

    const fresh = { id: temp.id, clientSecret };
    const s2 = await NdjsonStream.open(`${t.url}/${temp.id}/presence.json`, { authorization: appAuth(fresh) });
    await s2.until((ls) => ls.some((l) => l.type === 'live'), 'live');
    const del = await fetch(`${t.url}/api/v1/apps/${temp.id}`, { method: 'DELETE', headers: { authorization: basic('alice@localhost', 'secret-pw') } });
    assert.equal(del.status, 204);
    await s2.until((ls) => ls.some((l) => l.type === 'end'), 'the end line');
    assert.deepEqual(s2.lines.at(-1), { type: 'end', reason: 'app deleted' });
  });
});

describe('app presence stream: a consumer that stops reading', () => {
  let t: TestServer;
  let app: App;
  let bob: TestClient;
  const MAX_LAG = 4096;
  before(async () => {
    // The flood below goes far beyond a client's usual request rate.
    t = await startTestServer({ stream_max_lag_bytes: MAX_LAG, stream_keepalive_ms: 500, ws_rate_limit: 100_000, ws_rate_burst: 100_000 });
    await t.createAccount('alice@localhost');
    await t.createAccount('bob@localhost');
    app = await registerApp(t);
    bob = (await TestClient.login(t.wsUrl, 'bob@localhost')).client;
    await appsOf(t.server.engine)!.grants.grant(app.id, 'bob@localhost', ['presence', 'presence.status']);
  });
  after(async () => {
    await bob.close();
    await t.destroy();
  });

  /** A raw connection that sends the stream's request, takes the response's first bytes, then stops reading. */
  async function stalledConsumer(): Promise<{ sock: Socket; received: Buffer[] }> {
    const cutsBefore = await metric(t, 'presenced_app_stream_open');
    const sock = connect(Number(new URL(t.url).port), '127.0.0.1');
    await new Promise<void>((r) => sock.once('connect', () => r()));
    const received: Buffer[] = [];
    sock.on('data', (d: Buffer) => received.push(d));
    sock.pause();
    sock.write(`GET /${app.id}/presence.json HTTP/1.1\r\nhost: x\r\nauthorization: ${appAuth(app)}\r\n\r\n`);
    await eventually(async () => assert.equal(await metric(t, 'presenced_app_stream_open'), cutsBefore + 1));
    return { sock, received };
  }

  /** Changes bob's presence (long status texts: lines of about 1.2 KB) until a stream is cut for lag; the most buffered seen. */
  async function floodUntilCut(cutsBefore: number): Promise<number> {
    const text = (i: number) => `${i} `.padEnd(1000, 'x');
    let maxBuffered = 0;
    let i = 0;
    const deadline = Date.now() + 60_000;
    while ((await metric(t, 'presenced_app_stream_lag_cuts_total')) === cutsBefore) {
      assert.ok(Date.now() < deadline, `not cut after ${i} changes`);
      const batch: Array<Promise<unknown>> = [];
      for (let k = 0; k < 50; k++, i++) batch.push(bob.request('presence', { show: i % 2 === 0 ? 'away' : 'available', status: text(i) }));
      await Promise.all(batch);
      maxBuffered = Math.max(maxBuffered, await metric(t, 'presenced_app_stream_buffered_bytes'));
    }
    assert.ok(i > 0, 'cut by the flood, not before it');
    return maxBuffered;
  }

  test('one that never reads is cut off; what the server holds for it stays bounded, and the stream goes', async () => {
    const { sock } = await stalledConsumer();
    const maxBuffered = await floodUntilCut(0);
    // Bounded: the limit, plus the write that crossed it (one log write: at most the 50 changes of a
    // round, about 1.2 KB each) and the end line. What the kernel's socket buffer took does not count.
    assert.ok(maxBuffered <= MAX_LAG + 50 * 1300 + 300, `buffered ${maxBuffered} bytes`);
    // The stalled connection is closed and the server's count of streams goes back to 0.
    await eventually(async () => assert.equal(await metric(t, 'presenced_app_stream_open'), 0));
    await eventually(async () => assert.equal(await metric(t, 'presenced_app_stream_buffered_bytes'), 0));
    await bob.request('presence', { show: 'dnd', status: 'after' });
    assert.equal(await metric(t, 'presenced_app_stream_buffered_bytes'), 0);
    sock.destroy();
  });

  test('one that reads again soon after the cut finds the reason line "excessive client-side lag" at the end', async () => {
    const { sock, received } = await stalledConsumer();
    await floodUntilCut(await metric(t, 'presenced_app_stream_lag_cuts_total'));
    sock.resume();
    await eventually(() => assert.ok(Buffer.concat(received).toString('utf8').includes('"type":"end"'), 'the end line arrives'));
    const text = Buffer.concat(received).toString('utf8');
    assert.ok(text.includes('{"type":"end","reason":"excessive client-side lag"}'), text.slice(-300));
    // Chunked encoding's last chunk: the response ended cleanly after it.
    await eventually(() => assert.ok(Buffer.concat(received).toString('utf8').endsWith('0\r\n\r\n')));
    await eventually(async () => assert.equal(await metric(t, 'presenced_app_stream_open'), 0));
    sock.destroy();
  });
});

describe('app presence stream: retention, late writes and shutdown', () => {
  test('an update enqueued before a revoke but written to the log after it is not sent', async () => {
    // Updates wait 400 ms in memory before they are written: the revoke lands in between.
    const t = await startTestServer({ webhook_flush_ms: 400 });
    try {
      await t.createAccount('alice@localhost');
      await t.createAccount('bob@localhost');
      await t.createAccount('carol@localhost');
      const app = await registerApp(t);
      const apps = appsOf(t.server.engine)!;
      const bob = (await TestClient.login(t.wsUrl, 'bob@localhost')).client;
      const carol = (await TestClient.login(t.wsUrl, 'carol@localhost')).client;
      await apps.grants.grant(app.id, 'bob@localhost', ['presence']);
      await apps.grants.grant(app.id, 'carol@localhost', ['presence']);
      const [bobUid, carolUid] = [apps.service.pairwiseId(app.id, 'bob@localhost'), apps.service.pairwiseId(app.id, 'carol@localhost')];
      await eventually(async () => assert.deepEqual((await presenceOfMany(t, app, [bobUid, carolUid])).body.users.map((u: any) => u.status), ['online', 'online']));
      const s = await NdjsonStream.open(`${t.url}/${app.id}/presence.json`, { authorization: appAuth(app) });
      await s.until((ls) => ls.some((l) => l.type === 'live'), 'live');
      await bob.request('presence', { show: 'dnd' });
      await carol.request('presence', { show: 'dnd' });
      // (Under TEST_CLUSTER in the memory of the nodes bob and carol are connected to.)
      const buffered = t.nodes.reduce((n, node) => n + appsOf(node.server.engine)!.webhooks.outbox.buffered, 0);
      assert.equal(buffered, 2, 'both changes still in memory when the revoke is answered');
      await apps.grants.revoke(app.id, 'bob@localhost');
      await s.until((ls) => ls.some((l) => l.uid === carolUid && l.status === 'dnd'), "carol's change, written with bob's");
      assert.deepEqual(s.presence(bobUid).filter((l) => l.snapshot !== true), []);
      s.close();
      await bob.close();
      await carol.close();
    } finally {
      await t.destroy();
    }
  });

  test('a cursor that grew older than stream_retention_ms gets a fresh snapshot marked "cursor expired"', async () => {
    const t = await startTestServer({ stream_retention_ms: 300 });
    try {
      await t.createAccount('alice@localhost');
      const app = await registerApp(t);
      const s = await NdjsonStream.open(`${t.url}/${app.id}/presence.json`, { authorization: appAuth(app) });
      await s.until((ls) => ls.some((l) => l.type === 'live'), 'live');
      const cursor = s.lines.find((l) => l.type === 'live')!.cursor as string;
      s.close();
      const fresh = await NdjsonStream.open(`${t.url}/${app.id}/presence.json?since=${cursor}`, { authorization: appAuth(app) });
      await fresh.until((ls) => ls.length > 0, 'the first line');
      // Young enough still: resumed (the server answers within the 300 ms or this cursor has aged, see below).
      const first = fresh.lines[0]!;
      fresh.close();
      if (first.type === 'resume') {
        const issued = parseInt(cursor.split('.')[1]!, 36);
        await eventually(() => assert.ok(Date.now() > issued + 300 + 5, 'the cursor aged past the retention'));
      }
      const again = await NdjsonStream.open(`${t.url}/${app.id}/presence.json?since=${cursor}`, { authorization: appAuth(app) });
      await again.until((ls) => ls.some((l) => l.type === 'live'), 'live');
      assert.deepEqual(again.lines[0], { type: 'snapshot', users: 0, fresh: true, reason: 'cursor expired' });
      again.close();
    } finally {
      await t.destroy();
    }
  });

  test('ends open streams with a reason line and does not keep the server from stopping', async () => {
    const t = await startTestServer();
    try {
      await t.createAccount('alice@localhost');
      const app = await registerApp(t);
      const s = await NdjsonStream.open(`${t.url}/${app.id}/presence.json`, { authorization: appAuth(app) });
      const c = openSse(`${t.url}/api/v1/apps/${app.id}/presence.json`, app);
      await s.until((ls) => ls.some((l) => l.type === 'live'), 'live');
      await c.until((es) => es.some((e) => e.type === 'live'), 'live');
      await t.stop();
      await s.until(() => s.ended, 'the end of the response');
      assert.deepEqual(s.lines.at(-1), { type: 'end', reason: 'server shutting down' });
      await c.until((es) => es.some((e) => e.type === 'end'), 'the end event');
      assert.deepEqual(c.events.at(-1)!.data, { type: 'end', reason: 'server shutting down' });
      c.es.close();
    } finally {
      await t.destroy();
    }
  });
});
