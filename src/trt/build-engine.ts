import { execFile } from "node:child_process";
import { join } from "node:path";
import { writeArtifactFolder } from "../artifacts/artifact-writer.js";
import { describeFile, PROFILE_NAME, PROFILE_NAME_RULE, verifyManifestFiles, type ArtifactFile, type ArtifactRole, type BuiltBy, type EngineRecord, type Manifest } from "../artifacts/manifest.js";
import { maxModelLength, readEncoderConfig } from "../checkpoint/config.js";
import { ToolFailedError, UsageError } from "../errors.js";
import { encoderInputNames, encoderOutputNames, fp32PinnedNodes } from "../onnx/encoder-graph.js";
import { writeFileAtomic } from "../util/atomic.js";
import { onInterrupt } from "../util/interrupt.js";
import { pathExists } from "../util/fs.js";
import { buildTrtexecArgs, sourceGraphFor, type BatchSeq, type TrtBuildRequest } from "./build-args.js";
import { versionString, type TrtexecInfo } from "./discover-trtexec.js";
import { parseTrtexecLog, tailLines } from "./trtexec-log.js";

export type EnginePrecision = "fp32" | "fp16" | "int8";
export const ENGINE_PRECISIONS: readonly EnginePrecision[] = ["fp16", "int8", "fp32"];
export const ENGINE_ROLES: Record<EnginePrecision, ArtifactRole> = { fp32: "trt-fp32", fp16: "trt-fp16", int8: "trt-int8" };

export interface EngineShapes {
  min: BatchSeq;
  opt: BatchSeq;
  max: BatchSeq;
}

export interface BuildEnginesOptions {
  artifactDir: string;
  precisions: readonly EnginePrecision[];
  trtexec: TrtexecInfo;
  /** @default min 1×2, opt 8×min(128, max_length), max 32×max_length (the artifact's) */
  shapes?: Partial<EngineShapes>;
  /**
   * A named profile beside the default one (e.g. "8192" for bge-m3's long inputs): engines are
   * model.<precision>.<profile>.plan, and their max sequence may exceed the artifact's max_length up
   * to what the model's positions allow (runners take them for longer --max-length).
   */
  profile?: string;
  /** int8: from the Q/DQ graph (default; the only path on 11) or from the calibration cache (8.6/10). */
  int8Source?: "qdq" | "calib";
  /** 10.x: precision from the graph's own types (--stronglyTyped). */
  stronglyTyped?: boolean;
  timingCache?: string;
  workspaceMiB?: number;
  optLevel?: number;
  /** How long one trtexec build may take. @default 2 h */
  timeoutMs?: number;
  builtBy: BuiltBy;
  onStage?: (message: string) => void;
  onWarn?: (message: string) => void;
}

/** model.<precision>.plan for the default profile, model.<precision>.<profile>.plan for a named one. */
export function engineFileName(precision: EnginePrecision, profile?: string): string {
  return profile ? `model.${precision}.${profile}.plan` : `model.${precision}.plan`;
}

/** trtexec's build log beside its engine: model.<precision>[.<profile>].log. */
export function engineLogFileName(precision: EnginePrecision, profile?: string): string {
  return engineFileName(precision, profile).replace(/\.plan$/, ".log");
}

/** The default profile: any batch up to 32 of any length the artifact accepts, tuned for 8 × 128. */
export function defaultShapes(maxLength: number, given: Partial<EngineShapes> = {}): EngineShapes {
  return { min: given.min ?? [1, 2], opt: given.opt ?? [8, Math.min(128, maxLength)], max: given.max ?? [32, maxLength] };
}

interface TrtexecRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  log: string;
}

/** Runs trtexec with an argument array (never a shell); its whole console output is the log. */
export function runTrtexec(trtexec: TrtexecInfo, args: string[], timeoutMs: number): Promise<TrtexecRun> {
  return new Promise((resolve) => {
    const child = execFile(trtexec.path, args, { timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 1 << 30 }, (err, stdout, stderr) => {
      dropKill();
      const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals }) | null;
      resolve({ code: e ? (typeof e.code === "number" ? e.code : null) : 0, signal: e?.signal ?? null, log: `${stdout}${stderr}` });
    });
    // Interrupted, bge takes its trtexec down with it instead of leaving a build running.
    const dropKill = onInterrupt(() => child.kill("SIGKILL"));
  });
}

/** Exit 4 with the command line and the log's tail: a failed external tool, not a bge bug. */
export function trtexecFailure(trtexec: TrtexecInfo, args: string[], run: TrtexecRun, why: string): ToolFailedError {
  return new ToolFailedError(`trtexec ${why}: ${trtexec.path} ${args.join(" ")}\n${tailLines(run.log, 20)}`);
}

/**
 * `bge build`: TensorRT engines from an artifact's graphs through NVIDIA's trtexec, one dialect per
 * version family. Engines and their build logs are written into the artifact folder (locked, staged,
 * committed with the manifest), each recorded with the exact argument list, the TensorRT version and
 * the GPU that built it — an engine runs only there.
 */
