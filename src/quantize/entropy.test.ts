import { describe, expect, it } from "vitest";
import { entropyThreshold, klDivergenceAt } from "./entropy.js";

describe("entropy calibration (TensorRT EntropyCalibration2)", () => {
  it("keeps the whole range of a uniform histogram: at 2048 bins each of the 128 levels is 16 equal bins, so Q = P and KL = 0", () => {
    const counts = new Float64Array(2048).fill(1000);
    expect(klDivergenceAt(counts, 2048)).toBe(0);
    // Any lower threshold folds the clipped mass into its edge bin, which Q spreads over a level: KL > 0.
    expect(klDivergenceAt(counts, 2047)).toBeGreaterThan(0);
    expect(klDivergenceAt(counts, 1024)).toBeGreaterThan(0);
    expect(entropyThreshold(counts)).toEqual({ bins: 2048, divergence: 0 });
  });

  /**
   * A bulk on bins 0..127 falling linearly (count 128 − k) and one far outlier value in bin 2047:
   * - i = 128: levels are single bins, Q reproduces the bulk; only the outlier, folded into bin 127,
   *   makes P and Q differ: P = (bulk; bin 127 = 2)/(S + 1), Q = bulk/S with S the bulk's total.
   * - 129 ≤ i ≤ 2047: bin i−1 is empty but receives the outlier: Q has nothing there, KL = ∞.
   * - i = 2048: nothing is clipped, but each level averages 16 bins of the ramp: KL ≈ Σ variance
   *   terms, some 100× larger than at i = 128.
   * So the threshold is bin 128, 16× below the outlier.
   */
  it("clips a far outlier: a linear bulk over 128 bins plus one value in the last bin gives threshold 128", () => {
    const counts = new Float64Array(2048);
    for (let k = 0; k < 128; k++) counts[k] = 128 - k;
    counts[2047] = 1;
    const bins = Float64Array.from(counts);
    bins[0] = bins[1]!; // what the search does with bin 0 (the zero spike)
    const S = bins.slice(0, 128).reduce((a, b) => a + b, 0); // 8255
    expect(S).toBe(8255);
    // KL at 128 by hand: every bulk bin but the last has p/q = S/(S+1); the last has p = 2/(S+1), q = 1/S.
    const at128 = ((S - 1) / (S + 1)) * Math.log(S / (S + 1)) + (2 / (S + 1)) * Math.log((2 * S) / (S + 1));
    expect(klDivergenceAt(bins, 128)).toBeCloseTo(at128, 12);
    expect(klDivergenceAt(bins, 129)).toBe(Infinity);
    expect(klDivergenceAt(bins, 2047)).toBe(Infinity);
    expect(klDivergenceAt(bins, 2048)).toBeGreaterThan(50 * at128);
    const t = entropyThreshold(counts);
    expect(t.bins).toBe(128);
    expect(t.divergence).toBeCloseTo(at128, 12);
  });

  it("ignores the zero spike in bin 0 (it takes bin 1's count), as TensorRT's tooling does", () => {
    const counts = new Float64Array(2048).fill(10);
    counts[0] = 1e9;
    expect(entropyThreshold(counts)).toEqual({ bins: 2048, divergence: 0 });
  });

  it("a long thin tail is clipped where it stops carrying information", () => {
    // Exponential decay: the far tail holds a few counts spread over many empty-ish bins.
    const counts = Float64Array.from({ length: 2048 }, (_, k) => Math.round(1e6 * Math.exp(-k / 40)));
    const t = entropyThreshold(counts);
    let lastNonEmpty = counts.length;
    while (counts[lastNonEmpty - 1] === 0) lastNonEmpty--;
    expect(t.bins).toBeGreaterThanOrEqual(128);
    expect(t.bins).toBeLessThan(lastNonEmpty);
  });

  it("the fast search computes the same divergences as the direct definition", () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 4; trial++) {
      const counts = Float64Array.from({ length: 300 }, (_, k) => (rand() < 0.2 ? 0 : Math.floor(rand() * 1000 * Math.exp(-k / 60))));
      const bins = Float64Array.from(counts);
      bins[0] = bins[1]!;
      let best = { bins: 0, divergence: Infinity };
      for (let i = 128; i <= 300; i++) {
        const d = klDivergenceAt(bins, i);
        if (d <= best.divergence) best = { bins: i, divergence: d };
      }
      const fast = entropyThreshold(counts);
      expect(fast.bins).toBe(best.bins);
      expect(fast.divergence).toBeCloseTo(best.divergence, 12);
    }
  });

  it("refuses a histogram smaller than the first threshold", () => {
    expect(() => entropyThreshold(new Float64Array(100))).toThrow(/at least 128/);
  });
});
