import { createRequire } from "node:module";
import type { Output } from "../cli/output.js";
import type { Pooling } from "../checkpoint/model-spec.js";
import { resolveModelDir } from "../checkpoint/resolve-model.js";
import { UsageError } from "../errors.js";
import type { OnnxPrecision } from "../onnx/encoder-graph.js";
import { exportOnnx } from "../onnx/export.js";
import { parseHeads } from "../reference/m3.js";
import { checkOutputPaths } from "../util/io-paths.js";

export interface ExportCommandOptions {
  model: string;
  output: string;
  precisions: OnnxPrecision[];
  opset: number;
  pooling: Pooling | "auto" | "none";
  maxLength?: number;
  externalData: boolean | "auto";
  normalize: boolean;
  instruction?: string | null;
  /** --heads dense,sparse,colbert (default: every head the checkpoint has). */
  heads?: string;
  argv: string[];
}

const pkg = createRequire(import.meta.url)("../../package.json") as { version: string };

export async function exportCommand(options: ExportCommandOptions, out: Output): Promise<void> {
  const precisions = options.precisions;
  const modelDir = await resolveModelDir(options.model, { out });
  await checkOutputPaths([{ path: options.output, flag: "-o", kind: "dir" }], [{ path: modelDir, what: "checkpoint folder", kind: "dir" }]);
  const started = Date.now();
  const { manifest, spec } = await exportOnnx({
    modelDir,
    outDir: options.output,
    precisions,
    opset: options.opset,
    pooling: options.pooling,
    maxLength: options.maxLength,
    externalData: options.externalData,
    normalize: options.normalize,
    instruction: options.instruction,
    heads: options.heads === undefined ? undefined : parseHeads(options.heads, "--heads"),
    builtBy: { tool: "bge", version: pkg.version, args: options.argv },
    onStage: (m) => out.info(m),
    onWarn: (m) => out.warn(m),
  });
  const onnx = manifest.files.filter((f) => precisions.some((p) => f.path === `model.${p}.onnx`));
  out.info(
    `exported ${spec.id} (${spec.config.arch}, ${manifest.pooling} pooling, normalize ${manifest.normalize}${manifest.heads ? `, heads ${manifest.heads.join(",")}` : ""}, opset ${options.opset}) to ${options.output} in ${((Date.now() - started) / 1000).toFixed(1)} s: ${onnx.map((f) => `${f.path} ${(f.size / 1e6).toFixed(1)} MB${f.external_data ? ` + ${f.external_data}` : ""}`).join(", ")}`,
  );
  out.result(options.output, { artifact: options.output, files: manifest.files.map((f) => ({ path: f.path, role: f.role, sha256: f.sha256, size: f.size })) });
}
