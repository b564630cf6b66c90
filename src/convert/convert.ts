import { createHash } from "node:crypto";
import { rmdirSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { writeArtifactFolder } from "../artifacts/artifact-writer.js";
import { readGolden, writeGolden, type GoldenFile } from "../artifacts/golden.js";
import { describeFile, MANIFEST_NAME, ONNX_ROLES, precisionOfRole, readManifest, verifyManifestFiles, writeManifest, type ArtifactFile, type Manifest, type StageRecord } from "../artifacts/manifest.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { hashWeights } from "../checkpoint/weights.js";
import { ToolMissingError, UsageError } from "../errors.js";
import { exportOnnx } from "../onnx/export.js";
import { makeNativeGolden } from "../parity/native-golden.js";
import type { Tolerance } from "../parity/tolerances.js";
import type { ReportEntry } from "../parity/report.js";
import { recordVerdicts, verifyTarget, type VerifyBackend } from "../parity/verify-target.js";
import type { CalibrationMethod } from "../quantize/calibrate.js";
import type { DynamicActivations } from "../quantize/dynamic-graph.js";
import { quantizeArtifact } from "../quantize/quantize-artifact.js";
import { buildEngines, ENGINE_ROLES, engineFileName, engineLogFileName, type EnginePrecision, type EngineShapes } from "../trt/build-engine.js";
import { discoverTrtexec, versionString, type TrtexecInfo } from "../trt/discover-trtexec.js";
import { lockFolder } from "../util/folder-lock.js";
import { pathExists } from "../util/fs.js";
import { onInterrupt } from "../util/interrupt.js";
import { sha256File } from "../util/sha256.js";
import { readTextsFile } from "../util/texts-file.js";
import { hashFolderFiles, stageKey } from "./stage-key.js";

export const CONVERT_PRECISIONS = ["fp32", "fp16", "int8"] as const;
export type ConvertPrecision = (typeof CONVERT_PRECISIONS)[number];

export interface ConvertLog {
  info(message: string): void;
  warn(message: string): void;
  verbose(message: string): void;
  progress(label: string, total: number): (done: number) => void;
}

export interface ConvertOptions {
  /** The checkpoint folder (a hub snapshot or a local folder). */
  modelDir: string;
  outDir: string;
  precisions: readonly ConvertPrecision[];
  /** max_length and query instruction when a pipeline sets them (else the model's own). */
  maxLength?: number;
  instruction?: string | null;
  /** A pipeline's gates per precision, and the --tolerance override of the minimum cosine. */
  tolerances?: (precision: string) => Partial<Tolerance> | undefined;
  tolerance?: number;
  /** A golden to verify against; without one, a native float64 golden of `verification` is made. */
  golden?: string;
  verification: { texts: string; queries?: string };
  /** The calibration corpus: its files' texts in order, the first `maxTexts` of them. */
  /** `activations`: how model.int8.onnx quantises them (bge quantize --activations); quantize's default when absent. */
  calibration: { files: readonly string[]; method: CalibrationMethod; percentile?: number; maxTexts?: number; activations?: DynamicActivations };
  /** `--trtexec`: when given, a missing trtexec is an error (exit 3), not a skipped stage. */
  trtexec?: string;
  shapes?: Partial<EngineShapes>;
  /** Named profiles built beside the default one (pipeline `profiles`: bge-m3's "8192"). */
  profiles?: Record<string, EngineShapes>;
  /** Run every stage whatever its key says. */
  force: boolean;
  batchSize: number;
  version: string;
  /** What every stage key holds of the code: the version and a hash of the compiled modules. */
  codeId: string;
  argv: string[];
  log: ConvertLog;
}

export type StageStatus = "ran" | "skipped" | "unavailable";

export interface StageOutcome {
  stage: string;
  status: StageStatus;
  seconds: number;
  /** Why it was skipped or unavailable. */
  reason?: string;
  outputs: string[];
}

/** One verified artifact, as the summary table and the JSON show it. */
export interface SummaryRow {
  path: string;
  role: string;
  precision: string;
  backend: string;
  size: number;
  min_cosine: number;
  mean_cosine: number;
  topk_agreement: number | null;
  pass: boolean;
  seconds: number;
  /** Verified by an earlier run of the same key (nothing it depends on changed). */
  reused: boolean;
  failures: string[];
  diagnoses: { code: string; message: string }[];
  /** Engines: how many trtexec runs the verification took. */
  trt_runs?: number;
}

export interface ConvertResult {
  pass: boolean;
  outDir: string;
  modelId: string;
  stages: StageOutcome[];
  engines: { built: string[]; skipped_reason: string | null; trtexec: { path: string; version: string } | null };
  rows: SummaryRow[];
  /** Full reports of the verifications this run made (reused ones are in `rows`). */
  reports: ReportEntry[];
  /** Compact reports of every row (this run's and reused), for JUnit. */
  compactReports: ReportEntry[];
  goldenPath: string;
  seconds: number;
}

const GOLDEN_NAME = "golden.json";
const STAGE_COUNT = 6;

/**
 * download (done by the caller) → export → quantize → build → golden → verify, in one locked
 * artifact folder. Each stage's key (its inputs' sha256 and its options) is recorded in the manifest;
 * a rerun skips a stage whose key is unchanged and whose outputs still match their hashes, so a
 * killed run is completed by running it again, and a change reruns what depends on it only.
 */
export async function convert(options: ConvertOptions): Promise<ConvertResult> {
  const started = Date.now();
  // trtexec is looked for first: a --trtexec that is not one is refused before anything is written.
  let trtexec: TrtexecInfo | undefined;
  let noTrtexec: string | null = null;
  try {
    trtexec = await discoverTrtexec({ explicit: options.trtexec });
  } catch (err) {
    if (!(err instanceof ToolMissingError) || options.trtexec !== undefined) throw err;
    noTrtexec = err.message;
  }
  const dir = resolve(options.outDir);
  const created = !(await pathExists(dir));
  await mkdir(dir, { recursive: true });
  // Registered before the lock so that, interrupted, the lock goes first and then a folder this run made, if empty.
  const dropCreated = created ? onInterrupt(() => tryRmdir(dir)) : () => undefined;
  const lock = await lockFolder(dir, { command: "convert", warn: options.log.warn });
  try {
    return await runStages(dir, options, started, trtexec, noTrtexec);
  } finally {
    await lock.release();
    dropCreated();
    if (created && !(await pathExists(join(dir, MANIFEST_NAME)))) await rm(dir, { recursive: true, force: true });
  }
}

function tryRmdir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // not empty (a stage committed) or already gone
  }
}

