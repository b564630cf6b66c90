import { join, resolve } from "node:path";
import type { GoldenFile } from "../artifacts/golden.js";
import { ONNX_ROLES, type Manifest } from "../artifacts/manifest.js";
import { UsageError } from "../errors.js";
import { measureLayerDrift } from "../quantize/layer-drift.js";
import { loadEmbedder } from "../runners/load-embedder.js";
import { OnnxEmbedder } from "../runners/onnx-embedder.js";
import { backendName, executionProviders } from "../runners/ort.js";
import type { Diagnosis } from "./diagnose.js";
import { probeFp16Range } from "./fp16-range.js";
import { diagnoseInt8Layers } from "./int8-diagnosis.js";
import { resolveTolerance, type Tolerance } from "./tolerances.js";
import { refuseSettingsMismatch, verifyAgainstGolden, type VerifyReport } from "./verify.js";

export interface VerifyTargetOptions {
  /** An artifact folder (with `precision`) or an .onnx file. */
  path: string;
  precision?: string;
  /** The artifact's manifest, when `path` is an artifact folder. */
  manifest?: Manifest;
  golden: GoldenFile;
  goldenPath: string;
  /** What the user named, for messages. */
  candidateName: string;
  cliTolerance?: number;
  pipelineTolerances?: Record<string, Partial<Tolerance>>;
  batchSize: number;
  maxLength?: number;
  instruction?: string | null;
  modelId?: string;
  allowSettingsMismatch?: boolean;
  onInfo?: (message: string) => void;
  onProgress?: (done: number, total: number) => void;
}

/**
 * One candidate through the parity gate: the golden must be for its model, dimension and weights
 * (exit 2 otherwise), the settings must match the golden producer's (unless allowed), and the
 * tolerances are the precision's defaults, a pipeline's, or --tolerance's. FP16 candidates get the
 * range probe, INT8 ones the per-layer probe against the artifact's fp32 graph.
 */
export async function verifyTarget(options: VerifyTargetOptions): Promise<VerifyReport> {
  const { golden, manifest } = options;
  const { embedder, spec, target: loaded } = await loadEmbedder(options.path, {
    backend: "onnx",
    precision: options.precision,
    maxLength: options.maxLength,
    instruction: options.instruction,
  });
  try {
    if (!(embedder instanceof OnnxEmbedder)) throw new UsageError(`${options.candidateName}: verify needs an ONNX model or engine`);
    checkGoldenMatches(golden, options.goldenPath, options.candidateName, embedder.dimension, options.modelId ?? spec.id, manifest);
    if (!options.allowSettingsMismatch) refuseSettingsMismatch(golden, options.goldenPath, embedder.modelPath, embedder.spec);
    const { tolerance, notes } = resolveTolerance(embedder.precision, {
      cli: options.cliTolerance,
      pipeline: options.pipelineTolerances?.[embedder.precision],
      goldenUsesFp16: golden.producer.use_fp16,
    });
    options.onInfo?.(`verifying ${embedder.modelPath} (${embedder.precision}) against ${golden.items.length} golden items …`);
    return await verifyAgainstGolden(embedder, golden, {
      goldenPath: options.goldenPath,
      candidatePath: embedder.modelPath,
      candidateRole: loaded.role ?? null,
      allowSettingsMismatch: options.allowSettingsMismatch,
      tolerance,
      toleranceNotes: notes,
      batchSize: options.batchSize,
      backend: backendName(executionProviders()),
      onProgress: options.onProgress,
      probeFp16: embedder.precision === "fp16" ? (batches) => probeFp16Range(embedder.modelPath, batches.map((b) => embedder.feeds(b))) : undefined,
      probeInt8: int8Probe(manifest, options.path, loaded.role),
    });
  } finally {
    await embedder.deactivate();
  }
}

/**
 * For an INT8 model of an artifact that still holds its fp32 graph: the per-layer comparison that
 * names the layers losing parity, with the remedy its calibration record suggests.
 */
function int8Probe(manifest: Manifest | undefined, candidate: string, role: string | undefined): ((ids: number[][]) => Promise<Diagnosis | undefined>) | undefined {
  if (!manifest || (role !== ONNX_ROLES.int8 && role !== ONNX_ROLES["int8-qdq"])) return undefined;
  const fp32 = manifest.files.find((f) => f.role === ONNX_ROLES.fp32);
  const int8 = manifest.files.find((f) => f.role === role);
  if (!fp32 || !int8) return undefined;
  const dir = resolve(candidate);
  return async (ids) => diagnoseInt8Layers(await measureLayerDrift(join(dir, fp32.path), join(dir, int8.path), ids), int8.quantization, ids.map((x) => x.length));
}

/** A golden for another model, dimension or checkpoint is refused before anything runs (exit 2). */
export function checkGoldenMatches(golden: GoldenFile, goldenPath: string, candidate: string, dim: number, modelId: string, manifest: Manifest | undefined): void {
  const gDim = golden.items[0]!.embedding.length;
  if (gDim !== dim) throw new UsageError(`${goldenPath} has dimension ${gDim} but ${candidate} produces ${dim}: this golden is for another model`);
  if (golden.model.id !== modelId) {
    throw new UsageError(`${goldenPath} is for model ${golden.model.id} but ${candidate} is ${modelId} (pass --model-id ${golden.model.id} if they are the same model under two names)`);
  }
  if (manifest && golden.model.weights_sha256 !== manifest.source.weights_sha256) {
    throw new UsageError(`${goldenPath} was made from weights ${golden.model.weights_sha256} but ${candidate} was exported from weights ${manifest.source.weights_sha256}: not the same checkpoint`);
  }
}
