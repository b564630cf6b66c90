/** How long to measure one grid point: a fixed number of runs, or for a number of seconds. */
export interface TimingPlan {
  warmup: number;
  /** Timed runs; ignored when `seconds` is given. */
  runs: number;
  /** Keep running until this many seconds have passed (at least one run). */
  seconds?: number;
}

export interface LatencyStats {
  runs: number;
  meanMs: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
}

/**
 * Runs `once` `plan.warmup` times untimed, then times each run; returns every run's wall time in ms.
 * Each run is awaited before the next starts, so a run's time is the latency one caller sees.
 */
export async function timeRuns(once: () => Promise<unknown>, plan: TimingPlan): Promise<number[]> {
  for (let i = 0; i < plan.warmup; i++) await once();
  const times: number[] = [];
  const until = plan.seconds !== undefined ? performance.now() + plan.seconds * 1000 : undefined;
  for (let i = 0; until !== undefined ? i === 0 || performance.now() < until : i < plan.runs; i++) {
    const t0 = performance.now();
    await once();
    times.push(performance.now() - t0);
  }
  return times;
}

/**
 * timeRuns for several functions taking turns (a, b, c, a, b, c, …): a burst of load from other
 * processes falls on each alike, so their ratios hold on a busy machine. Returns each one's times.
 */
export async function timeInterleaved(fns: readonly (() => Promise<unknown>)[], plan: TimingPlan): Promise<number[][]> {
  for (let i = 0; i < plan.warmup; i++) for (const fn of fns) await fn();
  const times = fns.map(() => [] as number[]);
  const until = plan.seconds !== undefined ? performance.now() + plan.seconds * 1000 : undefined;
  for (let i = 0; until !== undefined ? i === 0 || performance.now() < until : i < plan.runs; i++) {
    for (const [k, fn] of fns.entries()) {
      const t0 = performance.now();
      await fn();
      times[k]!.push(performance.now() - t0);
    }
  }
  return times;
}

/** Nearest-rank percentile of unsorted samples (p in 0..100). */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) throw new Error("percentile of no samples");
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function latencyStats(samples: readonly number[]): LatencyStats {
  return {
    runs: samples.length,
    meanMs: samples.reduce((a, b) => a + b, 0) / samples.length,
    p50Ms: percentile(samples, 50),
    p95Ms: percentile(samples, 95),
    p99Ms: percentile(samples, 99),
  };
}

/** Peak resident set size of this process so far, in bytes (getrusage's maxrss). */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}
