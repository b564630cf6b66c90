import { join, resolve } from "node:path";
import type { Output } from "../cli/output.js";
import { readGolden, type GoldenFile } from "../artifacts/golden.js";
import { MANIFEST_NAME, ONNX_ROLES, precisionOfRole, readManifest, TRT_PRECISIONS, writeManifest, type ArtifactFile, type Manifest } from "../artifacts/manifest.js";
import { measureLayerDrift } from "../quantize/layer-drift.js";
import { diagnoseInt8Layers } from "../parity/int8-diagnosis.js";
import type { Diagnosis } from "../parity/diagnose.js";
import { readPipeline } from "../artifacts/pipeline.js";
import { ParityError, UsageError } from "../errors.js";
import { reportJUnit, reportJson, renderText, type ReportEntry } from "../parity/report.js";
import { resolveTolerance } from "../parity/tolerances.js";
import { probeFp16Range } from "../parity/fp16-range.js";
import { refuseSettingsMismatch, verifyAgainstGolden, type VerifyReport } from "../parity/verify.js";
import { isEngineFile, loadEmbedder, type LoadedEmbedder } from "../runners/load-embedder.js";
import { OnnxEmbedder } from "../runners/onnx-embedder.js";
import { TrtEmbedder } from "../runners/trt-embedder.js";
import { backendName, executionProviders } from "../runners/ort.js";
import { writeOutputFile } from "../util/atomic.js";
import { liveLockHolder, withFolderLock } from "../util/folder-lock.js";
import { checkOutputPaths } from "../util/io-paths.js";
import { isDir, isFile } from "../util/fs.js";

export interface VerifyCommandOptions {
  candidate: string;
  golden: string;
  tolerance?: number;
  precision?: string[];
  report?: string;
  junit?: string;
  pipeline?: string;
  batchSize: number;
  maxLength?: number;
  instruction?: string | null;
  modelId?: string;
  /** Run although the golden was made with other settings (a settings diagnosis says which). */
  allowSettingsMismatch?: boolean;
  /** onnx: the artifact's ONNX models (ONNX Runtime); trt: its TensorRT engines (trtexec). @default onnx, trt for an engine file */
  backend?: "onnx" | "trt";
  /** --backend trt: the trtexec to use (else $TRTEXEC, PATH, /usr/src/tensorrt/bin). */
  trtexec?: string;
}

const isEngine = (f: ArtifactFile) => f.role.startsWith("trt-") && f.role !== "trt-log";
const isOnnxModel = (f: ArtifactFile) => f.role.startsWith("onnx-") && f.role !== "onnx-data";

/**
 * Which files to verify: every ONNX of an artifact folder (with --backend trt every engine), or
 * --precision's, or the one file given.
 */
