import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Webhook } from 'standardwebhooks';
import type { AccountPresence } from '../../src/core/presence.js';
import { backoffDelay, nextAttemptDelay, retryAfterMs } from '../../src/features/apps/webhooks/backoff.js';
import { appStatusOf, appUpdateOf } from '../../src/features/apps/webhooks/presence-source.js';
import { signatureOf, signedHeaders } from '../../src/features/apps/webhooks/signer.js';
import { refusedAddressKind } from '../../src/features/apps/webhooks/ssrf.js';
import { webhookBody } from '../../src/features/apps/webhooks/worker.js';
import { newWebhookSecret } from '../../src/features/apps/secrets.js';

describe('webhook signer (Standard Webhooks)', () => {
  it('signs what the standardwebhooks package verifies, and the same signature it computes', () => {
    const secret = newWebhookSecret();
    const body = JSON.stringify([['abc', 'online']]);
    const now = Date.now();
    const headers = signedHeaders(secret, 'msg_1', body, now);
    assert.deepEqual(new Webhook(secret).verify(body, headers), [['abc', 'online']]);
    const ts = Math.floor(now / 1000);
    assert.equal(signatureOf(secret, 'msg_1', ts, body), new Webhook(secret).sign('msg_1', new Date(ts * 1000), body));
  });

  it('a changed body or another secret fails verification', () => {
    const secret = newWebhookSecret();
    const headers = signedHeaders(secret, 'msg_2', '[]', Date.now());
    assert.throws(() => new Webhook(secret).verify('[ ]', headers));
    assert.throws(() => new Webhook(newWebhookSecret()).verify('[]', headers));
  });
});

describe('webhook backoff', () => {
  it('grows exponentially with full jitter and stops at the cap', () => {
    assert.equal(backoffDelay(1, 1000, 3_600_000, () => 0.999999), 999);
    assert.equal(backoffDelay(4, 1000, 3_600_000, () => 0.5), 4000);
    assert.equal(backoffDelay(40, 1000, 3_600_000, () => 0.5), 1_800_000);
    assert.equal(backoffDelay(3, 1000, 3_600_000, () => 0), 0);
  });

  it('reads Retry-After in seconds or as an HTTP date, capped, and ignores nonsense', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(retryAfterMs('5', now, 60_000), 5000);
    assert.equal(retryAfterMs('99999', now, 60_000), 60_000);
    assert.equal(retryAfterMs('Thu, 01 Jan 2026 00:00:30 GMT', now, 60_000), 30_000);
    assert.equal(retryAfterMs('Wed, 31 Dec 2025 00:00:00 GMT', now, 60_000), 0);
    assert.equal(retryAfterMs('soon', now, 60_000), null);
    assert.equal(retryAfterMs('-3', now, 60_000), null);
    assert.equal(retryAfterMs(undefined, now, 60_000), null);
  });

  it('never retries before Retry-After', () => {
    assert.equal(nextAttemptDelay(1, 7000, 1000, 3_600_000, () => 0.5), 7000);
    assert.equal(nextAttemptDelay(10, 7000, 1000, 3_600_000, () => 0.5), 256_000);
  });
});

describe('webhook SSRF address classification', () => {
  const refused: Array<[string, string]> = [
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['fe80::1', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['ff02::1', 'multicast'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['100.127.255.254', 'carrier-grade NAT'],
  ];
  for (const [a, kind] of refused) it(`refuses ${a} (${kind})`, () => assert.equal(refusedAddressKind(a), kind));
  for (const a of ['8.8.8.8', '172.32.0.1', '100.128.0.1', '2606:4700::1111', '::ffff:8.8.8.8', '192.169.0.1']) {
    it(`allows the public ${a}`, () => assert.equal(refusedAddressKind(a), null));
  }
  it('refuses what is not an address', () => assert.equal(refusedAddressKind('example.com'), 'not an IP address'));
});

describe('presence as apps see it', () => {
  const p = (over: Partial<AccountPresence>): AccountPresence => ({ jid: 'a@x', online: true, show: 'available', status: 'at lunch', priority: 0, resource: 'r', lastSeen: 1000, ...over });
  it('maps to the seed\'s words', () => {
    assert.equal(appStatusOf(p({ show: 'available' })), 'online');
    assert.equal(appStatusOf(p({ show: 'chat' })), 'online');
    assert.equal(appStatusOf(p({ show: 'away' })), 'away');
    assert.equal(appStatusOf(p({ show: 'xa' })), 'away');
    assert.equal(appStatusOf(p({ show: 'dnd' })), 'dnd');
    assert.equal(appStatusOf(p({ online: false, show: 'offline' })), 'offline');
    assert.equal(appStatusOf(p({ online: false, show: 'away' })), 'offline');
  });
  it('gives status text and last seen only with presence.status', () => {
    const off = p({ online: false, show: 'offline', status: 'bye', lastSeen: 5000 });
    assert.deepEqual(appUpdateOf(off, { appId: 'A', uid: 'U', scopes: ['presence'] }, 9), { appId: 'A', uid: 'U', status: 'offline', at: 9 });
    assert.deepEqual(appUpdateOf(off, { appId: 'A', uid: 'U', scopes: ['presence', 'presence.status'] }, 9), { appId: 'A', uid: 'U', status: 'offline', at: 9, statusText: 'bye', lastSeen: 5000 });
  });
  it('bodies: the seed\'s pairs, or objects with seq and times', () => {
    const rows = [{ id: 1, uid: 'U', seq: 3, at: 0, body: JSON.stringify({ status: 'away', statusText: 'brb' }) }];
    assert.equal(webhookBody('pairs', rows), '[["U","away"]]');
    assert.deepEqual(JSON.parse(webhookBody('extended', rows)), [{ uid: 'U', status: 'away', seq: 3, at: '1970-01-01T00:00:00.000Z', statusText: 'brb' }]);
  });
});
