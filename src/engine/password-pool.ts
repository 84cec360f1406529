import { pbkdf2, scrypt } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { PresenceError } from '../core/errors.js';
import { FairQueue } from './fair-queue.js';
import { scryptMaxmem } from './credentials.js';
import { PASSWORD_WORKER_SOURCE } from './password-worker-source.js';

/**
 * Where the slow password work runs (scrypt, PBKDF2), off the event loop and sized to the machine, so
 * that a login storm neither freezes the sessions already online nor waits longer than the CPU needs.
 *
 * Two ways, chosen by configuration (`password_pool`, docs/benchmarks.md has the measurements):
 *
 * - `workers`: worker threads of our own, each running one derivation at a time, each lowering its own
 *   scheduling priority (niceness + `nice`) as it starts. On a core shared with the event loop (a
 *   one-core container, `taskset -c 0`) the kernel then gives the event loop the core whenever it has
 *   work, and the derivations the time it leaves: deliveries to the sessions online keep their latency
 *   during a storm, and no CPU is left idle.
 * - `libuv`: node:crypto's asynchronous functions on libuv's thread pool, with at most `size` at once.
 *   Those threads run at the event loop's priority (and also serve fs and dns), so on a shared core
 *   each derivation competes with the event loop as an equal.
 *
 * Either way, at most `size` derivations run at once and the rest wait in a FairQueue: round robin over
 * the key each job gives (the account for a login, the address for a registration), so that one flood
 * of guesses takes one turn per round instead of the whole queue. When a job's turn comes its `admit`
 * is called first: the requester may have gone, or the login throttle may now refuse it (its address
 * failed meanwhile); then it is dropped without the derivation being run.
 */

export type KeyDerivation =
  | { readonly kind: 'pbkdf2'; readonly password: string; readonly salt: Buffer; readonly iterations: number; readonly keylen: number; readonly digest: 'sha1' | 'sha256' }
  | { readonly kind: 'scrypt'; readonly password: string; readonly salt: Buffer; readonly keylen: number; readonly N: number; readonly r: number; readonly p: number };

export interface WorkTicket {
  /** The FairQueue key: jobs under one key take one turn per round. */
  readonly key: string;
  /** Called when the job's turn comes, before it runs; throwing drops the job and rejects with that error. */
  readonly admit?: () => void;
}

export type PasswordPoolMode = 'workers' | 'libuv';

export interface PasswordPoolOptions {
  readonly mode: PasswordPoolMode;
  /** Derivations run at once (worker threads, or libuv jobs in flight). */
  readonly size: number;
  /** Niceness each worker thread adds to its own (workers mode): 0 leaves it at the event loop's. */
  readonly nice?: number;
}

export interface PasswordPoolStats {
  /** Derivations completed. */
  derivations: number;
  /** Jobs dropped at their turn (admit threw). */
  dropped: number;
  /** Most jobs ever waiting at once. */
  maxQueued: number;
}

interface Job {
  readonly d: KeyDerivation;
  readonly ticket: WorkTicket;
  readonly resolve: (key: Buffer) => void;
  readonly reject: (e: unknown) => void;
}

/** Runs one derivation at a time. */
interface Runner {
  run(d: KeyDerivation): Promise<Buffer>;
  close(): Promise<void>;
  readonly broken: boolean;
}

const pbkdf2Run = (d: Extract<KeyDerivation, { kind: 'pbkdf2' }>): Promise<Buffer> =>
  new Promise((resolve, reject) => pbkdf2(d.password, d.salt, d.iterations, d.keylen, d.digest, (e, key) => (e ? reject(e) : resolve(key))));

const scryptRun = (d: Extract<KeyDerivation, { kind: 'scrypt' }>): Promise<Buffer> =>
  new Promise((resolve, reject) =>
    scrypt(d.password, d.salt, d.keylen, { N: d.N, r: d.r, p: d.p, maxmem: scryptMaxmem(d.N, d.r) }, (e, key) => (e ? reject(e) : resolve(key))),
  );

class LibuvRunner implements Runner {
  readonly broken = false;
  run(d: KeyDerivation): Promise<Buffer> {
    return d.kind === 'pbkdf2' ? pbkdf2Run(d) : scryptRun(d);
  }
  async close(): Promise<void> {}
}