async function candidateTargets(
  candidate: string,
  precision: string[] | undefined,
  backend: "onnx" | "trt",
): Promise<{ manifest?: Manifest; targets: { path: string; precision?: string }[] }> {
  const full = resolve(candidate);
  if (await isDir(full)) {
    if (!(await isFile(join(full, MANIFEST_NAME)))) {
      throw new UsageError(`${candidate} is a folder without ${MANIFEST_NAME}: verify takes an artifact folder (bge export), an .onnx file or an engine; a checkpoint is what goldens are made from`);
    }
    const manifest = await readManifest(full);
    const models = manifest.files.filter(backend === "trt" ? isEngine : isOnnxModel);
    const what = backend === "trt" ? "engine" : "model";
    if (!models.length) {
      throw new UsageError(
        backend === "trt" ? `${candidate} has no TensorRT engine to verify; build them with bge build ${candidate} --precision fp16,int8` : `${candidate}: the manifest lists no ONNX model to verify`,
      );
    }
    const wanted = precision ?? models.map((f) => precisionOfRole(f.role)!);
    const targets = wanted.map((p) => {
      const f = models.find((x) => precisionOfRole(x.role) === p);
      if (!f) {
        const hint = backend !== "trt" ? "" : (TRT_PRECISIONS as readonly string[]).includes(p) ? `; build it with bge build ${candidate} --precision ${p}` : `; engines are ${TRT_PRECISIONS.join(", ")}`;
        throw new UsageError(`${candidate} has no ${p} ${what} (it has: ${models.map((x) => precisionOfRole(x.role)).join(", ")})${hint}`);
      }
      return { path: full, precision: p };
    });
    return { manifest, targets };
  }
  if (precision && precision.length > 1) throw new UsageError(`--precision ${precision.join(",")}: ${candidate} is one model; give the one precision whose tolerances apply`);
  return { targets: [{ path: full, precision: precision?.[0] }] };
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

function versionOf(trt: TrtEmbedder): string {
  const v = trt.trtexec.version;
  return `${v.major}.${v.minor}.${v.patch}`;
}

/** The ONNX role an INT8 engine was built from (its Q/DQ graph), for the per-layer INT8 diagnosis. */
function engineGraphRole(manifest: Manifest | undefined, role: string | undefined): string | undefined {
  const engine = manifest?.files.find((f) => f.role === role);
  if (role !== "trt-int8" || engine?.trt?.int8_source !== "qdq") return undefined;
  return manifest?.files.find((f) => f.path === engine.trt!.source)?.role;
}

/** A golden for another model, dimension or checkpoint is refused before anything runs (exit 2). */
function checkGoldenMatches(golden: GoldenFile, goldenPath: string, candidate: string, dim: number, modelId: string, manifest: Manifest | undefined): void {
  const gDim = golden.items[0]!.embedding.length;
  if (gDim !== dim) throw new UsageError(`${goldenPath} has dimension ${gDim} but ${candidate} produces ${dim}: this golden is for another model`);
  if (golden.model.id !== modelId) {
    throw new UsageError(`${goldenPath} is for model ${golden.model.id} but ${candidate} is ${modelId} (pass --model-id ${golden.model.id} if they are the same model under two names)`);
  }
  if (manifest && golden.model.weights_sha256 !== manifest.source.weights_sha256) {
    throw new UsageError(`${goldenPath} was made from weights ${golden.model.weights_sha256} but ${candidate} was exported from weights ${manifest.source.weights_sha256}: not the same checkpoint`);
  }
}

export async function verifyCommand(options: VerifyCommandOptions, out: Output): Promise<void> {
  await checkOutputPaths(
    [
      ...(options.report !== undefined ? [{ path: options.report, flag: "--report", kind: "file" as const }] : []),
      ...(options.junit !== undefined ? [{ path: options.junit, flag: "--junit", kind: "file" as const }] : []),
    ],
    [
      { path: options.candidate, what: "candidate", kind: (await isDir(options.candidate)) ? "dir" : "file" },
      { path: options.golden, what: "golden file", kind: "file" },
      ...(options.pipeline ? [{ path: options.pipeline, what: "pipeline file", kind: "file" as const }] : []),
    ],
  );
  const writer = (await isDir(options.candidate)) ? await liveLockHolder(options.candidate) : undefined;
  if (writer && writer.command !== "verify") {
    throw new UsageError(`${options.candidate} is being written by bge ${writer.command} (pid ${writer.pid}); verify it when that has finished`);
  }
  const golden = await readGolden(options.golden);
  const pipeline = options.pipeline ? await readPipeline(options.pipeline) : undefined;
  const backend = options.backend ?? ((await isEngineFile(options.candidate)) ? "trt" : "onnx");
  if (options.trtexec !== undefined && backend !== "trt") throw new UsageError(`--trtexec ${options.trtexec} applies to --backend trt only (TensorRT engines); add --backend trt to verify the artifact's engines`);
  const { manifest, targets } = await candidateTargets(options.candidate, options.precision, backend);
  const open = (target: { path: string; precision?: string }) =>
    loadEmbedder(target.path, { backend, precision: target.precision, maxLength: options.maxLength, instruction: options.instruction, trtexec: options.trtexec });
  // Engines are cheap to open (nothing is loaded until trtexec runs), so every engine's hashes,
  // TensorRT version and record are checked before the first run; ONNX sessions open one at a time.
  const opened: LoadedEmbedder[] = [];
  if (backend === "trt") for (const target of targets) opened.push(await open(target));
  const reports: ReportEntry[] = [];
  for (const [i, target] of targets.entries()) {
    const { embedder, spec, target: loaded } = opened[i] ?? (await open(target));
    try {
      if (!(embedder instanceof OnnxEmbedder || embedder instanceof TrtEmbedder)) throw new UsageError(`${options.candidate}: verify needs an ONNX model or engine`);
      const candidatePath = loaded.path;
      checkGoldenMatches(golden, options.golden, options.candidate, embedder.dimension, options.modelId ?? spec.id, manifest ?? loaded.manifest);
      if (!options.allowSettingsMismatch) refuseSettingsMismatch(golden, options.golden, candidatePath, embedder.spec);
      const { tolerance, notes } = resolveTolerance(embedder.precision, {
        cli: options.tolerance,
        pipeline: pipeline?.precisions?.[embedder.precision],
        goldenUsesFp16: golden.producer.use_fp16,
      });
      const trt = embedder instanceof TrtEmbedder ? embedder : undefined;
      out.info(`verifying ${candidatePath} (${embedder.precision}${trt ? `, TensorRT ${versionOf(trt)} through ${trt.trtexec.path}` : ""}) against ${golden.items.length} golden items …`);
      const report: ReportEntry = await verifyAgainstGolden(embedder, golden, {
        goldenPath: options.golden,
        candidatePath,
        candidateRole: loaded.role ?? null,
        allowSettingsMismatch: options.allowSettingsMismatch,
        tolerance,
        toleranceNotes: notes,
        batchSize: options.batchSize,
        backend: trt ? "trt" : backendName(executionProviders()),
        onProgress: out.progress("verify", 2 * golden.items.length),
        // ONNX Runtime on CPU computes FP16 in FP32, so its graph is probed for overflow; a TensorRT
        // engine computes in FP16 itself, and an overflow shows in its own vectors.
        probeFp16: embedder instanceof OnnxEmbedder && embedder.precision === "fp16" ? (batches) => probeFp16Range(embedder.modelPath, batches.map((b) => embedder.feeds(b))) : undefined,
        probeInt8: int8Probe(manifest, options.candidate, trt ? engineGraphRole(loaded.manifest, loaded.role) : loaded.role),
      });
      if (trt) {
        report.trt = {
          tensorrt: versionOf(trt),
          trtexec: trt.trtexec.path,
          gpu: trt.device?.name ?? null,
          compute_capability: trt.device?.computeCapability ?? null,
          runs: trt.runs,
        };
        out.verbose(`${candidatePath}: ${trt.runs} trtexec runs`);
      }
      reports.push(report);
    } finally {
      await embedder.deactivate();
    }
  }

  if (manifest) {
    // The manifest remembers the last verdict per artifact; the files it hashes are untouched.
    // A read-only artifact (a CI cache, a mounted volume) is still verifiable; only the record is skipped.
    await recordVerdicts(resolve(options.candidate), reports, resolve(options.golden)).catch((err: NodeJS.ErrnoException) =>
      out.warn(`could not record the verdict in ${join(options.candidate, MANIFEST_NAME)} (${err.code ?? err.message})`),
    );
  }
  const json = reportJson(reports);
  if (options.report) await writeOutputFile(options.report, JSON.stringify(json, null, 2) + "\n");
  if (options.junit) await writeOutputFile(options.junit, reportJUnit(reports));
  out.result(reports.map(renderText).join("\n\n"), json);
  const failed = reports.filter((r) => !r.pass);
  if (failed.length) {
    const first = failed[0]!;
    const why = first.diagnoses[0] ? ` — ${first.diagnoses[0].code}` : "";
    throw new ParityError(`parity failed for ${failed.map((r) => `${r.candidate.precision}`).join(", ")}: ${first.failures.join("; ")}${why}`);
  }
}

/**
 * Records each verdict in the artifact's manifest under the folder's lock (read, update, write):
 * two verifies of one artifact, say a CI matrix, each add their own record. Another verify holding
 * the lock for its moment of writing is waited for.
 */
async function recordVerdicts(dir: string, reports: readonly VerifyReport[], goldenPath: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await withFolderLock(dir, { command: "verify" }, async () => {
        const fresh = await readManifest(dir);
        for (const r of reports) {
          const file = fresh.files.find((f) => join(dir, f.path) === r.candidate.path);
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
        await writeManifest(dir, fresh);
      });
      return;
    } catch (err) {
      if (!(err instanceof UsageError) || attempt >= 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
