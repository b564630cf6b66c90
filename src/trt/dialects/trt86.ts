import { UsageError } from "../../errors.js";
import type { CommonArgs, TrtBuildRequest } from "../build-args.js";

/**
 * trtexec of TensorRT 8.6: weakly typed, so precision is asked for with builder flags.
 * - No --stronglyTyped (it arrives in 10.0).
 * - Memory: `--memPoolSize=workspace:<N>` with a bare number, which 8.6 reads as MiB. `--workspace` still
 *   parses but is deprecated since 8.4; a unit suffix is not needed (10.x reads suffixes differently).
 * - --skipInference (8.6's name; --buildOnly is the deprecated alias 10.0 removes): the build is a build,
 *   timing comes from a separate --loadEngine run.
 */
export function trt86Args(req: TrtBuildRequest, common: CommonArgs): string[] {
  if (req.stronglyTyped) throw new UsageError("build: TensorRT 8.6 has no strongly typed mode (--stronglyTyped arrives in 10.0); build fp16 from the fp32 graph with --fp16");
  return [...common.io, ...common.shapes, ...weaklyTypedPrecisionArgs(req, common), ...(req.workspaceMiB !== undefined ? [`--memPoolSize=workspace:${req.workspaceMiB}`] : []), ...common.tuning, "--skipInference"];
}

/**
 * The precision flags 8.6 and weakly typed 10.x share.
 * - fp32: --noTF32, or Ampere+ runs FP32 MatMuls in TF32 (10-bit mantissa) and the engine is not FP32.
 * - fp16: --fp16, plus the FP32 pins. --noTF32 comes with any pin: a layer pinned to FP32 would
 *   otherwise still run in TF32, whose mantissa is no wider than FP16's (the position-id counts).
 * - int8 (Q/DQ or calibration cache): --int8 with --fp16, as NVIDIA advises for BERT, so the layers the
 *   Q/DQ graph leaves unquantised (LayerNorm, Softmax, GELU) may run in FP16 rather than FP32; the pins
 *   keep what must stay exact. The calibration path reads the cache `bge quantize` wrote (--calib).
 */
export function weaklyTypedPrecisionArgs(req: TrtBuildRequest, common: CommonArgs): string[] {
  const pins = common.fp32Pins.length ? [...common.fp32Pins, "--noTF32"] : [];
  switch (req.precision) {
    case "fp32":
      // Nothing can lower precision, so pins would only restate the default.
      return ["--noTF32"];
    case "fp16":
      return ["--fp16", ...pins];
    case "int8":
      return ["--int8", "--fp16", ...((req.int8Source ?? "qdq") === "calib" ? [`--calib=${req.calibCache}`] : []), ...pins];
  }
}
