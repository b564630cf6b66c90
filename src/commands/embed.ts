import { collectTexts } from "../cli/inputs.js";
import type { Output } from "../cli/output.js";
import { readModelSpec, type Pooling } from "../checkpoint/model-spec.js";
import { resolveModelDir } from "../checkpoint/resolve-model.js";
import { ReferenceEmbedder } from "../reference/reference-embedder.js";

export interface EmbedCommandOptions {
  model: string;
  texts: string[];
  file?: string;
  backend: "reference";
  query: boolean;
  pooling?: Pooling;
  normalize: boolean;
  maxLength?: number;
  batchSize: number;
  instruction?: string | null;
}

export async function embedCommand(options: EmbedCommandOptions, out: Output): Promise<void> {
  const dir = await resolveModelDir(options.model);
  const spec = await readModelSpec(dir, {
    pooling: options.pooling,
    normalize: options.normalize ? undefined : false,
    maxLength: options.maxLength,
    queryInstruction: options.instruction,
  });
  const texts = await collectTexts(options.texts, options.file);
  out.verbose(
    `model ${spec.id}: ${spec.config.arch}, pooling ${spec.pooling} (${spec.sources.pooling}), normalize ${spec.normalize} (${spec.sources.normalize}), max_length ${spec.maxLength}, instruction ${JSON.stringify(spec.queryInstruction ?? null)} (${spec.sources.queryInstruction})`,
  );
  const embedder = await ReferenceEmbedder.load(spec);
  try {
    const kind = options.query ? "query" : "passage";
    const { embeddings } = await embedder.embed(texts, kind, { batchSize: options.batchSize, onProgress: out.progress("embed", texts.length) });
    const rows = embeddings.map((e) => Array.from(e));
    out.result(rows.map((r) => JSON.stringify(r)).join("\n"), { embeddings: rows });
  } finally {
    await embedder.deactivate();
  }
}
