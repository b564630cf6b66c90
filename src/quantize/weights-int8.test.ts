import { describe, expect, it } from "vitest";
import { dequantizePerChannel, INT7_MAX, quantizePerChannel, quantizePerTensor, roundHalfEven, symmetricScale, transposeInt8 } from "./weights-int8.js";

/** Gaussian-ish values with a deterministic LCG, one row scaled up to give rows different ranges. */
function matrix(rows: number, cols: number, seed = 7): Float32Array {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = (rnd() + rnd() + rnd()) * (Math.floor(i / cols) === 1 ? 50 : 0.05);
  return w;
}

describe("int8 weight quantisation", () => {
  it("rounds half to even, as ONNX QuantizeLinear does", () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001, -3.5].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, 3, -4]);
  });

  it("gives each output channel (row) the scale max|row|/127 and dequantises every element within scale/2", () => {
    const rows = 6;
    const cols = 37;
    const w = matrix(rows, cols);
    w.fill(0, 4 * cols, 5 * cols); // an all-zero channel
    const { values, scales } = quantizePerChannel(w, rows, cols);
    for (let r = 0; r < rows; r++) {
      const amax = Math.max(...w.subarray(r * cols, (r + 1) * cols).map(Math.abs));
      expect(scales[r]).toBe(amax === 0 ? 1 : Math.fround(amax / 127));
      // The largest element of a row lands on ±127.
      if (amax > 0) expect(Math.max(...Array.from(values.subarray(r * cols, (r + 1) * cols), Math.abs))).toBe(127);
    }
    const back = dequantizePerChannel(values, scales, cols);
    for (let i = 0; i < w.length; i++) expect(Math.abs(back[i]! - w[i]!)).toBeLessThanOrEqual(scales[Math.floor(i / cols)]! / 2 + 1e-12);
    // Rows with ranges a thousand times apart keep their own resolution: per-tensor would zero row 0.
    expect(values.subarray(0, cols).some((v) => Math.abs(v) > 60)).toBe(true);
    expect(quantizePerTensor(w).values.subarray(0, cols).every((v) => v === 0)).toBe(true);
  });

  it("keeps 7-bit weights within [-64, 64], so u8·s8 pair sums fit int16 (255·64·2 < 32767)", () => {
    const w = matrix(4, 50);
    const { values, scales } = quantizePerChannel(w, 4, 50, INT7_MAX);
    expect(Math.max(...Array.from(values, Math.abs))).toBe(64);
    expect(255 * 64 * 2).toBeLessThan(32767);
    expect(scales[1]).toBe(Math.fround(Math.max(...w.subarray(50, 100).map(Math.abs)) / 64));
  });

  it("transposes [out, in] to [in, out] for MatMulInteger", () => {
    const q = Int8Array.from([1, 2, 3, 4, 5, 6]);
    expect(Array.from(transposeInt8(q, 2, 3))).toEqual([1, 4, 2, 5, 3, 6]);
  });

  it("refuses ranges that are not finite", () => {
    expect(() => symmetricScale(Number.NaN)).toThrow(/cannot quantise/);
    expect(() => symmetricScale(Infinity)).toThrow(/cannot quantise/);
    expect(symmetricScale(0)).toBe(1);
  });
});
