import { GOLDEN_FORMAT, type GoldenFile, type GoldenItem } from "../artifacts/golden.js";
import type { ModelSpec } from "../checkpoint/model-spec.js";
import { assertFiniteEmbedding } from "../runners/embedder.js";
import { ReferenceEmbedder } from "../runners/reference-embedder.js";

export interface NativeGoldenOptions {
  spec: ModelSpec;
  /** sha256 of the checkpoint's weights (hashWeights): what verify matches artifacts against. */
  weightsSha256: string;
  passages: readonly string[];
  queries: readonly string[];
  batchSize: number;
  /** The producing tool's version, recorded in the golden. */
  version: string;
  onProgress?: (done: number, total: number) => void;
}

/**
 * A golden from bge's own float64 encoder: passages as they are, queries with the model's
 * instruction, each with its token ids and vector. No NaN/Inf vector goes into it.
 */
export async function makeNativeGolden(options: NativeGoldenOptions): Promise<GoldenFile> {
  const { spec, passages, queries } = options;
  const embedder = await ReferenceEmbedder.load(spec);
  const items: GoldenItem[] = [];
  const total = passages.length + queries.length;
  try {
    for (const [kind, texts, offset] of [["passage", passages, 0], ["query", queries, passages.length]] as const) {
      if (!texts.length) continue;
      const onProgress = (d: number) => options.onProgress?.(offset + d, total);
      if (embedder.heads.length > 1) {
        // bge-m3: every head the checkpoint has, in full.
        const res = await embedder.embedHeads(texts, kind, embedder.heads, { batchSize: options.batchSize, onProgress });
        texts.forEach((text, i) => {
          const o = res.outputs[i]!;
          items.push({
            text,
            kind,
            input_ids: res.inputIds[i]!,
            embedding: Array.from(o.dense),
            ...(o.sparse ? { sparse: Object.fromEntries([...o.sparse].sort((a, b) => a[0] - b[0]).map(([id, w]) => [String(id), w])) } : {}),
            ...(o.colbert ? { colbert: o.colbert.map((v) => Array.from(v)) } : {}),
          });
        });
        continue;
      }
      const res = await embedder.embed(texts, kind, { batchSize: options.batchSize, onProgress });
      texts.forEach((text, i) => items.push({ text, kind, input_ids: res.inputIds[i]!, embedding: Array.from(res.embeddings[i]!) }));
    }
  } finally {
    await embedder.deactivate();
  }
  assertFiniteItems(items);
  return {
    format: GOLDEN_FORMAT,
    model: { id: spec.id, revision: spec.revision, weights_sha256: options.weightsSha256 },
    producer: {
      name: "bge-reference",
      version: options.version,
      pooling: spec.pooling,
      normalize: spec.normalize,
      use_fp16: false,
      max_length: spec.maxLength,
      query_instruction: spec.queryInstruction ?? null,
      device: "cpu",
      dtype: "float64",
    },
    items,
  };
}

/** A golden is what every later verify trusts: no NaN/Inf vector goes into one, whichever reference produced it. */
export function assertFiniteItems(items: readonly GoldenItem[]): void {
  const seen = { passage: 0, query: 0 };
  for (const item of items) {
    const what = `${item.kind} ${seen[item.kind]++}`;
    assertFiniteEmbedding(item.embedding, what, item.text);
    item.colbert?.forEach((v) => assertFiniteEmbedding(v, what, item.text));
    if (item.sparse) assertFiniteEmbedding(Object.values(item.sparse), what, item.text);
  }
}
