import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RosterItem } from '../../src/core/roster.js';
import { NONE, type SubState } from '../../src/core/subscription-state.js';
import { RosterCache } from '../../src/engine/roster-cache.js';

const BOTH: SubState = { to: true, from: true, pendingOut: false, pendingIn: false, preApproved: false };
const FROM: SubState = { ...NONE, from: true };
const item = (contact: string, state: SubState = NONE, name: string | null = null, groups: string[] = []): RosterItem => ({
  owner: 'me@x',
  contact,
  name,
  groups,
  state,
});

for (const size of [5, 200]) {
  test(`RosterCache behaves like a map of items (${size} items, ${size > 64 ? 'indexed' : 'linear'})`, () => {
    const model = new Map<string, RosterItem>();
    const cache = new RosterCache('me@x', []);
    for (let i = 0; i < size; i++) {
      const it = item(`c${i}@x`, i % 3 === 0 ? BOTH : i % 3 === 1 ? FROM : NONE, i % 4 === 0 ? `C ${i}` : null, i % 5 === 0 ? ['g'] : []);
      cache.set(it);
      model.set(it.contact, it);
    }
    // Updates, and deletions from the middle, the end and of absent items.
    cache.set(item('c1@x', BOTH, 'renamed'));
    model.set('c1@x', item('c1@x', BOTH, 'renamed'));
    cache.set(item('c0@x', NONE));
    model.set('c0@x', item('c0@x', NONE));
    for (const c of ['c2@x', `c${size - 1}@x`, 'absent@x']) assert.equal(cache.delete(c), model.delete(c));
    assert.equal(cache.size, model.size);
    for (const [c, expected] of model) assert.deepEqual(cache.get(c), expected);
    assert.equal(cache.get('c2@x'), undefined);
    assert.deepEqual(
      cache.items().sort((a, b) => a.contact.localeCompare(b.contact)),
      [...model.values()].sort((a, b) => a.contact.localeCompare(b.contact)),
    );
    const subscribers: string[] = [];
    cache.forEachWhere((s) => s.from, (c) => subscribers.push(c));
    assert.deepEqual(subscribers.sort(), [...model.values()].filter((i) => i.state.from).map((i) => i.contact).sort());
    assert.deepEqual(cache.stateOf('c1@x'), BOTH);
  });
}

test('RosterCache shares equal states between items instead of copying them', () => {
  const cache = new RosterCache('me@x', [item('a@x', { ...BOTH }), item('b@x', { ...BOTH })]);
  assert.equal(cache.stateOf('a@x'), cache.stateOf('b@x'));
  assert.ok(Object.isFrozen(cache.stateOf('a@x')));
});
