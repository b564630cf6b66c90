import { describe, expect, it } from "vitest";
import { AbsHistogram } from "./histogram.js";

function addBatch(h: AbsHistogram, values: number[]): void {
  const data = Float32Array.from(values);
  h.cover(Math.max(...data.map(Math.abs)));
  h.add(data);
}

describe("AbsHistogram", () => {
  it("grows by merging bin pairs: counts are kept and land where a histogram made at the final range puts them", () => {
    let seed = 3;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const batches = [1, 1.5, 7, 7, 40].map((scale) => Array.from({ length: 5000 }, () => (rand() * 2 - 1) * scale));
    const grown = new AbsHistogram(64);
    for (const b of batches) addBatch(grown, b);
    expect(grown.total).toBe(25000);
    expect(grown.counts.reduce((a, b) => a + b, 0)).toBe(25000);
    // Same data, range fixed from the start at the grown width.
    const direct = new AbsHistogram(64);
    direct.width = grown.width;
    for (const b of batches) direct.add(Float32Array.from(b));
    expect(Array.from(grown.counts)).toEqual(Array.from(direct.counts));
    // The width is the smallest power of two whose range holds the largest value strictly inside.
    expect(Math.log2(grown.width) % 1).toBe(0);
    expect(grown.range).toBeGreaterThan(grown.maxAbs);
    expect(grown.range / 2).toBeLessThanOrEqual(grown.maxAbs);
    // The same values batched otherwise (one batch, reversed) give the same counts, bit for bit.
    const once = new AbsHistogram(64);
    addBatch(once, batches.flat().reverse());
    expect(once.width).toBe(grown.width);
    expect(Array.from(once.counts)).toEqual(Array.from(grown.counts));
  });

  it("counts batches of zeros before the range is known in bin 0", () => {
    const h = new AbsHistogram(8);
    addBatch(h, [0, 0, 0]);
    addBatch(h, [7.5, -4.5, 1.5]);
    // Width 1 (the smallest power of two with 8 bins above 7.5): 7.5 → 7, 4.5 → 4, 1.5 → 1.
    expect(h.width).toBe(1);
    expect(Array.from(h.counts)).toEqual([3, 1, 0, 0, 1, 0, 0, 1]);
    // 8 is not inside [0, 8): the width doubles and bins merge pairwise.
    addBatch(h, [8]);
    expect(h.width).toBe(2);
    expect(Array.from(h.counts)).toEqual([4, 0, 1, 1, 1, 0, 0, 0]);
  });

  it("percentile of a known distribution: 10 000 evenly spread values", () => {
    const h = new AbsHistogram(2048);
    addBatch(h, Array.from({ length: 10000 }, (_, k) => (k % 2 ? -1 : 1) * (k + 0.5) / 1000)); // |x| uniform on (0, 10)
    expect(h.percentile(99)).toBeCloseTo(9.9, 2);
    expect(h.percentile(50)).toBeCloseTo(5, 2);
    expect(h.percentile(99.99)).toBeCloseTo(9.999, 2);
    expect(h.percentile(100)).toBeCloseTo(h.maxAbs, 6);
    expect(() => h.percentile(101)).toThrow(RangeError);
  });

  it("percentile clips a rare outlier that min-max keeps", () => {
    const h = new AbsHistogram(8192);
    const values = Array.from({ length: 100000 }, (_, k) => ((k % 1000) / 1000) * (k % 2 ? -1 : 1));
    values[500] = 1000;
    addBatch(h, values);
    expect(h.maxAbs).toBe(1000);
    expect(h.percentile(99.99)).toBeLessThan(1.2);
  });

  it("resamples to TensorRT's 2048 bins over [0, max] keeping the total", () => {
    const h = new AbsHistogram(8192);
    addBatch(h, Array.from({ length: 20000 }, (_, k) => (k + 1) / 20000));
    addBatch(h, [2.5]); // the range doubles twice (1 → 4): the data spans [0, 2.5]
    const coarse = h.resample(2048);
    expect(coarse.reduce((a, b) => a + b, 0)).toBeCloseTo(20001, 6);
    // Uniform on (0, 1] over 2048 bins of width 2.5/2048: the first 819 bins hold ≈ 20000·(2.5/2048) each.
    expect(coarse[100]).toBeCloseTo((20000 * 2.5) / 2048, -1);
    expect(coarse[2047]).toBeCloseTo(1, 6);
    expect(coarse[1500]).toBe(0);
  });
});
