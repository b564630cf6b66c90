import { basename } from "node:path";
import { UsageError } from "../errors.js";
import { trt86Args } from "./dialects/trt86.js";
import { trt10Args } from "./dialects/trt10.js";
import { trt11Args } from "./dialects/trt11.js";
import type { TrtFamily } from "./discover-trtexec.js";

/** The TensorRT version families whose trtexec flags differ (FACTS.md "TensorRT / trtexec"). */
export type { TrtFamily };
export const TRT_FAMILIES: readonly TrtFamily[] = ["8.6", "10", "11"];

/** [batch, sequence] of one optimisation-profile corner. */
export type BatchSeq = [number, number];

/** Everything `bge build` decides before it asks one dialect for trtexec's argument list. */
export interface TrtBuildRequest {
  /** The ONNX graph to build from: which one a request needs is `sourceGraphFor(family, req)`. */
  onnx: string;
  /** Where trtexec writes the engine (the caller renames it to its final name after success). */
  engine: string;
  precision: "fp32" | "fp16" | "int8";
  /** int8 only: explicit Q/DQ graph (default, the only path on 11) or implicit calibration from a cache. */
  int8Source?: "qdq" | "calib";
  /** int8 calib: the calibration cache `bge quantize` wrote. */
  calibCache?: string;
  /** One profile shared by every input: BGE's inputs are all [batch, sequence]. */
  shapes: { min: BatchSeq; opt: BatchSeq; max: BatchSeq };
  /** Input names in graph order: input_ids, attention_mask and, where the graph has it, token_type_ids. */
  inputs: string[];
  timingCache?: string;
  workspaceMiB?: number;
  /** --builderOptimizationLevel, 0..5 (exists from 8.6). */
  optLevel?: number;
  /** 10.x: take precision from the graph's own types (--stronglyTyped). Always so on 11; absent on 8.6. */
  stronglyTyped?: boolean;
  /**
   * Layers whose precision must stay FP32 when the builder is free to lower them (8.6/10 with --fp16):
   * decomposed LayerNorm, and the XLM-R position-id MatMul whose counts past 2048 are not exact in FP16.
   * Under strong typing the graph's types decide, so asking for pins there is an error.
   */
  fp32Layers?: string[];
}

/** The artifact graph a request reads (README "INT8 (bge quantize)": the artifact's file names). */
export type SourceGraph = "model.fp32.onnx" | "model.fp16.onnx" | "model.int8.qdq.onnx";
const SOURCE_GRAPHS: readonly string[] = ["model.fp32.onnx", "model.fp16.onnx", "model.int8.qdq.onnx"];

/**
 * Which graph the request must be built from. Precision flags exist only where the builder chooses
 * precision (8.6/10 weakly typed); under strong typing (10 with --stronglyTyped, always on 11) the
 * graph's types are the precision, so fp16 needs the fp16 graph and int8 the Q/DQ graph.
 */
export function sourceGraphFor(family: TrtFamily, req: Pick<TrtBuildRequest, "precision" | "int8Source" | "stronglyTyped">): SourceGraph {
  if (req.precision === "int8") return (req.int8Source ?? "qdq") === "qdq" ? "model.int8.qdq.onnx" : "model.fp32.onnx";
  if (req.precision === "fp16" && (family === "11" || req.stronglyTyped === true)) return "model.fp16.onnx";
  return "model.fp32.onnx";
}

/** trtexec's argument list (never a shell string) for building `req` with a trtexec of `family`. */
export function buildTrtexecArgs(family: TrtFamily, req: TrtBuildRequest): string[] {
  validateCommon(family, req);
  const common = commonArgs(req);
  switch (family) {
    case "8.6":
      return trt86Args(req, common);
    case "10":
      return trt10Args(req, common);
    case "11":
      return trt11Args(req, common);
    default:
      throw new UsageError(`unknown TensorRT family ${JSON.stringify(family)}: expected one of ${TRT_FAMILIES.join(", ")}`);
  }
}

