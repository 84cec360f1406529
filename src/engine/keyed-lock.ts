/**
 * Serialises async work per key. Presence and roster changes of one account read state, await I/O and
 * write state; two interleaved changes of the same account would otherwise compute from stale reads.
 * Different keys run concurrently.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key);
    const next = prev ? prev.then(fn, fn) : fn();
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Whether work is queued or running under `key`. */
  held(key: string): boolean {
    return this.tails.has(key);
  }

  /** Resolves once no work is queued or running under any key (work added meanwhile is waited for too). */
  async idle(): Promise<void> {
    while (this.tails.size > 0) await Promise.all([...this.tails.values()]);
  }

  /** Runs under several keys at once; keys are taken in sorted order so two callers cannot deadlock. */
  runAll<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const step = (i: number): Promise<T> => (i === sorted.length ? fn() : this.run(sorted[i] as string, () => step(i + 1)));
    return step(0);
  }
}
