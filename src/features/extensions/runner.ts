import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { WORKER_URL } from './worker-source.js';

/**
 * The host side of one extension: its worker thread, its bounded queue of events, one call at a time
 * under a time budget, and what happens when the extension misbehaves. Nothing here is awaited by the
 * engine: `enqueue` only pushes onto the queue, and the queue drains on its own.
 */

export type ExtensionState = 'starting' | 'running' | 'restarting' | 'disabled' | 'failed' | 'stopped';

export interface ExtensionError {
  /** threw: a hook threw; timeout: it ran past the budget (a blocked thread included); out-of-memory; exited; load: it could not start. */
  readonly kind: 'threw' | 'timeout' | 'out-of-memory' | 'exited' | 'load';
  readonly message: string;
  readonly hook: string | null;
  readonly at: number;
}

export interface ExtensionSpec {
  readonly name: string;
  /** file: URL of the module. */
  readonly url: string;
  /** What messages show: the path or package as configured. */
  readonly where: string;
  readonly source: 'config' | 'folder';
  readonly settings: Record<string, unknown>;
}

export interface RunnerOptions {
  readonly budgetMs: number;
  readonly queueMax: number;
  readonly memoryMb: number;
  /** Consecutive failures after which the extension is disabled. */
  readonly maxFailures: number;
  readonly backoffBaseMs: number;
  readonly log: Logger;
  /** Answers a context call of the extension (validated there: the worker is not trusted). */
  readonly context: (name: string, op: string, args: unknown) => Promise<unknown>;
  /** Counts for metrics. */
  readonly observe: (name: string, what: 'handled' | 'failed' | 'dropped' | 'restart', seconds?: number) => void;
}

/** A queued event: which hook, and how to build its arguments when its turn comes. */
export interface QueuedCall {
  readonly hook: string;
  readonly args: () => Promise<unknown[]> | unknown[];
}

export class ExtensionLoadError extends Error {}

const LOAD_BOUND_FLOOR_MS = 5_000;
const BACKOFF_CAP_MS = 30_000;
const MAX_CONTEXT_CALLS_IN_FLIGHT = 64;
const LOG_LINES_PER_SECOND = 100;

interface InFlight {
  readonly id: number;
  readonly hook: string;
  readonly started: number;
  readonly timer: NodeJS.Timeout;
  readonly done: (err: ExtensionError | null) => void;
}

export class ExtensionRunner {
  state: ExtensionState = 'starting';
  handled = 0;
  failed = 0;
  dropped = 0;
  restarts = 0;
  consecutiveFailures = 0;
  lastError: ExtensionError | null = null;
  /** Why the extension is disabled or failed, for `extensions list`. */
  reason: string | null = null;
  hooks: readonly string[] = [];
  readonly queue: QueuedCall[] = [];

  #worker: Worker | null = null;
  #inFlight: InFlight | null = null;
  #nextId = 1;
  #draining = false;
  #restartTimer: NodeJS.Timeout | null = null;
  #stopping = false;
  /** Whether `hooks` is known (the module loaded once): events for hooks it lacks are not queued. */
  #loaded = false;
  #ctxInFlight = 0;
  #logWindow = 0;
  #logLines = 0;
  #logsDropped = 0;

  constructor(
    readonly spec: ExtensionSpec,
    private readonly opts: RunnerOptions,
  ) {}

  get queueDepth(): number {
    return this.queue.length;
  }

  /** Starts the worker, loads and checks the module and runs onStart. Rejects with ExtensionLoadError naming the extension. */
  async start(): Promise<void> {
    this.state = 'starting';
    try {
      await this.#spawn();
    } catch (e) {
      const message = (e as Error).message;
      this.state = 'failed';
      this.reason = message;
      this.lastError = { kind: 'load', message, hook: null, at: Date.now() };
      throw new ExtensionLoadError(`extension "${this.spec.name}": ${message}`);
    }
    this.state = 'running';
    this.#drain();
  }

