import { describe, expect, it } from "vitest";
import { UsageError } from "../../errors.js";
import { buildTrtexecArgs, type TrtBuildRequest } from "../build-args.js";

const base: TrtBuildRequest = {
  onnx: "/art/model.fp32.onnx",
  engine: "/art/trt-fp16/model.engine.partial",
  precision: "fp16",
  shapes: { min: [1, 1], opt: [8, 128], max: [32, 512] },
  inputs: ["input_ids", "attention_mask", "token_type_ids"],
  timingCache: "/art/timing.cache",
  workspaceMiB: 4096,
  optLevel: 3,
  fp32Layers: ["/embeddings/position_ids/MatMul"],
};
const SHAPES = [
  "--minShapes=input_ids:1x1,attention_mask:1x1,token_type_ids:1x1",
  "--optShapes=input_ids:8x128,attention_mask:8x128,token_type_ids:8x128",
  "--maxShapes=input_ids:32x512,attention_mask:32x512,token_type_ids:32x512",
];
const TAIL = ["--memPoolSize=workspace:4096M", "--timingCacheFile=/art/timing.cache", "--builderOptimizationLevel=3", "--skipInference"];

describe("TensorRT 10.x dialect: exact argv", () => {
  it("fp16 from the fp32 graph (weakly typed): --fp16, pins, --noTF32, workspace with an explicit M", () => {
    expect(buildTrtexecArgs("10", base)).toEqual([
      "--onnx=/art/model.fp32.onnx",
      "--saveEngine=/art/trt-fp16/model.engine.partial",
      ...SHAPES,
      "--fp16",
      "--precisionConstraints=obey",
      "--layerPrecisions=/embeddings/position_ids/MatMul:fp32",
      "--noTF32",
      ...TAIL,
    ]);
  });

  it("fp16 strongly typed from the fp16 graph: --stronglyTyped, no --fp16, no pins", () => {
    const req: TrtBuildRequest = { ...base, onnx: "/art/model.fp16.onnx", stronglyTyped: true, fp32Layers: undefined };
    expect(buildTrtexecArgs("10", req)).toEqual(["--onnx=/art/model.fp16.onnx", "--saveEngine=/art/trt-fp16/model.engine.partial", ...SHAPES, "--stronglyTyped", "--noTF32", ...TAIL]);
  });

  it("fp32: --noTF32", () => {
    expect(buildTrtexecArgs("10", { ...base, precision: "fp32", engine: "/art/trt-fp32/model.engine.partial" })).toEqual([
      "--onnx=/art/model.fp32.onnx",
      "--saveEngine=/art/trt-fp32/model.engine.partial",
      ...SHAPES,
      "--noTF32",
      ...TAIL,
    ]);
  });

  it("int8 from the Q/DQ graph, weakly typed: --int8 --fp16 with pins", () => {
    expect(buildTrtexecArgs("10", { ...base, precision: "int8", onnx: "/art/model.int8.qdq.onnx", engine: "/art/trt-int8/model.engine.partial" })).toEqual([
      "--onnx=/art/model.int8.qdq.onnx",
      "--saveEngine=/art/trt-int8/model.engine.partial",
      ...SHAPES,
      "--int8",
      "--fp16",
      "--precisionConstraints=obey",
      "--layerPrecisions=/embeddings/position_ids/MatMul:fp32",
      "--noTF32",
      ...TAIL,
    ]);
  });

  it("int8 from the Q/DQ graph, strongly typed: only --stronglyTyped", () => {
    const req: TrtBuildRequest = { ...base, precision: "int8", int8Source: "qdq", onnx: "/art/model.int8.qdq.onnx", engine: "/art/trt-int8/model.engine.partial", stronglyTyped: true, fp32Layers: [] };
    expect(buildTrtexecArgs("10", req)).toEqual(["--onnx=/art/model.int8.qdq.onnx", "--saveEngine=/art/trt-int8/model.engine.partial", ...SHAPES, "--stronglyTyped", "--noTF32", ...TAIL]);
  });

  it("int8 by calibration cache: --int8 --fp16 --calib", () => {
    const req: TrtBuildRequest = { ...base, precision: "int8", int8Source: "calib", calibCache: "/art/calibration.cache", engine: "/art/trt-int8/model.engine.partial", fp32Layers: undefined, workspaceMiB: undefined, optLevel: undefined, timingCache: undefined };
    expect(buildTrtexecArgs("10", req)).toEqual(["--onnx=/art/model.fp32.onnx", "--saveEngine=/art/trt-int8/model.engine.partial", ...SHAPES, "--int8", "--fp16", "--calib=/art/calibration.cache", "--skipInference"]);
  });

  it("refuses calibration and FP32 pins under strong typing, naming why", () => {
    const calib: TrtBuildRequest = { ...base, precision: "int8", int8Source: "calib", calibCache: "c.cache", stronglyTyped: true, fp32Layers: undefined };
    expect(() => buildTrtexecArgs("10", calib)).toThrow(/strongly typed build takes INT8 only from Q\/DQ/);
    const pinned: TrtBuildRequest = { ...base, onnx: "/art/model.fp16.onnx", stronglyTyped: true };
    expect(() => buildTrtexecArgs("10", pinned)).toThrow(UsageError);
    expect(() => buildTrtexecArgs("10", pinned)).toThrow(/cannot pin \/embeddings\/position_ids\/MatMul/);
  });

  it("never emits the flags 10.x removed (--workspace, --explicitBatch, --buildOnly)", () => {
    for (const precision of ["fp32", "fp16", "int8"] as const) {
      for (const stronglyTyped of [false, true]) {
        const onnx = precision === "int8" ? "/art/model.int8.qdq.onnx" : precision === "fp16" && stronglyTyped ? "/art/model.fp16.onnx" : base.onnx;
        const args = buildTrtexecArgs("10", { ...base, precision, onnx, stronglyTyped, fp32Layers: stronglyTyped ? undefined : base.fp32Layers });
        expect(args.filter((a) => /^--(workspace|explicitBatch|buildOnly)\b/.test(a))).toEqual([]);
        expect(args.filter((a) => a.startsWith("--memPoolSize="))).toEqual(["--memPoolSize=workspace:4096M"]);
      }
    }
  });
});
