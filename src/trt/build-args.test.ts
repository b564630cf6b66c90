import { describe, expect, it } from "vitest";
import { UsageError } from "../errors.js";
import { buildTrtexecArgs, sourceGraphFor, type TrtBuildRequest } from "./build-args.js";

const base: TrtBuildRequest = {
  onnx: "/art/model.fp32.onnx",
  engine: "/art/e.plan",
  precision: "fp16",
  shapes: { min: [1, 1], opt: [8, 128], max: [32, 512] },
  inputs: ["input_ids", "attention_mask"],
};

describe("buildTrtexecArgs: dispatch and shared checks", () => {
  it("dispatches on the family: the same fp16 request gives three different lists", () => {
    const a86 = buildTrtexecArgs("8.6", base);
    const a10 = buildTrtexecArgs("10", { ...base, workspaceMiB: 512 });
    const a11 = buildTrtexecArgs("11", { ...base, onnx: "/art/model.fp16.onnx" });
    expect(a86).toContain("--fp16");
    expect(a10).toContain("--memPoolSize=workspace:512M");
    expect(buildTrtexecArgs("8.6", { ...base, workspaceMiB: 512 })).toContain("--memPoolSize=workspace:512");
    expect(a11).not.toContain("--fp16");
    expect(() => buildTrtexecArgs("9" as never, base)).toThrow(/unknown TensorRT family "9"/);
  });

  it("returns a fresh argv array: values with spaces and = stay one element each (no shell)", () => {
    const args = buildTrtexecArgs("10", { ...base, onnx: "/my dir/a=b/model.onnx", engine: "/my dir/e.plan" });
    expect(args[0]).toBe("--onnx=/my dir/a=b/model.onnx");
    expect(args[1]).toBe("--saveEngine=/my dir/e.plan");
  });

  it("names which artifact graph each family and precision read", () => {
    expect(sourceGraphFor("8.6", { precision: "fp16" })).toBe("model.fp32.onnx");
    expect(sourceGraphFor("10", { precision: "fp16" })).toBe("model.fp32.onnx");
    expect(sourceGraphFor("10", { precision: "fp16", stronglyTyped: true })).toBe("model.fp16.onnx");
    expect(sourceGraphFor("11", { precision: "fp16" })).toBe("model.fp16.onnx");
    expect(sourceGraphFor("11", { precision: "fp32" })).toBe("model.fp32.onnx");
    expect(sourceGraphFor("8.6", { precision: "int8" })).toBe("model.int8.qdq.onnx");
    expect(sourceGraphFor("8.6", { precision: "int8", int8Source: "calib" })).toBe("model.fp32.onnx");
  });

  it("refuses a known artifact graph that is not the one the request reads", () => {
    expect(() => buildTrtexecArgs("8.6", { ...base, onnx: "/art/model.fp16.onnx" })).toThrow(/built from model\.fp32\.onnx, not model\.fp16\.onnx/);
    expect(() => buildTrtexecArgs("10", { ...base, precision: "int8", onnx: "/art/model.fp32.onnx" })).toThrow(/built from model\.int8\.qdq\.onnx/);
    // an arbitrary file name is the caller's business
    expect(buildTrtexecArgs("10", { ...base, onnx: "/x/custom.onnx" })[0]).toBe("--onnx=/x/custom.onnx");
  });

  const bad: [string, Partial<TrtBuildRequest>, RegExp][] = [
    ["calib without a cache", { precision: "int8", int8Source: "calib" }, /needs the calibration cache/],
    ["a cache without calib", { precision: "int8", calibCache: "c", onnx: "/art/model.int8.qdq.onnx" }, /only used with int8Source calib/],
    ["int8Source on fp16", { int8Source: "qdq" }, /int8Source is for --precision int8/],
    ["no inputs", { inputs: [] }, /input names/],
    ["an input name with a comma", { inputs: ["a,b"] }, /holds ","/],
    ["a layer name with a quote", { fp32Layers: ["it's"] }, /layer name/],
    ["min > opt", { shapes: { min: [4, 1], opt: [2, 128], max: [32, 512] } }, /min <= opt <= max/],
    ["a zero dimension", { shapes: { min: [0, 1], opt: [8, 128], max: [32, 512] } }, /two positive integers/],
    ["a fractional workspace", { workspaceMiB: 1.5 }, /whole number of MiB/],
    ["opt level 6", { optLevel: 6 }, /0\.\.5/],
    ["no engine", { engine: "" }, /no engine path/],
  ];
  for (const [what, patch, message] of bad) {
    it(`refuses ${what} (UsageError, exit 2)`, () => {
      let caught: unknown;
      try {
        buildTrtexecArgs("10", { ...base, ...patch });
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(UsageError);
      expect((caught as UsageError).exitCode).toBe(2);
      expect((caught as Error).message).toMatch(message);
    });
  }
});
