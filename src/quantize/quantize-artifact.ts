import { rm } from "node:fs/promises";
import { join } from "node:path";
import { writeArtifactFolder } from "../artifacts/artifact-writer.js";
import {
  describeFile,
  ONNX_ROLES,
  verifyManifestFiles,
  type ArtifactFile,
  type BuiltBy,
  type Manifest,
  type QuantizationRecord,
} from "../artifacts/manifest.js";
import { UsageError } from "../errors.js";
import { writeFileAtomic } from "../util/atomic.js";
import { writeCalibrationCache } from "./calib-cache.js";
import { calibrate, type CalibrationMethod, type CalibrationResult } from "./calibrate.js";
import { writeDynamicInt8Model, type DynamicActivations } from "./dynamic-graph.js";
import { naiveActivationTensors, writeQdqModel } from "./qdq-graph.js";
import type { QuantTarget } from "./targets.js";
import { zeroedShare } from "./int8-resolution.js";
import { readOnnxModel } from "./onnx-model-io.js";
import { smoothingPlan, weightReader, writeSmoothedModel, type SmoothedInput, type SmoothSetting } from "./smooth.js";
import type { TokenLayout } from "./token-runs.js";

export type Int8Precision = "int8" | "int8-qdq";
export const INT8_PRECISIONS: readonly Int8Precision[] = ["int8-qdq", "int8"];
export const CALIBRATION_CACHE_NAME = "calibration.cache";

export interface QuantizeArtifactOptions {
  artifactDir: string;
  /** The calibration corpus, already read and decoded, with the sha256 of its file. */
  texts: readonly string[];
  corpusSha256: string;
  method: CalibrationMethod;
  /** @default 99.99 (percentile only) */
  percentile?: number;
  /** @default ["int8-qdq", "int8"] */
  precisions?: readonly Int8Precision[];
  /** Encoder layer indices (`3`) or node places (`/encoder/layer.3/output/dense`) to leave in float. */
  exclude?: readonly string[];
  /** TensorRT version written into the calibration cache header (8.6/10 implicit INT8). @default "8.6.1" */
  trtVersion?: string;
  /**
   * Keep in float the layers whose input INT8 cannot represent: more than AUTO_EXCLUDE_SHARE of its
   * values would round to zero (outlier units set the range). @default true
   */
  autoExclude?: boolean;
  /**
   * SmoothQuant before INT8 (smooth.ts): `auto` smooths, with α = 0.5, the linear inputs that have
   * outlier channels (none on a model without them: the graphs are then what `off` writes); a number
   * is α for every linear input. Not applied to the naive graph, nor to the calibration cache (TensorRT's
   * implicit INT8 builds from model.fp32.onnx as it is). @default "auto"
   */
  smooth?: SmoothSetting;
  /**
   * How model.int8.onnx quantises activations (dynamic-graph.ts): the calibrated ranges by default,
   * the fastest form and as batch-independent as per token. @default "static"
   */
  activations?: DynamicActivations;
  /** Test-only: the careless INT8 (per-tensor everything, LayerNorm and Softmax included) the gate must refuse. */
  naive?: boolean;
  batchSize?: number;
  builtBy: BuiltBy;
  onProgress?: (done: number, total: number) => void;
  onStage?: (message: string) => void;
  onWarn?: (message: string) => void;
}

/** The manifest's quantization entry of bge quantize's files: QuantizationRecord and how INT8 was shaped. */
export interface Int8QuantizationRecord extends QuantizationRecord {
  /** model.int8.onnx's run-time activation quantisation. */
  activations: DynamicActivations;
  /** SmoothQuant as asked (`auto`, `off`, or α) and the linear inputs it smoothed, with their channel spread before. */
  smoothing: { setting: SmoothSetting; inputs: { place: string; alpha: number; spread: number; smoothed_spread: number }[] };
}

export interface QuantizeArtifactResult {
  manifest: Manifest;
  /** The calibration the INT8 graphs were written from (of the smoothed graph, where smoothing applied). */
  calibration: CalibrationResult;
  /** Linear inputs smoothed before INT8. */
  smoothed: SmoothedInput[];
  written: ArtifactFile[];
  excluded: QuantTarget[];
}

/** `--exclude` entries as a predicate over targets; an entry that matches nothing is a usage error. */
export function excludeMatcher(entries: readonly string[], targets: readonly QuantTarget[]): (t: QuantTarget) => boolean {
  const tests = entries.map((e) => {
    const test = /^[0-9]+$/.test(e) ? (t: QuantTarget) => t.layer === Number(e) : (t: QuantTarget) => t.node === e || t.node.startsWith(e.endsWith("/") ? e : `${e}/`);
    if (!targets.some(test)) {
      const layers = Math.max(...targets.map((t) => t.layer)) + 1;
      throw new UsageError(`--exclude ${e}: matches no quantised layer (give an encoder layer index 0–${layers - 1}, or a node place such as ${targets[0]?.node.replace(/\/(Gemm|MatMul(_1)?)$/, "") ?? "/encoder/layer.0/output/dense"})`);
    }
    return test;
  });
  return (t) => tests.some((test) => test(t));
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : 0;
}

