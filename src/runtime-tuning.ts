import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';

/**
 * Process-wide V8 settings for a server process (not for servers started inside tests or other
 * programs, which own their process).
 *
 * On one CPU (a container limited to one core, or `taskset -c 0`), V8's parallel scavenger splits each
 * young-generation collection across helper threads that then compete with the main thread for that
 * one core, so a 2 ms scavenge becomes a 5-15 ms pause and the delivery latency tail follows it.
 * Scavenging on the main thread alone is shorter there. The flag is read at every scavenge, so setting
 * it at start-up takes effect at once. Returns what was changed, for the start-up log.
 */
export function tuneRuntime(): string[] {
  const changed: string[] = [];
  if (availableParallelism() === 1 && !process.execArgv.some((a) => a.includes('parallel-scavenge'))) {
    setFlagsFromString('--no-parallel-scavenge');
    changed.push('--no-parallel-scavenge (one CPU available)');
  }
  return changed;
}
