import { randomBytes, timingSafeEqual } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { AccountRecord, ScramKeys } from '../ports/store.js';
import {
  DEFAULT_SCRAM_ITERATIONS,
  DEFAULT_SCRYPT,
  encodeScryptHash,
  normalisePassword,
  parseScryptHash,
  saltedMatches,
  scramKeyLength,
  scramKeysFromSalted,
  type ScramAlgo,
  type ScryptCost,
} from './credentials.js';
import { VerifiedPasswordCache } from './password-cache.js';
import { PasswordPool, type PasswordPoolMode, type WorkTicket } from './password-pool.js';

export type Credentials = Pick<AccountRecord, 'passwordHash' | 'scramSha1' | 'scramSha256'>;

export interface PasswordSettings {
  /** Cost of the scrypt hash made for each new password. */
  readonly scrypt: ScryptCost;
  /** PBKDF2 iterations of the SCRAM keys made for each new password (RFC 7677: at least 4096). */
  readonly scramIterations: number;
  readonly pool: PasswordPoolMode;
  /** Derivations at once; 0: one per CPU this process may run on. */
  readonly poolSize: number;
  /** Niceness the pool's worker threads add to their own (workers mode). */
  readonly workerNice: number;
  /** Accounts whose last verified password is remembered (password-cache.ts); 0 turns it off. */
  readonly cacheSize: number;
}

export const DEFAULT_PASSWORD_SETTINGS: PasswordSettings = {
  scrypt: DEFAULT_SCRYPT,
  scramIterations: DEFAULT_SCRAM_ITERATIONS,
  pool: 'workers',
  poolSize: 0,
  workerNice: 10,
  cacheSize: 100_000,
};

export interface PasswordStats {
  /** Password checks answered from the verified-password cache, without a derivation. */
  cacheHits: number;
  /** Password checks that ran a derivation. */
  derivedChecks: number;
}

/**
 * Password work for every front door: the credentials made for a new password, and the check of a
 * password sent in clear (SASL PLAIN, native auth, HTTP Basic). SCRAM logins need none of it: the
 * mechanism checks the client's proof against the stored keys with a few HMACs (protocols/xmpp/sasl.ts).
 *
 * A password sent in clear is checked against the account's SCRAM-SHA-256 keys (one PBKDF2 of their
 * iteration count) rather than the scrypt hash: the database's resistance to offline guessing is that
 * of its weakest verifier, the SCRAM keys, so the slower scrypt would cost every login without making
 * anything stored harder to guess. An account without SCRAM-SHA-256 keys is checked with its scrypt hash.
 * A password checked once is then recognised with one HMAC (VerifiedPasswordCache) until it changes.
 * All derivations run in the PasswordPool, off the event loop, in a fair order.
 */
export class Passwords {
  readonly pool: PasswordPool;
  readonly stats: PasswordStats = { cacheHits: 0, derivedChecks: 0 };
  private readonly cache: VerifiedPasswordCache;
  private readonly settings: PasswordSettings;
  /** What an unknown account is checked against: as costly as a real account, and never matched. */
  private readonly unknown: ScramKeys;

  constructor(settings: Partial<PasswordSettings> = {}) {
    this.settings = { ...DEFAULT_PASSWORD_SETTINGS, ...settings };
    const size = this.settings.poolSize > 0 ? this.settings.poolSize : availableParallelism();
    this.pool = new PasswordPool({ mode: this.settings.pool, size, nice: this.settings.workerNice });
    this.cache = new VerifiedPasswordCache(this.settings.cacheSize);
    this.unknown = {
      salt: randomBytes(16).toString('base64'),
      iterations: this.settings.scramIterations,
      storedKey: randomBytes(32).toString('base64'),
      serverKey: randomBytes(32).toString('base64'),
    };
  }

  /** Size of the pool (derivations at once). */
  get poolSize(): number {
    return this.pool.opts.size;
  }

  /**
   * The scrypt hash and both SCRAM key sets for a new password, submitted together so that they run in
   * parallel where the pool has room (the scrypt first: it is the longest).
   */
  async derive(password: string, ticket: WorkTicket): Promise<Credentials> {
    const pw = normalisePassword(password);
    const { logN, r, p } = this.settings.scrypt;
    const N = 2 ** logN;
    const scryptSalt = randomBytes(16);
    const hash = this.pool.derive({ kind: 'scrypt', password: pw, salt: scryptSalt, keylen: 32, N, r, p }, ticket);
    const keys = (['sha1', 'sha256'] as const).map(async (algo) => {
      const salt = randomBytes(16);
      const iterations = this.settings.scramIterations;
      const salted = await this.pool.derive({ kind: 'pbkdf2', password: pw, salt, iterations, keylen: scramKeyLength(algo), digest: algo }, ticket);
      return scramKeysFromSalted(algo, salted, salt, iterations);
    });
    const [key, scramSha1, scramSha256] = await Promise.all([hash, ...keys]);
    return { passwordHash: encodeScryptHash({ N, r, p, salt: scryptSalt, key: key as Buffer }), scramSha1: scramSha1 as ScramKeys, scramSha256: scramSha256 as ScramKeys };
  }

  /**
   * Whether `password` is the password of `account` (undefined: an unknown account, which costs what a
   * wrong password costs, so the time to answer does not tell whether it exists).
   */
  async verify(jid: string, password: string, account: AccountRecord | undefined, ticket: WorkTicket): Promise<boolean> {
    const pw = normalisePassword(password);
    const keys = account ? account.scramSha256 : this.unknown;
    const verifier = keys ? keys.storedKey : (account as AccountRecord).passwordHash;
    if (account && this.cache.matches(jid, pw, verifier)) {
      this.stats.cacheHits++;
      return true;
    }
    this.stats.derivedChecks++;
    let ok: boolean;
    if (keys) {
      ok = await this.checkScram(pw, keys, 'sha256', ticket);
    } else {
      const h = parseScryptHash((account as AccountRecord).passwordHash);
      if (!h) return false;
      const key = await this.pool.derive({ kind: 'scrypt', password: pw, salt: h.salt, keylen: h.key.length, N: h.N, r: h.r, p: h.p }, ticket);
      ok = timingSafeEqual(key, h.key);
    }
    if (ok && account) this.cache.remember(jid, pw, verifier);
    return ok;
  }

  private async checkScram(pw: string, keys: ScramKeys, algo: ScramAlgo, ticket: WorkTicket): Promise<boolean> {
    const salted = await this.pool.derive(
      { kind: 'pbkdf2', password: pw, salt: Buffer.from(keys.salt, 'base64'), iterations: keys.iterations, keylen: scramKeyLength(algo), digest: algo },
      ticket,
    );
    return saltedMatches(algo, salted, keys);
  }

  /** A password just set for `jid` (a registration): its first login is then recognised without a derivation. */
  remember(jid: string, password: string, creds: Credentials): void {
    this.cache.remember(jid, normalisePassword(password), creds.scramSha256 ? creds.scramSha256.storedKey : creds.passwordHash);
  }

  /** The account's password changed or it was removed. */
  forget(jid: string): void {
    this.cache.forget(jid);
  }

  get cachedAccounts(): number {
    return this.cache.size;
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/** Where a caller's password work goes in the pool's fair queue, and whether it is still wanted when its turn comes. */
export interface PasswordWork {
  /** The FairQueue key; by default the account. */
  readonly fairKey?: string;
  /** Called when the turn comes; throwing drops the work and rejects with that error. */
  readonly admit?: () => void;
}