async function runStages(dir: string, options: ConvertOptions, started: number, trtexec: TrtexecInfo | undefined, noTrtexec: string | null): Promise<ConvertResult> {
  const { log } = options;
  // An engine's bytes and vectors are this trtexec's: its path and version are an input of build and verify.
  const trtexecId = trtexec ? `${trtexec.path} ${versionString(trtexec)}` : undefined;
  const stages: StageOutcome[] = [];
  let step = 0;
  const begin = (name: string, what: string) => {
    step++;
    log.info(`[${step}/${STAGE_COUNT}] ${name}: ${what}`);
    return Date.now();
  };
  const done = (stage: string, status: StageStatus, since: number, outputs: string[], reason?: string) => {
    const o: StageOutcome = { stage, status, seconds: (Date.now() - since) / 1000, outputs, ...(reason ? { reason } : {}) };
    stages.push(o);
    if (status !== "ran") log.info(`      ${stage} ${status === "skipped" ? "skipped" : "not run"}: ${reason}`);
    return o;
  };
  const builtBy = { tool: "bge", version: options.version, args: options.argv };
  const precisions = new Set(options.precisions);

  // ── checkpoint ──
  let t = begin("checkpoint", `hashing ${options.modelDir}`);
  const checkpoint = await hashFolderFiles(options.modelDir);
  if (!Object.keys(checkpoint).length) throw new UsageError(`${options.modelDir}: an empty folder is not a checkpoint`);
  done("checkpoint", "ran", t, []);

  // ── export ──
  t = begin("export", "ONNX graphs");
  const exportOptions = { opset: 17, pooling: "auto", max_length: options.maxLength, instruction: options.instruction, external_data: "auto", bge: options.codeId };
  // fp32 is always made: INT8 is calibrated on it and TensorRT builds fp16 engines from it.
  const onnxWanted: ("fp32" | "fp16")[] = precisions.has("fp16") ? ["fp32", "fp16"] : ["fp32"];
  let manifest = await readManifestIfAny(dir);
  const exportRecords: Record<string, StageRecord> = {};
  const exportTodo: ("fp32" | "fp16")[] = [];
  for (const p of onnxWanted) {
    const key = stageKey(`export-${p}`, checkpoint, { ...exportOptions, precision: p });
    exportRecords[`export-${p}`] = record(key, checkpoint, { ...exportOptions, precision: p }, []);
    if (!(await upToDate(dir, manifest, `export-${p}`, key, options.force))) exportTodo.push(p);
  }
  if (exportTodo.length) {
    await exportOnnx({
      modelDir: options.modelDir,
      outDir: dir,
      precisions: exportTodo,
      opset: 17,
      pooling: "auto",
      maxLength: options.maxLength,
      instruction: options.instruction,
      externalData: "auto",
      builtBy,
      onStage: (m) => log.info(`      ${m}`),
      onWarn: log.warn,
    });
  }
  manifest = await readManifest(dir);
  for (const p of exportTodo) exportRecords[`export-${p}`]!.outputs = onnxFiles(manifest, ONNX_ROLES[p]);
  if (exportTodo.length) await recordStages(dir, Object.fromEntries(exportTodo.map((p) => [`export-${p}`, finish(exportRecords[`export-${p}`]!, t)])));
  done("export", exportTodo.length ? "ran" : "skipped", t, exportTodo.flatMap((p) => onnxFiles(manifest!, ONNX_ROLES[p])), exportTodo.length ? undefined : "model.fp32.onnx" + (onnxWanted.length > 1 ? " and model.fp16.onnx are" : " is") + " up to date");

  // ── quantize ──
  t = begin("quantize", precisions.has("int8") ? `INT8 from ${options.calibration.files.map((f) => basename(f)).join(" + ")}` : "not asked for");
  if (precisions.has("int8")) {
    manifest = await readManifest(dir);
    const fp32 = manifest.files.find((f) => f.role === ONNX_ROLES.fp32)!;
    const corpus: Record<string, string> = {};
    for (const f of options.calibration.files) corpus[`calibration:${basename(f)}`] = await sha256File(f);
    const inputs = { [fp32.path]: fp32.sha256, ...tokenizerHashes(manifest), ...corpus };
    // The calibration cache names the TensorRT it is for: the trtexec found, else quantize's default.
    const trtVersion = trtexec ? versionString(trtexec) : undefined;
    const qOptions = { method: options.calibration.method, percentile: options.calibration.percentile, max_texts: options.calibration.maxTexts, activations: options.calibration.activations, precisions: ["int8-qdq", "int8"], trt_version: trtVersion, bge: options.codeId };
    const key = stageKey("quantize", inputs, qOptions);
    if (await upToDate(dir, manifest, "quantize", key, options.force)) {
      done("quantize", "skipped", t, [], "INT8 graphs are up to date");
    } else {
      const texts: string[] = [];
      for (const f of options.calibration.files) texts.push(...(await readTextsFile(f)));
      if (options.calibration.maxTexts !== undefined) texts.splice(options.calibration.maxTexts);
      if (!texts.length) throw new UsageError(`${options.calibration.files.join(", ")}: the calibration corpus is empty`);
      const corpusSha256 = createHash("sha256").update(Object.values(corpus).join("\n")).digest("hex");
      const { written } = await quantizeArtifact({
        artifactDir: dir,
        texts,
        corpusSha256,
        method: options.calibration.method,
        percentile: options.calibration.percentile,
        activations: options.calibration.activations,
        precisions: ["int8-qdq", "int8"],
        trtVersion,
        batchSize: 16,
        builtBy,
        onProgress: log.progress("      calibrate", texts.length),
        onStage: (m) => log.info(`      ${m}`),
        onWarn: log.warn,
      });
      const outputs = written.map((f) => f.path);
      await recordStages(dir, { quantize: finish(record(key, inputs, qOptions, outputs), t) });
      done("quantize", "ran", t, outputs);
    }
  } else done("quantize", "skipped", t, [], "int8 not in --precision");

  // ── build ──
  const enginePrecisions = (["fp16", "int8"] as EnginePrecision[]).filter((p) => precisions.has(p));
  t = begin("build", trtexec ? `TensorRT ${versionString(trtexec)} engines (${enginePrecisions.join(", ") || "none asked for"})` : "TensorRT engines");
  const builtEngines: string[] = [];
  if (!trtexec) {
    done("build", "unavailable", t, [], `engines skipped: ${noTrtexec}`);
  } else if (!enginePrecisions.length) {
    done("build", "skipped", t, [], "neither fp16 nor int8 in --precision");
  } else {
    manifest = await readManifest(dir);
    // The default profile, then each named one (bge-m3's "8192"): one engine per precision each.
    const profiles: [string | undefined, Partial<EngineShapes>][] = [[undefined, options.shapes ?? {}], ...Object.entries(options.profiles ?? {})];
    const ran: string[] = [];
    for (const [profile, shapesOption] of profiles) {
      const stage = (p: EnginePrecision) => (profile ? `build-${p}-${profile}` : `build-${p}`);
      const todo: EnginePrecision[] = [];
      const records: Record<string, StageRecord> = {};
      for (const p of enginePrecisions) {
        const source = manifest.files.find((f) => f.role === (p === "int8" ? ONNX_ROLES["int8-qdq"] : ONNX_ROLES.fp32))!;
        const inputs = { [source.path]: source.sha256, trtexec: trtexecId! };
        const bOptions = { precision: p, shapes: shapesOption, int8_source: "qdq", ...(profile ? { profile } : {}), bge: options.codeId };
        const key = stageKey(stage(p), inputs, bOptions);
        records[stage(p)] = record(key, inputs, bOptions, []);
        if (!(await upToDate(dir, manifest, stage(p), key, options.force))) todo.push(p);
      }
      if (!todo.length) continue;
      const { written } = await buildEngines({ artifactDir: dir, precisions: todo, trtexec, shapes: shapesOption, ...(profile ? { profile } : {}), int8Source: "qdq", builtBy, onStage: (m) => log.info(`      ${m}`), onWarn: log.warn });
      for (const p of todo) {
        const engine = engineFileName(p, profile);
        const buildLog = engineLogFileName(p, profile);
        records[stage(p)]!.outputs = written.filter((f) => f.path === engine || f.path === buildLog).map((f) => f.path);
        ran.push(engine);
      }
      await recordStages(dir, Object.fromEntries(todo.map((p) => [stage(p), finish(records[stage(p)]!, t)])));
      manifest = await readManifest(dir);
    }
    builtEngines.push(...manifest.files.filter((f) => enginePrecisions.some((p) => f.role === ENGINE_ROLES[p])).map((f) => f.path));
    done("build", ran.length ? "ran" : "skipped", t, ran, ran.length ? undefined : "engines are up to date");
  }

  // ── golden ──
  t = begin("golden", options.golden ? `using ${options.golden}` : "float64 reference vectors");
  let golden: GoldenFile;
  let goldenPath: string;
  manifest = await readManifest(dir);
  if (options.golden) {
    goldenPath = resolve(options.golden);
    golden = await readGolden(goldenPath);
    done("golden", "skipped", t, [], `given: ${options.golden}`);
  } else {
    goldenPath = join(dir, GOLDEN_NAME);
    const corpus: Record<string, string> = { [`texts:${basename(options.verification.texts)}`]: await sha256File(options.verification.texts) };
    if (options.verification.queries) corpus[`queries:${basename(options.verification.queries)}`] = await sha256File(options.verification.queries);
    const inputs = { ...checkpoint, ...corpus };
    const gOptions = { max_length: options.maxLength, instruction: options.instruction, reference: "native", bge: options.codeId };
    const key = stageKey("golden", inputs, gOptions);
    if (await upToDate(dir, manifest, "golden", key, options.force)) {
      done("golden", "skipped", t, [], `${GOLDEN_NAME} is up to date`);
    } else {
      const spec = await readModelSpec(options.modelDir, { maxLength: options.maxLength, queryInstruction: options.instruction });
      const passages = await readTextsFile(options.verification.texts);
      const queries = options.verification.queries ? await readTextsFile(options.verification.queries) : [];
      if (!passages.length && !queries.length) throw new UsageError(`${options.verification.texts}: no texts to verify with`);
      const made = await makeNativeGolden({
        spec,
        weightsSha256: await hashWeights(options.modelDir),
        passages,
        queries,
        batchSize: options.batchSize,
        version: options.version,
        onProgress: log.progress("      golden", passages.length + queries.length),
      });
      await writeArtifactFolder(dir, { command: "convert", warn: log.warn }, async ({ staging, previous }) => {
        await writeGolden(join(staging, GOLDEN_NAME), made);
        const file = await describeFile(staging, GOLDEN_NAME, "golden", { built_by: builtBy });
        return { ...previous!, files: [...previous!.files.filter((f) => f.path !== GOLDEN_NAME), file] };
      });
      await recordStages(dir, { golden: finish(record(key, inputs, gOptions, [GOLDEN_NAME]), t) });
      done("golden", "ran", t, [GOLDEN_NAME]);
    }
    golden = await readGolden(goldenPath);
  }

  // ── verify ──
  manifest = await readManifest(dir);
  const targets = verifyTargets(manifest, precisions, trtexec !== undefined);
  t = begin("verify", `${targets.length} artifact(s) against ${golden.items.length} golden items`);
  const goldenSha = await sha256File(goldenPath);
  const rows: SummaryRow[] = [];
  const reports: ReportEntry[] = [];
  const compactReports: ReportEntry[] = [];
  let ranVerify = 0;
  for (const { file, backend } of targets) {
    const precision = precisionOfRole(file.role)!;
    const inputs: Record<string, string> = { [file.path]: file.sha256, golden: goldenSha, ...tokenizerHashes(manifest) };
    const extra = file.external_data ? manifest.files.find((f) => f.path === file.external_data) : undefined;
    if (extra) inputs[extra.path] = extra.sha256;
    if (backend === "trt" && trtexecId) inputs.trtexec = trtexecId;
    const vOptions = { tolerance: options.tolerance, tolerances: options.tolerances?.(precision), batch_size: options.batchSize, bge: options.codeId };
    const profile = file.trt?.profile;
    const name = backend === "trt" ? `verify-trt-${precision}${profile ? `-${profile}` : ""}` : `verify-${precision}`;
    const key = stageKey(name, inputs, vOptions);
    const previous = manifest.convert?.stages[name];
    let report: ReportEntry;
    let reused = false;
    if (!options.force && previous?.key === key && previous.result) {
      report = previous.result as ReportEntry;
      reused = true;
    } else {
      const since = Date.now();
      report = await verifyTarget(
        // An engine by its own path: a precision may have one per profile.
        { path: backend === "trt" ? join(dir, file.path) : dir, precision },
        {
          golden,
          goldenPath,
          candidateName: dir,
          manifest,
          backend,
          trtexec: trtexec?.path,
          cliTolerance: options.tolerance,
          pipelineTolerance: options.tolerances,
          batchSize: options.batchSize,
          maxLength: options.maxLength,
          instruction: options.instruction,
          onInfo: (m) => log.info(`      ${m}`),
          onVerbose: (m) => log.verbose(`      ${m}`),
          onProgress: log.progress(`      verify ${backend === "trt" ? "engine " : ""}${precision}`, 2 * golden.items.length),
        },
      );
      reports.push(report);
      ranVerify++;
      await recordVerdicts(dir, [report], goldenPath);
      await recordStages(dir, { [name]: { ...finish(record(key, inputs, vOptions, []), since), result: { ...report, items: [] } } });
    }
    compactReports.push({ ...report, items: [] });
    rows.push({
      path: file.path,
      role: file.role,
      precision,
      backend: report.candidate.backend,
      size: file.size + (extra?.size ?? 0),
      min_cosine: report.summary.min_cosine,
      mean_cosine: report.summary.mean_cosine,
      topk_agreement: report.summary.topk_agreement,
      pass: report.pass,
      seconds: report.seconds,
      reused,
      failures: report.failures,
      diagnoses: report.diagnoses.map((d) => ({ code: d.code, message: d.message })),
      ...(report.trt ? { trt_runs: report.trt.runs } : {}),
    });
  }
  done("verify", ranVerify ? "ran" : "skipped", t, [], ranVerify ? undefined : "every artifact was verified before with the same inputs");
  return {
    pass: rows.every((r) => r.pass),
    outDir: dir,
    modelId: manifest.source.model_id,
    stages,
    engines: { built: builtEngines, skipped_reason: noTrtexec, trtexec: trtexec ? { path: trtexec.path, version: versionString(trtexec) } : null },
    rows,
    reports,
    compactReports,
    goldenPath,
    seconds: (Date.now() - started) / 1000,
  };
}

