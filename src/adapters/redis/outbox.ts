import type { Delivery } from '../../ports/bus.js';
import type { Batch } from './wire.js';

/** Items per batch: a fan-out to more recipients on one node goes in several batches, in order. */
const MAX_ITEMS = 4_000;

export interface OutgoingBatch {
  readonly node: string;
  readonly payload: string;
  readonly items: number;
}

interface Open {
  readonly deliveries: Delivery[];
  readonly index: Map<Delivery, number>;
  readonly items: Batch['i'];
}

/**
 * Deliveries for other nodes gathered during one tick of the event loop, one batch per destination
 * node (several when it grows past MAX_ITEMS), in the order deliver() was called: a recipient's
 * deliveries from this node reach it in order.
 */
export class DeliveryOutbox {
  private readonly open = new Map<string, Open[]>();
  private count = 0;

  constructor(
    private readonly node: string,
    private epoch: () => string,
  ) {}

  get size(): number {
    return this.count;
  }

  add(node: string, to: string, d: Delivery, resource: string | null): void {
    let list = this.open.get(node);
    if (list === undefined) {
      list = [];
      this.open.set(node, list);
    }
    let b = list[list.length - 1];
    if (b === undefined || b.items.length >= MAX_ITEMS) {
      b = { deliveries: [], index: new Map(), items: [] };
      list.push(b);
    }
    let i = b.index.get(d);
    if (i === undefined) {
      i = b.deliveries.length;
      b.deliveries.push(d);
      b.index.set(d, i);
    }
    b.items.push(resource === null ? [to, i] : [to, i, resource]);
    this.count++;
  }

  /** Everything gathered, encoded, and the outbox emptied. */
  take(): OutgoingBatch[] {
    const out: OutgoingBatch[] = [];
    const e = this.epoch();
    for (const [node, list] of this.open) {
      for (const b of list) {
        const batch: Batch = { o: this.node, e, d: b.deliveries, i: b.items };
        out.push({ node, payload: JSON.stringify(batch), items: b.items.length });
      }
    }
    this.open.clear();
    this.count = 0;
    return out;
  }

  clear(): void {
    this.open.clear();
    this.count = 0;
  }
}
