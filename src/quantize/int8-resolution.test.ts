import { describe, expect, it } from "vitest";
import { AbsHistogram } from "./histogram.js";
import { zeroedShare } from "./int8-resolution.js";

describe("zeroedShare", () => {
  it("counts the values below half an INT8 step, a straddling bin in proportion", () => {
    const h = new AbsHistogram(8192);
    h.cover(127);
    // 1000 values near 1 and 10 outliers at 127: amax 127 makes one step 1.0, so |x| < 0.5 rounds to 0.
    h.add(new Float32Array([...new Array(1000).fill(0.25), ...new Array(10).fill(127)]));
    expect(zeroedShare(h, 127)).toBeCloseTo(1000 / 1010, 12);
    // A range set by the bulk keeps it: nothing rounds to zero.
    expect(zeroedShare(h, 1)).toBe(0);
    // Half a step exactly at the middle of the bin holding 0.25 (width 1/64): half of that bin counts.
    const bin = Math.floor(0.25 / h.width);
    const amaxAtMid = (bin + 0.5) * h.width * 2 * 127;
    expect(zeroedShare(h, amaxAtMid)).toBeCloseTo(500 / 1010, 9);
  });

  it("is 0 for an empty histogram or no range", () => {
    expect(zeroedShare(new AbsHistogram(8), 1)).toBe(0);
  });
});
