/** A lock handed to waiters in arrival order: each release wakes exactly one. */
export class FifoGate {
  private held = false;
  private readonly waiting: Array<() => void> = [];
  private head = 0;

  /** Someone holds the gate or waits for it. */
  get busy(): boolean {
    return this.held;
  }

  enter(): Promise<void> {
    if (!this.held) {
      this.held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  leave(): void {
    if (this.head < this.waiting.length) {
      const next = this.waiting[this.head] as () => void;
      this.waiting[this.head++] = NOOP;
      // Compact now and then, so a long-lived queue does not keep every resolved slot.
      if (this.head > 1024 && this.head * 2 > this.waiting.length) {
        this.waiting.splice(0, this.head);
        this.head = 0;
      }
      next();
      return;
    }
    this.waiting.length = 0;
    this.head = 0;
    this.held = false;
  }
}

const NOOP = (): void => {};
