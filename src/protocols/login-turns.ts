/**
 * Login work (a stream's negotiation, a native auth request, a WebSocket handshake) waits for its turn
 * behind the traffic of the sessions already online. Each turn runs in the event loop's check phase
 * (setImmediate) and takes at most `perTurn` pieces of login work or `budgetMs` of time, whichever
 * comes first; between two turns the loop polls for I/O, so a presence change of an online session
 * is read and delivered after at most one turn of login work, not after a whole storm's worth.
 *
 * A piece is rarely done when its function returns: the stanza it fed goes on in promise
 * continuations (the account read, the SCRAM proof, the session opening), which run as microtasks
 * once the turn's callback returns. So the next piece starts only after the microtasks the previous
 * one started have run (a microtask that schedules a tick: ticks run once the microtask queue is
 * empty), and the budget is checked then: a turn's time is what its pieces cost in all, not only their
 * first synchronous part. Work that waits for real I/O (a password check in the worker pool) comes
 * back later through its own event, outside the turns.
 *
 * When nothing else is waiting the loop comes straight back to the next turn, so a storm still gets
 * all of the CPU that the online sessions leave.
 */
export class LoginTurns {
  private queue: Array<() => void> = [];
  private head = 0;
  /** A turn is scheduled or under way: enqueue() must not start another. */
  private active = false;
  private turnStart = 0;
  private inTurn = 0;
  /** Pieces of login work run, and turns taken (metrics, tests). */
  readonly stats = { pieces: 0, turns: 0 };
  private readonly before = new Set<() => void>();

  constructor(
    private readonly perTurn = 8,
    private readonly budgetMs = 2,
  ) {}

  /**
   * `fn` runs at the start of every turn. The front doors pass the writing of their queued output:
   * a turn is scheduled at the end of the one before, so it runs ahead of the writes the online
   * sessions' traffic queued during the poll in between, which would otherwise wait for it.
   */
  beforeEachTurn(fn: () => void): void {
    this.before.add(fn);
  }

  /** Pieces waiting for their turn. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  enqueue(work: () => void): void {
    this.queue.push(work);
    if (!this.active) {
      this.active = true;
      setImmediate(this.turn);
    }
  }

  private readonly turn = (): void => {
    for (const fn of this.before) fn();
    this.stats.turns++;
    this.turnStart = performance.now();
    this.inTurn = 0;
    this.step();
  };

  /** Runs the next piece if the turn has room left; otherwise ends the turn, scheduling the next one if work waits. */
  private readonly step = (): void => {
    if (this.head < this.queue.length && this.inTurn < this.perTurn && (this.inTurn === 0 || performance.now() - this.turnStart < this.budgetMs)) {
      const work = this.queue[this.head] as () => void;
      this.queue[this.head++] = noop;
      this.inTurn++;
      this.stats.pieces++;
      try {
        work();
      } catch {
        // Each piece handles its own failures (a stream error closes its stream); one must not stop the others.
      }
      queueMicrotask(this.afterPiece);
      return;
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
      this.active = false;
      return;
    }
    if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    setImmediate(this.turn);
  };

  private readonly afterPiece = (): void => {
    process.nextTick(this.step);
  };
}

function noop(): void {}
