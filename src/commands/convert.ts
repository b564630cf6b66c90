import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { join, resolve, sep } from "node:path";
import type { Output } from "../cli/output.js";
import { readPipeline, type Pipeline } from "../artifacts/pipeline.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { resolveModelDir } from "../checkpoint/resolve-model.js";
import { convert, type ConvertPrecision } from "../convert/convert.js";
import { convertJson, renderSummary } from "../convert/summary.js";
import { ParityError, UsageError } from "../errors.js";
import { reportJUnit } from "../parity/report.js";
import type { CalibrationMethod } from "../quantize/calibrate.js";
import type { EngineShapes } from "../trt/build-engine.js";
import { writeOutputFile } from "../util/atomic.js";
import { isFile } from "../util/fs.js";
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

/** The bundled pipeline for a hub id (BAAI/bge-small-zh-v1.5 → pipelines/bge-small-zh-v1.5.json), if there is one. */
async function bundledPipelineFor(modelId: string): Promise<string | undefined> {
  const name = modelId.split("/").pop() ?? "";
  if (!/^[A-Za-z0-9._-]+$/.test(name) || !modelId.startsWith("BAAI/")) return undefined;
  const path = join(BUNDLED, "pipelines", `${name}.json`);
  return (await isFile(path)) ? path : undefined;
}

/** The project's own corpora for a model without a pipeline: by the language its id names. */
function defaultCorpora(modelId: string): { calibration: string[]; verification: { texts: string; queries: string } } {
  const corpus = (f: string) => join(BUNDLED, "pipelines", "corpus", f);
  const langs = /-zh\b|-zh-/.test(modelId) ? ["zh"] : /-en\b|-en-/.test(modelId) ? ["en"] : ["zh", "en"];
  return {
    calibration: langs.flatMap((l) => [corpus(`${l}-passages.txt`), corpus(`${l}-queries.txt`)]),
    verification: { texts: join(BUNDLED, "golden", "texts", "verify-passages.txt"), queries: join(BUNDLED, "golden", "texts", "verify-queries.txt") },
  };
}

function parseShape(s: string, field: string, pipelinePath: string): [number, number] {
  const m = /^(\d+)x(\d+)$/.exec(s);
  if (!m) throw new UsageError(`${pipelinePath}: ${field} is ${JSON.stringify(s)}; expected BATCHxSEQ such as 8x128`);
  return [Number(m[1]), Number(m[2])];
}

/** What a pipeline asks of convert, in convert's terms. */
function fromPipeline(p: Pipeline, path: string) {
  const precisions = p.precisions ? (Object.keys(p.precisions).filter((k) => k === "fp32" || k === "fp16" || k === "int8") as ConvertPrecision[]) : undefined;
  const cal = p.calibration as unknown;
  const calibration =
    typeof cal === "string"
      ? { files: [cal], method: undefined }
      : cal && typeof cal === "object"
        ? { files: ([] as string[]).concat((cal as { texts: string | string[] }).texts), method: (cal as { method?: CalibrationMethod }).method }
        : undefined;
  const shapes: Partial<EngineShapes> | undefined = p.shapes
    ? { min: parseShape(p.shapes.min, "shapes.min", path), opt: parseShape(p.shapes.opt, "shapes.opt", path), max: parseShape(p.shapes.max, "shapes.max", path) }
    : undefined;
  return { precisions, calibration, shapes, verification: p.verification, tolerances: p.precisions, maxLength: p.max_length, instruction: p.query_instruction };
}

function isInside(path: string, dir: string): boolean {
  return resolve(path).startsWith(resolve(dir) + sep);
}

export async function convertCommand(options: ConvertCommandOptions, out: Output): Promise<void> {
  const model = options.model ?? DEFAULT_MODEL;
  const modelDir = await resolveModelDir(model, { out });
  const spec = await readModelSpec(modelDir);
  const pipelinePath = options.pipeline ?? (await bundledPipelineFor(spec.id));
  const pipeline = pipelinePath ? fromPipeline(await readPipeline(pipelinePath), pipelinePath) : undefined;
  if (pipelinePath) out.info(`pipeline ${pipelinePath}${options.pipeline ? "" : ` (bundled for ${spec.id})`}`);
  const defaults = defaultCorpora(spec.id);
  const calibrationFiles = pipeline?.calibration?.files ?? defaults.calibration;
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
      ...(precisions.includes("int8") ? calibrationFiles.map((f) => ({ path: f, what: "calibration corpus", kind: "file" as const })) : []),
      ...(options.golden ? [] : [verification.texts, verification.queries].filter((f): f is string => !!f).map((f) => ({ path: f, what: "verification texts", kind: "file" as const }))),
    ],
  );
  const result = await convert({
    modelDir,
    outDir: options.output,
    precisions,
    maxLength: pipeline?.maxLength,
    instruction: pipeline?.instruction,
    tolerances: pipeline?.tolerances,
    tolerance: options.tolerance,
    golden: options.golden,
    verification,
    calibration: { files: calibrationFiles, method: pipeline?.calibration?.method ?? "minmax" },
    trtexec: options.trtexec,
    shapes: pipeline?.shapes,
    force: options.force,
    batchSize: options.batchSize,
    version: pkg.version,
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
