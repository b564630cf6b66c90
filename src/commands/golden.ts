import { createRequire } from "node:module";
import { resolve } from "node:path";
import { readTextsFile } from "../cli/inputs.js";
import type { Output } from "../cli/output.js";
import { GOLDEN_FORMAT, writeGolden, type GoldenItem } from "../artifacts/golden.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { resolveModelDir } from "../checkpoint/resolve-model.js";
import { hashWeights } from "../checkpoint/weights.js";
import { UsageError } from "../errors.js";
import { ReferenceEmbedder } from "../reference/reference-embedder.js";

export interface GoldenCommandOptions {
  model: string;
  texts: string;
  queries?: string;
  output: string;
  reference: "native";
  maxLength?: number;
  batchSize: number;
  instruction?: string | null;
}

const pkg = createRequire(import.meta.url)("../../package.json") as { version: string };

/** A model folder inside a Hugging Face cache snapshot names its commit; elsewhere the revision is unknown. */
function snapshotRevision(dir: string): string | null {
  const m = /[\\/]snapshots[\\/]([0-9a-f]{40})(?:[\\/]|$)/.exec(resolve(dir));
  return m ? m[1]! : null;
}

export async function goldenCommand(options: GoldenCommandOptions, out: Output): Promise<void> {
  const dir = await resolveModelDir(options.model);
  const spec = await readModelSpec(dir, { maxLength: options.maxLength, queryInstruction: options.instruction });
  const passages = await readTextsFile(options.texts);
  const queries = options.queries ? await readTextsFile(options.queries) : [];
  if (passages.length + queries.length === 0) throw new UsageError(`${options.texts}: no texts to embed`);
  if (queries.length && spec.queryInstruction === undefined) {
    out.warn(`${spec.id} has no known query instruction: queries are embedded as they are (pass --instruction to set one)`);
  }
  const weightsSha = await hashWeights(dir);
  const embedder = await ReferenceEmbedder.load(spec);
  const items: GoldenItem[] = [];
  const total = passages.length + queries.length;
  const tick = out.progress("golden", total);
  for (const [kind, texts, offset] of [["passage", passages, 0], ["query", queries, passages.length]] as const) {
    if (!texts.length) continue;
    const res = await embedder.embed(texts, kind, { batchSize: options.batchSize, onProgress: (d) => tick(offset + d) });
    texts.forEach((text, i) => items.push({ text, kind, input_ids: res.inputIds[i]!, embedding: Array.from(res.embeddings[i]!) }));
  }
  await writeGolden(options.output, {
    format: GOLDEN_FORMAT,
    model: { id: spec.id, revision: snapshotRevision(dir), weights_sha256: weightsSha },
    producer: {
      name: "bge-reference",
      version: pkg.version,
      pooling: spec.pooling,
      normalize: spec.normalize,
      use_fp16: false,
      max_length: spec.maxLength,
      query_instruction: spec.queryInstruction ?? null,
      device: "cpu",
      dtype: "float64",
    },
    items,
  });
  out.info(`wrote ${items.length} items (${passages.length} passages, ${queries.length} queries, dim ${embedder.dimension}) to ${options.output}`);
  out.result(options.output, { golden: options.output, items: items.length, dimension: embedder.dimension, model: spec.id, weights_sha256: weightsSha });
}
