import assert from 'node:assert/strict';
import { pbkdf2Sync, randomBytes, scryptSync } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { describe, test } from 'node:test';
import { verifyPassword, verifyPasswordWithScram } from '../../src/engine/credentials.js';
import { FairQueue } from '../../src/engine/fair-queue.js';
import { PasswordPool, type KeyDerivation, type PasswordPoolMode } from '../../src/engine/password-pool.js';
import { Passwords } from '../../src/engine/passwords.js';
import type { AccountRecord } from '../../src/ports/store.js';

describe('FairQueue', () => {
  test('serves keys round robin, each key in its own order', () => {
    const q = new FairQueue<string>();
    for (let i = 0; i < 5; i++) q.push('flood', `f${i}`);
    q.push('alice', 'a0');
    q.push('bob', 'b0');
    q.push('alice', 'a1');
    assert.equal(q.size, 8);
    assert.equal(q.sizeOf('flood'), 5);
    const order: string[] = [];
    for (let x = q.shift(); x !== undefined; x = q.shift()) order.push(x);
    assert.deepEqual(order, ['f0', 'a0', 'b0', 'f1', 'a1', 'f2', 'f3', 'f4']);
    assert.equal(q.size, 0);
    assert.equal(q.keys, 0);
  });
});

const pbkdf2Job = (password: string, salt: Buffer): KeyDerivation => ({ kind: 'pbkdf2', password, salt, iterations: 2000, keylen: 32, digest: 'sha256' });

for (const mode of ['workers', 'libuv'] as PasswordPoolMode[]) {
  describe(`PasswordPool (${mode})`, () => {
    test('derives what node:crypto derives, scrypt and PBKDF2', async () => {
      const pool = new PasswordPool({ mode, size: 2, nice: 10 });
      try {
        const salt = randomBytes(16);
        assert.deepEqual(await pool.derive(pbkdf2Job('pw', salt), { key: 'k' }), pbkdf2Sync('pw', salt, 2000, 32, 'sha256'));
        const s = await pool.derive({ kind: 'scrypt', password: 'pw', salt, keylen: 32, N: 1024, r: 8, p: 1 }, { key: 'k' });
        assert.deepEqual(s, scryptSync('pw', salt, 32, { N: 1024, r: 8, p: 1 }));
        assert.equal(pool.stats.derivations, 2);
      } finally {
        await pool.close();
      }
    });

    test('runs at most `size` at once; a flood under one key delays another key by one turn, not by the flood', async () => {
      const pool = new PasswordPool({ mode, size: 1 });
      try {
        const done: string[] = [];
        let most = 0;
        const run = (key: string, name: string) =>
          pool.derive(pbkdf2Job(name, randomBytes(8)), { key, admit: () => void (most = Math.max(most, pool.busy + 1)) }).then(() => void done.push(name));
        const flood = Array.from({ length: 12 }, (_, i) => run('guesser', `g${i}`));
        const real = run('alice', 'alice');
        await Promise.all([...flood, real]);
        assert.equal(most, 1, 'never two at once in a pool of one');
        assert.ok(done.indexOf('alice') <= 2, `alice served after ${done.indexOf('alice')} guesses, not after the flood: ${done.join(' ')}`);
        assert.equal(pool.stats.maxQueued, 12);
      } finally {
        await pool.close();
      }
    });

    test('a job whose admit throws at its turn is dropped without being derived', async () => {
      const pool = new PasswordPool({ mode, size: 1 });
      try {
        let gone = false;
        const first = pool.derive(pbkdf2Job('a', randomBytes(8)), { key: 'a' });
        const dropped = pool.derive(pbkdf2Job('b', randomBytes(8)), {
          key: 'b',
          admit: () => {
            if (gone) throw new Error('requester went away');
          },
        });
        gone = true;
        await first;
        await assert.rejects(dropped, /requester went away/);
        assert.equal(pool.stats.derivations, 1);
        assert.equal(pool.stats.dropped, 1);
      } finally {
        await pool.close();
      }
    });

    test('close() refuses what still waits', async () => {
      const pool = new PasswordPool({ mode, size: 1 });
      const running = pool.derive(pbkdf2Job('a', randomBytes(8)), { key: 'a' }).catch(() => 'ended');
      const waiting = assert.rejects(pool.derive(pbkdf2Job('b', randomBytes(8)), { key: 'b' }), /shutting down/);
      await pool.close();
      await waiting;
      await running;
      await assert.rejects(pool.derive(pbkdf2Job('c', randomBytes(8)), { key: 'c' }), /shutting down/);
    });
  });
}