function record(key: string, inputs: Record<string, string>, options: Record<string, unknown>, outputs: string[]): StageRecord {
  return { key, inputs, options: JSON.parse(JSON.stringify(options)) as Record<string, unknown>, outputs, seconds: 0, finished: "" };
}

function finish(r: StageRecord, since: number): StageRecord {
  return { ...r, seconds: (Date.now() - since) / 1000, finished: new Date().toISOString() };
}

async function readManifestIfAny(dir: string): Promise<Manifest | undefined> {
  return (await pathExists(join(dir, MANIFEST_NAME))) ? readManifest(dir) : undefined;
}

/** The ONNX file of a role and its external data, if any. */
function onnxFiles(manifest: Manifest, role: string): string[] {
  const f = manifest.files.find((x) => x.role === role);
  return f ? [f.path, ...(f.external_data ? [f.external_data] : [])] : [];
}

function tokenizerHashes(manifest: Manifest): Record<string, string> {
  return Object.fromEntries(manifest.files.filter((f) => f.role === "tokenizer" || f.role === "config").map((f) => [f.path, f.sha256]));
}

/**
 * A stage is up to date when its recorded key is this run's and every file it wrote is still listed
 * with the same hash and still on disk with that content.
 */
async function upToDate(dir: string, manifest: Manifest | undefined, stage: string, key: string, force: boolean): Promise<boolean> {
  if (force || !manifest) return false;
  const rec = manifest.convert?.stages[stage];
  if (!rec || rec.key !== key || !rec.outputs.length) return false;
  if (!rec.outputs.every((path) => manifest.files.some((f) => f.path === path))) return false;
  try {
    await verifyManifestFiles(dir, manifest, (f) => rec.outputs.includes(f.path));
    return true;
  } catch (err) {
    // Missing, resized or rewritten since: the stage is made again.
    if (err instanceof UsageError) return false;
    throw err;
  }
}

