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
import { writeDynamicInt8Model } from "./dynamic-graph.js";
import { naiveActivationTensors, writeQdqModel } from "./qdq-graph.js";
import type { QuantTarget } from "./targets.js";
import { zeroedShare } from "./int8-resolution.js";
import { readOnnxModel } from "./onnx-model-io.js";
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
  /** Test-only: the careless INT8 (per-tensor everything, LayerNorm and Softmax included) the gate must refuse. */
  naive?: boolean;
  batchSize?: number;
  builtBy: BuiltBy;
  onProgress?: (done: number, total: number) => void;
  onStage?: (message: string) => void;
  onWarn?: (message: string) => void;
}

export interface QuantizeArtifactResult {
  manifest: Manifest;
  calibration: CalibrationResult;
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
  const written: ArtifactFile[] = [];
  const manifest = await writeArtifactFolder(dir, { command: "quantize", warn: options.onWarn }, async ({ staging, previous }) => {
    if (!previous) throw new UsageError(`${dir}: not an artifact folder (no manifest.json); make one with bge export, then quantize it`);
    const fp32 = previous.files.find((f) => f.role === ONNX_ROLES.fp32);
    if (!fp32) throw new UsageError(`${dir} has no fp32 model to calibrate (it has: ${previous.files.filter((f) => f.role.startsWith("onnx-")).map((f) => f.path).join(", ") || "none"}); export with --precision fp32`);
    const needed = new Set([fp32.path, fp32.external_data, ...previous.files.filter((f) => f.role === "tokenizer" || f.role === "config").map((f) => f.path)]);
    await verifyManifestFiles(dir, previous, (f) => needed.has(f.path));
    const fp32Path = join(dir, fp32.path);

    options.onStage?.(`calibrating ${fp32.path} on ${options.texts.length} texts (${options.method}${options.method === "percentile" ? ` ${options.percentile ?? 99.99}` : ""}) …`);
    calibration = await calibrate({
      modelPath: fp32Path,
      artifactDir: dir,
      texts: options.texts,
      method: options.method,
      percentile: options.percentile,
      batchSize: options.batchSize,
      onProgress: options.onProgress,
      ...(options.naive ? { extraTensors: await naiveExtraTensors(fp32Path) } : {}),
    });
    const cal = calibration;
    const amax = new Map([...cal.tensors].map(([name, t]) => [name, t.amax]));
    const asked = excludeMatcher(options.exclude ?? [], cal.targets);
    // The careless graph is careless by definition: nothing is rescued for it.
    const auto = options.autoExclude === false || options.naive ? [] : unrepresentable(cal);
    for (const a of auto) {
      if (!asked(a.target)) options.onWarn?.(`${a.target.node.replace(/\/(Gemm|MatMul(_1)?)$/, "")} stays in float: INT8 would round ${(a.share * 100).toFixed(1)}% of its input to zero (a few outlier units set the range; --no-auto-exclude to quantise it anyway)`);
    }
    const autoNodes = new Set(auto.map((a) => a.target.node));
    const isExcluded = (t: QuantTarget) => asked(t) || autoNodes.has(t.node);
    excluded = cal.targets.filter(isExcluded);
    const quantized = cal.targets.filter((t) => !isExcluded(t));
    const quantizedAmax = quantized.flatMap((t) => t.activations.map((a) => amax.get(a) ?? 0));
    const record: QuantizationRecord = {
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
    };
    const built = { ...options.builtBy };
    const put = async (name: string, role: ArtifactFile["role"]) => {
      const f = await describeFile(staging, name, role, { built_by: built, quantization: record });
      written.push(f);
    };
    if (precisions.includes("int8-qdq")) {
      const name = "model.int8.qdq.onnx";
      options.onStage?.(`writing ${name} (Q/DQ, for TensorRT)`);
      await writeQdqModel(fp32Path, join(staging, name), { activationAmax: amax, exclude: isExcluded, naive: options.naive });
      await put(name, ONNX_ROLES["int8-qdq"]);
    }
    if (precisions.includes("int8")) {
      const name = "model.int8.onnx";
      options.onStage?.(`writing ${name} (integer MatMul, for ONNX Runtime CPU)`);
      await writeDynamicInt8Model(fp32Path, join(staging, name), { exclude: isExcluded });
      await put(name, ONNX_ROLES.int8);
    }
    // TensorRT 8.6/10's implicit INT8 path reads scales keyed to the fp32 graph's tensor names.
    const cacheAmax = new Map(quantized.flatMap((t) => t.activations.map((a) => [a, amax.get(a)!] as const)));
    await writeFileAtomic(join(staging, CALIBRATION_CACHE_NAME), writeCalibrationCache(cacheAmax, { trtVersion: options.trtVersion ?? "8.6.1", method: options.method }));
    await put(CALIBRATION_CACHE_NAME, "calib-cache");

    const rewritten = new Set(written.map((f) => f.path));
    return {
      ...previous,
      files: [...previous.files.filter((f) => !rewritten.has(f.path)), ...written],
      parity: Object.fromEntries(Object.entries(previous.parity).filter(([p]) => !rewritten.has(p))),
    };
  });
  return { manifest, calibration: calibration!, written, excluded };
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
