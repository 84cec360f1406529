import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LoginTurns } from '../../src/protocols/login-turns.js';

/** Holds the thread for `ms` (login work is CPU: a turn's budget is wall time spent in it). */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy
  }
}

/** A piece of login work as a stream's is: a little at once, the rest in promise continuations. */
function piece(order: string[], name: string, done: () => void): () => void {
  return () => {
    void (async () => {
      await null;
      await null;
      spin(1);
      order.push(name);
      done();
    })();
  };
}

test("a piece's promise continuations count towards its turn's budget", async () => {
  const turns = new LoginTurns(8, 2);
  const order: string[] = [];
  const n = 12;
  await new Promise<void>((resolve) => {
    let left = n;
    for (let i = 0; i < n; i++) turns.enqueue(piece(order, `p${i}`, () => --left === 0 && resolve()));
  });
  assert.equal(turns.stats.pieces, n);
  // 1 ms each after the first await: two fit a 2 ms turn. Counting only the synchronous part (nothing),
  // all eight of perTurn would run in the first turn, 8 ms of work before the loop polled again.
  assert.ok(turns.stats.turns >= n / 2, `${n} pieces took only ${turns.stats.turns} turns`);
  assert.deepEqual(order, Array.from({ length: n }, (_, i) => `p${i}`));
});

test('what arrives during a turn runs before the next turn', async () => {
  const turns = new LoginTurns(8, 2);
  const order: string[] = [];
  await new Promise<void>((resolve) => {
    let left = 6;
    turns.enqueue(() => {
      // Stands for an online session's stanza read during the first turn.
      setImmediate(() => order.push('online'));
      piece(order, 'p0', () => --left === 0 && resolve())();
    });
    for (let i = 1; i < 6; i++) turns.enqueue(piece(order, `p${i}`, () => --left === 0 && resolve()));
  });
  await new Promise((r) => setImmediate(r));
  const at = order.indexOf('online');
  assert.ok(at >= 0 && at <= 2, `the online session waited behind ${at} pieces: ${order.join(' ')}`);
});

test('a turn takes at most perTurn pieces, and a throwing piece does not stop the others', async () => {
  const turns = new LoginTurns(3, 1_000);
  let ran = 0;
  await new Promise<void>((resolve) => {
    for (let i = 0; i < 7; i++) {
      turns.enqueue(() => {
        ran++;
        if (ran === 7) setImmediate(resolve);
        if (i === 1) throw new Error('boom');
      });
    }
  });
  assert.equal(ran, 7);
  assert.equal(turns.stats.turns, 3);
  assert.equal(turns.waiting, 0);
});

test('what was registered to run before each turn runs before its pieces, once per turn', async () => {
  const turns = new LoginTurns(2, 1_000);
  const order: string[] = [];
  const flush = (): void => {
    order.push('flush');
  };
  turns.beforeEachTurn(flush);
  turns.beforeEachTurn(flush);
  await new Promise<void>((resolve) => {
    for (let i = 0; i < 4; i++) {
      turns.enqueue(() => {
        order.push(`p${i}`);
        if (i === 3) setImmediate(resolve);
      });
    }
  });
  assert.deepEqual(order, ['flush', 'p0', 'p1', 'flush', 'p2', 'p3']);
});
