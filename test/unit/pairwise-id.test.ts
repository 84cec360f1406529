import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { clientSecretMatches, deriveKeys, hashClientSecret, newAppId, newClientSecret, newWebhookSecret, pairwiseId, PAIRWISE_ID_LENGTH } from '../../src/features/apps/secrets.js';

const keys = deriveKeys(randomBytes(32));

test('pairwise ids: stable within one app, different across apps and accounts, URL-safe and 22 characters', () => {
  const a = newAppId();
  const b = newAppId();
  const id = pairwiseId(keys.pairwise, a, 'alice@localhost');
  assert.equal(id, pairwiseId(keys.pairwise, a, 'alice@localhost'));
  assert.notEqual(id, pairwiseId(keys.pairwise, b, 'alice@localhost'));
  assert.notEqual(id, pairwiseId(keys.pairwise, a, 'bob@localhost'));
  assert.equal(id.length, PAIRWISE_ID_LENGTH);
  assert.match(id, /^[A-Za-z0-9_-]{22}$/);
});

test('pairwise ids depend on the server secret: without it they cannot be recomputed, so not linked or reversed', () => {
  const other = deriveKeys(randomBytes(32));
  const app = newAppId();
  const id = pairwiseId(keys.pairwise, app, 'alice@localhost');
  assert.notEqual(id, pairwiseId(other.pairwise, app, 'alice@localhost'));
  // The id carries nothing of the inputs: no part of the JID or app id appears in it.
  assert.ok(!id.includes('alice') && !id.includes(app.slice(0, 8)));
  // The same server secret always gives the same ids (they survive restarts).
  const again = deriveKeys(Buffer.from(keys.pairwise)); // a different secret, different ids
  assert.notEqual(pairwiseId(again.pairwise, app, 'alice@localhost'), id);
});

test('an unambiguous input: app "ab" with "c@x" differs from app "a" with "bc@x"', () => {
  assert.notEqual(pairwiseId(keys.pairwise, 'ab', 'c@x'), pairwiseId(keys.pairwise, 'a', 'bc@x'));
});

test('many accounts in one app get distinct ids', () => {
  const app = newAppId();
  const ids = new Set(Array.from({ length: 5000 }, (_, i) => pairwiseId(keys.pairwise, app, `user${i}@localhost`)));
  assert.equal(ids.size, 5000);
});

test('client secrets: random, stored as a keyed hash that only the secret matches', () => {
  const s = newClientSecret();
  assert.match(s, /^pcs_[A-Za-z0-9_-]{43}$/);
  assert.notEqual(s, newClientSecret());
  const h = hashClientSecret(keys.clientSecret, s);
  assert.ok(!h.includes(s.slice(4)));
  assert.ok(clientSecretMatches(keys.clientSecret, s, h));
  assert.ok(!clientSecretMatches(keys.clientSecret, newClientSecret(), h));
  // The hash key is not the pairwise key.
  assert.notDeepEqual(keys.clientSecret, keys.pairwise);
});

test('webhook secrets are in Standard Webhooks form: whsec_ and base64 of 24 bytes', () => {
  const w = newWebhookSecret();
  assert.match(w, /^whsec_[A-Za-z0-9+/]{32}$/);
  assert.equal(Buffer.from(w.slice(6), 'base64').length, 24);
});
