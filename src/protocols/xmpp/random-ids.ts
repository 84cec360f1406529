import { randomFillSync } from 'node:crypto';

/**
 * Random bytes for stream ids and SCRAM nonces, taken from a block filled from the CSPRNG 4 KB at a
 * time (as Node's randomUUID does): a call to randomBytes per login step cost more than the HMACs of a
 * SCRAM login. Each byte is handed out once.
 */
const POOL = Buffer.alloc(4096);
let used = POOL.length;

function take(n: number): Buffer {
  if (n > POOL.length) throw new RangeError('too many random bytes at once');
  if (used + n > POOL.length) {
    randomFillSync(POOL);
    used = 0;
  }
  const out = POOL.subarray(used, used + n);
  used += n;
  return out;
}

/** `n` random bytes as hex (2n characters). */
export function randomHex(n: number): string {
  return take(n).toString('hex');
}

/** `n` random bytes as base64. */
export function randomBase64(n: number): string {
  return take(n).toString('base64');
}
