/**
 * A map that holds its only entry in two fields and becomes a Map at the second. Almost every online
 * account has one session, and an empty-or-one-entry Map costs a few hundred bytes, a visible share
 * of the memory per idle session.
 */
export class SmallMap<K, V> {
  private key: K | undefined = undefined;
  private value: V | undefined = undefined;
  private one = false;
  private map: Map<K, V> | null = null;

  get size(): number {
    return this.map ? this.map.size : this.one ? 1 : 0;
  }

  get(k: K): V | undefined {
    if (this.map) return this.map.get(k);
    return this.one && this.key === k ? this.value : undefined;
  }

  has(k: K): boolean {
    if (this.map) return this.map.has(k);
    return this.one && this.key === k;
  }

  set(k: K, v: V): this {
    if (this.map) {
      this.map.set(k, v);
    } else if (!this.one || this.key === k) {
      this.key = k;
      this.value = v;
      this.one = true;
    } else {
      this.map = new Map([[this.key as K, this.value as V], [k, v]]);
      this.clearOne();
    }
    return this;
  }

  delete(k: K): boolean {
    if (this.map) {
      const had = this.map.delete(k);
      if (this.map.size === 1) {
        for (const [key, value] of this.map) {
          this.key = key;
          this.value = value;
        }
        this.map = null;
        this.one = true;
      }
      return had;
    }
    if (!this.one || this.key !== k) return false;
    this.clearOne();
    return true;
  }

  /**
   * The value when there is exactly one: hot loops take it without an iterator (a generator allocates
   * one per call, and fan-out calls this once per recipient).
   */
  single(): V | undefined {
    return this.map === null && this.one ? this.value : undefined;
  }

  *values(): IterableIterator<V> {
    if (this.map) yield* this.map.values();
    else if (this.one) yield this.value as V;
  }

  private clearOne(): void {
    this.key = undefined;
    this.value = undefined;
    this.one = false;
  }
}
