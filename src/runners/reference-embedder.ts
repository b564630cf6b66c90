import type { ModelSpec } from "../checkpoint/model-spec.js";
import { checkEncoderShapes, openWeights } from "../checkpoint/weights.js";
import { l2Normalize } from "../reference/pooling.js";
import type { EmbedResult, Embedder, TextKind } from "./embedder.js";
import { applyInstruction, loadFlagTokenizer, type FlagTokenizer } from "../tokenize/flag-tokenizer.js";
import { loadEncoderWeights, pooledForward, type EncoderWeights } from "../reference/encoder.js";
import { EncoderPool } from "../reference/encoder-pool.js";

/** The float64 reference: FlagModel's tokenisation, pooling and normalisation around {@link encoderForward}. */
export class ReferenceEmbedder implements Embedder {
  readonly name = "reference";
  private constructor(
    readonly spec: ModelSpec,
    private readonly tokenizer: FlagTokenizer,
    /** Local weights for single-threaded passes; undefined when a thread pool holds (shared) weights. */
    private readonly weights: EncoderWeights | undefined,
    private readonly threads: EncoderPool | undefined,
  ) {}

  get dimension(): number {
    return this.spec.config.hiddenSize;
  }

  /** @param threads forward passes run on this many threads (default: the cores, at most 8); 1 keeps them on this one */
  static async load(spec: ModelSpec, options: { threads?: number } = {}): Promise<ReferenceEmbedder> {
    const tokenizer = await loadFlagTokenizer(spec.dir);
    const source = await openWeights(spec.dir);
    try {
      // Config against the weights' headers, then the tokenizer against the config, before any
      // tensor is read: a bad model is refused in milliseconds, never after minutes of loading.
      checkEncoderShapes(source, spec.config);
      tokenizer.probe(spec.config.vocabSize);
      const weights = await loadEncoderWeights(source, spec.config);
      const pool = EncoderPool.create(spec.config, weights, spec.pooling, options.threads);
      return new ReferenceEmbedder(spec, tokenizer, pool ? undefined : weights, pool);
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
      // Unpadded sequences: the forward pass over a text's own tokens is exactly what FlagModel's
      // padded batch computes for them behind its attention mask.
      const sequences = texts.slice(start, start + batchSize).map((t) => this.tokenizer.encode(applyInstruction(t, queryInstruction, kind), maxLength));
      const pooled = this.threads ? await this.threads.pool(sequences) : sequences.map((ids) => pooledForward(config, this.weights!, ids, pooling));
      pooled.forEach((p, r) => {
        embeddings.push(normalize ? l2Normalize(p) : p);
        inputIds.push(sequences[r]!);
      });
      options.onProgress?.(Math.min(start + batchSize, texts.length), texts.length);
      // Let progress output and signals through between batches.
      await new Promise((resolve) => setImmediate(resolve));
    }
    return { embeddings, inputIds };
  }

  async deactivate(): Promise<void> {
    await this.threads?.close();
  }
}
