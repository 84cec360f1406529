export interface ReconnectOptions {
  /** Delay before the first reconnect attempt (before jitter). Default 500 ms. */
  readonly initialDelayMs?: number;
  /** Longest delay between attempts. Default 30 s. */
  readonly maxDelayMs?: number;
  /** Growth of the delay per failed attempt. Default 2. */
  readonly factor?: number;
  /**
   * Fraction of the delay that is randomised (0 = none, 1 = anywhere from 0 to the delay). Default 0.5.
   * Without it every client of a restarted server would come back in the same millisecond.
   */
  readonly jitter?: number;
}

export const RECONNECT_DEFAULTS: Required<ReconnectOptions> = {
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  factor: 2,
  jitter: 0.5,
};

/** The delay before reconnect attempt `attempt` (1 for the first), with `random()` in [0, 1). */
export function backoffDelay(attempt: number, opts: ReconnectOptions = {}, random: () => number = Math.random): number {
  const o = { ...RECONNECT_DEFAULTS, ...opts };
  const n = Math.max(1, Math.floor(attempt));
  const base = Math.min(o.maxDelayMs, o.initialDelayMs * Math.pow(o.factor, n - 1));
  const jitter = Math.min(1, Math.max(0, o.jitter));
  return Math.round(base * (1 - jitter * random()));
}
