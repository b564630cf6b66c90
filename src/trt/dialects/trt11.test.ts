import { describe, expect, it } from "vitest";
import { UsageError } from "../../errors.js";
import { buildTrtexecArgs, type TrtBuildRequest } from "../build-args.js";

const base: TrtBuildRequest = {
  onnx: "/art/model.fp16.onnx",
  engine: "/art/trt-fp16/model.engine.partial",
  precision: "fp16",
  shapes: { min: [1, 1], opt: [8, 128], max: [32, 512] },
  inputs: ["input_ids", "attention_mask", "token_type_ids"],
  timingCache: "/art/timing.cache",
  workspaceMiB: 4096,
  optLevel: 3,
};
const SHAPES = [
  "--minShapes=input_ids:1x1,attention_mask:1x1,token_type_ids:1x1",
  "--optShapes=input_ids:8x128,attention_mask:8x128,token_type_ids:8x128",
  "--maxShapes=input_ids:32x512,attention_mask:32x512,token_type_ids:32x512",
];
const TAIL = ["--noTF32", "--memPoolSize=workspace:4096M", "--timingCacheFile=/art/timing.cache", "--builderOptimizationLevel=3", "--skipInference"];
/** Removed in 11.x (FACTS.md; the 11.0.0 fixture shows each failing as "Unknown option"). */
const REMOVED_11 = /^--(fp16|int8|best|calib|precisionConstraints|layerPrecisions|workspace|explicitBatch|buildOnly)\b/;

describe("TensorRT 11.x dialect: exact argv", () => {
  it("fp16: the fp16 graph and no precision flag at all", () => {
    expect(buildTrtexecArgs("11", base)).toEqual(["--onnx=/art/model.fp16.onnx", "--saveEngine=/art/trt-fp16/model.engine.partial", ...SHAPES, ...TAIL]);
  });

  it("int8: the Q/DQ graph and no precision flag at all", () => {
    expect(buildTrtexecArgs("11", { ...base, precision: "int8", onnx: "/art/model.int8.qdq.onnx", engine: "/art/trt-int8/model.engine.partial" })).toEqual([
      "--onnx=/art/model.int8.qdq.onnx",
      "--saveEngine=/art/trt-int8/model.engine.partial",
      ...SHAPES,
      ...TAIL,
    ]);
  });

  it("fp32: the fp32 graph with --noTF32 only", () => {
    expect(buildTrtexecArgs("11", { ...base, precision: "fp32", onnx: "/art/model.fp32.onnx", engine: "/art/trt-fp32/model.engine.partial", timingCache: undefined, optLevel: undefined, workspaceMiB: undefined })).toEqual([
      "--onnx=/art/model.fp32.onnx",
      "--saveEngine=/art/trt-fp32/model.engine.partial",
      ...SHAPES,
      "--noTF32",
      "--skipInference",
    ]);
  });

  it("int8 by calibration is refused, naming the removal and the Q/DQ graph", () => {
    const req: TrtBuildRequest = { ...base, precision: "int8", int8Source: "calib", calibCache: "/art/calibration.cache", onnx: "/art/model.fp32.onnx" };
    expect(() => buildTrtexecArgs("11", req)).toThrow(UsageError);
    expect(() => buildTrtexecArgs("11", req)).toThrow(/TensorRT 11 removed implicit INT8 calibration \(--int8, --calib\).*model\.int8\.qdq\.onnx/);
  });

  it("fp16 from the fp32 graph is refused (it would build an FP32 engine named fp16)", () => {
    expect(() => buildTrtexecArgs("11", { ...base, onnx: "/art/model.fp32.onnx" })).toThrow(/built from model\.fp16\.onnx, not model\.fp32\.onnx/);
  });

  it("FP32 pins and weak typing are refused: the graph's types decide", () => {
    expect(() => buildTrtexecArgs("11", { ...base, fp32Layers: ["/embeddings/position_ids/MatMul"] })).toThrow(/--layerPrecisions is removed/);
    expect(() => buildTrtexecArgs("11", { ...base, stronglyTyped: false })).toThrow(/always strongly typed/);
  });

  it("never emits a flag 11.x removed, for any precision", () => {
    const graphs = { fp32: "/art/model.fp32.onnx", fp16: "/art/model.fp16.onnx", int8: "/art/model.int8.qdq.onnx" } as const;
    for (const precision of ["fp32", "fp16", "int8"] as const) {
      const args = buildTrtexecArgs("11", { ...base, precision, onnx: graphs[precision], stronglyTyped: true });
      expect(args.filter((a) => REMOVED_11.test(a))).toEqual([]);
      expect(args).not.toContain("--stronglyTyped");
    }
  });
});
