import { createHash, createHmac, pbkdf2, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import type { AccountRecord, ScramKeys } from '../ports/store.js';

const scryptAsync = promisify(scrypt) as (
  password: string | Buffer,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;
const pbkdf2Async = promisify(pbkdf2);

// N=2^15, r=8: ~32 MiB and a few tens of ms per hash, the OWASP-recommended floor for scrypt.
const SCRYPT = { N: 1 << 15, r: 8, p: 1, keylen: 32 };
const SCRAM_ITERATIONS = 4096; // RFC 7677 §4 minimum, what deployed clients expect.

export const MAX_PASSWORD_BYTES = 1024;

/**
 * Passwords are compared after Unicode normalisation so that the same password typed on two keyboards
 * (composed vs decomposed accents) matches, approximating SASLprep (RFC 4013) which SCRAM requires.
 */
function normalisePassword(password: string): string {
  return password.normalize('NFKC');
}

export function checkPasswordShape(password: unknown): string | null {
  if (typeof password !== 'string') return 'password must be a string';
  if (password.length === 0) return 'password must not be empty';
  if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) return `password longer than ${MAX_PASSWORD_BYTES} bytes`;
  return null;
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const { N, r, p, keylen } = SCRYPT;
  const key = await scryptAsync(normalisePassword(password), salt, keylen, { N, r, p, maxmem: 128 * N * r * 2 });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const N = Number(parts[1]);
  const r = Number(parts[2]);
  const p = Number(parts[3]);
  const salt = Buffer.from(parts[4] ?? '', 'base64');
  const expected = Buffer.from(parts[5] ?? '', 'base64');
  if (!Number.isInteger(N) || !Number.isInteger(r) || !Number.isInteger(p) || expected.length === 0) return false;
  const key = await scryptAsync(normalisePassword(password), salt, expected.length, { N, r, p, maxmem: 128 * N * r * 2 });
  return timingSafeEqual(key, expected);
}

/**
 * Checks a password against stored SCRAM keys (RFC 5802 §3: H(HMAC(SaltedPassword, "Client Key")) must
 * equal StoredKey). Costs one PBKDF2 of the key's iteration count: what a SCRAM login costs the client,
 * far less than scrypt, and no weaker than the SCRAM keys stored beside the hash anyway.
 */
export async function verifyPasswordWithScram(password: string, keys: ScramKeys, algo: 'sha1' | 'sha256'): Promise<boolean> {
  const keylen = algo === 'sha1' ? 20 : 32;
  const salted = await pbkdf2Async(normalisePassword(password), Buffer.from(keys.salt, 'base64'), keys.iterations, keylen, algo);
  const storedKey = createHash(algo).update(createHmac(algo, salted).update('Client Key').digest()).digest();
  const expected = Buffer.from(keys.storedKey, 'base64');
  return expected.length === storedKey.length && timingSafeEqual(storedKey, expected);
}

export async function scramKeys(password: string, algo: 'sha1' | 'sha256'): Promise<ScramKeys> {
  const salt = randomBytes(16);
  const keylen = algo === 'sha1' ? 20 : 32;
  const salted = await pbkdf2Async(normalisePassword(password), salt, SCRAM_ITERATIONS, keylen, algo);
  const clientKey = createHmac(algo, salted).update('Client Key').digest();
  const storedKey = createHash(algo).update(clientKey).digest();
  const serverKey = createHmac(algo, salted).update('Server Key').digest();
  return {
    salt: salt.toString('base64'),
    iterations: SCRAM_ITERATIONS,
    storedKey: storedKey.toString('base64'),
    serverKey: serverKey.toString('base64'),
  };
}

/** Everything stored for a password: a scrypt hash for direct logins and SCRAM keys for XMPP SASL. */
export async function deriveCredentials(
  password: string,
): Promise<Pick<AccountRecord, 'passwordHash' | 'scramSha1' | 'scramSha256'>> {
  const [passwordHash, scramSha1, scramSha256] = await Promise.all([
    hashPassword(password),
    scramKeys(password, 'sha1'),
    scramKeys(password, 'sha256'),
  ]);
  return { passwordHash, scramSha1, scramSha256 };
}
