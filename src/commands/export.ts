import { createRequire } from "node:module";
import type { Output } from "../cli/output.js";
import type { Pooling } from "../checkpoint/model-spec.js";
import { resolveModelDir } from "../checkpoint/resolve-model.js";
import { UsageError } from "../errors.js";
import type { OnnxPrecision } from "../onnx/encoder-graph.js";
import { exportOnnx } from "../onnx/export.js";

export interface ExportCommandOptions {
  model: string;
  output: string;
  precision: string;
  opset: number;
  pooling: Pooling | "auto" | "none";
  maxLength?: number;
  externalData: boolean | "auto";
  normalize: boolean;
  instruction?: string | null;
  argv: string[];
}

const pkg = createRequire(import.meta.url)("../../package.json") as { version: string };

export function parsePrecisions(list: string, allowed: readonly string[]): string[] {
  const items = list.split(",").map((s) => s.trim()).filter(Boolean);
  const bad = items.filter((p) => !allowed.includes(p));
  if (!items.length || bad.length) throw new UsageError(`--precision ${list}: choose from ${allowed.join(", ")} (comma-separated)`);
  return [...new Set(items)];
}

export async function exportCommand(options: ExportCommandOptions, out: Output): Promise<void> {
  const precisions = parsePrecisions(options.precision, ["fp32", "fp16"]) as OnnxPrecision[];
  const modelDir = await resolveModelDir(options.model, { out });
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
    builtBy: { tool: "bge", version: pkg.version, args: options.argv },
    onStage: (m) => out.info(m),
  });
  const onnx = manifest.files.filter((f) => precisions.some((p) => f.path === `model.${p}.onnx`));
  out.info(
    `exported ${spec.id} (${spec.config.arch}, ${manifest.pooling} pooling, normalize ${manifest.normalize}, opset ${options.opset}) to ${options.output} in ${((Date.now() - started) / 1000).toFixed(1)} s: ${onnx.map((f) => `${f.path} ${(f.size / 1e6).toFixed(1)} MB${f.external_data ? ` + ${f.external_data}` : ""}`).join(", ")}`,
  );
  out.result(options.output, { artifact: options.output, files: manifest.files.map((f) => ({ path: f.path, role: f.role, sha256: f.sha256, size: f.size })) });
}
