import { dirname, join, resolve } from "node:path";
import type { GoldenFile } from "../artifacts/golden.js";
import { ONNX_ROLES, readManifest, writeManifest, type Manifest } from "../artifacts/manifest.js";
import { UsageError } from "../errors.js";
import { measureLayerDrift } from "../quantize/layer-drift.js";
import { loadEmbedder, type LoadedEmbedder } from "../runners/load-embedder.js";
import { OnnxEmbedder } from "../runners/onnx-embedder.js";
import { backendName, executionProviders } from "../runners/ort.js";
import { TrtEmbedder } from "../runners/trt-embedder.js";
import { versionString } from "../trt/discover-trtexec.js";
import { withFolderLock } from "../util/folder-lock.js";
import type { Diagnosis } from "./diagnose.js";
import { probeFp16Range } from "./fp16-range.js";
import { diagnoseInt8Layers } from "./int8-diagnosis.js";
import type { ReportEntry } from "./report.js";
import { resolveTolerance, type Tolerance } from "./tolerances.js";
import { refuseSettingsMismatch, verifyAgainstGolden, type VerifyReport } from "./verify.js";

export type VerifyBackend = "onnx" | "trt";

export interface VerifyTarget {
  /** An artifact folder (with `precision`), an .onnx file or an engine. */
  path: string;
  precision?: string;
}

export interface VerifyTargetOptions {
  golden: GoldenFile;
  goldenPath: string;
  /** What the user named, for messages. */
  candidateName: string;
  /** The artifact's manifest, when the candidate is an artifact folder. */
  manifest?: Manifest;
  backend: VerifyBackend;
  /** --backend trt: the trtexec to use (else $TRTEXEC, PATH, /usr/src/tensorrt/bin). */
  trtexec?: string;
  cliTolerance?: number;
  /** A pipeline's gates for a precision (int8-qdq takes int8's). */
  pipelineTolerance?: (precision: string) => Partial<Tolerance> | undefined;
  batchSize: number;
  maxLength?: number;
  instruction?: string | null;
  modelId?: string;
  allowSettingsMismatch?: boolean;
  onInfo?: (message: string) => void;
  onVerbose?: (message: string) => void;
  onProgress?: (done: number, total: number) => void;
}

/** Opens one candidate: engines are cheap to open (nothing loads until trtexec runs), ONNX sessions are not. */
export function openTarget(target: VerifyTarget, options: Pick<VerifyTargetOptions, "backend" | "trtexec" | "maxLength" | "instruction">): Promise<LoadedEmbedder> {
  return loadEmbedder(target.path, { backend: options.backend, precision: target.precision, maxLength: options.maxLength, instruction: options.instruction, trtexec: options.trtexec });
}

/**
 * One candidate through the parity gate: the golden must be for its model, dimension and weights
 * (exit 2 otherwise), the settings must match the golden producer's (unless allowed), and the
 * tolerances are the precision's defaults, a pipeline's, or --tolerance's. ONNX FP16 candidates get
 * the range probe, INT8 ones (and INT8 engines built from a Q/DQ graph) the per-layer probe against
 * the artifact's fp32 graph. The embedder is closed whatever happens.
 */
