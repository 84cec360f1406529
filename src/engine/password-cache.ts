import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Remembers, per account, the password that last logged in, so that the same password sent again
 * (SASL PLAIN, a native or HTTP Basic login) is accepted after one HMAC instead of a PBKDF2 or scrypt:
 * a reconnect storm of clients without SCRAM costs the server little more than one with SCRAM.
 *
 * What is kept, and why it is safe (docs/security.md, "Password work during login storms"):
 *
 * - Per account one tag, HMAC-SHA256 of the account, its stored verifier and the password under a random
 *   32-byte key made when the process starts, held in memory only and never written anywhere. No
 *   password, no salted password, nothing the database lacks; the database stays the only copy of the
 *   verifiers. About 200 bytes per account.
 * - Only passwords that were verified against the stored verifiers are remembered. A wrong password
 *   never matches a tag, so every guess still costs the full derivation: online guessing is as slow as
 *   without the cache, and the login throttle counts it the same.
 * - Each tag covers the stored verifier it was checked against (the SCRAM StoredKey or scrypt hash, as
 *   read from the database at that login) and matches only while the account still has it: a
 *   password changed or an account re-created (here or by another node on the same database) turns the
 *   entry into a miss. A change made through this process also drops it at once (forget()).
 * - Bounded: at most `maxEntries` accounts, the least recently used dropped first.
 *
 * What it does not protect against: someone who can read this process's memory gets the key and the
 * tags, and can test guesses for the remembered accounts at HMAC speed. That reader already sees every
 * PLAIN password in clear as it arrives, and the SCRAM keys that let it impersonate any account, so the
 * cache gives it little it did not have. Keep core dumps and swap of the server private, as for any
 * process that handles passwords; `password_cache_size` 0 turns the cache off.
 */
export class VerifiedPasswordCache {
  /** Per account, HMAC(key, account, password, verifier): one 32-byte tag says all three. */
  private readonly entries = new Map<string, Buffer>();
  private readonly key = randomBytes(32);

  constructor(private readonly maxEntries: number) {}

  get size(): number {
    return this.entries.size;
  }

  private tag(jid: string, password: string, verifier: string): Buffer {
    return createHmac('sha256', this.key).update(jid).update('\0').update(verifier).update('\0').update(password).digest();
  }

  /** Whether `password` (normalised) is the one `jid` last logged in with, while its verifier is still `verifier`. */
  matches(jid: string, password: string, verifier: string): boolean {
    const t = this.entries.get(jid);
    if (t === undefined || !timingSafeEqual(t, this.tag(jid, password, verifier))) return false;
    // Re-inserted: the Map's order is least recently used first, which is what goes when full.
    this.entries.delete(jid);
    this.entries.set(jid, t);
    return true;
  }

  /** Records a password just verified against `verifier`. */
  remember(jid: string, password: string, verifier: string): void {
    if (this.maxEntries <= 0) return;
    this.entries.delete(jid);
    this.entries.set(jid, this.tag(jid, password, verifier));
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
  }

  forget(jid: string): void {
    this.entries.delete(jid);
  }
}
