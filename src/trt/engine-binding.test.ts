import { describe, expect, it } from "vitest";
import type { ArtifactFile } from "../artifacts/manifest.js";
import { UsageError } from "../errors.js";
import { checkEngineDevice, checkEngineVersion, engineRecordOf, type EngineBinding } from "./engine-binding.js";

const built: EngineBinding = { version: "10.16.0", gpu: "NVIDIA A100-SXM4-80GB", computeCapability: "8.0", rebuild: "bge build /a --precision fp16" };
const trtexec = (major: number, minor: number, patch: number) => ({ path: "/opt/trt/bin/trtexec", source: "PATH" as const, version: { major, minor, patch, code: 0 } });

function message(f: () => void): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error("did not throw");
}

describe("checkEngineVersion", () => {
  it("accepts the exact version that built the engine", () => {
    expect(() => checkEngineVersion("/a/model.fp16.plan", built, trtexec(10, 16, 0))).not.toThrow();
  });

  it.each([
    [10, 16, 1],
    [10, 17, 0],
    [11, 0, 0],
    [8, 6, 1],
  ])("refuses TensorRT %i.%i.%i for a 10.16.0 engine, naming both and the remedy", (major, minor, patch) => {
    const m = message(() => checkEngineVersion("/a/model.fp16.plan", built, trtexec(major, minor, patch)));
    expect(m).toBe(
      `/a/model.fp16.plan was built with TensorRT 10.16.0 but /opt/trt/bin/trtexec (from PATH) is TensorRT ${major}.${minor}.${patch}: ` +
        "an engine runs only in the exact TensorRT version (major.minor.patch) that built it; " +
        "rebuild it on this machine with bge build /a --precision fp16, or point --trtexec (or $TRTEXEC) at TensorRT 10.16.0",
    );
  });
});

describe("checkEngineDevice", () => {
  it("accepts the GPU that built the engine", () => {
    expect(() => checkEngineDevice("/a/e.plan", built, { name: "NVIDIA A100-SXM4-80GB", computeCapability: "8.0" })).not.toThrow();
  });

  it("refuses another compute capability and another GPU model of the same one", () => {
    expect(message(() => checkEngineDevice("/a/e.plan", built, { name: "NVIDIA H100 PCIe", computeCapability: "9.0" }))).toBe(
      "/a/e.plan was built on NVIDIA A100-SXM4-80GB (compute capability 8.0) but trtexec runs it on NVIDIA H100 PCIe (compute capability 9.0): " +
        "an engine is bound to the GPU model that built it; rebuild it on this machine with bge build /a --precision fp16",
    );
    expect(message(() => checkEngineDevice("/a/e.plan", built, { name: "NVIDIA A100-SXM4-40GB", computeCapability: "8.0" }))).toMatch(/built on NVIDIA A100-SXM4-80GB .* runs it on NVIDIA A100-SXM4-40GB/);
  });

  it("compares only what both sides named", () => {
    const unnamed: EngineBinding = { version: "10.16.0", gpu: null, computeCapability: null };
    expect(() => checkEngineDevice("/a/e.plan", unnamed, { name: "NVIDIA H100 PCIe", computeCapability: "9.0" })).not.toThrow();
    expect(() => checkEngineDevice("/a/e.plan", { ...built, gpu: null }, { name: "NVIDIA H100 PCIe" })).not.toThrow();
    expect(message(() => checkEngineDevice("/a/e.plan", { ...built, gpu: null }, { name: "NVIDIA H100 PCIe", computeCapability: "9.0" }))).toMatch(
      /^\/a\/e\.plan was built on an unnamed GPU \(compute capability 8\.0\) but trtexec runs it on NVIDIA H100 PCIe \(compute capability 9\.0\): /,
    );
  });
});

describe("engineRecordOf", () => {
  const record = {
    version: "8.6.1",
    family: "8.6",
    gpu: "NVIDIA A100-SXM4-80GB",
    compute_capability: "8.0",
    source: "model.fp32.onnx",
    log: "model.fp16.log",
    shapes: { min: [1, 2], opt: [8, 128], max: [32, 512] },
    inputs: ["input_ids", "attention_mask", "token_type_ids"],
    outputs: ["last_hidden_state", "sentence_embedding"],
  };
  const file = (trt: unknown): ArtifactFile => ({ path: "model.fp16.plan", role: "trt-fp16", sha256: "0".repeat(64), size: 1, trt: trt as ArtifactFile["trt"] });

  it("returns a well-formed record", () => {
    expect(engineRecordOf(file(record), "/a/manifest.json", 3)).toEqual(record);
  });

  it.each([
    [undefined, /\/a\/manifest\.json: model\.fp16\.plan \(trt-fp16\) has no trt record .*rebuild it with bge build/],
    [{ ...record, version: "10.16" }, /field files\[3\]\.trt\.version of model\.fp16\.plan is "10\.16", expected a TensorRT version X\.Y\.Z/],
    [{ ...record, compute_capability: 8 }, /field files\[3\]\.trt\.compute_capability .* is 8, expected a compute capability "X\.Y" or null/],
    [{ ...record, shapes: { ...record.shapes, max: [32, 0] } }, /field files\[3\]\.trt\.shapes\.max .* is \[32,0\], expected \[batch, sequence\] of positive integers/],
    [{ ...record, inputs: [] }, /field files\[3\]\.trt\.inputs .* is \[\], expected a list of input names/],
    [{ ...record, outputs: "sentence_embedding" }, /field files\[3\]\.trt\.outputs/],
  ])("refuses a malformed record (%#) with exit 2 naming the field", (trt, pattern) => {
    expect(message(() => engineRecordOf(file(trt), "/a/manifest.json", 3))).toMatch(pattern);
  });
});
