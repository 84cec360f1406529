import type { Logger } from 'pino';
import { PresenceError } from '../../../core/errors.js';
import type { AppStatus } from './presence-source.js';
import type { LoggedUpdate, NewOutboxRow, WebhookStore } from './store.js';

/** One presence update for one app, under the user's pairwise id in that app. */
export interface WebhookUpdate {
  readonly appId: string;
  readonly uid: string;
  readonly status: AppStatus;
  readonly statusText?: string;
  readonly lastSeen?: number;
  /** When the change happened (epoch ms). */
  readonly at: number;
  /**
   * In a cluster: the account's registry version the presence was computed at. Several nodes write a
   * user's updates; one older than what the log already holds for the user is not logged after it.
   */
  readonly version?: number;
}

/** What is kept of an update in the outbox's body_json; seq and at are columns. */
export interface StoredBody {
  readonly status: AppStatus;
  readonly statusText?: string;
  readonly lastSeen?: number;
  /** WebhookUpdate.version (never shown to the app). */
  readonly v?: number;
}

export interface OutboxOptions {
  /** How long updates gather in memory before one transaction writes them (webhook_flush_ms). */
  readonly flushMs: number;
  /** First wait before writing again after the database refused a write; it grows with each attempt (webhook_backoff_base_ms). */
  readonly writeRetryMs: number;
  readonly log: Logger;
  /** Called after each write with the updates as logged (ids assigned): the worker looks at once, streams send them. */
  readonly onWritten?: (logged: readonly LoggedUpdate[]) => void;
  readonly now?: () => number;
}

/**
 * While the database cannot be reached (a PostgreSQL restart or outage), updates wait in memory and are
 * written once it answers again: at most this many; beyond that the oldest are dropped (logged).
 */
export const MAX_WAITING_UPDATES = 100_000;
/** The longest wait between two writes while the database cannot be reached. */
const MAX_UNAVAILABLE_WAIT_MS = 2_000;

const unreachable = (err: unknown): boolean => err instanceof PresenceError && err.code === 'unavailable';

/**
 * The front of the outbox: `enqueue` only appends to memory (it runs on the presence fan-out), and a
 * timer writes what gathered in one transaction a few ms later. Once `flushed` resolves the updates
 * are in the Store and survive a crash. Writes never overlap, so sequence numbers follow enqueue order.
 */
export class WebhookOutbox {
  #buffer: NewOutboxRow[] = [];
  #timer: NodeJS.Timeout | null = null;
  #writing: Promise<void> = Promise.resolve();
  #round: { promise: Promise<void>; resolve: () => void } | null = null;
  #closed = false;
  #closing = false;
  readonly #now: () => number;

  constructor(
    private readonly store: WebhookStore,
    private readonly opts: OutboxOptions,
  ) {
    this.#now = opts.now ?? Date.now;
  }

  /** Updates waiting in memory, not yet written. */
  get buffered(): number {
    return this.#buffer.length;
  }

  enqueue(updates: readonly WebhookUpdate[]): void {
    if (this.#closed) {
      this.opts.log.warn({ updates: updates.length }, 'webhook updates after shutdown were dropped');
      return;
    }
    const now = this.#now();
    for (const u of updates) {
      const body: StoredBody = {
        status: u.status,
        ...(u.statusText !== undefined ? { statusText: u.statusText } : {}),
        ...(u.lastSeen !== undefined ? { lastSeen: u.lastSeen } : {}),
        ...(u.version !== undefined ? { v: u.version } : {}),
      };
      this.#buffer.push({ appId: u.appId, uid: u.uid, at: u.at, body: JSON.stringify(body), dueAt: now });
    }
    if (this.#timer === null) {
      this.#timer = setTimeout(() => void this.flush(), this.opts.flushMs);
      let resolve!: () => void;
      this.#round = { promise: new Promise<void>((r) => (resolve = r)), resolve };
    }
  }

  /** Resolves when what was enqueued so far is written, by the timer as usual (it never rejects: a failed write is logged). */
  get flushed(): Promise<void> {
    return this.#round?.promise ?? this.#writing;
  }

  /** Writes what is buffered now, after any write under way. */
  flush(): Promise<void> {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    const rows = this.#buffer;
    const round = this.#round;
    this.#round = null;
    if (rows.length === 0) return this.#writing;
    this.#buffer = [];
    this.#writing = this.#writing.then(() => this.#write(rows)).then(() => round?.resolve());
    return this.#writing;
  }

  async #write(rows: NewOutboxRow[]): Promise<void> {
    // Rounds of updates enqueued while this write waited for the database, written with it.
    const joined: Array<() => void> = [];
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          const logged = await this.store.append(rows, this.#now());
          this.opts.onWritten?.(logged);
          return;
        } catch (err) {
          const down = unreachable(err);
          if (down) {
            // The database is away (restart, failover, outage): the updates wait for it, however long,
            // so that an app is told of changes made meanwhile (a change left out would leave it
            // believing an old status until the user's next change).
            if (this.#closing) {
              this.opts.log.error({ err, updates: rows.length }, 'webhook updates not written: shutting down while the database is unavailable');
              return;
            }
            this.opts.log.warn({ err, updates: rows.length, attempt }, 'webhook updates wait for the database');
          } else {
            // The database may be busy or full for a moment; losing presence updates silently is worse than waiting.
            this.opts.log.error({ err, updates: rows.length, attempt }, 'writing webhook updates to the outbox failed');
            if (this.#closed || attempt >= 5) return;
          }
          await new Promise((r) => setTimeout(r, down ? Math.min(this.opts.writeRetryMs * attempt, MAX_UNAVAILABLE_WAIT_MS) : this.opts.writeRetryMs * attempt));
          // What gathered meanwhile goes with this write: one write waits, not a growing chain of them.
          if (down) rows = this.#absorb(rows, joined);
        }
      }
    } finally {
      for (const resolve of joined) resolve();
    }
  }

  /** Appends what is buffered to `rows` (in enqueue order), keeping the newest MAX_WAITING_UPDATES. */
  #absorb(rows: NewOutboxRow[], joined: Array<() => void>): NewOutboxRow[] {
    if (this.#buffer.length === 0) return rows;
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#round !== null) joined.push(this.#round.resolve);
    this.#round = null;
    const all = rows.concat(this.#buffer);
    this.#buffer = [];
    if (all.length <= MAX_WAITING_UPDATES) return all;
    this.opts.log.error({ dropped: all.length - MAX_WAITING_UPDATES }, 'webhook updates dropped: too many waiting for the database');
    return all.slice(all.length - MAX_WAITING_UPDATES);
  }

  /** Writes what is left and refuses further updates (shutdown, before the store closes). */
  async close(): Promise<void> {
    // A write waiting for an unreachable database gives up rather than holding the shutdown.
    this.#closing = true;
    await this.flush();
    this.#closed = true;
  }
}
