/**
 * A histogram of |x| over [0, bins·width) with a fixed number of bins, so that calibration memory
 * does not grow with the corpus: 8192 float64 counts (64 KiB) per tensor, whatever the data.
 *
 * The width is always a power of two: the smallest that puts the largest |x| seen strictly inside
 * the range. When a later batch goes beyond the range the width doubles, merging bins 2k and 2k+1
 * into k (TensorRT's pytorch-quantization and onnxruntime's HistogramCollector append bins of the
 * same width instead, and memory grows with the outliers). With power-of-two widths, binning
 * (|x|·2^-e, floored) and merging are exact, so the counts depend only on the values seen, not on
 * how they were batched or ordered: calibration gives the same histogram for any batch size. The
 * data spans at least half the bins. The entropy search wants TensorRT's 2048 bins over
 * [0, max|x|]; {@link resample} derives them from these finer bins at the end.
 */
export class AbsHistogram {
  readonly counts: Float64Array;
  /** Bin width; 0 until a batch with a non-zero value arrives (zeros are counted in bin 0 meanwhile). */
  width = 0;
  /** Values counted, padding excluded. */
  total = 0;
  /** Largest |x| seen. */
  maxAbs = 0;

  constructor(readonly bins = 8192) {
    if (!Number.isInteger(bins) || bins < 2 || bins % 2 !== 0) throw new RangeError(`histogram bins must be an even integer ≥ 2, got ${bins}`);
    this.counts = new Float64Array(bins);
  }

  /** Upper edge of the last bin. */
  get range(): number {
    return this.width * this.bins;
  }

  /**
   * Makes the range reach `absMax` (a batch's largest |x|, known before its values are binned):
   * the first time by setting the width, later by doubling it and merging bins 2k and 2k+1 into k.
   */
  cover(absMax: number): void {
    if (!Number.isFinite(absMax) || absMax < 0) throw new RangeError(`histogram range must be finite and ≥ 0, got ${absMax}`);
    if (absMax > this.maxAbs) this.maxAbs = absMax;
    if (absMax === 0) return;
    if (this.width === 0) {
      this.width = 2 ** Math.ceil(Math.log2(absMax / this.bins));
      // The smallest such power even where log2 rounds up across an integer.
      while ((this.width / 2) * this.bins > absMax) this.width /= 2;
    }
    // Strictly inside: a value on the upper edge would have no bin of its own.
    while (absMax >= this.range) {
      const c = this.counts;
      const half = this.bins / 2;
      for (let k = 0; k < half; k++) c[k] = c[2 * k]! + c[2 * k + 1]!;
      c.fill(0, half);
      this.width *= 2;
    }
  }

  /**
   * Counts |data[from..to)|. The caller has made the range cover them ({@link cover}); scaling by a
   * power of two is exact, so none lands past the last bin (the clamp only guards misuse).
   */
  add(data: Float32Array, from = 0, to = data.length): void {
    const c = this.counts;
    this.total += to - from;
    if (this.width === 0) {
      c[0]! += to - from;
      return;
    }
    const inv = 1 / this.width;
    const last = this.bins - 1;
    for (let i = from; i < to; i++) {
      let k = Math.floor(Math.abs(data[i]!) * inv);
      if (k > last) k = last;
      c[k]!++;
    }
  }

  /**
   * The same counts in `bins` equal bins over [0, upTo) (upTo ≥ maxAbs; default maxAbs): each fine
   * bin's count is shared among the coarse bins it overlaps, in proportion to the overlap (the values
   * inside a bin are taken as evenly spread). Counts beyond upTo go to the last coarse bin. Totals are
   * kept (up to float rounding).
   */
  resample(bins: number, upTo = this.maxAbs): Float64Array {
    const out = new Float64Array(bins);
    if (this.width === 0 || upTo <= 0) {
      out[0] = this.total;
      return out;
    }
    const ratio = this.width / (upTo / bins); // coarse bins per fine bin
    const last = bins - 1;
    for (let k = 0; k < this.bins; k++) {
      const n = this.counts[k]!;
      if (n === 0) continue;
      const lo = k * ratio;
      const hi = (k + 1) * ratio;
      if (lo >= last) {
        out[last]! += n;
        continue;
      }
      for (let j = Math.floor(lo); j < hi && j <= last; j++) {
        const overlap = j === last ? hi - Math.max(lo, j) : Math.min(hi, j + 1) - Math.max(lo, j);
        out[j]! += (n * overlap) / (hi - lo);
      }
    }
    return out;
  }

  /**
   * The |x| below which `percent` % of the counted values lie, interpolated linearly inside the bin
   * where the cumulative count crosses it (TensorRT's and onnxruntime's calibrators return that bin's
   * lower edge; interpolating is closer to the data's true percentile), never above maxAbs.
   */
  percentile(percent: number): number {
    if (!(percent >= 0 && percent <= 100)) throw new RangeError(`percentile must be in [0, 100], got ${percent}`);
    if (this.total === 0 || this.width === 0) return 0;
    const target = (this.total * percent) / 100;
    let below = 0;
    for (let k = 0; k < this.bins; k++) {
      const n = this.counts[k]!;
      if (n > 0 && below + n >= target) {
        const x = (k + (target - below) / n) * this.width;
        return Math.min(x, this.maxAbs);
      }
      below += n;
    }
    return this.maxAbs;
  }
}