/**
 * `bge quantize`: calibrates the artifact's fp32 graph on a corpus, then writes into the same
 * artifact folder (locked, staged, committed with the manifest) the Q/DQ graph for TensorRT, the
 * integer-MatMul graph for ONNX Runtime CPU and a TensorRT calibration cache, each recorded with how
 * it was calibrated.
 */
export async function quantizeArtifact(options: QuantizeArtifactOptions): Promise<QuantizeArtifactResult> {
  const precisions = options.precisions ?? INT8_PRECISIONS;
  const dir = options.artifactDir;
  let calibration: CalibrationResult | undefined;
  let excluded: QuantTarget[] = [];
  let smoothed: SmoothedInput[] = [];
  const written: ArtifactFile[] = [];
  const smooth = options.naive ? "off" : (options.smooth ?? "auto");
  const activations = options.activations ?? "static";
  const manifest = await writeArtifactFolder(dir, { command: "quantize", warn: options.onWarn }, async ({ staging, previous }) => {
    if (!previous) throw new UsageError(`${dir}: not an artifact folder (no manifest.json); make one with bge export, then quantize it`);
    const fp32 = previous.files.find((f) => f.role === ONNX_ROLES.fp32);
    if (!fp32) throw new UsageError(`${dir} has no fp32 model to calibrate (it has: ${previous.files.filter((f) => f.role.startsWith("onnx-")).map((f) => f.path).join(", ") || "none"}); export with --precision fp32`);
    const needed = new Set([fp32.path, fp32.external_data, ...previous.files.filter((f) => f.role === "tokenizer" || f.role === "config").map((f) => f.path)]);
    await verifyManifestFiles(dir, previous, (f) => needed.has(f.path));
    const fp32Path = join(dir, fp32.path);

    options.onStage?.(`calibrating ${fp32.path} on ${options.texts.length} texts (${options.method}${options.method === "percentile" ? ` ${options.percentile ?? 99.99}` : ""}) …`);
    const calibrateOn = async (modelPath: string, channelAbsMax: boolean) =>
      calibrate({
        modelPath,
        artifactDir: dir,
        texts: options.texts,
        method: options.method,
        percentile: options.percentile,
        batchSize: options.batchSize,
        onProgress: options.onProgress,
        channelAbsMax,
        ...(options.naive ? { extraTensors: await naiveExtraTensors(modelPath) } : {}),
      });
    // The fp32 graph's own statistics: the calibration cache is keyed to its tensors, and SmoothQuant
    // finds the outlier channels in them.
    const original = await calibrateOn(fp32Path, smooth !== "off");
    const asked = excludeMatcher(options.exclude ?? [], original.targets);
    smoothed = await smoothingPlan({
      setting: smooth,
      targets: original.targets,
      channelAbsMax: (x) => original.statistics.get(x)?.channelAbsMax,
      weight: weightReader(await readOnnxModel(fp32Path)),
    });
    // INT8 is written from the smoothed graph and calibrated on it (its quantised tensors are x/s).
    let source = fp32Path;
    let cal = original;
    if (smoothed.length) {
      source = join(staging, ".smoothed.fp32.onnx");
      options.onStage?.(`smoothing ${smoothed.length} linear input(s) with outlier channels (SmoothQuant α ${smoothed[0]!.alpha}) and calibrating the smoothed graph …`);
      await writeSmoothedModel(fp32Path, source, smoothed);
      const again = await calibrateOn(source, false);
      cal = { ...again, summary: { ...again.summary, seconds: original.summary.seconds + again.summary.seconds, runs: original.summary.runs + again.summary.runs } };
    }
    calibration = cal;
    try {
      const amax = new Map([...cal.tensors].map(([name, t]) => [name, t.amax]));
      // The careless graph is careless by definition: nothing is rescued for it.
      const auto = options.autoExclude === false || options.naive ? [] : unrepresentable(cal);
      const smoothedNodes = new Set(smoothed.flatMap((p) => p.nodes));
      for (const a of auto) {
        if (!asked(a.target)) options.onWarn?.(`${a.target.node.replace(/\/(Gemm|MatMul(_1)?)$/, "")} stays in float: INT8 would round ${(a.share * 100).toFixed(1)}% of its input to zero (a few outlier units set the range${smoothedNodes.has(a.target.node) ? " even after smoothing" : ""}; --no-auto-exclude to quantise it anyway)`);
      }
      const autoNodes = new Set(auto.map((a) => a.target.node));
      const isExcluded = (t: QuantTarget) => asked(t) || autoNodes.has(t.node);
      excluded = cal.targets.filter(isExcluded);
      const quantized = cal.targets.filter((t) => !isExcluded(t));
      const quantizedAmax = quantized.flatMap((t) => t.activations.map((a) => amax.get(a) ?? 0));
      const record: Int8QuantizationRecord = {
        method: options.method,
        ...(options.method === "percentile" ? { percentile: options.percentile ?? 99.99 } : {}),
        corpus_sha256: options.corpusSha256,
        texts: cal.summary.texts,
        tokens: cal.summary.tokens,
        excluded: excluded.map((t) => t.node),
        auto_excluded: auto.map((a) => ({ node: a.target.node, zeroed_share: Number(a.share.toFixed(4)) })),
        tensors: cal.tensors.size,
        amax: { min: Math.min(...quantizedAmax), median: median(quantizedAmax), max: Math.max(...quantizedAmax) },
        calibration_seconds: Number(cal.summary.seconds.toFixed(3)),
        activations,
        smoothing: { setting: smooth, inputs: smoothed.map((p) => ({ place: p.place, alpha: p.alpha, spread: Number(p.spread.toPrecision(4)), smoothed_spread: Number(p.smoothedSpread.toPrecision(4)) })) },
      };
      const built = { ...options.builtBy };
      const put = async (name: string, role: ArtifactFile["role"]) => {
        const f = await describeFile(staging, name, role, { built_by: built, quantization: record });
        written.push(f);
      };
      if (precisions.includes("int8-qdq")) {
        const name = "model.int8.qdq.onnx";
        options.onStage?.(`writing ${name} (Q/DQ, for TensorRT)`);
        await writeQdqModel(source, join(staging, name), { activationAmax: amax, exclude: isExcluded, naive: options.naive });
        await put(name, ONNX_ROLES["int8-qdq"]);
      }
      if (precisions.includes("int8")) {
        const name = "model.int8.onnx";
        options.onStage?.(`writing ${name} (integer MatMul, ${activations} activations, for ONNX Runtime CPU)`);
        await writeDynamicInt8Model(source, join(staging, name), { exclude: isExcluded, activations, ...(activations === "static" ? { activationAmax: amax } : {}) });
        await put(name, ONNX_ROLES.int8);
      }
      // TensorRT 8.6/10's implicit INT8 path reads scales keyed to the fp32 graph's tensor names.
      const quantizedNodes = new Set(quantized.map((t) => t.node));
      const originalAmax = new Map([...original.tensors].map(([name, t]) => [name, t.amax]));
      const cacheAmax = new Map(original.targets.filter((t) => quantizedNodes.has(t.node)).flatMap((t) => t.activations.map((a) => [a, originalAmax.get(a)!] as const)));
      await writeFileAtomic(join(staging, CALIBRATION_CACHE_NAME), writeCalibrationCache(cacheAmax, { trtVersion: options.trtVersion ?? "8.6.1", method: options.method }));
      await put(CALIBRATION_CACHE_NAME, "calib-cache");
    } finally {
      if (source !== fp32Path) await Promise.all([rm(source, { force: true }), rm(`${source}.data`, { force: true })]);
    }

    const rewritten = new Set(written.map((f) => f.path));
    return {
      ...previous,
      files: [...previous.files.filter((f) => !rewritten.has(f.path)), ...written],
      parity: Object.fromEntries(Object.entries(previous.parity).filter(([p]) => !rewritten.has(p))),
    };
  });
  return { manifest, calibration: calibration!, smoothed, written, excluded };
}