/** Checks every dialect needs, so that each dialect only decides flags. */
function validateCommon(family: TrtFamily, req: TrtBuildRequest): void {
  if (!req.onnx) throw new UsageError("build: no ONNX graph given");
  if (!req.engine) throw new UsageError("build: no engine path given");
  if (!["fp32", "fp16", "int8"].includes(req.precision)) throw new UsageError(`build: unknown precision ${JSON.stringify(req.precision)} (fp32, fp16, int8)`);
  if (req.int8Source !== undefined && req.precision !== "int8") throw new UsageError(`build: int8Source is for --precision int8, not ${req.precision}`);
  if (req.int8Source === "calib" && !req.calibCache) throw new UsageError("build: INT8 by calibration needs the calibration cache `bge quantize` writes (calibration.cache)");
  if (req.calibCache !== undefined && req.int8Source !== "calib") throw new UsageError("build: a calibration cache is only used with int8Source calib");
  // A known artifact graph name that is not the one this request reads is a wiring mistake that would
  // otherwise build an engine of the wrong precision under the right name (e.g. fp32 graph on 11 as "fp16").
  const name = basename(req.onnx);
  const wanted = sourceGraphFor(family, req);
  if (SOURCE_GRAPHS.includes(name) && name !== wanted) {
    throw new UsageError(`build: ${req.precision}${req.int8Source ? ` (${req.int8Source})` : ""} on TensorRT ${family}${req.stronglyTyped ? " strongly typed" : ""} is built from ${wanted}, not ${name}`);
  }
  if (req.inputs.length === 0) throw new UsageError("build: the graph's input names are needed for the shape profile");
  for (const input of req.inputs) checkName("input", input);
  const { min, opt, max } = req.shapes;
  for (const [corner, bs] of [["min", min], ["opt", opt], ["max", max]] as const) {
    if (bs.length !== 2 || !bs.every((n) => Number.isInteger(n) && n >= 1)) throw new UsageError(`build: ${corner} shape ${JSON.stringify(bs)} must be two positive integers BxS`);
  }
  for (const i of [0, 1]) {
    if (!(min[i]! <= opt[i]! && opt[i]! <= max[i]!)) throw new UsageError(`build: shapes must satisfy min <= opt <= max, got ${fmt(min)} / ${fmt(opt)} / ${fmt(max)}`);
  }
  if (req.workspaceMiB !== undefined && !(Number.isInteger(req.workspaceMiB) && req.workspaceMiB >= 1)) throw new UsageError(`build: --workspace ${req.workspaceMiB} must be a positive whole number of MiB`);
  if (req.optLevel !== undefined && !(Number.isInteger(req.optLevel) && req.optLevel >= 0 && req.optLevel <= 5)) throw new UsageError(`build: --opt-level ${req.optLevel} must be 0..5`);
  for (const layer of req.fp32Layers ?? []) checkName("layer", layer);
}

/**
 * trtexec splits shape and precision lists on "," and strips single quotes from names, so a name
 * holding either would silently address some other tensor or layer.
 */
function checkName(kind: string, name: string): void {
  if (!name || /[,']/.test(name)) throw new UsageError(`build: ${kind} name ${JSON.stringify(name)} cannot be passed to trtexec (empty, or holds "," or "'")`);
}

const fmt = (bs: BatchSeq) => `${bs[0]}x${bs[1]}`;

/**
 * The pieces spelled alike in every family, handed to the dialect so that dialects import nothing
 * but types from here (no import cycle); each dialect decides whether and where to use them.
 */
export interface CommonArgs {
  /** --onnx, --saveEngine */
  io: string[];
  /** --minShapes/--optShapes/--maxShapes over every input */
  shapes: string[];
  /** --precisionConstraints=obey --layerPrecisions=...:fp32 (empty when nothing is pinned) */
  fp32Pins: string[];
  /** --timingCacheFile, --builderOptimizationLevel where requested */
  tuning: string[];
}

function commonArgs(req: TrtBuildRequest): CommonArgs {
  return { io: [`--onnx=${req.onnx}`, `--saveEngine=${req.engine}`], shapes: shapeArgs(req), fp32Pins: fp32PinArgs(req), tuning: timingAndLevelArgs(req) };
}

/** `--minShapes=input_ids:1x1,attention_mask:1x1,...` and its opt/max siblings: every input, one profile. */
function shapeArgs(req: TrtBuildRequest): string[] {
  const spec = (bs: BatchSeq) => req.inputs.map((name) => `${name}:${fmt(bs)}`).join(",");
  return [`--minShapes=${spec(req.shapes.min)}`, `--optShapes=${spec(req.shapes.opt)}`, `--maxShapes=${spec(req.shapes.max)}`];
}

/** `--precisionConstraints=obey --layerPrecisions=a:fp32,b:fp32`, or nothing when no layer is pinned. */
function fp32PinArgs(req: TrtBuildRequest): string[] {
  const layers = req.fp32Layers ?? [];
  if (layers.length === 0) return [];
  // "obey", not "prefer": with "prefer" TensorRT may still run a pinned layer in FP16 when it has no
  // FP32 kernel it likes, which is exactly the silent precision loss the pin exists to prevent.
  return ["--precisionConstraints=obey", `--layerPrecisions=${layers.map((l) => `${l}:fp32`).join(",")}`];
}

/** Optional flags spelled alike in every family that has them. */
function timingAndLevelArgs(req: TrtBuildRequest): string[] {
  const out: string[] = [];
  if (req.timingCache) out.push(`--timingCacheFile=${req.timingCache}`);
  if (req.optLevel !== undefined) out.push(`--builderOptimizationLevel=${req.optLevel}`);
  return out;
}
