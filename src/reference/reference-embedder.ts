import type { ModelSpec } from "../checkpoint/model-spec.js";
import { openWeights } from "../checkpoint/weights.js";
import { l2Normalize, poolHidden } from "../parity/pooling.js";
import type { EmbedResult, Embedder, TextKind } from "../runners/embedder.js";
import { applyInstruction, loadFlagTokenizer, type FlagTokenizer } from "../tokenize/flag-tokenizer.js";
import { encoderForward, loadEncoderWeights, type EncoderWeights } from "./encoder.js";

/** The float64 reference: FlagModel's tokenisation, pooling and normalisation around {@link encoderForward}. */
export class ReferenceEmbedder implements Embedder {
  readonly name = "reference";
  private constructor(
    readonly spec: ModelSpec,
    private readonly tokenizer: FlagTokenizer,
    private readonly weights: EncoderWeights,
  ) {}

  get dimension(): number {
    return this.spec.config.hiddenSize;
  }

  static async load(spec: ModelSpec): Promise<ReferenceEmbedder> {
    const tokenizer = await loadFlagTokenizer(spec.dir);
    const source = await openWeights(spec.dir);
    try {
      return new ReferenceEmbedder(spec, tokenizer, await loadEncoderWeights(source, spec.config));
    } finally {
      await source.close();
    }
  }

  async embed(
    texts: readonly string[],
    kind: TextKind,
    options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<EmbedResult> {
    const batchSize = options.batchSize ?? 32;
    const embeddings: Float64Array[] = [];
    const inputIds: number[][] = [];
    const { config, pooling, normalize, maxLength, queryInstruction } = this.spec;
    for (let start = 0; start < texts.length; start += batchSize) {
      const batch = texts.slice(start, start + batchSize).map((t) => applyInstruction(t, queryInstruction, kind));
      const enc = this.tokenizer.encodeBatch(batch, maxLength);
      for (let r = 0; r < batch.length; r++) {
        const ids = enc.input_ids[r]!;
        const mask = enc.attention_mask[r]!;
        const { hidden, length } = encoderForward(config, this.weights, ids, mask, enc.token_type_ids[r]);
        // The forward pass returns only unmasked rows, so every row counts for mean pooling.
        const pooled = poolHidden(hidden, length, config.hiddenSize, new Array<number>(length).fill(1), pooling);
        embeddings.push(normalize ? l2Normalize(pooled) : pooled);
        inputIds.push(ids.filter((_, i) => mask[i]));
      }
      options.onProgress?.(Math.min(start + batchSize, texts.length), texts.length);
      // Let progress output and signals through between batches.
      await new Promise((resolve) => setImmediate(resolve));
    }
    return { embeddings, inputIds };
  }

  async deactivate(): Promise<void> {}
}
