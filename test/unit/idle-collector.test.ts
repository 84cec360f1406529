import assert from 'node:assert/strict';
import { test } from 'node:test';
import { shouldCollect } from '../../src/idle-collector.js';

const MB = 1024 * 1024;

test('idle collection runs only when the loop was quiet and memory grew enough', () => {
  // Quiet after a spike: collect.
  assert.equal(shouldCollect({ utilization: 0.01, rss: 200 * MB, baselineRss: 100 * MB }, 0.05, 32 * MB), true);
  // Busy: V8 paces its own collections, a forced full one would only add a pause.
  assert.equal(shouldCollect({ utilization: 0.3, rss: 200 * MB, baselineRss: 100 * MB }, 0.05, 32 * MB), false);
  // Quiet at a stable size: nothing to give back, so no repeated collections while idle.
  assert.equal(shouldCollect({ utilization: 0, rss: 110 * MB, baselineRss: 100 * MB }, 0.05, 32 * MB), false);
  // Boundaries are inclusive.
  assert.equal(shouldCollect({ utilization: 0.05, rss: 132 * MB, baselineRss: 100 * MB }, 0.05, 32 * MB), true);
});
