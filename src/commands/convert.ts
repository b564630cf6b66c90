import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { join, resolve, sep } from "node:path";
import type { Output } from "../cli/output.js";
import { batchSeq, loadPipelineFor, pipelineTolerance, readPipeline, type Pipeline, type ProfileShapes } from "../artifacts/pipeline.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { resolveModelDir } from "../checkpoint/resolve-model.js";
import { convert, CONVERT_PRECISIONS, type ConvertPrecision } from "../convert/convert.js";
import { codeIdentity } from "../convert/stage-key.js";
import { convertJson, renderSummary } from "../convert/summary.js";
import { ParityError, UsageError } from "../errors.js";
import { reportJUnit } from "../parity/report.js";
import type { EngineShapes } from "../trt/build-engine.js";
import { writeOutputFile } from "../util/atomic.js";
import { isDir } from "../util/fs.js";
import { checkOutputPaths } from "../util/io-paths.js";

export const DEFAULT_MODEL = "BAAI/bge-small-zh-v1.5";

export interface ConvertCommandOptions {
  model?: string;
  output: string;
  precisions?: ConvertPrecision[];
  pipeline?: string;
  golden?: string;
  tolerance?: number;
  trtexec?: string;
  force: boolean;
  report?: string;
  junit?: string;
  batchSize: number;
  argv: string[];
}

const pkg = createRequire(import.meta.url)("../../package.json") as { version: string };
const BUNDLED = fileURLToPath(new URL("../../", import.meta.url));

/** The project's own corpora for a model without a pipeline: by the language its id names. */
function defaultCorpora(modelId: string): { calibration: string[]; verification: { texts: string; queries: string } } {
  const corpus = (f: string) => join(BUNDLED, "pipelines", "corpus", f);
  const langs = /-zh\b|-zh-/.test(modelId) ? ["zh"] : /-en\b|-en-/.test(modelId) ? ["en"] : ["zh", "en"];
  return {
    calibration: langs.flatMap((l) => [corpus(`${l}-passages.txt`), corpus(`${l}-queries.txt`)]),
    verification: { texts: join(BUNDLED, "golden", "texts", "verify-passages.txt"), queries: join(BUNDLED, "golden", "texts", "verify-queries.txt") },
  };
}

/** What a pipeline asks of convert, in convert's terms. */
function fromPipeline(p: Pipeline) {
  const precisions = p.precisions ? (Object.keys(p.precisions).filter((k) => (CONVERT_PRECISIONS as readonly string[]).includes(k)) as ConvertPrecision[]) : undefined;
  const corners = (x: ProfileShapes): EngineShapes => ({ min: batchSeq(x.min), opt: batchSeq(x.opt), max: batchSeq(x.max) });
  const shapes: Partial<EngineShapes> | undefined = p.shapes ? corners(p.shapes) : undefined;
  const profiles = p.profiles ? Object.fromEntries(Object.entries(p.profiles).map(([name, x]) => [name, corners(x)])) : undefined;
  const calibration = p.calibration ? { files: [p.calibration.texts], method: p.calibration.method ?? "minmax", percentile: p.calibration.percentile, maxTexts: p.calibration.max_texts, activations: p.calibration.activations } : undefined;
  return { precisions, calibration, shapes, profiles, verification: p.verification, maxLength: p.max_length, instruction: p.query_instruction, tolerance: (precision: string) => pipelineTolerance(p, precision) };
}

function isInside(path: string, dir: string): boolean {
  return resolve(path).startsWith(resolve(dir) + sep);
}

