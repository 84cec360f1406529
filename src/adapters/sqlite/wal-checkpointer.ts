import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/**
 * WAL checkpoints on a thread of their own.
 *
 * better-sqlite3 is synchronous, and SQLite's automatic checkpoint runs inside the commit that crosses
 * `wal_autocheckpoint` pages: it copies the WAL into the database file and fsyncs it, on the event
 * loop. Measured on this project's machines that commit takes 20-30 ms instead of 0.1 ms, every few
 * seconds under a steady write load (the apps' outbox at thousands of updates a second), and every
 * presence line, stream line and login waiting on the loop waits with it: it was the p99.
 *
 * Here a worker thread holds a second connection to the same file and runs a PASSIVE checkpoint every
 * `intervalMs`. In WAL mode a checkpoint and a writer run side by side (PASSIVE never waits for or
 * blocks a writer), so the main connection's commits stay append-only and never fsync (synchronous =
 * NORMAL). The main connection keeps a much larger automatic threshold as a safety net: should the
 * thread die, the WAL still cannot grow without bound.
 *
 * Under a steady write load the WAL rarely starts over: a writer may restart it only when a checkpoint
 * has copied every frame, and a checkpoint (its fsync takes tens of ms here) nearly always ends with a
 * few commits newer than it. So the WAL grows to the safety net, where the main connection's own
 * checkpoint copies the little the thread has not, syncs, and the log starts over. Measured with 25-row
 * commits every 5 ms: SQLite's default (a checkpoint in the commit every 1,000 pages) stalled a commit
 * about 30 ms every 4 MiB; with the thread and a 4,000-page net, 15-30 ms every 16 MiB, every other
 * commit under 0.4 ms at p99. A larger net stalls still less often but longer (88 ms at 64 MiB); a
 * RESTART checkpoint from the thread would start the log over sooner, but blocks the main
 * connection's commits while it syncs (20 ms commits again).
 *
 * Plain JavaScript evaluated by the Worker, so it runs the same from the TypeScript sources and the build.
 */
const SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = 1000');
let failures = 0;
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
    failures = 0;
  } catch (e) {
    // SQLITE_BUSY and the like: the next round tries again; tell the server only when it persists.
    if (++failures === 10) parentPort.postMessage({ error: String((e && e.message) || e) });
  }
}, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m !== 'close') return;
  clearInterval(timer);
  try { db.close(); } catch {}
  parentPort.postMessage({ closed: true });
});
`;

/** The main connection's automatic threshold while the thread checkpoints (pages; 4,000 × 4 KiB = 16 MiB). */
export const SAFETY_NET_PAGES = 4_000;

export class WalCheckpointer {
  readonly #worker: Worker;
  #exited = false;
  #closed: Promise<void> | null = null;

  constructor(file: string, opts: { intervalMs?: number; onError?: (message: string) => void } = {}) {
    const module = createRequire(import.meta.url).resolve('better-sqlite3');
    this.#worker = new Worker(SOURCE, { eval: true, execArgv: [], workerData: { file, module, intervalMs: opts.intervalMs ?? 250 } });
    this.#worker.on('message', (m: { error?: string }) => {
      if (m.error !== undefined) opts.onError?.(m.error);
    });
    // A thread that could not start (the file vanished) leaves the safety net to do the work.
    this.#worker.on('error', (e) => opts.onError?.(e.message));
    this.#worker.once('exit', () => (this.#exited = true));
    this.#worker.unref();
  }

  /** Closes the thread's connection first, so that the server's own is the last and its close cleans up the WAL. */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      if (this.#exited) return resolve();
      const done = (): void => {
        clearTimeout(cut);
        resolve();
      };
      // A thread stuck in a long checkpoint is cut after a moment; SQLite recovers from the WAL either way.
      const cut = setTimeout(() => void this.#worker.terminate().then(done, done), 2_000);
      this.#worker.once('exit', done);
      this.#worker.on('message', (m: { closed?: boolean }) => {
        if (m.closed) void this.#worker.terminate().then(done, done);
      });
      this.#worker.postMessage('close');
    });
    return this.#closed;
  }
}
