/**
 * The program of a password worker thread (password-pool.ts): one key derivation per message, answered
 * with the key. Plain JavaScript evaluated by the Worker, so it runs the same from the TypeScript
 * sources (tests, under tsx) and from the build.
 *
 * As it starts, the thread lowers its own scheduling priority by workerData.nice. On Linux,
 * setpriority(PRIO_PROCESS, tid) applies to that one thread (its tid is the last part of
 * /proc/thread-self), so the event loop's thread keeps its priority. Elsewhere, or if not allowed, it
 * runs at the process's priority.
 *
 * Messages: in {kind:'pbkdf2', password, salt, iterations, keylen, digest} |
 * {kind:'scrypt', password, salt, keylen, N, r, p}; out {key} | {error}.
 */
export const PASSWORD_WORKER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const { pbkdf2Sync, scryptSync } = require('node:crypto');
if (workerData.nice > 0) {
  try {
    const os = require('node:os');
    const tid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) os.setPriority(tid, Math.min(19, os.getPriority(tid) + workerData.nice));
  } catch {}
}
parentPort.on('message', (d) => {
  try {
    const key = d.kind === 'scrypt'
      ? scryptSync(d.password, d.salt, d.keylen, { N: d.N, r: d.r, p: d.p, maxmem: 256 * d.N * d.r })
      : pbkdf2Sync(d.password, d.salt, d.iterations, d.keylen, d.digest);
    parentPort.postMessage({ key });
  } catch (e) {
    parentPort.postMessage({ error: String((e && e.message) || e) });
  }
});
`;
