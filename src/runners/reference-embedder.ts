import type { ModelSpec } from "../checkpoint/model-spec.js";
import { checkEncoderShapes, openWeights } from "../checkpoint/weights.js";
import { l2Normalize } from "../reference/pooling.js";
import type { EmbedResult, Embedder, HeadsResult, TextKind } from "./embedder.js";
import { loadM3Heads, type Head, type M3Heads } from "../checkpoint/m3-heads.js";
import { m3Forward, m3SpecialIds } from "../reference/m3.js";
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
    private readonly m3Heads: M3Heads,
    private readonly specials: Set<number>,
  ) {}

  /** dense, plus the heads whose files the checkpoint has. */
  get heads(): Head[] {
    return ["dense", ...(this.m3Heads.sparse ? ["sparse" as const] : []), ...(this.m3Heads.colbert ? ["colbert" as const] : [])];
  }

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
      const heads = await loadM3Heads(spec.dir, spec.config.hiddenSize);
      const specials = await m3SpecialIds(spec.dir, tokenizer);
      const weights = await loadEncoderWeights(source, spec.config);
      const m3 = { heads, specials: [...specials], normalize: spec.normalize };
      const pool = EncoderPool.create(spec.config, weights, spec.pooling, options.threads, m3);
      return new ReferenceEmbedder(spec, tokenizer, pool ? undefined : weights, pool, heads, specials);
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

  /** bge-m3's heads (FlagEmbedding BGE_M3 semantics, float64) for each text; dense as {@link embed} computes it. */
  async embedHeads(
    texts: readonly string[],
    kind: TextKind,
    want: readonly Head[],
    options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<HeadsResult> {
    const batchSize = options.batchSize ?? 32;
    const outputs: HeadsResult["outputs"] = [];
    const inputIds: number[][] = [];
    const { config, pooling, normalize, maxLength, queryInstruction } = this.spec;
    const heads = [...want];
    for (let start = 0; start < texts.length; start += batchSize) {
      const sequences = texts.slice(start, start + batchSize).map((t) => this.tokenizer.encode(applyInstruction(t, queryInstruction, kind), maxLength));
      const got = this.threads
        ? await this.threads.heads(sequences, heads)
        : sequences.map((ids) => m3Forward(config, this.weights!, this.m3Heads, ids, this.specials, heads, { pooling, normalize }));
      outputs.push(...got);
      inputIds.push(...sequences);
      options.onProgress?.(Math.min(start + batchSize, texts.length), texts.length);
      await new Promise((resolve) => setImmediate(resolve));
    }
    return { outputs, inputIds };
  }

  async deactivate(): Promise<void> {
    await this.threads?.close();
  }
}
