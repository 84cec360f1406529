import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { nextAttemptDelay } from '../apps/webhooks/backoff.js';
import type { PushProvider, PushTarget, SendResult } from './providers/provider.js';
import type { PushRepository, QueuedPush, Registration } from './repository.js';

export interface PushWorkerOptions {
  readonly maxAttempts: number;
  readonly maxFailures: number;
  readonly backoffBaseMs: number;
  readonly backoffCapMs: number;
  readonly ratePerMinute: number;
  readonly concurrency: number;
  /** Longest request: the lease of a claimed push outlives it. */
  readonly timeoutMs: number;
  readonly log: Logger;
  readonly observe: (provider: string, r: SendResult | { readonly outcome: 'pruned' }) => void;
  readonly now?: () => number;
}

/** A safety net: look at the queue at least this often even if nothing woke the worker. */
const IDLE_LOOK_MS = 30_000;
const MINUTE = 60_000;

/**
 * Drains the push queue: one push in flight per registration (a device gets its pushes in order),
 * at most push_concurrency in all, at most push_rate_per_device_per_minute per device. Each push is
 * leased while it is being sent, so after a crash it is sent again only once its lease ran out.
 */
export class PushWorker {
  readonly id = `pw_${randomBytes(6).toString('base64url')}`;
  readonly #inFlight = new Map<string, Promise<void>>();
  readonly #sentAt = new Map<string, number[]>();
  readonly #abort = new AbortController();
  readonly #now: () => number;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Infinity;
  #passing = false;
  #again = false;
  #stopped = false;

  constructor(
    private readonly repo: PushRepository,
    private readonly providers: ReadonlyMap<string, PushProvider>,
    private readonly opts: PushWorkerOptions,
  ) {
    this.#now = opts.now ?? Date.now;
  }