/** Share of a target's input values INT8 may round to zero before the layer is kept in float. */
export const AUTO_EXCLUDE_SHARE = 0.5;

/** Targets with an input that INT8 at its calibrated amax would mostly round to zero. */
function unrepresentable(cal: CalibrationResult): { target: QuantTarget; share: number }[] {
  const out: { target: QuantTarget; share: number }[] = [];
  for (const target of cal.targets) {
    const share = Math.max(...target.activations.map((a) => {
      const s = cal.statistics.get(a);
      const t = cal.tensors.get(a);
      return s && t ? zeroedShare(s.histogram, t.amax) : 0;
    }));
    if (share > AUTO_EXCLUDE_SHARE) out.push({ target, share });
  }
  return out;
}

/** The naive graph's extra tensors (LayerNorm inputs/outputs: token rows; Softmax inputs: [B, heads, S, S]). */
async function naiveExtraTensors(fp32Path: string): Promise<{ name: string; layout: TokenLayout }[]> {
  const file = await readOnnxModel(fp32Path);
  const softmaxInputs = new Set((file.graph.node ?? []).filter((n) => n.opType === "Softmax").map((n) => n.input?.[0]));
  return naiveActivationTensors(file.graph).map((name) => ({ name, layout: softmaxInputs.has(name) ? { kind: "rank4", axis2: true, axis3: true } : { kind: "rows" } }));
}
