import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backoffDelay, Emitter, RECONNECT_DEFAULTS } from '../../packages/client/src/index.js';

describe('client reconnect backoff', () => {
  const none = () => 0; // no jitter drawn
  const most = () => 0.999999; // the largest jitter

  test('grows by the factor from the initial delay and stops at the maximum', () => {
    const o = { initialDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0.5 };
    assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, o, none)), [100, 200, 400, 800, 1000, 1000]);
  });

  test('jitter takes up to its fraction off the delay, never more, never adds', () => {
    const o = { initialDelayMs: 1000, maxDelayMs: 10_000, factor: 2, jitter: 0.25 };
    assert.equal(backoffDelay(1, o, most), 750);
    assert.equal(backoffDelay(2, o, () => 0.5), 1750);
    assert.equal(backoffDelay(3, { ...o, jitter: 0 }, most), 4000);
    assert.equal(backoffDelay(1, { ...o, jitter: 7 }, most), 0, 'jitter is clamped to 1');
  });

  test('defaults: 500 ms doubling to 30 s with half jitter; attempt numbers below 1 count as 1', () => {
    assert.deepEqual(RECONNECT_DEFAULTS, { initialDelayMs: 500, maxDelayMs: 30_000, factor: 2, jitter: 0.5 });
    assert.equal(backoffDelay(1, {}, none), 500);
    assert.equal(backoffDelay(0, {}, none), 500);
    assert.equal(backoffDelay(100, {}, none), 30_000);
    assert.equal(backoffDelay(1, {}, most), 250);
  });
});

describe('client event emitter', () => {
  class Bus extends Emitter<{ n: number; s: string }> {
    fire<K extends 'n' | 's'>(type: K, v: { n: number; s: string }[K]): void {
      this.emit(type, v);
    }
  }

  test('on/off/once deliver to the right listeners', () => {
    const bus = new Bus();
    const got: Array<string | number> = [];
    const off = bus.on('n', (n) => got.push(n));
    bus.once('s', (s) => got.push(s));
    bus.fire('n', 1);
    bus.fire('s', 'a');
    bus.fire('s', 'b');
    off();
    bus.fire('n', 2);
    assert.deepEqual(got, [1, 'a']);
    assert.equal(bus.listenerCount('n'), 0);
    assert.equal(bus.listenerCount('s'), 0);
  });

  test('a throwing listener does not stop the others, and its error is reported', async () => {
    const bus = new Bus();
    const got: number[] = [];
    const reported = new Promise<unknown>((resolve) => (bus.onListenerError = (e, type) => resolve([e, type])));
    bus.on('n', () => {
      throw new Error('listener bug');
    });
    bus.on('n', (n) => got.push(n));
    bus.fire('n', 7);
    assert.deepEqual(got, [7]);
    const [error, type] = (await reported) as [Error, string];
    assert.equal(error.message, 'listener bug');
    assert.equal(type, 'n');
  });
});