export async function buildEngines(options: BuildEnginesOptions): Promise<{ manifest: Manifest; written: ArtifactFile[] }> {
  const dir = options.artifactDir;
  const { trtexec } = options;
  const written: ArtifactFile[] = [];
  const manifest = await writeArtifactFolder(dir, { command: "build", warn: options.onWarn }, async ({ staging, previous }) => {
    if (!previous) throw new UsageError(`${dir}: not an artifact folder (no manifest.json); make one with bge export`);
    const config = await readEncoderConfig(dir);
    const inputs = encoderInputNames(config);
    // bge-m3's heads are outputs of the same graph, so the engine carries them as well.
    const outputs = encoderOutputNames(previous.pooling, previous.heads);
    const shapes = defaultShapes(previous.max_length, options.shapes);
    const profile = options.profile;
    if (profile !== undefined && !PROFILE_NAME.test(profile)) throw new UsageError(`--profile ${JSON.stringify(profile)}: ${PROFILE_NAME_RULE}`);
    if (profile === undefined && shapes.max[1] > previous.max_length) {
      throw new UsageError(
        `--max-shape ${shapes.max.join("x")}: sequences longer than the artifact's max_length ${previous.max_length} never reach the default engine; use at most ${shapes.max[0]}x${previous.max_length}, or build a named profile for longer inputs (--profile NAME)`,
      );
    }
    if (shapes.max[1] > maxModelLength(config)) {
      throw new UsageError(`--max-shape ${shapes.max.join("x")}: the model's position table takes at most ${maxModelLength(config)} tokens; use at most ${shapes.max[0]}x${maxModelLength(config)}`);
    }
    for (const precision of options.precisions) {
      const int8Source = precision === "int8" ? (options.int8Source ?? "qdq") : undefined;
      const stronglyTyped = trtexec.family === "10" ? options.stronglyTyped : undefined;
      const sourceName = sourceGraphFor(trtexec.family, { precision, int8Source, stronglyTyped });
      const source = previous.files.find((f) => f.path === sourceName);
      if (!source) throw new UsageError(`${dir} has no ${sourceName} to build the ${precision} engine from on TensorRT ${trtexec.family}: ${howToMake(sourceName)}`);
      const cache = int8Source === "calib" ? previous.files.find((f) => f.role === "calib-cache") : undefined;
      if (int8Source === "calib" && !cache) throw new UsageError(`${dir} has no calibration cache for INT8 by calibration: run bge quantize ${dir} --calibration F first`);
      const needed = new Set([source.path, source.external_data, cache?.path]);
      await verifyManifestFiles(dir, previous, (f) => needed.has(f.path));

      const engineName = engineFileName(precision, profile);
      const logName = engineLogFileName(precision, profile);
      const request: TrtBuildRequest = {
        onnx: join(dir, source.path),
        engine: join(staging, engineName),
        precision,
        ...(int8Source ? { int8Source } : {}),
        ...(cache ? { calibCache: join(dir, cache.path) } : {}),
        shapes,
        inputs,
        ...(options.timingCache ? { timingCache: options.timingCache } : {}),
        ...(options.workspaceMiB !== undefined ? { workspaceMiB: options.workspaceMiB } : {}),
        ...(options.optLevel !== undefined ? { optLevel: options.optLevel } : {}),
        ...(stronglyTyped ? { stronglyTyped } : {}),
        // Pins only where the builder picks precision from a float32 graph.
        ...(sourceName === "model.fp32.onnx" && precision !== "fp32" && !stronglyTyped ? { fp32Layers: fp32PinnedNodes(config) } : {}),
      };
      const args = buildTrtexecArgs(trtexec.family, request);
      options.onStage?.(`building ${engineName} with TensorRT ${versionString(trtexec)} from ${source.path} (profile ${shapes.min.join("x")} … ${shapes.opt.join("x")} … ${shapes.max.join("x")}) …`);
      const run = await runTrtexec(trtexec, args, options.timeoutMs ?? 2 * 3600_000);
      await writeFileAtomic(join(staging, logName), run.log);
      const parsed = parseTrtexecLog(run.log);
      if (run.signal) throw trtexecFailure(trtexec, args, run, `was killed by ${run.signal}`);
      if (run.code !== 0) throw trtexecFailure(trtexec, args, run, `exited with ${run.code}`);
      if (parsed.status === "failed") throw trtexecFailure(trtexec, args, run, "reported FAILED");
      if (!(await pathExists(join(staging, engineName)))) throw trtexecFailure(trtexec, args, run, `reported success but wrote no engine ${engineName}`);
      const record: EngineRecord = {
        version: versionString(trtexec),
        family: trtexec.family,
        gpu: parsed.gpu?.name ?? null,
        compute_capability: parsed.gpu?.computeCapability ?? null,
        source: source.path,
        log: logName,
        shapes,
        inputs,
        outputs,
        ...(int8Source ? { int8_source: int8Source } : {}),
        ...(stronglyTyped ? { strongly_typed: true } : {}),
        ...(profile ? { profile } : {}),
      };
      const builtBy: BuiltBy = { tool: "trtexec", version: versionString(trtexec), args: [trtexec.path, ...args.map((a) => a.split(staging).join(dir))] };
      written.push(await describeFile(staging, engineName, ENGINE_ROLES[precision], { built_by: builtBy, trt: record }));
      written.push(await describeFile(staging, logName, "trt-log", { built_by: options.builtBy }));
      if (!record.gpu) options.onWarn?.(`${logName}: trtexec's log names no GPU; the manifest cannot bind ${engineName} to one`);
    }
    const rewritten = new Set(written.map((f) => f.path));
    return {
      ...previous,
      files: [...previous.files.filter((f) => !rewritten.has(f.path)), ...written],
      parity: Object.fromEntries(Object.entries(previous.parity).filter(([p]) => !rewritten.has(p))),
    };
  });
  return { manifest, written };
}

function howToMake(source: string): string {
  if (source === "model.int8.qdq.onnx") return "run bge quantize ARTIFACT --calibration F first (Q/DQ graph)";
  if (source === "model.fp16.onnx") return "export with --precision fp16 (TensorRT 11 and --strongly-typed take precision from the graph)";
  return "export with --precision fp32";
}

