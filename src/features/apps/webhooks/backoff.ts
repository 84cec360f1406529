/** Retry timing of webhook deliveries. */

/** Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(failures-1))]. */
export function backoffDelay(failures: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(failures - 1, 0), 40));
  return Math.floor(random() * ceiling);
}

/**
 * A `Retry-After` header in ms from `nowMs` (RFC 9110 §10.2.3: delay-seconds or an HTTP date), capped;
 * null when absent or unreadable.
 */
export function retryAfterMs(header: string | undefined, nowMs: number, capMs: number): number | null {
  if (header === undefined) return null;
  const v = header.trim();
  let ms: number;
  if (/^\d+$/.test(v)) ms = Number(v) * 1000;
  else {
    const t = Date.parse(v);
    if (Number.isNaN(t) || !/[a-z]/i.test(v)) return null;
    ms = t - nowMs;
  }
  return Math.min(Math.max(ms, 0), capMs);
}

/** When the next attempt may go: the backoff, but never before what the receiver asked for. */
export function nextAttemptDelay(failures: number, retryAfter: number | null, baseMs: number, capMs: number, random?: () => number): number {
  return Math.max(backoffDelay(failures, baseMs, capMs, random), retryAfter ?? 0);
}
