/**
 * The idle sweep's rule, shared by the front doors (docs/liveness.md): a connection silent for the ping
 * interval is pinged; it is dead only once a ping has gone unanswered for the time the idle timeout
 * leaves after the ping interval. Never dead without having been pinged and given that time to answer.
 *
 * Silence counts from what was last heard from the client, or from when its session was opened if that
 * is later: a client whose login took the server long (a login storm: its password check queued behind
 * thousands) has just been answered and owes nothing yet. And the sweep's timer may itself fire late,
 * after the event loop was busy for longer than the idle timeout: then the clients' answers may already
 * be waiting in the sockets, unread, so a connection found dead by a sweep is checked again after the
 * event loop has read what arrived (see DeadPeerCheck).
 */
export interface LivenessTimes {
  readonly pingIntervalMs: number;
  readonly idleTimeoutMs: number;
}

export interface LivenessState {
  /** Last time anything was heard from the client (ms). */
  readonly lastReceived: number;
  /** When the session was opened (ms), or 0 before. */
  readonly openedSessionAt: number;
  /** When the unanswered ping was sent (ms), or null when none is outstanding. */
  readonly pingSentAt: number | null;
}

export type Verdict = 'alive' | 'ping' | 'dead';

export function livenessVerdict(now: number, s: LivenessState, t: LivenessTimes): Verdict {
  const silent = now - Math.max(s.lastReceived, s.openedSessionAt);
  if (s.pingSentAt !== null) {
    return silent > t.idleTimeoutMs && now - s.pingSentAt >= t.idleTimeoutMs - t.pingIntervalMs ? 'dead' : 'alive';
  }
  return silent >= t.pingIntervalMs ? 'ping' : 'alive';
}

/**
 * Connections a sweep found dead, ended only after the event loop's next poll for I/O has run: the timer
 * that runs a sweep fires before the poll phase of its turn, and setImmediate callbacks after it, so an
 * answer that arrived while the loop was busy is read (and the connection heard) before the verdict is
 * confirmed.
 */
export class DeadPeerCheck<C> {
  private pending: C[] = [];

  constructor(
    private readonly stillDead: (c: C) => boolean,
    private readonly end: (c: C) => void,
  ) {}

  suspect(c: C): void {
    if (this.pending.push(c) === 1) setImmediate(() => this.confirm());
  }

  private confirm(): void {
    const list = this.pending;
    this.pending = [];
    for (const c of list) if (this.stillDead(c)) this.end(c);
  }
}
