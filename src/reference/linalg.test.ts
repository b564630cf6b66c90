import { describe, expect, it } from "vitest";
import { layerNormInPlace, linear } from "./linalg.js";

describe("linear", () => {
  it("computes x·Wᵀ + b for every row/column remainder of the blocking", () => {
    for (const [rows, inDim, outDim] of [[1, 3, 1], [2, 5, 4], [3, 4, 7], [5, 2, 9]] as const) {
      const x = Float64Array.from({ length: rows * inDim }, (_, i) => ((i * 7) % 11) - 5);
      const w = Float64Array.from({ length: outDim * inDim }, (_, i) => ((i * 5) % 13) - 6);
      const b = Float64Array.from({ length: outDim }, (_, i) => i * 0.5);
      const y = linear(x, rows, inDim, w, b, outDim);
      for (let r = 0; r < rows; r++) {
        for (let o = 0; o < outDim; o++) {
          let s = b[o]!;
          for (let k = 0; k < inDim; k++) s += x[r * inDim + k]! * w[o * inDim + k]!;
          expect(y[r * outDim + o]).toBe(s);
        }
      }
    }
  });
});

describe("layerNormInPlace", () => {
  it("normalises with the biased variance, then scales and shifts", () => {
    const x = Float64Array.from([1, 2, 3, 4]);
    layerNormInPlace(x, 1, 4, Float64Array.from([1, 1, 2, 2]), Float64Array.from([0, 0, 0, 1]), 0);
    const s = Math.sqrt(1.25);
    expect(Array.from(x)).toEqual([-1.5 / s, -0.5 / s, (2 * 0.5) / s, (2 * 1.5) / s + 1]);
  });
});