  /** Queues an event. Never waits; a full queue or a disabled extension drops it (counted). */
  enqueue(call: QueuedCall): void {
    // One that never started misses nothing it could have handled: not counted.
    if (this.state === 'failed') return;
    if (this.#stopping || this.state === 'disabled' || this.state === 'stopped') {
      this.#drop();
      return;
    }
    if (this.#loaded && !this.hooks.includes(call.hook)) return;
    if (this.queue.length >= this.opts.queueMax) {
      this.#drop();
      return;
    }
    this.queue.push(call);
    this.#drain();
  }

  /** Runs onStop (within the budget) and ends the worker; what is still queued is dropped (counted). */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    for (let n = this.queue.splice(0).length; n > 0; n--) this.#drop();
    // Let the call under way finish (or run out of its budget) before onStop.
    while (this.#inFlight) await new Promise<void>((r) => setTimeout(r, 5));
    if (this.#worker && this.state === 'running' && this.hooks.includes('onStop')) await this.#call('onStop', []);
    await this.#kill();
    if (this.state !== 'failed' && this.state !== 'disabled') this.state = 'stopped';
  }

  #drop(): void {
    this.dropped++;
    this.opts.observe(this.spec.name, 'dropped');
  }

  async #spawn(): Promise<void> {
    const w = new Worker(WORKER_URL, {
      workerData: { url: this.spec.url, where: this.spec.where, name: this.spec.name, settings: this.spec.settings },
      execArgv: [],
      // The extension must not see the server's configuration or secrets through the environment.
      env: {},
      stdout: false,
      stderr: false,
      resourceLimits: { maxOldGenerationSizeMb: this.opts.memoryMb, maxYoungGenerationSizeMb: Math.max(4, Math.ceil(this.opts.memoryMb / 8)), stackSizeMb: 4 },
    });
    this.#worker = w;
    const bound = Math.max(LOAD_BOUND_FLOOR_MS, this.opts.budgetMs * 5);
    const ready = await new Promise<{ name: string; hooks: string[] }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`its module did not finish loading within ${bound} ms`)), bound);
      const onMsg = (m: { t: string; name?: string; hooks?: string[]; message?: string }) => {
        if (m.t === 'ready') {
          clearTimeout(timer);
          w.off('message', onMsg);
          resolve({ name: m.name ?? '', hooks: m.hooks ?? [] });
        } else if (m.t === 'load-error') {
          clearTimeout(timer);
          reject(new Error(m.message ?? 'it could not be loaded'));
        }
      };
      w.on('message', onMsg);
      w.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(describeWorkerError(e).message));
      });
      w.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`its worker exited (code ${code}) while loading`));
      });
    }).catch(async (e: unknown) => {
      await this.#kill();
      throw e;
    });
    this.hooks = ready.hooks;
    this.#loaded = true;
    if (ready.name !== this.spec.name) this.opts.log.debug({ extension: this.spec.name, declared: ready.name }, 'extension declares another name; the configured one is used');
    w.removeAllListeners('error');
    w.removeAllListeners('exit');
    w.on('message', (m: Record<string, unknown>) => this.#onMessage(w, m));
    w.on('error', (e) => this.#crashed(w, describeWorkerError(e)));
    w.on('exit', (code) => this.#crashed(w, { kind: 'exited', message: `its worker exited (code ${code})` }));
    if (this.hooks.includes('onStart')) {
      const err = await this.#call('onStart', []);
      if (err) {
        await this.#kill();
        throw new Error(err.kind === 'timeout' ? `onStart did not finish within ${this.opts.budgetMs} ms` : `onStart failed: ${err.message}`);
      }
    }
  }

  #onMessage(w: Worker, m: Record<string, unknown>): void {
    if (w !== this.#worker) return;
    if (m.t === 'done' || m.t === 'fail') {
      const f = this.#inFlight;
      if (!f || f.id !== m.id) return;
      f.done(m.t === 'done' ? null : { kind: 'threw', message: String(m.message), hook: f.hook, at: Date.now() });
      return;
    }
    if (m.t === 'log') {
      // A logging loop must not flood the server's log: a budget of lines per second, the rest counted.
      const second = Math.floor(Date.now() / 1000);
      if (second !== this.#logWindow) {
        if (this.#logsDropped > 0) this.opts.log.warn({ extension: this.spec.name, dropped: this.#logsDropped }, `extension ${this.spec.name}: log lines dropped (more than ${LOG_LINES_PER_SECOND} a second)`);
        this.#logWindow = second;
        this.#logLines = 0;
        this.#logsDropped = 0;
      }
      if (++this.#logLines > LOG_LINES_PER_SECOND) {
        this.#logsDropped++;
        return;
      }
      const level = m.level === 'debug' || m.level === 'warn' || m.level === 'error' ? m.level : 'info';
      const fields = typeof m.fields === 'object' && m.fields !== null ? m.fields : {};
      this.opts.log[level]({ extension: this.spec.name, fields }, `extension ${this.spec.name}: ${String(m.msg)}`);
      return;
    }
    if (m.t === 'ctx') {
      const id = m.id;
      // Calls not awaited in a loop would queue unbounded work (database writes, pushes) on the server.
      if (this.#ctxInFlight >= MAX_CONTEXT_CALLS_IN_FLIGHT) {
        w.postMessage({ t: 'ctx-err', id, message: `too many context calls at once (more than ${MAX_CONTEXT_CALLS_IN_FLIGHT}); await them` });
        return;
      }
      this.#ctxInFlight++;
      this.opts.context(this.spec.name, String(m.op), m.args).then(
        (value) => {
          this.#ctxInFlight--;
          if (w === this.#worker) w.postMessage({ t: 'ctx-ok', id, value });
        },
        (e: unknown) => {
          this.#ctxInFlight--;
          if (w === this.#worker) w.postMessage({ t: 'ctx-err', id, message: (e as Error).message ?? String(e) });
        },
      );
    }
  }

  /** Calls one hook; resolves with null, or the failure (the worker is then already being ended). */
  #call(hook: string, args: unknown[]): Promise<ExtensionError | null> {
    const w = this.#worker;
    if (!w) return Promise.resolve({ kind: 'exited', message: 'no worker', hook, at: Date.now() });
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (this.#inFlight?.id === id) this.#inFlight.done({ kind: 'timeout', message: `${hook} did not finish within ${this.opts.budgetMs} ms`, hook, at: Date.now() });
      }, this.opts.budgetMs);
      this.#inFlight = {
        id,
        hook,
        started: performance.now(),
        timer,
        done: (err) => {
          clearTimeout(timer);
          this.#inFlight = null;
          resolve(err);
        },
      };
      try {
        w.postMessage({ t: 'call', id, hook, args });
      } catch (e) {
        this.#inFlight.done({ kind: 'threw', message: `its arguments could not be sent: ${(e as Error).message}`, hook, at: Date.now() });
      }
    });
  }

  /** The worker died on its own (out of memory, process.exit): fail the call under way, or restart. */
  #crashed(w: Worker, e: { kind: ExtensionError['kind']; message: string }): void {
    if (w !== this.#worker) return;
    this.#worker = null;
    const f = this.#inFlight;
    if (f) f.done({ ...e, hook: f.hook, at: Date.now() });
    else if (!this.#stopping) this.#failure({ ...e, hook: null, at: Date.now() });
  }

  async #kill(): Promise<void> {
    const w = this.#worker;
    this.#worker = null;
    if (w) await w.terminate().catch(() => {});
  }

  #drain(): void {
    if (this.#draining || this.state !== 'running' || this.#stopping) return;
    this.#draining = true;
    void (async () => {
      try {
        while (this.queue.length > 0 && this.state === 'running' && !this.#stopping) {
          const item = this.queue.shift() as QueuedCall;
          let args: unknown[];
          try {
            args = await item.args();
          } catch (err) {
            // The server could not describe the event (e.g. the database is gone at shutdown): not the extension's fault.
            this.opts.log.warn({ err, extension: this.spec.name, hook: item.hook }, 'an event for an extension could not be prepared; skipped');
            this.#drop();
            continue;
          }
          const started = performance.now();
          const err = await this.#call(item.hook, args);
          if (err === null) {
            this.handled++;
            this.consecutiveFailures = 0;
            this.opts.observe(this.spec.name, 'handled', (performance.now() - started) / 1000);
          } else {
            this.failed++;
            this.opts.observe(this.spec.name, 'failed');
            this.#failure(err);
          }
        }
      } finally {
        this.#draining = false;
      }
    })();
  }

  /** A failed call or a crash: end the worker, then restart it with backoff, or disable the extension. */
  #failure(err: ExtensionError): void {
    this.lastError = err;
    this.consecutiveFailures++;
    this.opts.log.warn({ extension: this.spec.name, kind: err.kind, hook: err.hook, error: err.message, failures: this.consecutiveFailures }, `extension ${this.spec.name} failed: ${err.message}`);
    void this.#kill();
    if (this.#stopping) return;
    if (this.consecutiveFailures >= this.opts.maxFailures) {
      this.state = 'disabled';
      this.reason = `disabled after ${this.consecutiveFailures} failures in a row; last: ${err.kind}: ${err.message}`;
      for (let n = this.queue.splice(0).length; n > 0; n--) this.#drop();
      this.opts.log.error({ extension: this.spec.name, reason: this.reason }, `extension ${this.spec.name} disabled`);
      return;
    }
    this.state = 'restarting';
    const delay = Math.min(BACKOFF_CAP_MS, this.opts.backoffBaseMs * 2 ** (this.consecutiveFailures - 1));
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = null;
      if (this.#stopping) return;
      this.restarts++;
      this.opts.observe(this.spec.name, 'restart');
      this.#spawn().then(
        () => {
          if (this.#stopping) return void this.#kill();
          this.state = 'running';
          this.#drain();
        },
        (e: unknown) => this.#failure({ kind: 'load', message: (e as Error).message, hook: 'onStart', at: Date.now() }),
      );
    }, delay);
    this.#restartTimer.unref();
  }
}

function describeWorkerError(e: unknown): { kind: ExtensionError['kind']; message: string } {
  const code = (e as { code?: string }).code;
  if (code === 'ERR_WORKER_OUT_OF_MEMORY') return { kind: 'out-of-memory', message: 'it ran out of memory (extension_memory_mb)' };
  return { kind: 'exited', message: `its worker failed: ${(e as Error).message ?? String(e)}` };
}
