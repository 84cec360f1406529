import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { addressKey, hostOf, LoginThrottle, LoginThrottled } from '../../src/engine/login-throttle.js';

function throttle(opts: Partial<ConstructorParameters<typeof LoginThrottle>[0]> = {}) {
  let now = 1_000_000;
  const t = new LoginThrottle({ accountFree: 3, addressFree: 5, maxDelayMs: 8_000, baseDelayMs: 1_000, now: () => now, ...opts });
  return { t, advance: (ms: number) => (now += ms) };
}

describe('login throttle', () => {
  test('an account slows down after its free failures, doubling up to the cap', () => {
    const { t, advance } = throttle();
    const waits: number[] = [];
    for (let i = 0; i < 7; i++) {
      assert.equal(t.wait('test', 'alice@x', '10.0.0.1'), 0, `attempt ${i} is allowed once the wait is over`);
      t.failed('alice@x', '10.0.0.1');
      waits.push(t.wait('test', 'alice@x', '10.0.0.1'));
      advance(waits.at(-1) as number);
    }
    assert.deepEqual(waits, [0, 0, 0, 1000, 2000, 4000, 8000]);
    assert.equal(t.throttled.get('test'), 4);
  });

  test('an address slows down too, whatever accounts it tries', () => {
    const { t } = throttle();
    for (let i = 0; i < 5; i++) t.failed(`user${i}@x`, '10.0.0.2');
    assert.equal(t.wait('test', 'user9@x', '10.0.0.2'), 0);
    t.failed('user9@x', '10.0.0.2');
    assert.equal(t.wait('test', 'someone@x', '10.0.0.2'), 1000);
    assert.equal(t.wait('test', 'someone@x', '10.0.0.3'), 0, 'another address is not slowed');
  });

  test('slow down, do not lock: an address with no failures passes a throttled account; one that failed waits', () => {
    const { t } = throttle();
    for (let i = 0; i < 4; i++) t.failed('alice@x', `10.1.0.${i}`);
    assert.ok(t.wait('test', 'alice@x', '10.1.0.0') > 0, 'an address that failed on it waits for the account');
    assert.equal(t.wait('test', 'alice@x', '192.168.7.7'), 0, 'the real user from a clean address is let through');
    t.succeeded('alice@x', '192.168.7.7');
    assert.equal(t.wait('test', 'alice@x', '10.1.0.0'), 0, "a success clears the account's count");
  });

  test('a success does not clear the address (a guesser cannot launder it with an account of its own)', () => {
    const { t } = throttle();
    for (let i = 0; i < 6; i++) t.failed('victim@x', '10.2.0.1');
    t.succeeded('mine@x', '10.2.0.1');
    assert.ok(t.wait('test', 'victim@x', '10.2.0.1') > 0);
  });

  test('counts are forgotten after a quiet while, and memory is bounded', () => {
    const { t, advance } = throttle({ forgetMs: 60_000, maxEntries: 100 });
    for (let i = 0; i < 4; i++) t.failed('alice@x', '10.3.0.1');
    advance(60_001);
    assert.equal(t.wait('test', 'alice@x', '10.3.0.1'), 0);
    for (let i = 0; i < 1000; i++) t.failed(`u${i}@x`, `10.4.${i >> 8}.${i & 255}`);
    assert.ok(t.size.accounts <= 100 && t.size.addresses <= 100, JSON.stringify(t.size));
  });

  test('attempt(): refuses with LoginThrottled, counts auth-failed, ignores other errors', async () => {
    const { t } = throttle({ accountFree: 1 });
    const { PresenceError } = await import('../../src/core/errors.js');
    await assert.rejects(t.attempt('d', 'bob@x', '10.5.0.1', async () => { throw new PresenceError('auth-failed', 'no'); }), /no/);
    await assert.rejects(t.attempt('d', 'bob@x', '10.5.0.1', async () => { throw new PresenceError('auth-failed', 'no'); }), /no/);
    const refused = await t.attempt('d', 'bob@x', '10.5.0.1', async () => 'ok').catch((e: unknown) => e);
    assert.ok(refused instanceof LoginThrottled);
    assert.equal(refused.code, 'rate-limited');
    assert.equal(refused.retryAfterSeconds, 1);
    await assert.rejects(t.attempt('d', 'carol@x', '10.5.0.2', async () => { throw new Error('db down'); }), /db down/);
    assert.equal(t.size.accounts, 1, 'an infrastructure error is not a failed login');
  });

  test('maxDelayMs 0 turns it off', () => {
    const { t } = throttle({ maxDelayMs: 0 });
    for (let i = 0; i < 100; i++) t.failed('alice@x', '10.6.0.1');
    assert.equal(t.wait('test', 'alice@x', '10.6.0.1'), 0);
  });

  test('address keys: IPv4, IPv4-mapped, IPv6 by /64; host of a transport remote', () => {
    assert.equal(addressKey('192.0.2.1'), '192.0.2.1');
    assert.equal(addressKey('::ffff:192.0.2.1'), '192.0.2.1');
    assert.equal(addressKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8:1:2::9'), addressKey('2001:0db8:0001:0002:ffff::1'));
    assert.equal(addressKey('::1'), '0:0:0:0::/64');
    assert.equal(addressKey('?'), null);
    assert.equal(hostOf('127.0.0.1:5222'), '127.0.0.1');
    assert.equal(hostOf('::1:5222'), '::1');
    assert.equal(hostOf('[::1]:5222'), '::1');
  });
});
