import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { appsOf } from '../../src/features/apps/apps-feature.js';
import type { AppStatus } from '../../src/features/apps/webhooks/presence-source.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const basic = (jid: string, pw = 'secret-pw') => `Basic ${Buffer.from(`${jid}:${pw}`).toString('base64')}`;

async function call(t: TestServer, method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; body: any }> {
  const res = await fetch(`${t.url}/api/v1/apps${path}`, {
    method,
    headers: { authorization: basic('alice@localhost'), ...(body !== undefined ? { 'content-type': contentType } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

interface Update {
  readonly uid: string;
  readonly status: AppStatus;
  readonly seq: number;
}

/** A webhook receiver: every request must verify with the standardwebhooks package; answers 503 while `down`. */
class Receiver {
  readonly requests: Array<{ answered: number; updates: Update[] }> = [];
  readonly bad: string[] = [];
  down = true;
  secret = '';
  readonly #server: Server;
  #waiters: Array<() => void> = [];

  constructor() {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let updates: Update[] = [];
        try {
          updates = new Webhook(this.secret).verify(body, req.headers as Record<string, string>) as Update[];
        } catch (e) {
          this.bad.push((e as Error).message);
        }
        const answered = this.down ? 503 : 204;
        this.requests.push({ answered, updates });
        res.writeHead(answered).end(() => {
          for (const w of this.#waiters.splice(0)) w();
        });
      });
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', r));
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/hook`;
  }

  /** Resolves once the requests received satisfy `check` (looked at after each answer), or fails at the deadline. */
  async until(check: () => boolean, what: string, ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`receiver: timed out waiting for ${what} (${this.requests.length} requests)`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, Math.max(0, deadline - Date.now()) + 1).unref();
      });
    }
  }

  /** Per pairwise id, the updates of the requests answered 2xx, in the order they arrived. */
  delivered(): Map<string, Array<{ status: AppStatus; seq: number }>> {
    const m = new Map<string, Array<{ status: AppStatus; seq: number }>>();
    for (const r of this.requests) {
      if (r.answered >= 300) continue;
      for (const u of r.updates) m.set(u.uid, [...(m.get(u.uid) ?? []), { status: u.status, seq: u.seq }]);
    }
    return m;
  }

  saw(uid: string, seq: number, answered: (status: number) => boolean): boolean {
    return this.requests.some((r) => answered(r.answered) && r.updates.some((u) => u.uid === uid && u.seq === seq));
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((r) => this.#server.close(() => r()));
  }
}

const FAST = { webhooks_allow_private: true, webhook_flush_ms: 5, webhook_batch_ms: 20, webhook_backoff_base_ms: 20, webhook_backoff_cap_ms: 300 } as const;

const appBody = (url: string, extra: Record<string, unknown> = {}) => ({
  name: 'Chess Club',
  homepage: 'https://chess.example/',
  redirectUris: ['https://chess.example/callback'],
  webhookUrl: url,
  webhookFormat: 'extended',
  ...extra,
});

describe('webhookEveryTransition', () => {
  let t: TestServer;
  const receivers: Receiver[] = [];

  before(async () => {
    t = await startTestServer(FAST);
    await t.createAccount('alice@localhost');
    await t.createAccount('bob@localhost');
  });
  after(async () => {
    await t?.destroy();
    await Promise.all(receivers.map((r) => r.close()));
  });

  test('is false by default, set at registration (REST and manifest) and by PATCH, shown in the app, and checked', async () => {
    const plain = await call(t, 'POST', '', appBody('http://127.0.0.1:9/hook'));
    assert.equal(plain.status, 201, JSON.stringify(plain.body));
    assert.equal(plain.body.webhookEveryTransition, false);

    const every = await call(t, 'POST', '', appBody('http://127.0.0.1:9/hook', { webhookEveryTransition: true }));
    assert.equal(every.status, 201, JSON.stringify(every.body));
    assert.equal(every.body.webhookEveryTransition, true);
    assert.equal((await call(t, 'GET', `/${every.body.id}`)).body.webhookEveryTransition, true);

    const manifest = await call(
      t,
      'POST',
      '',
      { name: 'Go Board', start_url: 'https://go.example/', presence: { redirect_uris: ['https://go.example/cb'], webhook_url: 'http://127.0.0.1:9/hook', webhook_every_transition: true } },
      'application/manifest+json',
    );
    assert.equal(manifest.status, 201, JSON.stringify(manifest.body));
    assert.equal(manifest.body.webhookEveryTransition, true);

    const patched = await call(t, 'PATCH', `/${plain.body.id}`, { webhookEveryTransition: true });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    assert.equal(patched.body.webhookEveryTransition, true);
    const back = await call(t, 'PATCH', `/${plain.body.id}`, { webhookEveryTransition: false });
    assert.equal(back.body.webhookEveryTransition, false);
    assert.equal((await call(t, 'GET', `/${plain.body.id}`)).body.webhookEveryTransition, false);

    for (const bad of ['yes', 1, null]) {
      const r = await call(t, 'PATCH', `/${plain.body.id}`, { webhookEveryTransition: bad });
      assert.equal(r.status, 400, `${JSON.stringify(bad)}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.code, 'bad-request');
    }
    const badManifest = await call(t, 'POST', '', { name: 'X', start_url: 'https://x.example/', presence: { redirect_uris: ['https://x.example/cb'], webhook_every_transition: 'true' } });
    assert.equal(badManifest.status, 400);
    assert.match(badManifest.body.error.message, /webhookEveryTransition must be true or false/);
    assert.equal((await call(t, 'GET', `/${plain.body.id}`)).body.webhookEveryTransition, false);
  });

  test('while the endpoint is down, an app that asked for every transition gets them all, in order; another app gets the newest of each user', async () => {
    const rt = appsOf(t.server.engine)!;
    const setup = async (everyTransition: boolean) => {
      const rx = new Receiver();
      receivers.push(rx);
      await rx.listen();
      const r = await call(t, 'POST', '', appBody(rx.url, { webhookEveryTransition: everyTransition }));
      assert.equal(r.status, 201, JSON.stringify(r.body));
      rx.secret = r.body.webhookSecret;
      const appId = r.body.id as string;
      const uid: Record<string, string> = {};
      // Granted behind GrantService's back (its grant would send each user's current presence first),
      // but as it stores a grant: with the pairwise id, which a cluster node's worker looks the users
      // up by before it sends (GrantSync.confirm), whichever node claims the rows.
      for (const jid of ['alice@localhost', 'bob@localhost']) {
        await rt.grants.repo.upsertGrant(appId, jid, ['presence', 'presence.status'], Date.now(), rt.service.pairwiseId(appId, jid));
        uid[jid] = rt.index.add(appId, jid, ['presence', 'presence.status']).uid;
      }
      return { rx, appId, alice: uid['alice@localhost']!, bob: uid['bob@localhost']! };
    };
    const every = await setup(true);
    const newest = await setup(false);
    const both = [every, newest];
    const send = (changes: Array<['alice' | 'bob', AppStatus]>) =>
      rt.webhooks.outbox.enqueue(both.flatMap((a) => changes.map(([who, status]) => ({ appId: a.appId, uid: a[who], status, at: Date.now() }))));

    send([['alice', 'online'], ['bob', 'online']]);
    // The first attempts fail: both endpoints are failing from now on.
    for (const a of both) await a.rx.until(() => a.rx.requests.length >= 1, 'the first attempt');
    send([['alice', 'away'], ['alice', 'dnd'], ['bob', 'away'], ['alice', 'offline']]);
    await rt.webhooks.outbox.flushed;
    // A failed attempt that carries alice's newest update was claimed after all of them were written,
    // so the app without every transition had its backlog collapsed by then.
    for (const a of both) await a.rx.until(() => a.rx.saw(a.alice, 4, (s) => s === 503), 'a failed attempt with the newest update');
    for (const a of both) a.rx.down = false;
    for (const a of both) await a.rx.until(() => a.rx.saw(a.alice, 4, (s) => s < 300) && a.rx.saw(a.bob, 2, (s) => s < 300), 'the newest updates delivered');

    for (const a of both) assert.deepEqual(a.rx.bad, []);
    assert.deepEqual(every.rx.delivered().get(every.alice), [
      { status: 'online', seq: 1 },
      { status: 'away', seq: 2 },
      { status: 'dnd', seq: 3 },
      { status: 'offline', seq: 4 },
    ]);
    assert.deepEqual(every.rx.delivered().get(every.bob), [
      { status: 'online', seq: 1 },
      { status: 'away', seq: 2 },
    ]);
    assert.deepEqual(newest.rx.delivered().get(newest.alice), [{ status: 'offline', seq: 4 }]);
    assert.deepEqual(newest.rx.delivered().get(newest.bob), [{ status: 'away', seq: 2 }]);
    // Nothing is left behind for either app (the worker records the delivery after the answer: poll).
    const deadline = Date.now() + 20_000;
    for (const a of both) {
      while ((await rt.webhooks.store.pendingCount(a.appId)) > 0) {
        assert.ok(Date.now() < deadline, `updates of ${a.appId} still pending`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  });
});