  get leaseMs(): number {
    return this.opts.timeoutMs + 30_000;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** Look at the queue now (pushes were written, a push finished). */
  wake(): void {
    if (this.#stopped) return;
    if (this.#passing) {
      this.#again = true;
      return;
    }
    this.#passing = true;
    void this.#pass()
      .catch((err: unknown) => {
        this.opts.log.error({ err }, 'push worker pass failed');
        this.#schedule(this.#now() + 1000);
      })
      .finally(() => {
        this.#passing = false;
        if (this.#again) {
          this.#again = false;
          this.wake();
        }
      });
  }

  #schedule(at: number): void {
    if (this.#stopped || at >= this.#timerAt) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerAt = Infinity;
      this.wake();
    }, Math.max(0, at - this.#now()));
  }

  /** When the device may get its next push under the per-minute limit (now or later). */
  #rateReadyAt(registrationId: string, now: number): number {
    const times = this.#sentAt.get(registrationId);
    if (times === undefined) return now;
    while (times.length > 0 && times[0]! <= now - MINUTE) times.shift();
    if (times.length === 0) {
      this.#sentAt.delete(registrationId);
      return now;
    }
    return times.length < this.opts.ratePerMinute ? now : times[times.length - this.opts.ratePerMinute]! + MINUTE;
  }

  async #pass(): Promise<void> {
    const now = this.#now();
    let next = now + IDLE_LOOK_MS;
    for (const b of await this.repo.backlog()) {
      if (this.#inFlight.has(b.registrationId)) continue;
      if (this.#inFlight.size >= this.opts.concurrency) break; // a finishing push wakes the worker again
      const readyAt = Math.max(b.dueAt, b.claimedUntil ?? 0, this.#rateReadyAt(b.registrationId, now));
      if (readyAt > now) {
        next = Math.min(next, readyAt);
        continue;
      }
      const p = this.#sendNext(b.registrationId)
        .catch((err: unknown) => this.opts.log.error({ err, registration: b.registrationId }, 'push failed unexpectedly'))
        .finally(() => {
          this.#inFlight.delete(b.registrationId);
          this.wake();
        });
      this.#inFlight.set(b.registrationId, p);
    }
    this.#schedule(next);
  }

  async #sendNext(registrationId: string): Promise<void> {
    const push = await this.repo.claim(registrationId, this.id, this.#now(), this.leaseMs);
    if (push === null) return;
    const reg = await this.repo.get(registrationId);
    const log = { registration: registrationId, account: push.account, trigger: push.trigger, reason: push.message.reason, push: push.pushId };
    if (reg === undefined || reg.disabledAt !== null) {
      await this.repo.drop(push.rowId);
      return;
    }
    const provider = this.providers.get(reg.provider);
    if (provider === undefined) {
      // The operator removed the provider from push_providers: nothing can send it.
      this.opts.log.warn({ ...log, provider: reg.provider }, 'push dropped: its provider is not configured');
      await this.repo.drop(push.rowId);
      return;
    }
    let times = this.#sentAt.get(registrationId);
    if (times === undefined) this.#sentAt.set(registrationId, (times = []));
    times.push(this.#now());
    const result = await provider.send(targetOf(reg), push.message, this.#abort.signal);
    await this.#settle(push, reg, provider, result, log);
  }

  async #settle(push: QueuedPush, reg: Registration, provider: PushProvider, r: SendResult, log: Record<string, unknown>): Promise<void> {
    const now = this.#now();
    const at = { ...log, provider: provider.name, status: r.status, latencyMs: r.latencyMs, attempt: push.attempts + 1 };
    switch (r.outcome) {
      case 'sent':
        this.opts.observe(provider.name, r);
        await this.repo.sent(push, now);
        this.opts.log.info(at, 'push sent');
        return;
      case 'dead': {
        this.opts.observe(provider.name, r);
        this.opts.observe(provider.name, { outcome: 'pruned' });
        await this.repo.prune(reg.id);
        this.opts.log.info({ ...at, why: r.reason }, 'push token is dead: registration pruned');
        return;
      }
      case 'retry': {
        if (this.#stopped) {
          // Cut by shutdown: not the device's fault, and not an attempt.
          await this.repo.retryLater(push, now, r.error, false);
          return;
        }
        this.opts.observe(provider.name, r);
        if (push.attempts + 1 < this.opts.maxAttempts) {
          const delay = nextAttemptDelay(push.attempts + 1, r.retryAfterMs ?? null, this.opts.backoffBaseMs, this.opts.backoffCapMs);
          await this.repo.retryLater(push, now + delay, r.error, true);
          this.opts.log.warn({ ...at, error: r.error, retryInMs: delay }, 'push failed; it will be retried');
          return;
        }
        await this.#failed(push, `gave up after ${push.attempts + 1} attempts; last: ${r.error}`, at);
        return;
      }
      case 'failed':
        this.opts.observe(provider.name, r);
        await this.#failed(push, r.error, at);
        return;
    }
  }

  async #failed(push: QueuedPush, error: string, at: Record<string, unknown>): Promise<void> {
    const s = await this.repo.failed(push, error, this.opts.maxFailures, this.#now());
    if (s.disabled) this.opts.log.warn({ ...at, error, failures: s.failures }, 'push failed: registration disabled');
    else this.opts.log.warn({ ...at, error, failures: s.failures }, 'push failed');
  }

  start(): void {
    this.wake();
  }

  /** Stops taking work; pushes under way get `boundMs`, then are cut (and sent after the restart). */
  async stop(boundMs: number): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    const all = Promise.allSettled([...this.#inFlight.values()]);
    let t: NodeJS.Timeout | undefined;
    const late = await Promise.race([all.then(() => false), new Promise<boolean>((r) => (t = setTimeout(() => r(true), boundMs)))]);
    clearTimeout(t);
    if (late) {
      this.#abort.abort();
      await all;
    }
  }
}

export function targetOf(r: Registration): PushTarget {
  return {
    provider: r.provider,
    token: r.token,
    ...(r.secondToken !== null ? { secondToken: r.secondToken } : {}),
    ...(r.keys !== null ? { keys: r.keys } : {}),
  };
}
