import { collectTexts } from "../cli/inputs.js";
import type { Output } from "../cli/output.js";
import type { Pooling } from "../checkpoint/model-spec.js";
import { assertFiniteEmbedding, assertHeads, type Embedder } from "../runners/embedder.js";
import type { Head } from "../checkpoint/m3-heads.js";
import { parseHeads, type M3Output } from "../reference/m3.js";
import { UsageError } from "../errors.js";
import { isEngineFile, loadEmbedder, type Backend } from "../runners/load-embedder.js";
import { TrtEmbedder } from "../runners/trt-embedder.js";
import { versionString } from "../trt/discover-trtexec.js";

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
  /** --output dense,sparse,colbert: which of bge-m3's heads to print (undefined: the dense vectors as always). */
  output?: string;
}

export async function embedCommand(options: EmbedCommandOptions, out: Output): Promise<void> {
  if (options.trtexec !== undefined && options.backend !== "trt" && !(await isEngineFile(options.model))) {
    throw new UsageError(`--trtexec ${options.trtexec} applies to --backend trt only (TensorRT engines); add --backend trt to embed with the artifact's engine`);
  }
  const heads = options.output === undefined ? undefined : parseHeads(options.output, "--output");
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
    if (heads) {
      assertHeads(embedder, heads, target.path);
      const { outputs } = await (embedder as Embedder).embedHeads!(texts, kind, heads, { batchSize: options.batchSize, onProgress: out.progress("embed", texts.length) });
      outputs.forEach((o, i) => {
        assertFiniteEmbedding(o.dense, `text ${i}`, texts[i]!);
        o.colbert?.forEach((v) => assertFiniteEmbedding(v, `text ${i}`, texts[i]!));
      });
      const rows = outputs.map((o) => headsJson(o, heads));
      const machine: Record<string, unknown[]> = {};
      for (const h of heads) machine[h] = rows.map((r) => r[h]);
      out.result(rows.map((r) => JSON.stringify(r)).join("\n"), machine);
      return;
    }
    const { embeddings } = await embedder.embed(texts, kind, { batchSize: options.batchSize, onProgress: out.progress("embed", texts.length) });
    embeddings.forEach((e, i) => assertFiniteEmbedding(e, `text ${i}`, texts[i]!));
    if (embedder instanceof TrtEmbedder) {
      out.verbose(`TensorRT ${versionString(embedder.trtexec)}${embedder.device ? ` on ${embedder.device.name}` : ""} through ${embedder.trtexec.path}: ${embedder.runs} trtexec run${embedder.runs === 1 ? "" : "s"}`);
    }
    const rows = embeddings.map((e) => Array.from(e));
    out.result(rows.map((r) => JSON.stringify(r)).join("\n"), { embeddings: rows });
  } finally {
    await embedder.deactivate();
  }
}

/** One text's heads as JSON: dense as a list, sparse as {"<token id>": weight} in id order, ColBERT as a list of vectors. */
export function headsJson(o: M3Output, heads: readonly Head[]): Record<string, unknown> {
  const row: Record<string, unknown> = {};
  if (heads.includes("dense")) row.dense = Array.from(o.dense);
  if (heads.includes("sparse")) row.sparse = Object.fromEntries([...o.sparse!].sort((a, b) => a[0] - b[0]).map(([id, w]) => [String(id), w]));
  if (heads.includes("colbert")) row.colbert = o.colbert!.map((v) => Array.from(v));
  return row;
}
