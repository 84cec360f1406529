import type { Logger } from 'pino';
import { AppLogHub, type AppLog, type LogListener } from './log-hub.js';
import type { LoggedUpdate, WebhookStore } from './webhooks/store.js';

/** Rows read from the log per query. */
const PAGE = 500;
const RETRY_MS = 1_000;

interface Followed {
  /** The log position handed to this node's followers so far (every row of the app up to it). */
  through: number;
  /** The highest position some node said it wrote. */
  wanted: number;
  reading: boolean;
  /** Resolves once `through` holds the app's head as of the first follower's arrival. */
  readonly ready: Promise<void>;
}

export interface ClusterAppLogOptions {
  readonly store: Pick<WebhookStore, 'since' | 'appHead'>;
  /** Tells the other nodes how far this node wrote each app's log ([appId, last id] pairs). */
  readonly announce: (heads: Array<[string, number]>) => void;
  /** Resolves once what this node heard of grants before now is applied (a row read after it is judged by it). */
  readonly beforeHanding: () => Promise<void>;
  readonly log: Logger;
}

/**
 * The apps' log as a node of a cluster follows it. Several nodes append to an app's log, and an
 * app's ids become visible in increasing order (webhooks/postgres-store.ts); each node that writes
 * announces how far it wrote. A node with followers (open streams) of that app then reads the log from
 * where it handed over up to there, one read at a time per app (announcements that arrive meanwhile
 * join the next read), and hands the rows to its followers: in id order, each once, whichever node
 * wrote them; rows this node wrote itself go the same way. Apps without followers here cost nothing.
 *
 * While this node cannot hear the others (Redis unreachable), nothing is handed over: revocations
 * made elsewhere would be unheard. When it hears them again, it reads the grants again first
 * (apps-feature.ts), then catches up.
 */
export class ClusterAppLog implements AppLog {
  readonly #hub = new AppLogHub();
  readonly #apps = new Map<string, Followed>();
  #paused = false;

  constructor(private readonly opts: ClusterAppLogOptions) {}

  async follow(appId: string, fn: LogListener): Promise<() => void> {
    const unsubscribe = this.#hub.subscribe(appId, fn);
    let st = this.#apps.get(appId);
    if (st === undefined) {
      const fresh: Followed = {
        through: 0,
        wanted: 0,
        reading: false,
        // The head now: every row of the app up to it is visible, every later one gets a larger id. A
        // follower's own catch-up reads at least this far, so it misses nothing handed from here on.
        ready: this.opts.store.appHead(appId).then((head) => {
          fresh.through = Math.max(fresh.through, head);
        }),
      };
      st = fresh;
      this.#apps.set(appId, st);
      fresh.ready.catch(() => {
        if (this.#apps.get(appId) === fresh) this.#apps.delete(appId);
      });
    }
    try {
      await st.ready;
    } catch (e) {
      unsubscribe();
      throw e;
    }
    this.#kick(appId, st);
    return () => {
      unsubscribe();
      if (this.#hub.followers(appId) === 0) this.#apps.delete(appId);
    };
  }

  written(logged: readonly LoggedUpdate[]): void {
    const heads = new Map<string, number>();
    for (const u of logged) heads.set(u.appId, Math.max(heads.get(u.appId) ?? 0, u.id));
    if (heads.size === 0) return;
    this.opts.announce([...heads]);
    for (const [appId, id] of heads) this.advance(appId, id);
  }

  followers(appId: string): number {
    return this.#hub.followers(appId);
  }

  /** A node (this one or another) wrote the app's log up to `id`. */
  advance(appId: string, id: number): void {
    const st = this.#apps.get(appId);
    if (st === undefined || id <= st.wanted) return;
    st.wanted = id;
    this.#kick(appId, st);
  }

  /** This node may be missing other nodes' announcements and grant changes: hand nothing over. */
  pause(): void {
    this.#paused = true;
  }

  /** Grants are read again: every followed app catches up from the log. */
  resume(): void {
    this.#paused = false;
    for (const [appId, st] of this.#apps) {
      st.wanted = Number.MAX_SAFE_INTEGER;
      this.#kick(appId, st);
    }
  }

  #kick(appId: string, st: Followed): void {
    if (st.reading || this.#paused || st.wanted <= st.through) return;
    st.reading = true;
    void this.#read(appId, st).finally(() => {
      st.reading = false;
    });
  }

  async #read(appId: string, st: Followed): Promise<void> {
    try {
      await st.ready;
      while (!this.#paused && st.wanted > st.through && this.#apps.get(appId) === st) {
        const rows = await this.opts.store.since(appId, st.through, PAGE);
        if (rows.length === 0) {
          // Announcements come after their rows are committed: nothing visible means nothing more to hand over.
          st.wanted = st.through;
          break;
        }
        await this.opts.beforeHanding();
        // Rows after `through`, in id order: nothing else reads for this app meanwhile.
        st.through = rows[rows.length - 1]!.id;
        this.#hub.publish(rows);
      }
    } catch (err) {
      this.opts.log.warn({ err, appId }, 'reading the app log for its streams failed; retrying');
      const t = setTimeout(() => this.#kick(appId, st), RETRY_MS);
      t.unref();
    }
  }
}
