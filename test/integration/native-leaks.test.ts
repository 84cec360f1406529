import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { TestClient } from '../helpers/ws-client.js';

/**
 * The leak matrix of the native protocol: a requester in each relation that does not let it see the
 * target, against a target in each state, must observe exactly what it observes of an account that
 * never existed. What it can observe: `presence.get` (listed and unlisted), the answer to a
 * subscription request, and pushes while the target changes its presence.
 */
type Relation = 'none' | 'pending' | 'denied' | 'from' | 'blocked-by-target' | 'blocker';
type TargetState = 'online' | 'connected-unavailable' | 'offline-seen';
const RELATIONS: Relation[] = ['none', 'pending', 'denied', 'from', 'blocked-by-target', 'blocker'];
const STATES: TargetState[] = ['online', 'connected-unavailable', 'offline-seen'];

describe('native protocol leak matrix', () => {
  let t: TestServer;
  let n = 0;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => t.destroy());

  async function pair(): Promise<{ r: string; x: string }> {
    n++;
    const r = `req${n}@localhost`;
    const x = `tgt${n}@localhost`;
    await t.createAccount(r);
    await t.createAccount(x);
    return { r, x };
  }

  /** Puts requester and target into `rel`; returns the two connected clients. */
  async function relate(rel: Relation, r: string, x: string): Promise<{ rc: TestClient; xc: TestClient }> {
    const { client: rc } = await TestClient.login(t.wsUrl, r, 'secret-pw', {});
    const { client: xc } = await TestClient.login(t.wsUrl, x, 'secret-pw', {});
    const both = async () => {
      await rc.request('subscribe', { jid: x });
      await xc.request('approve', { jid: r });
      await xc.request('subscribe', { jid: r });
      await rc.request('approve', { jid: x });
      await rc.presenceOf(x);
    };
    switch (rel) {
      case 'none':
        break;
      case 'pending':
        await rc.request('subscribe', { jid: x });
        break;
      case 'denied':
        await rc.request('subscribe', { jid: x });
        await xc.request('deny', { jid: r });
        break;
      case 'from':
        // The target sees the requester; the requester does not see the target.
        await xc.request('subscribe', { jid: r });
        await rc.request('approve', { jid: x });
        break;
      case 'blocked-by-target':
        await both();
        await xc.request('block', { jid: r });
        break;
      case 'blocker':
        await both();
        await rc.request('block', { jid: x });
        break;
    }
    return { rc, xc };
  }

  async function putTarget(state: TargetState, xc: TestClient): Promise<void> {
    await xc.request('presence', { show: 'dnd', status: 'secret plans' });
    if (state === 'connected-unavailable') {
      // A second connection that never sends presence, then the available one leaves.
      await xc.close();
    } else if (state === 'offline-seen') {
      await xc.close();
    }
  }

  /** Everything the requester can observe about `x`, with the target's name replaced by a placeholder. */
  async function observe(rc: TestClient, x: string): Promise<unknown> {
    const listed = await rc.request('presence.get', { jids: [x] });
    const all = await rc.request('presence.get');
    const mentioned = (all.contacts as Array<{ jid: string }>).filter((c) => c.jid === x);
    await rc.barrier();
    const pushes = rc.queuedPresence(x);
    const hide = (v: unknown) => JSON.parse(JSON.stringify(v).split(x).join('TARGET'));
    return hide({ listed: listed.contacts, mentioned, pushes });
  }

  test('a never-existing account is the baseline: nothing listed, nothing pushed', async () => {
    const { r } = await pair();
    const { client: rc } = await TestClient.login(t.wsUrl, r, 'secret-pw', {});
    assert.deepEqual(await observe(rc, 'ghost-never@localhost'), { listed: [], mentioned: [], pushes: [] });
    await rc.close();
  });

  for (const rel of RELATIONS) {
    for (const state of STATES) {
      test(`requester "${rel}" sees a target that is ${state} as it sees a never-existing account`, async () => {
        const { r, x } = await pair();
        const { rc, xc } = await relate(rel, r, x);
        // What the relation itself legitimately showed before the target's hidden life begins.
        await rc.barrier();
        rc.pushes.length = 0;
        await putTarget(state, xc);
        if (state === 'connected-unavailable') {
          // Reconnect without presence: connected, unavailable.
          const { client } = await TestClient.login(t.wsUrl, x, 'secret-pw', { presence: false });
          await client.barrier();
          assert.deepEqual(await observe(rc, x), { listed: [], mentioned: [], pushes: [] });
          await client.close();
        } else {
          assert.deepEqual(await observe(rc, x), { listed: [], mentioned: [], pushes: [] });
        }
        // A fresh subscription request is answered exactly as one to a never-existing account.
        if (rel === 'none' || rel === 'denied') {
          const real = await rc.request('subscribe', { jid: x });
          const ghost = await rc.request('subscribe', { jid: `ghost-${n}@localhost` });
          assert.deepEqual({ ...real, jid: 'J' }, { ...ghost, jid: 'J' });
        }
        await rc.close();
        await xc.close();
      });
    }
  }
});
