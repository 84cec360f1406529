import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  aggregatePresence,
  compareSessions,
  isShow,
  lastSeenOnGoingOffline,
  MAX_PRIORITY,
  MIN_PRIORITY,
  samePresence,
  SHOWS,
  topSession,
  validatePriority,
  type AccountPresence,
  type SessionPresence,
  type Show,
} from '../../src/core/presence.js';

const JID = 'alice@localhost';

function session(resource: string, fields: Partial<Omit<SessionPresence, 'resource'>> = {}): SessionPresence {
  return { resource, available: true, show: 'available', status: null, priority: 0, lastActive: 1_000, ...fields };
}

/** Aggregates every ordering of `sessions`: the winner must not depend on the order they come in. */
function aggregateAllOrders(sessions: SessionPresence[]): AccountPresence[] {
  const perms = (xs: SessionPresence[]): SessionPresence[][] =>
    xs.length <= 1 ? [xs] : xs.flatMap((x, i) => perms([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
  return perms(sessions).map((order) => aggregatePresence(JID, order, null));
}

function winnerOf(sessions: SessionPresence[]): string {
  const results = aggregateAllOrders(sessions);
  const resources = new Set(results.map((r) => r.resource));
  assert.equal(resources.size, 1, `winner depends on input order: ${[...resources].join(', ')}`);
  const first = results[0];
  assert.ok(first);
  assert.equal(first.online, true);
  return first.resource as string;
}

describe('aggregatePresence: which session represents the account', () => {
  test('a single available session is the account presence, field for field', () => {
    const p = aggregatePresence(JID, [session('phone', { show: 'away', status: 'out', priority: 7, lastActive: 42 })], { at: 5, status: 'old' });
    assert.deepEqual(p, { jid: JID, online: true, show: 'away', status: 'out', priority: 7, resource: 'phone', lastSeen: null });
  });

  test('the highest priority wins even over a more available show and more recent activity', () => {
    const low = session('low', { priority: 1, show: 'chat', lastActive: 9_000, status: 'chatty' });
    const high = session('high', { priority: 5, show: 'dnd', lastActive: 1_000, status: 'busy' });
    assert.equal(winnerOf([low, high]), 'high');
    const p = aggregatePresence(JID, [low, high], null);
    assert.equal(p.show, 'dnd');
    assert.equal(p.status, 'busy');
    assert.equal(p.priority, 5);
  });

  test('on a priority tie the more available show wins, in the order chat > available > away > xa > dnd', () => {
    const order: Show[] = ['chat', 'available', 'away', 'xa', 'dnd'];
    for (let i = 0; i < order.length; i++) {
      for (let j = i + 1; j < order.length; j++) {
        const better = session(`r-${order[i]}`, { show: order[i], priority: 3, lastActive: 1 });
        // The less available one is also the more recent: show must be decided before recency.
        const worse = session(`r-${order[j]}`, { show: order[j], priority: 3, lastActive: 2 });
        assert.equal(winnerOf([better, worse]), `r-${order[i]}`, `${order[i]} should beat ${order[j]}`);
      }
    }
  });

  test('the full ladder picks chat, and removing the winner each time walks down the show order', () => {
    let remaining = (['dnd', 'xa', 'away', 'available', 'chat'] as Show[]).map((s) => session(s, { show: s }));
    const picked: string[] = [];
    while (remaining.length) {
      const p = aggregatePresence(JID, remaining, null);
      picked.push(p.show);
      remaining = remaining.filter((s) => s.resource !== p.resource);
    }
    assert.deepEqual(picked, ['chat', 'available', 'away', 'xa', 'dnd']);
  });

  test('on a priority and show tie the most recently active session wins', () => {
    const older = session('older', { show: 'away', lastActive: 1_000, status: 'old' });
    const newer = session('newer', { show: 'away', lastActive: 2_000, status: 'new' });
    const oldest = session('oldest', { show: 'away', lastActive: 500 });
    assert.equal(winnerOf([older, newer, oldest]), 'newer');
    assert.equal(aggregatePresence(JID, [older, newer, oldest], null).status, 'new');
  });

  test('a complete tie is broken deterministically by resource', () => {
    assert.equal(winnerOf([session('b'), session('a'), session('c')]), 'a');
  });

  test('unavailable sessions are ignored, however high their priority', () => {
    const hidden = session('hidden', { available: false, priority: 127, show: 'chat', lastActive: 9_999 });
    const shown = session('shown', { priority: -5, show: 'xa' });
    assert.equal(winnerOf([hidden, shown]), 'shown');
    assert.equal(topSession([hidden, shown])?.resource, 'shown');
    assert.equal(topSession([hidden]), undefined);
  });

  test('negative priorities still make the account online', () => {
    const p = aggregatePresence(JID, [session('bot', { priority: -128, show: 'xa', status: 'idle' })], null);
    assert.equal(p.online, true);
    assert.equal(p.show, 'xa');
    assert.equal(p.priority, -128);
    assert.equal(p.resource, 'bot');
    assert.equal(p.lastSeen, null);
    // And among negatives, the higher one still wins.
    assert.equal(winnerOf([session('m10', { priority: -10 }), session('m1', { priority: -1 })]), 'm1');
  });

  test('no sessions at all: offline, never seen', () => {
    assert.deepEqual(aggregatePresence(JID, [], null), {
      jid: JID,
      online: false,
      show: 'offline',
      status: null,
      priority: 0,
      resource: null,
      lastSeen: null,
    });
  });

  test('only unavailable sessions: offline, carrying the last-seen time and last status', () => {
    const p = aggregatePresence(JID, [session('a', { available: false, status: 'ignored', priority: 9 })], { at: 123_456, status: 'gone fishing' });
    assert.deepEqual(p, {
      jid: JID,
      online: false,
      show: 'offline',
      status: 'gone fishing',
      priority: 0,
      resource: null,
      lastSeen: 123_456,
    });
  });

  test('offline with a last-seen record whose status was null keeps null', () => {
    const p = aggregatePresence(JID, [], { at: 77, status: null });
    assert.equal(p.online, false);
    assert.equal(p.status, null);
    assert.equal(p.lastSeen, 77);
  });

  test('accepts any iterable, e.g. a Map of sessions', () => {
    const m = new Map([
      ['a', session('a', { priority: 1 })],
      ['b', session('b', { priority: 2 })],
    ]);
    assert.equal(aggregatePresence(JID, m.values(), null).resource, 'b');
  });
});

describe('compareSessions', () => {
  test('is negative when the first argument is better and antisymmetric', () => {
    const a = session('a', { priority: 2 });
    const b = session('b', { priority: 1 });
    assert.ok(compareSessions(a, b) < 0);
    assert.ok(compareSessions(b, a) > 0);
    assert.equal(compareSessions(a, a), 0);
  });

  test('sorting with it yields priority, then show, then recency order', () => {
    const s = [
      session('p0-away-new', { priority: 0, show: 'away', lastActive: 50 }),
      session('p1-dnd', { priority: 1, show: 'dnd' }),
      session('p0-chat', { priority: 0, show: 'chat' }),
      session('p0-away-old', { priority: 0, show: 'away', lastActive: 10 }),
      session('p-1-chat', { priority: -1, show: 'chat' }),
    ];
    assert.deepEqual(
      [...s].sort(compareSessions).map((x) => x.resource),
      ['p1-dnd', 'p0-chat', 'p0-away-new', 'p0-away-old', 'p-1-chat'],
    );
  });
});

describe('samePresence', () => {
  const base: AccountPresence = { jid: JID, online: true, show: 'away', status: 'x', priority: 1, resource: 'r1', lastSeen: null };

  test('equal in every observable field is the same presence', () => {
    assert.equal(samePresence(base, { ...base }), true);
  });

  test('a different resource alone is not an observable change', () => {
    assert.equal(samePresence(base, { ...base, resource: 'r2' }), true);
  });

  test('each observable field on its own makes the presences differ', () => {
    const changes: Array<Partial<AccountPresence>> = [
      { online: false },
      { show: 'dnd' },
      { status: 'y' },
      { status: null },
      { priority: 2 },
      { lastSeen: 10 },
    ];
    for (const c of changes) {
      assert.equal(samePresence(base, { ...base, ...c }), false, `change ${JSON.stringify(c)} should be observable`);
      assert.equal(samePresence({ ...base, ...c }, base), false, `change ${JSON.stringify(c)} should be observable (reversed)`);
    }
  });

  test('offline presences with different last-seen times differ', () => {
    const a = aggregatePresence(JID, [], { at: 1, status: 's' });
    const b = aggregatePresence(JID, [], { at: 2, status: 's' });
    assert.equal(samePresence(a, b), false);
    assert.equal(samePresence(a, aggregatePresence(JID, [], { at: 1, status: 's' })), true);
  });
});

describe('lastSeenOnGoingOffline', () => {
  test('records the moment and the status the account had before going offline', () => {
    const before = aggregatePresence(JID, [session('a', { status: 'brb', show: 'away' })], null);
    assert.deepEqual(lastSeenOnGoingOffline(before, 9_000), { at: 9_000, status: 'brb' });
  });

  test('a null status stays null', () => {
    const before = aggregatePresence(JID, [session('a')], null);
    assert.deepEqual(lastSeenOnGoingOffline(before, 5), { at: 5, status: null });
  });

  test('an explicit unavailable presence gives the last status, even over an available one (XEP-0012 §3)', () => {
    const before = aggregatePresence(JID, [session('a', { status: 'working' })], null);
    assert.deepEqual(lastSeenOnGoingOffline(before, 7, { status: 'gone for the weekend' }), { at: 7, status: 'gone for the weekend' });
    assert.deepEqual(lastSeenOnGoingOffline(before, 7, { status: null }), { at: 7, status: null });
    assert.deepEqual(lastSeenOnGoingOffline(before, 7, null), { at: 7, status: 'working' });
  });

  test('feeding the record back makes the offline presence report it', () => {
    const before = aggregatePresence(JID, [session('a', { status: 'later' })], null);
    const after = aggregatePresence(JID, [], lastSeenOnGoingOffline(before, 31_337));
    assert.equal(after.online, false);
    assert.equal(after.lastSeen, 31_337);
    assert.equal(after.status, 'later');
  });
});

describe('validatePriority', () => {
  test('bounds are -128 and 127', () => {
    assert.equal(MIN_PRIORITY, -128);
    assert.equal(MAX_PRIORITY, 127);
  });

  test('accepts every integer in range, bounds included', () => {
    for (const v of [-128, -127, -1, 0, 1, 126, 127]) assert.equal(validatePriority(v), true, String(v));
    for (let v = MIN_PRIORITY; v <= MAX_PRIORITY; v++) assert.equal(validatePriority(v), true, String(v));
  });

  test('rejects integers just out of range', () => {
    for (const v of [-129, 128, -1000, 1000, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]) {
      assert.equal(validatePriority(v), false, String(v));
    }
  });

  test('rejects non-integers and non-numbers', () => {
    for (const v of [0.5, -0.5, 126.9, NaN, Infinity, -Infinity, '1', '0', null, undefined, true, {}, [], 1n]) {
      assert.equal(validatePriority(v), false, String(v));
    }
  });
});

describe('shows', () => {
  test('SHOWS lists exactly the five shows and isShow agrees', () => {
    assert.deepEqual([...SHOWS].sort(), ['available', 'away', 'chat', 'dnd', 'xa']);
    for (const s of SHOWS) assert.equal(isShow(s), true);
    for (const v of ['offline', 'online', 'CHAT', '', 'toString', 'hasOwnProperty', '__proto__', null, 1]) {
      assert.equal(isShow(v), false, String(v));
    }
  });
});
