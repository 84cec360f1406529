import type { LoggedUpdate } from './webhooks/store.js';

type Listener = (updates: readonly LoggedUpdate[]) => void;

/**
 * Updates just written to the apps' log, handed to whoever follows an app (its open streams), in log
 * order, grouped per app. In memory only: a follower that misses some reads them back from the log.
 */
export class AppLogHub {
  readonly #byApp = new Map<string, Set<Listener>>();

  subscribe(appId: string, fn: Listener): () => void {
    let set = this.#byApp.get(appId);
    if (set === undefined) this.#byApp.set(appId, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0 && this.#byApp.get(appId) === set) this.#byApp.delete(appId);
    };
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
