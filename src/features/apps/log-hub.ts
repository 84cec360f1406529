import type { LoggedUpdate } from './webhooks/store.js';

export type LogListener = (updates: readonly LoggedUpdate[]) => void;

/**
 * How the apps' streams follow the log: each app's updates in log order, each once, whichever node
 * wrote them. AppLogHub serves one process; ClusterAppLog (log-feed.ts) a node of a cluster.
 */
export interface AppLog {
  /**
   * Follows an app's log. Once the promise resolves, `fn` gets, in increasing id order, every update
   * logged after the call began (and possibly some before it: a follower drops what it already has).
   * Resolves with the function that stops following.
   */
  follow(appId: string, fn: LogListener): Promise<() => void>;
  /** Updates this node just wrote to the log (ids assigned). */
  written(logged: readonly LoggedUpdate[]): void;
  /** How many follow the app on this node. */
  followers(appId: string): number;
}

/**
 * Updates just written to the apps' log, handed to whoever follows an app (its open streams), in log
 * order, grouped per app. In memory only: a follower that misses some reads them back from the log.
 * With one process writing, what it writes is the whole log, in order.
 */
export class AppLogHub implements AppLog {
  readonly #byApp = new Map<string, Set<LogListener>>();

  subscribe(appId: string, fn: LogListener): () => void {
    let set = this.#byApp.get(appId);
    if (set === undefined) this.#byApp.set(appId, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0 && this.#byApp.get(appId) === set) this.#byApp.delete(appId);
    };
  }

  async follow(appId: string, fn: LogListener): Promise<() => void> {
    return this.subscribe(appId, fn);
  }

  written(logged: readonly LoggedUpdate[]): void {
    this.publish(logged);
  }

  followers(appId: string): number {
    return this.#byApp.get(appId)?.size ?? 0;
  }

  publish(logged: readonly LoggedUpdate[]): void {
    if (this.#byApp.size === 0) return;
    const perApp = new Map<string, LoggedUpdate[]>();
    for (const u of logged) {
      if (!this.#byApp.has(u.appId)) continue;
      let list = perApp.get(u.appId);
      if (list === undefined) perApp.set(u.appId, (list = []));
      list.push(u);
    }
    for (const [appId, list] of perApp) {
      for (const fn of [...(this.#byApp.get(appId) ?? [])]) fn(list);
    }
  }
}
