import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { readTextsFile } from "../cli/inputs.js";
import type { Output } from "../cli/output.js";
import { UsageError } from "../errors.js";
import type { CalibrationMethod } from "../quantize/calibrate.js";
import type { DynamicActivations } from "../quantize/dynamic-graph.js";
import { quantizeArtifact, type Int8Precision } from "../quantize/quantize-artifact.js";
import type { SmoothSetting } from "../quantize/smooth.js";
import { checkOutputPaths } from "../util/io-paths.js";

export interface QuantizeCommandOptions {
  artifact: string;
  calibration: string;
  method: CalibrationMethod;
  percentile?: number;
  precisions: Int8Precision[];
  exclude: string[];
  trtVersion: string;
  batchSize: number;
  naive: boolean;
  autoExclude: boolean;
  /** @default "auto" */
  smooth?: SmoothSetting;
  /** @default "static" */
  activations?: DynamicActivations;
  argv: string[];
}

const pkg = createRequire(import.meta.url)("../../package.json") as { version: string };

/** Fewer texts than this leave rare activations (outliers) out of the statistics. */
const SMALL_CORPUS = 100;

export async function quantizeCommand(options: QuantizeCommandOptions, out: Output): Promise<void> {
  // The artifact folder is both input and output: the corpus must not live inside it.
  await checkOutputPaths([], [{ path: options.calibration, what: "calibration corpus", kind: "file" }]);
  const texts = await readTextsFile(options.calibration);
  if (texts.length === 0) throw new UsageError(`${options.calibration}: the calibration corpus is empty`);
  if (texts.length < SMALL_CORPUS) out.warn(`${options.calibration} holds ${texts.length} texts; ${SMALL_CORPUS}+ representative texts calibrate more reliably`);
  const corpusSha256 = createHash("sha256").update(await readFile(options.calibration)).digest("hex");
  const started = Date.now();
  const { calibration, written, excluded, smoothed } = await quantizeArtifact({
    artifactDir: options.artifact,
    texts,
    corpusSha256,
    method: options.method,
    percentile: options.percentile,
    precisions: options.precisions,
    exclude: options.exclude,
    trtVersion: options.trtVersion,
    naive: options.naive,
    autoExclude: options.autoExclude,
    smooth: options.smooth,
    activations: options.activations,
    batchSize: options.batchSize,
    builtBy: { tool: "bge", version: pkg.version, args: options.argv },
    onProgress: out.progress("calibrate", texts.length),
    onStage: (m) => out.info(m),
    onWarn: (m) => out.warn(m),
  });
  const s = calibration.summary;
  out.info(
    `quantized ${options.artifact} in ${((Date.now() - started) / 1000).toFixed(1)} s: ${s.texts} texts, ${s.tokens} tokens, ${calibration.tensors.size} tensors calibrated (${s.method}) in ${s.seconds.toFixed(1)} s; ${written.map((f) => `${f.path} ${(f.size / 1e6).toFixed(1)} MB`).join(", ")}${smoothed.length ? `; ${smoothed.length} linear input(s) smoothed (SmoothQuant)` : ""}${excluded.length ? `; ${excluded.length} layer(s) kept in float` : ""}`,
  );
  out.result(options.artifact, {
    artifact: options.artifact,
    files: written.map((f) => ({ path: f.path, role: f.role, sha256: f.sha256, size: f.size })),
    calibration: { ...s, tensors: calibration.tensors.size, corpus_sha256: corpusSha256 },
    excluded: excluded.map((t) => t.node),
    smoothed: smoothed.map((p) => ({ place: p.place, alpha: p.alpha, spread: p.spread })),
  });
}
