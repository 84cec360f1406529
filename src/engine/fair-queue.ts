/**
 * A queue served round robin over keys: each key has its own FIFO lane, and taking an item takes the
 * oldest of the lane whose turn it is, then passes the turn on. Whoever fills the queue under one key
 * gets one turn in each round like every other key, so a flood under one key delays another key's item
 * by at most one item per key waiting, never by the flood's length.
 *
 * The turn order is the Map's insertion order: a lane that still holds items after its turn goes to the
 * back; an empty one is dropped. Both are O(1).
 */
export class FairQueue<T> {
  private readonly lanes = new Map<string, T[]>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Keys with items waiting. */
  get keys(): number {
    return this.lanes.size;
  }

  /** Items waiting under `key`. */
  sizeOf(key: string): number {
    return this.lanes.get(key)?.length ?? 0;
  }

  push(key: string, item: T): void {
    const lane = this.lanes.get(key);
    if (lane) lane.push(item);
    else this.lanes.set(key, [item]);
    this.count++;
  }

  /** The next item in round-robin order, or undefined when empty. */
  shift(): T | undefined {
    const first = this.lanes.entries().next();
    if (first.done) return undefined;
    const [key, lane] = first.value;
    const item = lane.shift() as T;
    this.lanes.delete(key);
    if (lane.length > 0) this.lanes.set(key, lane);
    this.count--;
    return item;
  }
}
