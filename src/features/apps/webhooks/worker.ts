import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { PresenceError } from '../../../core/errors.js';
import type { AppRecord } from '../repository.js';
import { nextAttemptDelay, retryAfterMs } from './backoff.js';
import { postWebhook, type DeliveryResult } from './deliver.js';
import type { StoredBody } from './outbox.js';
import type { GrantedAudience } from './presence-source.js';
import { signedHeaders } from './signer.js';
import type { Claim, OutboxRow, WebhookStore } from './store.js';

export interface WorkerOptions {
  readonly batchMax: number;
  /** How long the oldest pending update of an app waits for others to share its request. */
  readonly batchMs: number;
  readonly timeoutMs: number;
  readonly retryWindowMs: number;
  readonly backoffBaseMs: number;
  readonly backoffCapMs: number;
  readonly retentionMs: number;
  readonly allowPrivate: boolean;
  readonly log: Logger;
  /** Whose updates may still be sent: a row of a user who revoked the grant since it was written is dropped, never sent. */
  readonly audience: Pick<GrantedAudience, 'grantOf' | 'confirm'>;
  /** After a successful request: the pairwise ids it carried. */
  readonly onDelivered?: (appId: string, uids: ReadonlySet<string>, at: number) => void;
  /** Counts each attempt by result: delivered, failed, refused. */
  readonly count: (result: 'delivered' | 'failed' | 'refused') => void;
  readonly now?: () => number;
}

/** The body of a request, in the app's format: the seed's `[["UID","online"], ...]`, or objects with seq and times. */
export function webhookBody(format: AppRecord['webhookFormat'], rows: readonly OutboxRow[]): string {
  if (format === 'extended') {
    return JSON.stringify(
      rows.map((r) => {
        const b = JSON.parse(r.body) as StoredBody;
        return {
          uid: r.uid,
          status: b.status,
          seq: r.seq,
          at: new Date(r.at).toISOString(),
          ...(b.statusText !== undefined ? { statusText: b.statusText } : {}),
          ...(b.lastSeen !== undefined ? { lastSeen: new Date(b.lastSeen).toISOString() } : {}),
        };
      }),
    );
  }
  return JSON.stringify(rows.map((r) => [r.uid, (JSON.parse(r.body) as StoredBody).status]));
}

const PURGE_EVERY_MS = 60_000;
/** A safety net: look at the outbox at least this often even if nothing woke the worker. */
const IDLE_LOOK_MS = 30_000;

/**
 * Sends the outbox: one request in flight per app (so each user's updates arrive in order), each
 * holding up to batchMax of its oldest pending updates once the oldest has waited webhook_batch_ms
 * (at once when a batch is full). Failures back off per app, exponentially with full jitter and
 * never sooner than Retry-After; an app failing for the whole retry window is disabled.
 */
export class WebhookWorker {
  readonly id = `w_${randomBytes(6).toString('base64url')}`;
  readonly #inFlight = new Map<string, Promise<void>>();
  readonly #abort = new AbortController();
  readonly #agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  readonly #now: () => number;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Infinity;
  #passing = false;
  #again = false;
  #stopped = false;
  #lastPurge = 0;
  /**
   * Pending rows per app as far as this worker knows without asking the store: counted by its last
   * look at the backlog, plus what was written since. A write only needs a look at once when it fills
   * an app's batch; otherwise the rows wait for webhook_batch_ms anyway, and a look then is enough.
   */
  readonly #pendingKnown = new Map<string, number>();

  constructor(
    private readonly store: WebhookStore,
    private readonly apps: { get(id: string): Promise<AppRecord | undefined> },
    private readonly opts: WorkerOptions,
  ) {
    this.#now = opts.now ?? Date.now;
  }

  /** A lease outlives the longest request, so a crashed worker's apps are taken up again after it. */
  get leaseMs(): number {
    return this.opts.timeoutMs + 30_000;
  }

  start(): void {
    this.wake();
  }

