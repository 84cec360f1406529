import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newAppId } from '../../src/features/apps/secrets.js';

test('app ids are 22 URL-safe characters and never begin like a command-line option', () => {
  const ids = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const id = newAppId();
    assert.match(id, /^[A-Za-z0-9][A-Za-z0-9_-]{21}$/);
    ids.add(id);
  }
  assert.equal(ids.size, 5000);
});
