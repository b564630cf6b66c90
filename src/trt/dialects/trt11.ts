import { UsageError } from "../../errors.js";
import type { CommonArgs, TrtBuildRequest } from "../build-args.js";
import { stronglyTypedArgs } from "./trt10.js";

/**
 * trtexec of TensorRT 11.x: every network is strongly typed. --fp16, --int8, --best, --calib,
 * --precisionConstraints and --layerPrecisions are removed (the 11.0.0 fixture: "Unknown option",
 * FAILED), so precision is the graph: fp16 from model.fp16.onnx, INT8 only from the Q/DQ graph.
 * --stronglyTyped still parses but is the default, so it is not emitted. --noTF32 stays: TF32 is a
 * math mode (BuilderFlag::kTF32 is not among the flags NVIDIA's 10→11 migration guide removes), and
 * without it Ampere+ runs the graph's FP32 MatMuls in TF32.
 * Memory spelling as 10.x (`workspace:<N>M`, last character is the unit).
 */
export function trt11Args(req: TrtBuildRequest, common: CommonArgs): string[] {
  if (req.stronglyTyped === false) throw new UsageError("build: TensorRT 11 is always strongly typed (weak typing was removed); precision comes from the graph");
  const memory = req.workspaceMiB !== undefined ? [`--memPoolSize=workspace:${req.workspaceMiB}M`] : [];
  return [...common.io, ...common.shapes, ...stronglyTypedArgs(req, "11"), ...memory, ...common.tuning, "--skipInference"];
}
