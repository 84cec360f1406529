import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeCursor, judgeCursor, parseCursor } from '../../src/features/apps/stream/cursor.js';

test('a cursor round-trips its log id and issue time', () => {
  const now = Date.UTC(2026, 10, 29, 21, 0, 0);
  const text = encodeCursor(123456, now);
  assert.match(text, /^[0-9a-z]+\.[0-9a-z]+$/);
  assert.deepEqual(parseCursor(text), { id: 123456, issuedAt: now });
});

test('judging a cursor: within the retention and the log it resumes; otherwise a reason for a fresh snapshot', () => {
  const now = 1_800_000_000_000;
  const hour = 3_600_000;
  assert.deepEqual(judgeCursor(encodeCursor(10, now - hour + 1), now, hour, 10), { ok: true, cursor: { id: 10, issuedAt: now - hour + 1 } });
  assert.deepEqual(judgeCursor(encodeCursor(10, now - hour - 1), now, hour, 10), { ok: false, reason: 'cursor expired' });
  assert.deepEqual(judgeCursor(encodeCursor(11, now), now, hour, 10), { ok: false, reason: 'unknown cursor' });
  assert.deepEqual(judgeCursor(encodeCursor(5, now + 60_000), now, hour, 10), { ok: false, reason: 'unknown cursor' });
  for (const bad of ['', 'abc', '1.', '.1', '1.2.3', 'A.B', '-1.5', '1 .2', 'zzzzzzzzzzzz.1', '%00']) {
    assert.deepEqual(judgeCursor(bad, now, hour, 10), { ok: false, reason: 'malformed cursor' }, bad);
  }
});
