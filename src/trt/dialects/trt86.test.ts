import { describe, expect, it } from "vitest";
import { UsageError } from "../../errors.js";
import { buildTrtexecArgs, type TrtBuildRequest } from "../build-args.js";

/** An XLM-R-shaped request: three inputs, the position-id MatMul pinned, every optional knob set. */
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

describe("TensorRT 8.6 dialect: exact argv", () => {
  it("fp16 from the fp32 graph: --fp16 with the position-id MatMul pinned to FP32 (obey) and TF32 off", () => {
    expect(buildTrtexecArgs("8.6", base)).toEqual([
      "--onnx=/art/model.fp32.onnx",
      "--saveEngine=/art/trt-fp16/model.engine.partial",
      ...SHAPES,
      "--fp16",
      "--precisionConstraints=obey",
      "--layerPrecisions=/embeddings/position_ids/MatMul:fp32",
      "--noTF32",
      "--memPoolSize=workspace:4096",
      "--timingCacheFile=/art/timing.cache",
      "--builderOptimizationLevel=3",
      "--skipInference",
    ]);
  });

  it("fp16 with no pins and no optional knobs: the minimal list, two inputs", () => {
    const req: TrtBuildRequest = { onnx: "m.onnx", engine: "e.plan", precision: "fp16", shapes: { min: [1, 1], opt: [4, 64], max: [16, 256] }, inputs: ["input_ids", "attention_mask"] };
    expect(buildTrtexecArgs("8.6", req)).toEqual([
      "--onnx=m.onnx",
      "--saveEngine=e.plan",
      "--minShapes=input_ids:1x1,attention_mask:1x1",
      "--optShapes=input_ids:4x64,attention_mask:4x64",
      "--maxShapes=input_ids:16x256,attention_mask:16x256",
      "--fp16",
      "--skipInference",
    ]);
  });

  it("fp32: --noTF32 and no pins (nothing can lower precision)", () => {
    expect(buildTrtexecArgs("8.6", { ...base, precision: "fp32", engine: "/art/trt-fp32/model.engine.partial" })).toEqual([
      "--onnx=/art/model.fp32.onnx",
      "--saveEngine=/art/trt-fp32/model.engine.partial",
      ...SHAPES,
      "--noTF32",
      "--memPoolSize=workspace:4096",
      "--timingCacheFile=/art/timing.cache",
      "--builderOptimizationLevel=3",
      "--skipInference",
    ]);
  });

  it("int8 from the Q/DQ graph: --int8 --fp16 with the pins", () => {
    expect(buildTrtexecArgs("8.6", { ...base, precision: "int8", int8Source: "qdq", onnx: "/art/model.int8.qdq.onnx", engine: "/art/trt-int8/model.engine.partial" })).toEqual([
      "--onnx=/art/model.int8.qdq.onnx",
      "--saveEngine=/art/trt-int8/model.engine.partial",
      ...SHAPES,
      "--int8",
      "--fp16",
      "--precisionConstraints=obey",
      "--layerPrecisions=/embeddings/position_ids/MatMul:fp32",
      "--noTF32",
      "--memPoolSize=workspace:4096",
      "--timingCacheFile=/art/timing.cache",
      "--builderOptimizationLevel=3",
      "--skipInference",
    ]);
  });

  it("int8 by calibration cache: the fp32 graph, --int8 --fp16 --calib=<cache>", () => {
    const req: TrtBuildRequest = { ...base, precision: "int8", int8Source: "calib", calibCache: "/art/calibration.cache", engine: "/art/trt-int8/model.engine.partial", fp32Layers: ["/embeddings/position_ids/MatMul", "/encoder/layer.0/output/LayerNorm"] };
    expect(buildTrtexecArgs("8.6", req)).toEqual([
      "--onnx=/art/model.fp32.onnx",
      "--saveEngine=/art/trt-int8/model.engine.partial",
      ...SHAPES,
      "--int8",
      "--fp16",
      "--calib=/art/calibration.cache",
      "--precisionConstraints=obey",
      "--layerPrecisions=/embeddings/position_ids/MatMul:fp32,/encoder/layer.0/output/LayerNorm:fp32",
      "--noTF32",
      "--memPoolSize=workspace:4096",
      "--timingCacheFile=/art/timing.cache",
      "--builderOptimizationLevel=3",
      "--skipInference",
    ]);
  });

  it("refuses --stronglyTyped, which 8.6 does not have", () => {
    expect(() => buildTrtexecArgs("8.6", { ...base, stronglyTyped: true, onnx: "/art/model.fp16.onnx" })).toThrow(UsageError);
    expect(() => buildTrtexecArgs("8.6", { ...base, stronglyTyped: true, onnx: "/art/model.fp16.onnx" })).toThrow(/8\.6 has no strongly typed mode/);
  });

  it("never emits a flag 10.x removed or 8.6 lacks", () => {
    for (const precision of ["fp32", "fp16", "int8"] as const) {
      const args = buildTrtexecArgs("8.6", { ...base, precision, onnx: precision === "int8" ? "/art/model.int8.qdq.onnx" : base.onnx });
      expect(args.filter((a) => /^--(workspace|explicitBatch|buildOnly|stronglyTyped)\b/.test(a))).toEqual([]);
    }
  });
});
