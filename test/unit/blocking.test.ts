import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { stanzaAllowed } from '../../src/core/blocking.js';

describe('stanzaAllowed (XEP-0191)', () => {
  it('delivers when nobody blocks anybody', () => {
    assert.equal(stanzaAllowed(false, false), 'deliver');
  });

  it('drops silently what a blocked party sends to the blocker', () => {
    assert.equal(stanzaAllowed(false, true), 'drop');
  });

  it('rejects what the blocker sends to someone it blocks', () => {
    assert.equal(stanzaAllowed(true, false), 'reject');
  });

  it('rejects when both block each other, so the sender learns only of its own block', () => {
    assert.equal(stanzaAllowed(true, true), 'reject');
  });
});
