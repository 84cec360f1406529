import assert from 'node:assert/strict';
import { test } from 'node:test';
import { shouldCollect } from '../../src/idle-collector.js';

const MB = 1024 * 1024;

test('idle collection runs only after enough quiet seconds in a row and enough growth', () => {
  // Quiet for the whole window after a spike: collect.
  assert.equal(shouldCollect({ quietSeconds: 10, rss: 200 * MB, baselineRss: 100 * MB }, 10, 32 * MB), true);
  // A busy second resets the count: a window that ends with the start of a burst is not quiet.
  assert.equal(shouldCollect({ quietSeconds: 0, rss: 200 * MB, baselineRss: 100 * MB }, 10, 32 * MB), false);
  assert.equal(shouldCollect({ quietSeconds: 9, rss: 200 * MB, baselineRss: 100 * MB }, 10, 32 * MB), false);
  // Quiet at a stable size: nothing to give back, so no repeated collections while idle.
  assert.equal(shouldCollect({ quietSeconds: 60, rss: 110 * MB, baselineRss: 100 * MB }, 10, 32 * MB), false);
  // Boundaries are inclusive.
  assert.equal(shouldCollect({ quietSeconds: 10, rss: 132 * MB, baselineRss: 100 * MB }, 10, 32 * MB), true);
});
