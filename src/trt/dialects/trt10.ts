import { UsageError } from "../../errors.js";
import type { CommonArgs, TrtBuildRequest } from "../build-args.js";
import { weaklyTypedPrecisionArgs } from "./trt86.js";

/**
 * trtexec of TensorRT 10.x: 8.6's precision flags still exist (weak typing is deprecated, not gone),
 * and --stronglyTyped takes precision from the graph instead.
 * - --workspace, --explicitBatch and --buildOnly are removed: an unknown option fails the run.
 * - Memory: `--memPoolSize=workspace:<N>M`. 10.x reads the last character as the unit (B, K, M, G), so
 *   the `1024MiB` spelling 8.6 accepted means 1024 *bytes* here (trt-10.14.1 fixture: "workspace:
 *   0.000976562 MiB"); a bare number would mean MiB, the explicit M leaves no doubt.
 * - Strongly typed: no --fp16/--int8/--precisionConstraints/--layerPrecisions (the builder refuses them
 *   with --stronglyTyped); --noTF32 is a math mode, not a type, and stays so the graph's FP32 islands
 *   (LayerNorm, position ids) are FP32. INT8 there is the Q/DQ graph; a calibration cache cannot apply.
 */
export function trt10Args(req: TrtBuildRequest, common: CommonArgs): string[] {
  const memory = req.workspaceMiB !== undefined ? [`--memPoolSize=workspace:${req.workspaceMiB}M`] : [];
  return [...common.io, ...common.shapes, ...(req.stronglyTyped ? stronglyTypedArgs(req, "10") : weaklyTypedPrecisionArgs(req, common)), ...memory, ...common.tuning, "--skipInference"];
}

/** Precision args under strong typing (10.x with --stronglyTyped, 11.x always): only TF32 is left to say. */
export function stronglyTypedArgs(req: TrtBuildRequest, family: "10" | "11"): string[] {
  if ((req.int8Source ?? "qdq") === "calib" && req.precision === "int8") {
    throw new UsageError(
      family === "11"
        ? "build: TensorRT 11 removed implicit INT8 calibration (--int8, --calib): INT8 engines come only from the Q/DQ graph (model.int8.qdq.onnx, written by `bge quantize`)"
        : "build: a strongly typed build takes INT8 only from Q/DQ nodes; the calibration cache needs the weakly typed path (drop --stronglyTyped) or use the Q/DQ graph",
    );
  }
  if (req.fp32Layers?.length) {
    throw new UsageError(
      `build: TensorRT ${family === "11" ? "11" : "10 with --stronglyTyped"} takes every layer's precision from the graph's types; it cannot pin ${req.fp32Layers.join(", ")} to FP32 (--layerPrecisions${family === "11" ? " is removed" : " is refused there"}): the ${req.precision} graph must keep them float32 itself`,
    );
  }
  return family === "10" ? ["--stronglyTyped", "--noTF32"] : ["--noTF32"];
}
