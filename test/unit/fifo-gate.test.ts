import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FifoGate } from '../../src/adapters/sqlite/fifo-gate.js';

test('the gate admits one holder at a time, in arrival order, waking exactly one waiter per release', async () => {
  const gate = new FifoGate();
  const order: number[] = [];
  let inside = 0;
  let most = 0;
  let wakeups = 0;
  const worker = async (i: number) => {
    await gate.enter();
    wakeups++;
    inside++;
    most = Math.max(most, inside);
    order.push(i);
    await Promise.resolve();
    inside--;
    gate.leave();
  };
  const n = 3000;
  await Promise.all(Array.from({ length: n }, (_, i) => worker(i)));
  assert.deepEqual(order, Array.from({ length: n }, (_, i) => i));
  assert.equal(most, 1);
  assert.equal(wakeups, n);
  // Free again once everyone left: the next caller enters at once.
  let entered = false;
  void gate.enter().then(() => (entered = true));
  await Promise.resolve();
  assert.equal(entered, true);
});