export async function verifyTarget(target: VerifyTarget, options: VerifyTargetOptions, opened?: LoadedEmbedder): Promise<ReportEntry> {
  const { golden, manifest } = options;
  const { embedder, spec, target: loaded } = opened ?? (await openTarget(target, options));
  try {
    if (!(embedder instanceof OnnxEmbedder || embedder instanceof TrtEmbedder)) throw new UsageError(`${options.candidateName}: verify needs an ONNX model or engine`);
    const candidatePath = loaded.path;
    checkGoldenMatches(golden, options.goldenPath, options.candidateName, embedder.dimension, options.modelId ?? spec.id, manifest ?? loaded.manifest);
    if (!options.allowSettingsMismatch) refuseSettingsMismatch(golden, options.goldenPath, candidatePath, embedder.spec);
    const { tolerance, notes } = resolveTolerance(embedder.precision, {
      cli: options.cliTolerance,
      pipeline: options.pipelineTolerance?.(embedder.precision),
      goldenUsesFp16: golden.producer.use_fp16,
    });
    const trt = embedder instanceof TrtEmbedder ? embedder : undefined;
    options.onInfo?.(`verifying ${candidatePath} (${embedder.precision}${trt ? `, TensorRT ${versionString(trt.trtexec)} through ${trt.trtexec.path}` : ""}) against ${golden.items.length} golden items …`);
    const report: ReportEntry = await verifyAgainstGolden(embedder, golden, {
      goldenPath: options.goldenPath,
      candidatePath,
      candidateRole: loaded.role ?? null,
      allowSettingsMismatch: options.allowSettingsMismatch,
      tolerance,
      toleranceNotes: notes,
      batchSize: options.batchSize,
      backend: trt ? "trt" : backendName(executionProviders()),
      onProgress: options.onProgress,
      // ONNX Runtime on CPU computes FP16 in FP32, so its graph is probed for overflow; a TensorRT
      // engine computes in FP16 itself, and an overflow shows in its own vectors.
      probeFp16: embedder instanceof OnnxEmbedder && embedder.precision === "fp16" ? (batches) => probeFp16Range(embedder.modelPath, batches.map((b) => embedder.feeds(b))) : undefined,
      probeInt8: loaded.kind === "artifact" ? int8Probe(loaded.manifest, dirname(loaded.path), trt ? engineGraphRole(loaded.manifest, loaded.role) : loaded.role) : undefined,
    });
    if (trt) {
      report.trt = { tensorrt: versionString(trt.trtexec), trtexec: trt.trtexec.path, gpu: trt.device?.name ?? null, compute_capability: trt.device?.computeCapability ?? null, runs: trt.runs };
      options.onVerbose?.(`${candidatePath}: ${trt.runs} trtexec runs`);
    }
    return report;
  } finally {
    await embedder.deactivate();
  }
}

/** The ONNX role an INT8 engine was built from (its Q/DQ graph), for the per-layer INT8 diagnosis. */
function engineGraphRole(manifest: Manifest | undefined, role: string | undefined): string | undefined {
  const engine = manifest?.files.find((f) => f.role === role);
  if (role !== "trt-int8" || engine?.trt?.int8_source !== "qdq") return undefined;
  return manifest?.files.find((f) => f.path === engine.trt!.source)?.role;
}

/**
 * For an INT8 model of an artifact that still holds its fp32 graph: the per-layer comparison that
 * names the layers losing parity, with the remedy its calibration record suggests.
 */
function int8Probe(manifest: Manifest | undefined, dir: string, role: string | undefined): ((ids: number[][]) => Promise<Diagnosis | undefined>) | undefined {
  if (!manifest || (role !== ONNX_ROLES.int8 && role !== ONNX_ROLES["int8-qdq"])) return undefined;
  const fp32 = manifest.files.find((f) => f.role === ONNX_ROLES.fp32);
  const int8 = manifest.files.find((f) => f.role === role);
  if (!fp32 || !int8) return undefined;
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

/**
 * Records each verdict in the artifact's manifest under the folder's lock (read, update, write):
 * two verifies of one artifact, say a CI matrix, each add their own record. Another verify holding
 * the lock for its moment of writing is waited for; a writer that holds it already (convert) shares it.
 */
export async function recordVerdicts(dir: string, reports: readonly VerifyReport[], goldenPath: string): Promise<void> {
  const full = resolve(dir);
  for (let attempt = 0; ; attempt++) {
    try {
      await withFolderLock(full, { command: "verify" }, async () => {
        const fresh = await readManifest(full);
        for (const r of reports) {
          const file = fresh.files.find((f) => join(full, f.path) === r.candidate.path);
          if (!file) continue;
          fresh.parity[file.path] = {
            pass: r.pass,
            golden: goldenPath,
            min_cosine: r.summary.min_cosine,
            mean_cosine: r.summary.mean_cosine,
            tolerance: r.tolerance.min_cosine,
            checked_at: new Date().toISOString(),
          };
        }
        await writeManifest(full, fresh);
      });
      return;
    } catch (err) {
      if (!(err instanceof UsageError) || attempt >= 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
