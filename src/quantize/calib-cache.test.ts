import { describe, expect, it } from "vitest";
import { float32Hex, parseCalibrationCache, trtVersionNumber, writeCalibrationCache } from "./calib-cache.js";

describe("TensorRT calibration cache", () => {
  it("writes the header and big-endian float32 scales byte for byte", () => {
    // Scales by hand: 127/127 = 1.0 = 0x3f800000; 1.27/127 = 0.01 → float32 0x3c23d70a;
    // 254/127 = 2.0 = 0x40000000; 12.7/127 = 0.1 → 0x3dcccccd; 0.127/127 = 0.001 → 0x3a83126f.
    const amax = new Map([
      ["input_ids_embed", 127],
      ["/encoder/layer.0/attention/self/Mul_output_0", 1.27],
      ["b", 254],
      ["c", 12.7],
      ["d", 0.127],
    ]);
    const text = writeCalibrationCache(amax, { trtVersion: "8.6.1", method: "entropy" });
    expect(text).toBe(
      "TRT-8601-EntropyCalibration2\n" +
        "input_ids_embed: 3f800000\n" +
        "/encoder/layer.0/attention/self/Mul_output_0: 3c23d70a\n" +
        "b: 40000000\n" +
        "c: 3dcccccd\n" +
        "d: 3a83126f\n",
    );
    expect(Buffer.from(text, "utf8").equals(Buffer.from(text, "ascii"))).toBe(true);
  });

  it("names min-max and percentile ranges MinMaxCalibration, and TensorRT 10 by its six-digit number", () => {
    const amax = new Map([["x", 127]]);
    expect(writeCalibrationCache(amax, { trtVersion: "10.3.0", method: "minmax" })).toBe("TRT-100300-MinMaxCalibration\nx: 3f800000\n");
    expect(writeCalibrationCache(amax, { trtVersion: "10.16.1", method: "percentile" }).split("\n")[0]).toBe("TRT-101601-MinMaxCalibration");
    expect(trtVersionNumber("8.5.2")).toBe(8502);
    expect(trtVersionNumber("8.6.1.6")).toBe(8601);
    expect(trtVersionNumber("10.3.0")).toBe(100300);
    expect(trtVersionNumber("101600")).toBe(101600);
    expect(() => trtVersionNumber("ten")).toThrow(/MAJOR.MINOR.PATCH/);
    expect(trtVersionNumber("10.16.0")).toBe(101600); // trtexec: [TensorRT v101600]
    expect(() => trtVersionNumber("8.10.0")).toThrow(/minor must be ≤ 9/);
  });

  it("pads small scales to 8 hex digits and refuses zero, negative or non-finite amax", () => {
    expect(float32Hex(1e-40)).toBe("000116c2");
    expect(() => writeCalibrationCache(new Map([["x", 0]]), { trtVersion: "8.6.1", method: "minmax" })).toThrow(/x: amax 0/);
    expect(() => writeCalibrationCache(new Map([["x", NaN]]), { trtVersion: "8.6.1", method: "minmax" })).toThrow(/finite positive/);
    expect(() => writeCalibrationCache(new Map([["a\nb", 1]]), { trtVersion: "8.6.1", method: "minmax" })).toThrow(/cannot be written/);
  });

  it("round-trips through the parser, which also reads caches TensorRT wrote", () => {
    const amax = new Map([
      ["/encoder/layer.0/output/dense/Gemm_input", 3.14159],
      ["(Unnamed Layer* 8) [Constant]_output", 0.5],
    ]);
    const parsed = parseCalibrationCache(writeCalibrationCache(amax, { trtVersion: "8.6.1", method: "entropy" }));
    expect(parsed.version).toBe(8601);
    expect(parsed.algorithm).toBe("EntropyCalibration2");
    expect([...parsed.scales.keys()]).toEqual([...amax.keys()]);
    for (const [name, a] of amax) expect(parsed.scales.get(name)! * 127).toBeCloseTo(a, 5);
    // A cache as TensorRT 7.2 wrote it for MNIST (public sample).
    const trt = parseCalibrationCache("TRT-7202-EntropyCalibration2\r\ndata: 3c008912\r\nconv1: 3c60dd38\r\n");
    expect(trt.version).toBe(7202);
    expect(trt.scales.get("data")).toBeCloseTo(0.00784518, 7);
    expect(() => parseCalibrationCache("hello\n")).toThrow(/not a TensorRT calibration cache/);
    expect(() => parseCalibrationCache("TRT-8601-EntropyCalibration2\nx 3f800000\n")).toThrow(/line 2/);
  });
});
