import { join, resolve } from "node:path";
import type { Output } from "../cli/output.js";
import { readGolden } from "../artifacts/golden.js";
import { MANIFEST_NAME, precisionOfRole, readManifest, TRT_PRECISIONS, type ArtifactFile, type Manifest } from "../artifacts/manifest.js";
import { pipelineTolerance, readPipeline } from "../artifacts/pipeline.js";
import { ParityError, UsageError } from "../errors.js";
import { reportJUnit, reportJson, renderText, type ReportEntry } from "../parity/report.js";
import { openTarget, recordVerdicts, verifyTarget, type VerifyTargetOptions } from "../parity/verify-target.js";
import { isEngineFile, type LoadedEmbedder } from "../runners/load-embedder.js";
import { writeOutputFile } from "../util/atomic.js";
import { liveLockHolder } from "../util/folder-lock.js";
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
    const wanted = precision ?? [...new Set(models.map((f) => precisionOfRole(f.role)!))];
    const targets = wanted.flatMap((p) => {
      const of = models.filter((x) => precisionOfRole(x.role) === p);
      if (!of.length) {
        const hint = backend !== "trt" ? "" : (TRT_PRECISIONS as readonly string[]).includes(p) ? `; build it with bge build ${candidate} --precision ${p}` : `; engines are ${TRT_PRECISIONS.join(", ")}`;
        throw new UsageError(`${candidate} has no ${p} ${what} (it has: ${[...new Set(models.map((x) => precisionOfRole(x.role)))].join(", ")})${hint}`);
      }
      // Every engine of the precision: the default profile's and each named one's (bge-m3's 8192).
      return backend === "trt" ? of.map((f) => ({ path: join(full, f.path), precision: p })) : [{ path: full, precision: p }];
    });
    return { manifest, targets };
  }
  if (precision && precision.length > 1) throw new UsageError(`--precision ${precision.join(",")}: ${candidate} is one model; give the one precision whose tolerances apply`);
  return { targets: [{ path: full, precision: precision?.[0] }] };
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
  const targetOptions: VerifyTargetOptions = {
    golden,
    goldenPath: options.golden,
    candidateName: options.candidate,
    manifest,
    backend,
    trtexec: options.trtexec,
    cliTolerance: options.tolerance,
    pipelineTolerance: pipeline ? (precision) => pipelineTolerance(pipeline, precision) : undefined,
    batchSize: options.batchSize,
    maxLength: options.maxLength,
    instruction: options.instruction,
    modelId: options.modelId,
    allowSettingsMismatch: options.allowSettingsMismatch,
    onInfo: (m) => out.info(m),
    onVerbose: (m) => out.verbose(m),
  };
  // Engines are cheap to open (nothing is loaded until trtexec runs), so every engine's hashes,
  // TensorRT version and record are checked before the first run; ONNX sessions open one at a time.
  const opened: LoadedEmbedder[] = [];
  if (backend === "trt") for (const target of targets) opened.push(await openTarget(target, targetOptions));
  const reports: ReportEntry[] = [];
  for (const [i, target] of targets.entries()) {
    reports.push(await verifyTarget(target, { ...targetOptions, onProgress: out.progress("verify", 2 * golden.items.length) }, opened[i]));
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
