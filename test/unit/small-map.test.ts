import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SmallMap } from '../../src/engine/small-map.js';

test('small map behaves like a Map through zero, one and several entries', () => {
  const m = new SmallMap<string, number>();
  assert.equal(m.size, 0);
  assert.equal(m.get('a'), undefined);
  assert.equal(m.delete('a'), false);
  m.set('a', 1);
  assert.equal(m.size, 1);
  assert.equal(m.get('a'), 1);
  assert.equal(m.has('b'), false);
  m.set('a', 2); // replaces
  assert.deepEqual([...m.values()], [2]);
  assert.equal(m.single(), 2);
  m.set('b', 3);
  m.set('c', 4);
  assert.equal(m.size, 3);
  assert.equal(m.single(), undefined);
  assert.deepEqual([...m.values()].sort(), [2, 3, 4]);
  assert.equal(m.delete('a'), true);
  assert.equal(m.delete('a'), false);
  assert.equal(m.delete('c'), true); // back to one entry
  assert.equal(m.size, 1);
  assert.equal(m.get('b'), 3);
  assert.equal(m.has('c'), false);
  m.set('d', 5);
  assert.deepEqual([...m.values()].sort(), [3, 5]);
  m.delete('b');
  m.delete('d');
  assert.equal(m.size, 0);
  assert.equal(m.single(), undefined);
  assert.deepEqual([...m.values()], []);
  m.set('e', 6);
  assert.equal(m.get('e'), 6);
});