/** Niceness of each thread of this process (/proc/self/task/<tid>/stat, field 19). */
function threadNiceness(): number[] {
  return readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

describe('PasswordPool worker threads', { skip: process.platform !== 'linux' ? 'Linux thread priorities' : false }, () => {
  test('lower their own priority below the event loop', async () => {
    const pool = new PasswordPool({ mode: 'workers', size: 1, nice: 10 });
    try {
      const base = getPriority();
      const before = threadNiceness().filter((n) => n === Math.min(19, base + 10)).length;
      await pool.derive(pbkdf2Job('pw', randomBytes(8)), { key: 'k' });
      assert.equal(getPriority(), base, 'the event loop keeps its priority');
      const after = threadNiceness().filter((n) => n === Math.min(19, base + 10)).length;
      // Run as `nice -n 19` the process is at the floor already: the worker can go no lower, and is there.
      assert.ok(base + 10 > 19 ? after >= 1 : after === before + 1, `a thread at niceness ${Math.min(19, base + 10)}: ${threadNiceness().join(',')}`);
    } finally {
      await pool.close();
    }
  });
});

function account(jid: string, creds: Pick<AccountRecord, 'passwordHash' | 'scramSha1' | 'scramSha256'>): AccountRecord {
  return { jid, ...creds, createdAt: 0 };
}

describe('Passwords', () => {
  const settings = { scrypt: { logN: 10, r: 8, p: 1 }, scramIterations: 4096, poolSize: 2 };

  test('derive makes a scrypt hash and SCRAM keys of the configured costs, all checking the password', async () => {
    const p = new Passwords({ ...settings, scramIterations: 5000 });
    try {
      const creds = await p.derive('Ünïcode pw', { key: 'k' });
      assert.match(creds.passwordHash, /^scrypt\$1024\$8\$1\$/);
      assert.equal(creds.scramSha1?.iterations, 5000);
      assert.equal(creds.scramSha256?.iterations, 5000);
      assert.ok(await verifyPassword('Ünïcode pw', creds.passwordHash));
      assert.ok(await verifyPasswordWithScram('Ünïcode pw', creds.scramSha1!, 'sha1'));
      assert.ok(await verifyPasswordWithScram('Ünïcode pw', creds.scramSha256!, 'sha256'));
      assert.equal(p.pool.stats.derivations, 3);
    } finally {
      await p.close();
    }
  });

  test('verify: the right password passes once derived, then from the cache; wrong ones and unknown accounts always cost a derivation', async () => {
    const p = new Passwords(settings);
    try {
      const acc = account('a@x', await p.derive('right', { key: 'k' }));
      const base = p.pool.stats.derivations;
      assert.equal(await p.verify('a@x', 'right', acc, { key: 'k' }), true);
      assert.equal(p.pool.stats.derivations, base + 1);
      assert.equal(await p.verify('a@x', 'right', acc, { key: 'k' }), true);
      assert.equal(p.pool.stats.derivations, base + 1, 'the second check needs no derivation');
      assert.equal(p.stats.cacheHits, 1);
      assert.equal(await p.verify('a@x', 'wrong', acc, { key: 'k' }), false);
      assert.equal(await p.verify('nobody@x', 'right', undefined, { key: 'k' }), false);
      assert.equal(p.pool.stats.derivations, base + 3, 'a wrong password and an unknown account cost a derivation each');
      // Another account does not share the first one's entry.
      const other = account('b@x', acc);
      assert.equal(await p.verify('b@x', 'right', other, { key: 'k' }), true);
      assert.equal(p.pool.stats.derivations, base + 4);
    } finally {
      await p.close();
    }
  });

  test('a remembered password stops matching when the stored keys change or the account is forgotten', async () => {
    const p = new Passwords(settings);
    try {
      const acc = account('a@x', await p.derive('pw', { key: 'k' }));
      p.remember('a@x', 'pw', acc);
      const base = p.pool.stats.derivations;
      assert.equal(await p.verify('a@x', 'pw', acc, { key: 'k' }), true);
      assert.equal(p.pool.stats.derivations, base);
      // The password changed (here or on another node): the stored keys differ, the entry no longer counts.
      const changed = account('a@x', await p.derive('new', { key: 'k' }));
      const base2 = p.pool.stats.derivations;
      assert.equal(await p.verify('a@x', 'pw', changed, { key: 'k' }), false);
      assert.equal(await p.verify('a@x', 'new', changed, { key: 'k' }), true);
      assert.equal(p.pool.stats.derivations, base2 + 2);
      p.forget('a@x');
      assert.equal(await p.verify('a@x', 'new', changed, { key: 'k' }), true);
      assert.equal(p.pool.stats.derivations, base2 + 3);
    } finally {
      await p.close();
    }
  });

  test('the cache is bounded (least recently used dropped) and 0 turns it off', async () => {
    const p = new Passwords({ ...settings, cacheSize: 2 });
    const off = new Passwords({ ...settings, cacheSize: 0 });
    try {
      const creds = await p.derive('pw', { key: 'k' });
      for (const jid of ['a@x', 'b@x', 'c@x']) assert.equal(await p.verify(jid, 'pw', account(jid, creds), { key: 'k' }), true);
      assert.equal(p.cachedAccounts, 2);
      const base = p.pool.stats.derivations;
      assert.equal(await p.verify('a@x', 'pw', account('a@x', creds), { key: 'k' }), true);
      assert.equal(p.pool.stats.derivations, base + 1, 'a@x was the least recently used, and went');
      for (let i = 0; i < 2; i++) assert.equal(await off.verify('a@x', 'pw', account('a@x', creds), { key: 'k' }), true);
      assert.equal(off.stats.cacheHits, 0);
      assert.equal(off.cachedAccounts, 0);
    } finally {
      await p.close();
      await off.close();
    }
  });

  test('an account without SCRAM-SHA-256 keys is checked with its scrypt hash', async () => {
    const p = new Passwords(settings);
    try {
      const creds = await p.derive('pw', { key: 'k' });
      const legacy = account('old@x', { passwordHash: creds.passwordHash, scramSha1: null, scramSha256: null });
      assert.equal(await p.verify('old@x', 'pw', legacy, { key: 'k' }), true);
      assert.equal(await p.verify('old@x', 'nope', legacy, { key: 'k' }), false);
    } finally {
      await p.close();
    }
  });
});
