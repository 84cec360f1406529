/**
 * Login work (a stream's negotiation, a native auth request, a WebSocket handshake) waits for its turn
 * behind the traffic of the sessions already online. Each turn runs in the event loop's check phase
 * (setImmediate) and takes at most `perTurn` pieces of login work or `budgetMs` of time, whichever
 * comes first; between two turns the loop polls for I/O, so a presence change of an online session
 * is read and delivered after at most one turn of login work, not after a whole storm's worth.
 *
 * When nothing else is waiting the loop comes straight back to the next turn, so a storm still gets
 * all of the CPU that the online sessions leave.
 */
export class LoginTurns {
  private queue: Array<() => void> = [];
  private head = 0;
  private scheduled = false;
  /** Pieces of login work run, and turns taken (metrics, tests). */
  readonly stats = { pieces: 0, turns: 0 };

  constructor(
    private readonly perTurn = 8,
    private readonly budgetMs = 2,
  ) {}

  /** Pieces waiting for their turn. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  enqueue(work: () => void): void {
    this.queue.push(work);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.turn);
    }
  }

  private readonly turn = (): void => {
    this.scheduled = false;
    this.stats.turns++;
    const start = performance.now();
    for (let n = 0; n < this.perTurn && this.head < this.queue.length; n++) {
      const work = this.queue[this.head] as () => void;
      this.queue[this.head++] = noop;
      this.stats.pieces++;
      try {
        work();
      } catch {
        // Each piece handles its own failures (a stream error closes its stream); one must not stop the others.
      }
      if (performance.now() - start >= this.budgetMs) break;
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (this.head < this.queue.length && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.turn);
    }
  };
}

function noop(): void {}
