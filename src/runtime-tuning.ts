import { availableParallelism } from 'node:os';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

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
export function tuneRuntime(opts: { semiSpaceCapMb: number }): string[] {
  const changed: string[] = [];
  if (availableParallelism() === 1 && !process.execArgv.some((a) => a.includes('parallel-scavenge'))) {
    setFlagsFromString('--no-parallel-scavenge');
    changed.push('--no-parallel-scavenge (one CPU available)');
  }
  if (opts.semiSpaceCapMb > 0 && !process.execArgv.some((a) => a.includes('semi-space'))) {
    capSemiSpace(opts.semiSpaceCapMb);
    changed.push(`young generation held at ${opts.semiSpaceCapMb} MB semi-spaces`);
  }
  return changed;
}

/**
 * Holds V8's young generation at semi-spaces of `capMb`.
 *
 * Under steady load V8 grows each semi-space up to 16 MB. A scavenge's pause grows with what survived
 * since the previous one, and a presence server's survivors are the presence states changed in that
 * time, so at 16 MB it paused 5-9 ms about once a second under 500 changes/s, and every delivery that
 * fell in a pause waited for it: that was most of the latency tail. At 4 MB the pauses are about 2 ms,
 * four times as often, for about a third more collection time in all.
 *
 * `--max-semi-space-size` is only read when the heap is set up, that is from the command line, which a
 * server started as `presenced start` does not control. V8 reads its growth factor at every resize,
 * though: after each young collection this turns growth off once the semi-space has reached the cap
 * and back on while it is below (V8 shrinks it when the server idles). The check runs from the event
 * loop, so a single turn that allocates several semi-spaces' worth (a server's turns are far smaller)
 * could grow it one step past the cap. If a V8 release stops honouring the flag at run time, the only
 * effect is V8's default sizing.
 */
export function capSemiSpace(capMb: number): () => void {
  const capBytes = capMb * 1024 * 1024;
  let growing = true;
  const adjust = (): void => {
    const young = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    if (!young) return;
    // new_space's size is both semi-spaces.
    const wantGrowth = young.space_size / 2 < capBytes;
    if (wantGrowth === growing) return;
    growing = wantGrowth;
    setFlagsFromString(growing ? '--semi-space-growth-factor=2' : '--semi-space-growth-factor=1');
  };
  adjust();
  const observer = new PerformanceObserver((list) => {
    // Only young collections resize the young generation; one check per batch of entries is enough.
    if (list.getEntries().some((e) => (e as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR)) adjust();
  });
  observer.observe({ entryTypes: ['gc'] });
  return () => observer.disconnect();
}