/** Stage records go into the manifest as each stage finishes (under the folder's lock, which convert holds). */
async function recordStages(dir: string, records: Record<string, StageRecord>): Promise<void> {
  const m = await readManifest(dir);
  m.convert = { format: "bge-convert/1", stages: { ...(m.convert?.stages ?? {}), ...records } };
  await writeManifest(dir, m);
}

const VERIFY_ORDER = ["onnx-fp32", "onnx-fp16", "onnx-int8-dynamic", "onnx-int8-qdq", "trt-fp16", "trt-int8"];

/**
 * What convert verifies: the ONNX graph of every precision asked for (int8: both INT8 graphs), and
 * the engines of those precisions when a trtexec runs them here.
 */
function verifyTargets(manifest: Manifest, precisions: Set<ConvertPrecision>, withEngines: boolean): { file: ArtifactFile; backend: VerifyBackend }[] {
  const roles = new Set<string>();
  if (precisions.has("fp32")) roles.add(ONNX_ROLES.fp32);
  if (precisions.has("fp16")) roles.add(ONNX_ROLES.fp16);
  if (precisions.has("int8")) {
    roles.add(ONNX_ROLES.int8);
    roles.add(ONNX_ROLES["int8-qdq"]);
  }
  if (withEngines) for (const p of ["fp16", "int8"] as const) if (precisions.has(p)) roles.add(ENGINE_ROLES[p]);
  return manifest.files
    .filter((f) => roles.has(f.role))
    .sort((a, b) => VERIFY_ORDER.indexOf(a.role) - VERIFY_ORDER.indexOf(b.role))
    .map((file) => ({ file, backend: file.role.startsWith("trt-") ? ("trt" as const) : ("onnx" as const) }));
}

