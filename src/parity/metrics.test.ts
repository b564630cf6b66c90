import { describe, expect, it } from "vitest";
import { compareEmbeddings, cosineSimilarity, maxAbsDiff } from "./metrics.js";

describe("parity metrics", () => {
  it("computes cosine and max abs diff", () => {
    expect(cosineSimilarity([1, 0], [0, 1])).toBe(0);
    expect(cosineSimilarity([1, 2], [2, 4])).toBeCloseTo(1, 15);
    expect(cosineSimilarity([1, 0], [-1, 0])).toBe(-1);
    expect(Number.isNaN(cosineSimilarity([0, 0], [1, 0]))).toBe(true);
    expect(maxAbsDiff([1, 2, 3], [1, 2.5, 2])).toBe(1);
    expect(maxAbsDiff([1], [NaN])).toBeNaN();
  });

  it("summarises min, mean, p01 and counts non-finite candidates as failures", () => {
    const ref = Array.from({ length: 200 }, () => [1, 0]);
    const cand = ref.map((v, i) => (i === 7 ? [NaN, 0] : i === 3 ? [0, 1] : v));
    const { items, summary } = compareEmbeddings(ref, cand);
    expect(summary.n).toBe(200);
    expect(summary.min_cosine).toBe(-1);
    expect(summary.non_finite).toBe(1);
    expect(items[7]).toMatchObject({ cosine: -1, non_finite: true, max_abs_diff: Infinity });
    expect(items[3]!.cosine).toBe(0);
    expect(summary.p01_cosine).toBe(0); // 2nd-lowest of 200
    expect(summary.mean_cosine).toBeCloseTo(198 / 200 - 1 / 200, 12);
  });
});