  /**
   * Rows were written to the log. A look at the backlog costs a query whatever it finds, and a write
   * comes every few ms on a busy server: look now only when an app's batch is full (it goes at once),
   * else when the new rows are due (webhook_batch_ms from now). Apps without a webhook URL (served by
   * streams) are then passed over once per batch window instead of once per write.
   */
  noteWritten(logged: readonly { readonly appId: string }[]): void {
    if (this.#stopped || logged.length === 0) return;
    let full = this.opts.batchMs === 0;
    for (const u of logged) {
      const n = (this.#pendingKnown.get(u.appId) ?? 0) + 1;
      this.#pendingKnown.set(u.appId, n);
      if (n >= this.opts.batchMax) full = true;
    }
    if (full) this.wake();
    else this.#schedule(this.#now() + this.opts.batchMs);
  }

  /** Look at the outbox now (a request finished, an owner replayed or re-enabled, the timer). */
  wake(): void {
    if (this.#stopped) return;
    if (this.#passing) {
      this.#again = true;
      return;
    }
    this.#passing = true;
    void this.#pass()
      .catch((err: unknown) => {
        this.opts.log.error({ err }, 'webhook worker pass failed');
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

  async #pass(): Promise<void> {
    const now = this.#now();
    if (now - this.#lastPurge >= PURGE_EVERY_MS) {
      this.#lastPurge = now;
      const purged = await this.store.purge(now - this.opts.retentionMs);
      if (purged > 0) this.opts.log.debug({ purged }, 'old webhook updates purged');
    }
    let next = now + IDLE_LOOK_MS;
    // What is written from here on is counted anew on top of what this look finds.
    this.#pendingKnown.clear();
    for (const b of await this.store.backlog(now, now - this.opts.batchMs)) {
      if (b.count !== null) this.#pendingKnown.set(b.appId, (this.#pendingKnown.get(b.appId) ?? 0) + b.count);
      if (b.disabled || this.#inFlight.has(b.appId)) continue;
      const readyAt = Math.max(b.endpointNext ?? 0, b.count !== null && b.count >= this.opts.batchMax ? 0 : b.oldestDue + this.opts.batchMs, b.claimedUntil ?? 0);
      if (readyAt > now) {
        next = Math.min(next, readyAt);
        continue;
      }
      const p = this.#deliver(b.appId)
        .catch((err: unknown) => this.opts.log.error({ err, appId: b.appId }, 'webhook delivery failed unexpectedly'))
        .finally(() => {
          this.#inFlight.delete(b.appId);
          this.wake();
        });
      this.#inFlight.set(b.appId, p);
    }
    this.#schedule(next);
  }

  async #deliver(appId: string): Promise<void> {
    const app = await this.apps.get(appId);
    const claim = await this.store.claim(appId, this.id, this.#now(), this.leaseMs, this.opts.batchMax, app?.webhookEveryTransition === true);
    if (claim === null) return;
    // delivered() and failed() release the lease in their own transaction; any other way out releases it here.
    let settled = false;
    try {
      if (app === undefined || app.webhookUrl === null) {
        // Nothing to send them to (a deleted app's rows also go with the next purge; an app without a
        // webhook URL gets its updates by stream): passed over, never sent.
        await this.store.discard(appId, claim, claim.rows.map((r) => r.id), this.#now(), { mark: app === undefined });
        return;
      }
      // In a cluster the grants of these users may have changed on another node a moment ago: the
      // database says (a grant this node has not heard of yet is not dropped, a revocation is honoured).
      if (this.opts.audience.confirm !== undefined) await this.opts.audience.confirm(appId, claim.rows.map((r) => r.uid));
      const isGranted = (r: OutboxRow): boolean => this.opts.audience.grantOf(appId, r.uid) !== undefined;
      if (!claim.rows.every(isGranted)) {
        await this.store.discard(appId, claim, claim.rows.filter((r) => !isGranted(r)).map((r) => r.id), this.#now());
      }
      let rows = claim.rows.filter(isGranted);
      let sentAt = this.#now();
      const res = await postWebhook(
        app.webhookUrl,
        () => {
          // Checked again as the request goes: a revocation answered before now keeps the user out of it
          // (rows revoked since the discard above are superseded if the request succeeds, else dropped by the next claim).
          rows = claim.rows.filter(isGranted);
          if (rows.length === 0) return null;
          const body = webhookBody(app.webhookFormat, rows);
          sentAt = this.#now();
          return { headers: signedHeaders(app.webhookSecret, claim.batchId, body, sentAt), body };
        },
        { timeoutMs: this.opts.timeoutMs, allowPrivate: this.opts.allowPrivate, agents: this.#agents, signal: this.#abort.signal },
      );
      if (res.cancelled === true) return;
      const ids = rows.map((r) => r.id);
      const attempt = { appId, batchId: claim.batchId, at: sentAt, updates: ids.length, status: res.status, latencyMs: res.latencyMs, responseExcerpt: res.excerpt, error: res.error ?? (ok(res) ? null : `HTTP ${res.status}`) };
      const now = this.#now();
      if (ok(res)) {
        this.opts.count('delivered');
        await this.#recordDelivered(appId, claim, ids, now, attempt);
        settled = true;
        this.opts.onDelivered?.(appId, new Set(rows.map((r) => r.uid)), now);
        return;
      }
      this.opts.count(res.refused ? 'refused' : 'failed');
      const failures = claim.endpoint.failures + 1;
      const delay = nextAttemptDelay(failures, retryAfterMs(res.retryAfter, now, this.opts.backoffCapMs), this.opts.backoffBaseMs, this.opts.backoffCapMs);
      const failingSince = claim.endpoint.failingSince ?? sentAt;
      const why = res.error ?? `HTTP ${res.status}`;
      const disabledReason =
        now - failingSince >= this.opts.retryWindowMs
          ? `no successful delivery since ${new Date(failingSince).toISOString()} (retry window ${this.opts.retryWindowMs} ms, ${failures} attempts); last: ${why}`
          : null;
      const recorded = await this.store.failed(appId, claim, ids, now, { nextAttemptAt: now + delay, error: why, disabledReason }, attempt);
      settled = true;
      if (!recorded) return;
      if (disabledReason !== null) this.opts.log.warn({ appId, reason: disabledReason }, 'app webhook disabled');
      else this.opts.log.warn({ appId, url: app.webhookUrl, error: why, retryInMs: delay, refused: res.refused }, res.refused ? 'webhook refused by the SSRF rule' : 'webhook delivery failed');
    } finally {
      if (!settled) await this.store.release(appId, this.id);
    }
  }

  /**
   * Records a request the app answered 2xx. The database being unreachable at that moment (a restart,
   * an outage) must not make the batch go again once the lease runs out: the record is retried until
   * the database answers (the app's slot stays taken meanwhile, and the lease keeps other nodes off).
   * A node stopping meanwhile gives up; the batch then goes again after the lease.
   */
  async #recordDelivered(appId: string, claim: Claim, ids: readonly number[], now: number, attempt: Parameters<WebhookStore['delivered']>[4]): Promise<void> {
    for (let n = 1; ; n++) {
      try {
        // Refused when this worker lost the lease meanwhile (paused past it): the worker that holds it now sends the batch again, under its id.
        if (!(await this.store.delivered(appId, claim, ids, now, attempt))) this.opts.log.warn({ appId, batchId: claim.batchId }, 'webhook delivered after this worker lost its lease; not recorded, the batch goes again');
        return;
      } catch (err) {
        if (!(err instanceof PresenceError && err.code === 'unavailable') || this.#stopped) throw err;
        if (n === 1) this.opts.log.warn({ err, appId }, 'webhook delivered; recording it waits for the database');
        await new Promise((r) => setTimeout(r, Math.min(this.opts.backoffBaseMs * n, 2_000)));
      }
    }
  }

  /** Stops taking work; requests under way get `boundMs` to finish, then are cut (and retried later). */
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
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }
}

const ok = (r: DeliveryResult): boolean => r.status !== null && r.status >= 200 && r.status < 300;
