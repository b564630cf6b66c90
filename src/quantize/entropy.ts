/**
 * TensorRT's entropy calibration (EntropyCalibration2, NVIDIA's "8-bit inference with TensorRT";
 * the open version is pytorch-quantization's `_compute_amax_entropy`): over a histogram of |x|, try
 * each threshold i (in bins) from 128 to the last bin; the reference distribution P is the first i
 * bins with everything beyond the threshold folded into bin i−1 (clipping keeps the outliers' mass,
 * at the edge); the candidate Q squeezes those i bins into 128 levels (int8's magnitudes) and expands
 * them back, each level's mass spread evenly over the bins of its group that were non-empty in the
 * data (empty bins stay empty, so Q is zero exactly where the data is). The threshold with the
 * smallest KL(P‖Q) wins; on ties the largest, which clips least. amax = threshold · bin width.
 */
export interface EntropyOptions {
  /** Quantized magnitude levels: 128 for int8 (sign apart). @default 128 */
  levels?: number;
  /** Smallest threshold tried, in bins. @default 128 */
  startBin?: number;
  /** Step between thresholds tried, in bins. @default 1 */
  stride?: number;
}

export interface EntropyThreshold {
  /** Threshold in bins: amax is `bins × bin width` (the upper edge of bin bins−1). */
  bins: number;
  divergence: number;
}

/**
 * Bin 0 of an |x| histogram holds the exact zeros too (after ReLU/GELU, masking, dropout-free
 * padding…), a spike that would dominate every KL comparison; like TensorRT's tooling, bin 0 is
 * given bin 1's count before the search.
 */
function withoutZeroSpike(counts: ArrayLike<number>): Float64Array {
  const bins = Float64Array.from(counts);
  if (bins.length > 1) bins[0] = bins[1]!;
  return bins;
}

/** KL(P‖Q) for threshold `i` (in bins) over `bins` (already without the zero spike). */
export function klDivergenceAt(bins: ArrayLike<number>, i: number, levels = 128): number {
  if (!Number.isInteger(i) || i < levels || i > bins.length) throw new RangeError(`threshold ${i} must be an integer in [${levels}, ${bins.length}]`);
  let beyond = 0;
  for (let k = i; k < bins.length; k++) beyond += bins[k]!;
  // Level of bin k: the g with g·i/levels ≤ k < (g+1)·i/levels (integer arithmetic, exact).
  const levelSum = new Float64Array(levels);
  const levelNonEmpty = new Float64Array(levels);
  for (let k = 0; k < i; k++) {
    const n = bins[k]!;
    if (n === 0) continue;
    const g = Math.floor((k * levels) / i);
    levelSum[g]! += n;
    levelNonEmpty[g]!++;
  }
  let pTotal = beyond;
  let qTotal = 0;
  for (let k = 0; k < i; k++) {
    pTotal += bins[k]!;
    if (bins[k]! !== 0) {
      const g = Math.floor((k * levels) / i);
      qTotal += levelSum[g]! / levelNonEmpty[g]!;
    }
  }
  if (pTotal === 0) return 0;
  let kl = 0;
  for (let k = 0; k < i; k++) {
    const p = (bins[k]! + (k === i - 1 ? beyond : 0)) / pTotal;
    if (p === 0) continue;
    if (bins[k]! === 0) return Infinity; // outliers folded into an empty edge bin: Q has nothing there
    const g = Math.floor((k * levels) / i);
    const q = levelSum[g]! / levelNonEmpty[g]! / qTotal;
    kl += p * Math.log(p / q);
  }
  return kl;
}

/**
 * The threshold (in bins) of least KL divergence over an |x| histogram (TensorRT uses 2048 bins).
 * Same divergences as {@link klDivergenceAt}, computed in O(levels + i) per threshold with the logs
 * of the counts taken once: with P = Σ counts (the same for every threshold, the clipped mass being
 * folded in) and Q = Σ counts below the threshold (what Q's levels share out),
 * KL = (1/P)·Σ n_k·(ln n_k − ln avg_level(k)) + ln(Q/P).
 */
export function entropyThreshold(counts: ArrayLike<number>, options: EntropyOptions = {}): EntropyThreshold {
  const levels = options.levels ?? 128;
  const start = options.startBin ?? levels;
  const stride = options.stride ?? 1;
  const bins = withoutZeroSpike(counts);
  const N = bins.length;
  if (N < start || start < levels) throw new RangeError(`the histogram has ${N} bins; entropy calibration needs at least ${start} (and starts at ≥ ${levels})`);
  const logs = bins.map((n) => (n > 0 ? Math.log(n) : 0));
  const beyondFrom = new Float64Array(N + 1);
  for (let k = N - 1; k >= 0; k--) beyondFrom[k] = beyondFrom[k + 1]! + bins[k]!;
  const P = beyondFrom[0]!;
  let best: EntropyThreshold = { bins: N, divergence: Infinity };
  for (let i = start; i <= N; i += stride) {
    const divergence = P === 0 ? 0 : divergenceAt(bins, logs, i, levels, beyondFrom[i]!, P);
    if (divergence <= best.divergence) best = { bins: i, divergence };
  }
  return best;
}

function divergenceAt(bins: Float64Array, logs: Float64Array, i: number, levels: number, beyond: number, P: number): number {
  if (beyond > 0 && bins[i - 1] === 0) return Infinity; // clipped mass in an empty edge bin: Q has nothing there
  let sum = 0;
  // Level g holds bins k with g·i/levels ≤ k < (g+1)·i/levels.
  let s = 0;
  for (let g = 0; g < levels; g++) {
    const e = Math.ceil(((g + 1) * i) / levels);
    let mass = 0;
    let nonEmpty = 0;
    for (let k = s; k < e; k++) {
      if (bins[k]! > 0) {
        mass += bins[k]!;
        nonEmpty++;
      }
    }
    if (nonEmpty > 0) {
      const logAvg = Math.log(mass / nonEmpty);
      for (let k = s; k < e; k++) {
        const n = bins[k]!;
        if (n === 0) continue;
        if (k === i - 1 && beyond > 0) sum += (n + beyond) * (Math.log(n + beyond) - logAvg);
        else sum += n * (logs[k]! - logAvg);
      }
    }
    s = e;
  }
  return sum / P + Math.log((P - beyond) / P);
}