class WorkerRunner implements Runner {
  private readonly worker: Worker;
  private pending: { resolve: (key: Buffer) => void; reject: (e: unknown) => void } | null = null;
  broken = false;

  constructor(nice: number) {
    // Plain JavaScript evaluated in the thread: the same from the TypeScript sources and the build, and
    // no loader or server flags (execArgv) in a thread that only hashes.
    this.worker = new Worker(PASSWORD_WORKER_SOURCE, { eval: true, execArgv: [], workerData: { nice } });
    // An idle pool does not keep the process alive; a running derivation does (see run()).
    this.worker.unref();
    this.worker.on('message', (m: { key?: Uint8Array; error?: string }) => {
      const p = this.pending;
      this.pending = null;
      this.worker.unref();
      if (!p) return;
      if (m.key) p.resolve(Buffer.from(m.key.buffer, m.key.byteOffset, m.key.byteLength));
      else p.reject(new PresenceError('internal', `password derivation failed: ${m.error ?? 'unknown error'}`));
    });
    const lost = (why: string): void => {
      this.broken = true;
      const p = this.pending;
      this.pending = null;
      p?.reject(new PresenceError('internal', `password worker ${why}`));
    };
    this.worker.on('error', (e) => lost(`failed: ${e.message}`));
    this.worker.on('exit', (code) => lost(`exited (${code})`));
  }

  run(d: KeyDerivation): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.worker.ref();
      this.worker.postMessage(d);
    });
  }

  async close(): Promise<void> {
    this.broken = true;
    await this.worker.terminate();
  }
}

export class PasswordPool {
  readonly stats: PasswordPoolStats = { derivations: 0, dropped: 0, maxQueued: 0 };
  private readonly queue = new FairQueue<Job>();
  private readonly idle: Runner[] = [];
  private running = 0;
  private closed = false;
  private readonly all = new Set<Runner>();

  constructor(readonly opts: PasswordPoolOptions) {
    if (!Number.isInteger(opts.size) || opts.size < 1) throw new RangeError('password pool size must be a positive integer');
  }

  /** Jobs waiting for their turn. */
  get queued(): number {
    return this.queue.size;
  }

  /** Jobs waiting under one fair-queue key (e.g. `account:<jid>` for a login's check). */
  queuedFor(key: string): number {
    return this.queue.sizeOf(key);
  }

  /** Derivations running now. */
  get busy(): number {
    return this.running;
  }

  derive(d: KeyDerivation, ticket: WorkTicket): Promise<Buffer> {
    if (this.closed) return Promise.reject(new PresenceError('not-allowed', 'server is shutting down'));
    return new Promise((resolve, reject) => {
      this.queue.push(ticket.key, { d, ticket, resolve, reject });
      if (this.queue.size > this.stats.maxQueued) this.stats.maxQueued = this.queue.size;
      this.pump();
    });
  }

  private runner(): Runner {
    for (;;) {
      const r = this.idle.pop();
      if (r === undefined) break;
      if (!r.broken) return r;
      this.all.delete(r);
    }
    const r = this.opts.mode === 'workers' ? new WorkerRunner(this.opts.nice ?? 0) : new LibuvRunner();
    this.all.add(r);
    return r;
  }

  private pump(): void {
    while (this.running < this.opts.size && this.queue.size > 0 && !this.closed) {
      const job = this.queue.shift() as Job;
      try {
        job.ticket.admit?.();
      } catch (e) {
        this.stats.dropped++;
        job.reject(e);
        continue;
      }
      const runner = this.runner();
      this.running++;
      runner.run(job.d).then(
        (key) => {
          this.stats.derivations++;
          job.resolve(key);
        },
        (e: unknown) => job.reject(e),
      ).finally(() => {
        this.running--;
        if (!runner.broken) this.idle.push(runner);
        else this.all.delete(runner);
        this.pump();
      });
    }
  }

  /** Stops the workers; jobs still waiting are refused. */
  async close(): Promise<void> {
    this.closed = true;
    for (let job = this.queue.shift(); job !== undefined; job = this.queue.shift()) job.reject(new PresenceError('not-allowed', 'server is shutting down'));
    const all = [...this.all];
    this.all.clear();
    this.idle.length = 0;
    await Promise.all(all.map((r) => r.close()));
  }
}
