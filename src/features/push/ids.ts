import { randomFillSync } from 'node:crypto';

/** Random bytes taken from a pool refilled 4 KB at a time, as crypto.randomUUID does. */
const POOL_SIZE = 4096;
const pool = Buffer.alloc(POOL_SIZE);
let used = POOL_SIZE;

/**
 * `prefix` then 12 random bytes in base64url: the notification and push ids, made at each notify and
 * each push. A randomBytes call per id cost more than the rest of making the id (a call into the OS's
 * random source each time); the bytes are as random, they are only fetched in bulk.
 */
export function randomId(prefix: string): string {
  if (used + 12 > POOL_SIZE) {
    randomFillSync(pool);
    used = 0;
  }
  const id = pool.toString('base64url', used, used + 12);
  used += 12;
  return prefix + id;
}
