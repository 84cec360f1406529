import { createHash, createHmac, pbkdf2, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import type { AccountRecord, ScramKeys } from '../ports/store.js';

/**
 * The stored forms of a password: a scrypt hash and SCRAM keys (RFC 5802) for SHA-1 and SHA-256, and
 * the pure computations on them. Where the key derivations run (a worker pool, off the event loop) is
 * passwords.ts's business; the async helpers at the end run them on libuv's pool for tools and tests.
 */

export interface ScryptCost {
  /** CPU/memory cost: N = 2^logN. Memory per hash is 128 * N * r bytes (32 MiB at logN 15, r 8). */
  readonly logN: number;
  readonly r: number;
  readonly p: number;
}

// N=2^15, r=8: ~32 MiB and 60-140 ms per hash on this project's machines, the OWASP-recommended floor for scrypt.
export const DEFAULT_SCRYPT: ScryptCost = { logN: 15, r: 8, p: 1 };
/** RFC 7677 §4 minimum, what deployed clients expect. */
export const DEFAULT_SCRAM_ITERATIONS = 4096;
const SCRYPT_KEYLEN = 32;

export const MAX_PASSWORD_BYTES = 1024;

/**
 * Passwords are compared after Unicode normalisation so that the same password typed on two keyboards
 * (composed vs decomposed accents) matches, approximating SASLprep (RFC 4013) which SCRAM requires.
 */
export function normalisePassword(password: string): string {
  return password.normalize('NFKC');
}

export function checkPasswordShape(password: unknown): string | null {
  if (typeof password !== 'string') return 'password must be a string';
  if (password.length === 0) return 'password must not be empty';
  if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) return `password longer than ${MAX_PASSWORD_BYTES} bytes`;
  return null;
}

/** scrypt's memory bound for a cost, with room for Node's own accounting. */
export function scryptMaxmem(N: number, r: number): number {
  return 128 * N * r * 2;
}

export interface ScryptHash {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Buffer;
  readonly key: Buffer;
}

export function encodeScryptHash(h: ScryptHash): string {
  return `scrypt$${h.N}$${h.r}$${h.p}$${h.salt.toString('base64')}$${h.key.toString('base64')}`;
}

/** The parts of a stored scrypt hash, or null when it is not one (or its parameters are out of range). */
export function parseScryptHash(encoded: string): ScryptHash | null {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const N = Number(parts[1]);
  const r = Number(parts[2]);
  const p = Number(parts[3]);
  const salt = Buffer.from(parts[4] ?? '', 'base64');
  const key = Buffer.from(parts[5] ?? '', 'base64');
  if (!Number.isInteger(N) || !Number.isInteger(r) || !Number.isInteger(p) || N < 2 || r < 1 || p < 1 || key.length === 0) return null;
  return { N, r, p, salt, key };
}

export type ScramAlgo = 'sha1' | 'sha256';

export function scramKeyLength(algo: ScramAlgo): number {
  return algo === 'sha1' ? 20 : 32;
}

/** RFC 5802 §3: StoredKey = H(HMAC(SaltedPassword, "Client Key")). */
export function storedKeyOf(algo: ScramAlgo, salted: Buffer): Buffer {
  return createHash(algo).update(createHmac(algo, salted).update('Client Key').digest()).digest();
}

/** The keys a SCRAM server keeps for a salted password: never the password, nor the salted password. */
export function scramKeysFromSalted(algo: ScramAlgo, salted: Buffer, salt: Buffer, iterations: number): ScramKeys {
  return {
    salt: salt.toString('base64'),
    iterations,
    storedKey: storedKeyOf(algo, salted).toString('base64'),
    serverKey: createHmac(algo, salted).update('Server Key').digest().toString('base64'),
  };
}

/** Whether `salted` (PBKDF2 of a candidate password with the keys' salt and count) matches the stored keys. */
export function saltedMatches(algo: ScramAlgo, salted: Buffer, keys: ScramKeys): boolean {
  const candidate = storedKeyOf(algo, salted);
  const expected = Buffer.from(keys.storedKey, 'base64');
  return expected.length === candidate.length && timingSafeEqual(candidate, expected);
}

// ---------------------------------------------------------------------------------------------------
// On libuv's pool: for tools, benchmarks and tests. The server uses passwords.ts.

const scryptAsync = promisify(scrypt) as (
  password: string | Buffer,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;
const pbkdf2Async = promisify(pbkdf2);

export async function hashPassword(password: string, cost: ScryptCost = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(16);
  const N = 2 ** cost.logN;
  const key = await scryptAsync(normalisePassword(password), salt, SCRYPT_KEYLEN, { N, r: cost.r, p: cost.p, maxmem: scryptMaxmem(N, cost.r) });
  return encodeScryptHash({ N, r: cost.r, p: cost.p, salt, key });
}

export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const h = parseScryptHash(encoded);
  if (!h) return false;
  const key = await scryptAsync(normalisePassword(password), h.salt, h.key.length, { N: h.N, r: h.r, p: h.p, maxmem: scryptMaxmem(h.N, h.r) });
  return timingSafeEqual(key, h.key);
}

/**
 * Checks a password against stored SCRAM keys: one PBKDF2 of the keys' iteration count, what a SCRAM
 * login costs the client, and no weaker than the SCRAM keys stored beside the hash anyway.
 */
export async function verifyPasswordWithScram(password: string, keys: ScramKeys, algo: ScramAlgo): Promise<boolean> {
  const salted = await pbkdf2Async(normalisePassword(password), Buffer.from(keys.salt, 'base64'), keys.iterations, scramKeyLength(algo), algo);
  return saltedMatches(algo, salted, keys);
}

export async function scramKeys(password: string, algo: ScramAlgo, iterations = DEFAULT_SCRAM_ITERATIONS): Promise<ScramKeys> {
  const salt = randomBytes(16);
  const salted = await pbkdf2Async(normalisePassword(password), salt, iterations, scramKeyLength(algo), algo);
  return scramKeysFromSalted(algo, salted, salt, iterations);
}

/** Everything stored for a password: a scrypt hash for direct logins and SCRAM keys for XMPP SASL. */
export async function deriveCredentials(password: string): Promise<Pick<AccountRecord, 'passwordHash' | 'scramSha1' | 'scramSha256'>> {
  const [passwordHash, scramSha1, scramSha256] = await Promise.all([hashPassword(password), scramKeys(password, 'sha1'), scramKeys(password, 'sha256')]);
  return { passwordHash, scramSha1, scramSha256 };
}
