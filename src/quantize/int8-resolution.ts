import type { AbsHistogram } from "./histogram.js";

/**
 * The share of a tensor's values that INT8 with this amax rounds to zero (|x| < scale/2, scale =
 * amax/127), read off its |x| histogram (a straddling bin counts in proportion). A tensor whose few
 * outlier units set the range while its bulk sits far below one step (the FFN inputs of BERTs with
 * outlier dimensions) loses nearly everything to zero: per-tensor INT8 cannot represent it, whatever
 * the calibration method, and that layer belongs in float.
 */
export function zeroedShare(h: AbsHistogram, amax: number): number {
  if (h.total === 0 || h.width === 0 || !(amax > 0)) return 0;
  const threshold = amax / 127 / 2;
  const full = Math.min(h.bins, Math.floor(threshold / h.width));
  let zeroed = 0;
  for (let i = 0; i < full; i++) zeroed += h.counts[i]!;
  if (full < h.bins) zeroed += h.counts[full]! * (threshold / h.width - full);
  return Math.min(1, zeroed / h.total);
}
