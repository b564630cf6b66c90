import { describe, expect, it } from "vitest";
import { assertFiniteTensor } from "./dtype.js";

const words = (values: number[]) => new Uint8Array(Uint32Array.from(values).buffer);

describe("assertFiniteTensor (F32)", () => {
  // The largest finite float32, the smallest denormal, −0, a negative, ordinary values: all pass.
  const finite = [0x7f7fffff, 0xff7fffff, 0x00000001, 0x80000000, 0xbf800000, 0x3f800000, 0x00800000, 0x7f000000];

  it("passes every finite bit pattern near the edge, at any length (the 4-wide scan and its tail)", () => {
    for (let n = 0; n <= 11; n++) {
      expect(() => assertFiniteTensor(words(Array.from({ length: n }, (_, i) => finite[i % finite.length]!)), "F32", "t")).not.toThrow();
    }
  });

  it("finds NaN, +Inf and −Inf wherever they are: first element, inside the 4-wide scan, in its tail, last", () => {
    for (const [bits, shown] of [[0x7fc00000, "NaN"], [0x7f800001, "NaN"], [0xffc00000, "NaN"], [0x7f800000, "Infinity"], [0xff800000, "-Infinity"]] as const) {
      for (const n of [1, 4, 7, 9]) {
        for (const at of new Set([0, Math.floor(n / 2), n - 1])) {
          const values = Array.from({ length: n }, (_, i) => finite[i % finite.length]!);
          values[at] = bits;
          expect(() => assertFiniteTensor(words(values), "F32", "w"), `${shown} at ${at} of ${n}`).toThrow(new RegExp(`^w holds ${shown} at element ${at} of ${n};`));
        }
      }
    }
  });

  it("reports the first of several bad elements, and places a chunk within its tensor", () => {
    const values = [...finite, 0x7f800000, 0x3f800000, 0x7fc00000];
    expect(() => assertFiniteTensor(words(values), "F32", "w", { first: 1000, count: 5000 })).toThrow(/^w holds Infinity at element 1008 of 5000;/);
  });

  it("checks unaligned views too (the slow path)", () => {
    const bytes = new Uint8Array(4 * 5 + 1);
    bytes.set(words([0x3f800000, 0x3f800000, 0x7f800000, 0, 0]), 1);
    expect(() => assertFiniteTensor(bytes.subarray(1), "F32", "u")).toThrow(/^u holds Infinity at element 2 of 5;/);
  });
});
