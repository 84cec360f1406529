import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from 'pino';

/**
 * Gives memory back after a load spike once the server has gone quiet.
 *
 * V8 collects the old generation when it grows, not when the process goes idle: after a login storm
 * of 10,000 sessions the heap holds tens of MB of dead request objects and a young generation grown
 * to its largest size, and with idle connections (a heartbeat now and then) no collection ever comes
 * to reclaim them. An idle presence server then sits at nearly twice the memory its sessions need.
 * Once a second this measures the event loop's utilisation; when every second of the last `intervalMs`
 * was quiet and the resident size grew by `minGrowthBytes` since the last collection it ran (the first
 * quiet window after start always counts), it runs
 * one full collection. Requiring the most recent second to be quiet too matters: a 10 s average would
 * also call a window quiet whose last second is the start of a new burst, and collect in its way.
 * Under load it never runs (V8's own collections pace themselves), and while idle at a stable size it
 * runs at most once.
 */
export interface IdleCollectorOptions {
  readonly intervalMs: number;
  /** Event-loop utilisation (0..1) over the window below which the server counts as quiet. */
  readonly maxUtilization?: number;
  readonly minGrowthBytes?: number;
}

export interface IdleSample {
  /** Consecutive quiet seconds, up to and including the one just measured. */
  readonly quietSeconds: number;
  readonly rss: number;
  /** Resident size right after the last collection this ran (or at start). */
  readonly baselineRss: number;
}

export function shouldCollect(s: IdleSample, neededQuietSeconds: number, minGrowthBytes: number): boolean {
  return s.quietSeconds >= neededQuietSeconds && s.rss - s.baselineRss >= minGrowthBytes;
}

type GcFunction = () => void;

/**
 * Growth that makes a quiet server worth one full collection. Small enough that a server started and
 * warmed up by a few hundred logins also settles (its startup garbage is 10-30 MB), large enough that
 * the slow creep of an idle server's heartbeats costs a collection every few hours at most.
 */
export const DEFAULT_MIN_GROWTH_BYTES = 8 * 1024 * 1024;

/** V8's `gc` without `--expose-gc` on the command line: the flag is honoured for new contexts. */
function gcFunction(): GcFunction | null {
  const existing = (globalThis as { gc?: GcFunction }).gc;
  if (existing) return existing;
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as GcFunction) : null;
  } catch {
    return null;
  }
}

/** Starts the collector; returns a function that stops it. */
export function startIdleCollector(opts: IdleCollectorOptions, log: Logger): () => void {
  if (opts.intervalMs <= 0) return () => {};
  const gc = gcFunction();
  if (!gc) {
    log.warn('idle collection unavailable: this Node.js does not allow exposing gc at run time');
    return () => {};
  }
  const maxUtilization = opts.maxUtilization ?? 0.05;
  const minGrowthBytes = opts.minGrowthBytes ?? DEFAULT_MIN_GROWTH_BYTES;
  const needed = Math.max(1, Math.round(opts.intervalMs / 1000));
  // Zero, not the resident size now: the first quiet window after start always collects, so a server
  // that has started (opened its database, compiled its code, served a first few logins) settles at
  // the same kind of baseline as one that went quiet after a spike.
  let baselineRss = 0;
  let quietSeconds = 0;
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const second = performance.eventLoopUtilization(now, last);
    last = now;
    quietSeconds = second.utilization <= maxUtilization ? quietSeconds + 1 : 0;
    if (quietSeconds < needed) return;
    const rss = process.memoryUsage.rss();
    if (!shouldCollect({ quietSeconds, rss, baselineRss }, needed, minGrowthBytes)) return;
    const started = performance.now();
    gc();
    baselineRss = process.memoryUsage.rss();
    quietSeconds = 0;
    last = performance.eventLoopUtilization(); // the collection itself is not load
    log.debug({ rssBefore: rss, rssAfter: baselineRss, ms: Math.round(performance.now() - started) }, 'idle collection');
  }, 1000);
  timer.unref();
  return () => clearInterval(timer);
}
