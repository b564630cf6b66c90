import { describe, expect, it } from "vitest";
import { erf, gelu } from "./erf.js";

/** erf by the all-positive series 2/√π·e^{-x²}·Σ 2ⁿx^{2n+1}/(1·3·…·(2n+1)): slow but cancellation-free. */
function erfSeries(x: number): number {
  let term = x;
  let sum = x;
  for (let n = 1; n < 400; n++) {
    term *= (2 * x * x) / (2 * n + 1);
    sum += term;
    if (Math.abs(term) < 1e-18 * Math.abs(sum)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
}

describe("erf", () => {
  it("matches a cancellation-free series to 1e-14 across every branch", () => {
    for (let x = -5.5; x <= 5.5; x += 0.0137) {
      expect(Math.abs(erf(x) - erfSeries(x))).toBeLessThan(1e-14);
    }
  });

  it("hits known values", () => {
    expect(erf(0)).toBe(0);
    expect(erf(1)).toBeCloseTo(0.8427007929497149, 15);
    expect(erf(-0.5)).toBeCloseTo(-0.5204998778130465, 15);
    expect(erf(2)).toBeCloseTo(0.9953222650189527, 15);
    expect(erf(10)).toBe(1);
    expect(erf(-Infinity)).toBe(-1);
    expect(Number.isNaN(erf(NaN))).toBe(true);
  });

  it("gives exact GELU, not the tanh approximation", () => {
    expect(gelu(1)).toBeCloseTo(0.8413447460685429, 15);
    expect(gelu(-1)).toBeCloseTo(-0.15865525393145707, 15);
    const tanhGelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
    expect(Math.abs(gelu(1.5) - tanhGelu(1.5))).toBeGreaterThan(1e-5);
  });
});
