import { collectTexts } from "../cli/inputs.js";
import type { Output } from "../cli/output.js";
import type { Pooling } from "../checkpoint/model-spec.js";
import { assertFiniteEmbedding } from "../runners/embedder.js";
import { UsageError } from "../errors.js";
import { isEngineFile, loadEmbedder, type Backend } from "../runners/load-embedder.js";
import { TrtEmbedder } from "../runners/trt-embedder.js";

export interface EmbedCommandOptions {
  model: string;
  texts: string[];
  file?: string;
  backend?: Backend;
  precision?: string;
  query: boolean;
  pooling?: Pooling;
  normalize: boolean;
  maxLength?: number;
  batchSize: number;
  instruction?: string | null;
  /** --backend trt: the trtexec to run the engine with (else $TRTEXEC, PATH, /usr/src/tensorrt/bin). */
  trtexec?: string;
}

export async function embedCommand(options: EmbedCommandOptions, out: Output): Promise<void> {
  if (options.trtexec !== undefined && options.backend !== "trt" && !(await isEngineFile(options.model))) {
    throw new UsageError(`--trtexec ${options.trtexec} applies to --backend trt only (TensorRT engines); add --backend trt to embed with the artifact's engine`);
  }
  const texts = await collectTexts(options.texts, options.file);
  const { embedder, spec, target } = await loadEmbedder(options.model, {
    backend: options.backend,
    precision: options.precision,
    pooling: options.pooling,
    normalize: options.normalize,
    maxLength: options.maxLength,
    instruction: options.instruction,
    trtexec: options.trtexec,
    out,
  });
  out.verbose(
    `${embedder.name} backend on ${target.path}: model ${spec.id}, ${spec.config.arch}, pooling ${spec.pooling}, normalize ${spec.normalize}, max_length ${spec.maxLength}, instruction ${JSON.stringify(spec.queryInstruction ?? null)}`,
  );
  try {
    const kind = options.query ? "query" : "passage";
    const { embeddings } = await embedder.embed(texts, kind, { batchSize: options.batchSize, onProgress: out.progress("embed", texts.length) });
    embeddings.forEach((e, i) => assertFiniteEmbedding(e, `text ${i}`, texts[i]!));
    if (embedder instanceof TrtEmbedder) {
      const v = embedder.trtexec.version;
      out.verbose(`TensorRT ${v.major}.${v.minor}.${v.patch}${embedder.device ? ` on ${embedder.device.name}` : ""} through ${embedder.trtexec.path}: ${embedder.runs} trtexec run${embedder.runs === 1 ? "" : "s"}`);
    }
    const rows = embeddings.map((e) => Array.from(e));
    out.result(rows.map((r) => JSON.stringify(r)).join("\n"), { embeddings: rows });
  } finally {
    await embedder.deactivate();
  }
}
