import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeCursor } from '../../src/features/apps/stream/cursor.js';
import { liveFrame } from '../../src/features/apps/stream/lines.js';
import type { GrantedApp } from '../../src/features/apps/webhooks/presence-source.js';
import type { LoggedUpdate } from '../../src/features/apps/webhooks/store.js';

const update: LoggedUpdate = {
  id: 42,
  appId: 'app1',
  uid: 'pairwise-1',
  seq: 7,
  at: Date.UTC(2026, 10, 29, 21, 45, 1, 123),
  body: JSON.stringify({ status: 'away', statusText: 'at lunch', lastSeen: Date.UTC(2026, 10, 29, 20, 0, 0) }),
  createdAt: Date.UTC(2026, 10, 29, 21, 45, 1, 130),
};
const withStatus: GrantedApp = { appId: 'app1', uid: 'pairwise-1', scopes: ['presence', 'presence.status'] };
const wordOnly: GrantedApp = { appId: 'app1', uid: 'pairwise-1', scopes: ['presence'] };

test('a live line framed once is shared, yet each grant shape and format gets its own', () => {
  const cursor = encodeCursor(42, update.createdAt);
  // The cheaper shape first: a grant with presence.status asked later must not get the cached line without the text, nor the reverse.
  const plain = liveFrame('ndjson', update, wordOnly);
  assert.equal(plain, `${JSON.stringify({ type: 'presence', uid: 'pairwise-1', status: 'away', seq: 7, at: '2026-11-29T21:45:01.123Z', cursor })}\n`);
  const full = liveFrame('ndjson', update, withStatus);
  assert.deepEqual(JSON.parse(full), { type: 'presence', uid: 'pairwise-1', status: 'away', seq: 7, at: '2026-11-29T21:45:01.123Z', statusText: 'at lunch', lastSeen: '2026-11-29T20:00:00.000Z', cursor });
  assert.equal(liveFrame('ndjson', update, wordOnly), plain);
  assert.equal(liveFrame('ndjson', update, withStatus), full);
  const sse = liveFrame('sse', update, wordOnly);
  assert.equal(sse, `event: presence\nid: ${cursor}\ndata: ${plain.trimEnd()}\n\n`);
  assert.doesNotMatch(sse, /lunch/);
  assert.match(liveFrame('sse', update, withStatus), /^event: presence\nid: [^\n]+\ndata: \{.*"statusText":"at lunch".*\}\n\n$/);
});