export async function convertCommand(options: ConvertCommandOptions, out: Output): Promise<void> {
  const model = options.model ?? DEFAULT_MODEL;
  const local = await isDir(model);
  // A hub id's bundled pipeline pins the revision to download when the id names none.
  let chosen = options.pipeline ? await readPipeline(options.pipeline) : local ? undefined : await loadPipelineFor(model);
  const target = !local && chosen?.revision && !model.includes("@") ? `${model}@${chosen.revision}` : model;
  const modelDir = await resolveModelDir(target, { out });
  const spec = await readModelSpec(modelDir);
  if (!options.pipeline && !chosen) chosen = await loadPipelineFor(spec.id);
  const pipelinePath = chosen?.file;
  const pipeline = chosen ? fromPipeline(chosen) : undefined;
  if (pipelinePath) out.info(`pipeline ${pipelinePath}${options.pipeline ? "" : ` (bundled for ${spec.id})`}`);
  const defaults = defaultCorpora(spec.id);
  const calibration = pipeline?.calibration ?? { files: defaults.calibration, method: "minmax" as const };
  const verification = pipeline?.verification ?? defaults.verification;
  const precisions = options.precisions ?? pipeline?.precisions ?? ["fp32", "fp16", "int8"];
  if (!precisions.length) throw new UsageError(`${pipelinePath}: the pipeline asks for no precision convert makes (fp32, fp16, int8)`);

  for (const [flag, path] of [["--report", options.report], ["--junit", options.junit]] as const) {
    // The artifact folder holds exactly what its manifest lists: reports go elsewhere.
    if (path !== undefined && isInside(path, options.output)) throw new UsageError(`${flag} ${path} lies inside the artifact folder ${options.output}; write reports beside it`);
  }
  await checkOutputPaths(
    [
      { path: options.output, flag: "-o", kind: "dir" },
      ...(options.report !== undefined ? [{ path: options.report, flag: "--report", kind: "file" as const }] : []),
      ...(options.junit !== undefined ? [{ path: options.junit, flag: "--junit", kind: "file" as const }] : []),
    ],
    [
      { path: modelDir, what: "checkpoint folder", kind: "dir" },
      ...(options.golden ? [{ path: options.golden, what: "golden file", kind: "file" as const }] : []),
      ...(pipelinePath ? [{ path: pipelinePath, what: "pipeline file", kind: "file" as const }] : []),
      ...(precisions.includes("int8") ? calibration.files.map((f) => ({ path: f, what: "calibration corpus", kind: "file" as const })) : []),
      ...(options.golden ? [] : [verification.texts, verification.queries].filter((f): f is string => !!f).map((f) => ({ path: f, what: "verification texts", kind: "file" as const }))),
    ],
  );
  const result = await convert({
    modelDir,
    outDir: options.output,
    precisions,
    maxLength: pipeline?.maxLength,
    instruction: pipeline?.instruction,
    tolerances: pipeline?.tolerance,
    tolerance: options.tolerance,
    golden: options.golden,
    verification,
    calibration,
    trtexec: options.trtexec,
    shapes: pipeline?.shapes,
    ...(pipeline?.profiles ? { profiles: pipeline.profiles } : {}),
    force: options.force,
    batchSize: options.batchSize,
    version: pkg.version,
    codeId: `${pkg.version}+${await codeIdentity(fileURLToPath(new URL("../", import.meta.url)))}`,
    argv: options.argv,
    log: { info: (m) => out.info(m), warn: (m) => out.warn(m), verbose: (m) => out.verbose(m), progress: (label, total) => out.progress(label, total) },
  });
  const json = convertJson(result);
  if (options.report) await writeOutputFile(options.report, JSON.stringify(json, null, 2) + "\n");
  if (options.junit && result.compactReports.length) await writeOutputFile(options.junit, reportJUnit(result.compactReports));
  out.result(renderSummary(result), json);
  const failed = result.rows.filter((r) => !r.pass);
  if (failed.length) {
    const first = failed[0]!;
    const why = first.diagnoses[0] ? ` — ${first.diagnoses[0].code}` : "";
    throw new ParityError(`parity failed for ${failed.map((r) => r.precision).join(", ")}: ${first.failures.join("; ")}${why}`);
  }
}
