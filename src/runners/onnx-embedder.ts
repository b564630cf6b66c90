import { availableParallelism } from "node:os";
import { encoderFeeds } from "./feeds.js";
import { executionProviders, ort } from "./ort.js";
import type { ModelSpec } from "../checkpoint/model-spec.js";
import { UsageError } from "../errors.js";
import { applyInstruction, loadCheckedTokenizer, type FlagTokenizer } from "../tokenize/flag-tokenizer.js";
import type { EmbedResult, Embedder, HeadsResult, TextKind } from "./embedder.js";
import type { Head } from "../checkpoint/m3-heads.js";
import { m3SpecialIds, type M3Output } from "../reference/m3.js";
import { denseRow, m3Row } from "./batch-rows.js";

export interface EmbedOverrides {
  pooling?: "cls" | "mean";
  normalize?: boolean;
  /** null: no instruction; undefined: the spec's. */
  instruction?: string | null;
  maxLength?: number;
  /** Applied to each text before the instruction (e.g. lowercasing, as sentence-transformers does). */
  transform?: (text: string) => string;
  /**
   * With batchSize 1 (verify's batch-invariance pass): a backend whose every run is costly may batch
   * texts of one token length together instead, which pads nothing either. TensorRT through trtexec
   * does (one engine load per length, not per text); ONNX Runtime runs each text alone.
   */
  unpadded?: boolean;
}

export interface OnnxEmbedderOptions {
  /** What the graph's `sentence_embedding` output computes, when bge wrote the graph (from the manifest). */
  graphPooling?: { pooling: "cls" | "mean" | "none"; normalize: boolean };
  /** @default os.availableParallelism() */
  threads?: number;
  /** fp32, fp16, int8…: which tolerances apply. @default guessed from the file name, else fp32 */
  precision?: string;
}

/** A precision from a file name (model.fp16.onnx, model_quantized.onnx); fp32 when it names none. */
export function precisionFromFileName(path: string): string {
  const name = path.split(/[\\/]/).pop()!.toLowerCase();
  if (/fp16|float16|half/.test(name)) return "fp16";
  if (/int8|quant|qdq|uint8/.test(name)) return "int8";
  return "fp32";
}

const HIDDEN_OUTPUTS = ["last_hidden_state", "token_embeddings"];

/**
 * ONNX Runtime (CPU) behind the Embedder interface — the one module that touches onnxruntime-node.
 * Texts are sorted by token length and batched so that each batch pads only to its own longest text
 * (FlagEmbedding 1.3+ does the same); vectors come back in input order. When the graph pools as the
 * spec asks, its `sentence_embedding` is used; otherwise pooling and normalisation run here on the
 * hidden states, so models exported elsewhere (optimum's `onnx/model.onnx`) work too.
 */
export class OnnxEmbedder implements Embedder {
  readonly name = "onnx";
  private constructor(
    readonly modelPath: string,
    readonly spec: ModelSpec,
    private readonly session: ort.InferenceSession,
    private readonly tokenizer: FlagTokenizer,
    private readonly useGraphPooling: boolean,
    private readonly hiddenOutput: string | undefined,
    readonly precision: string,
    private readonly specials: Set<number>,
  ) {}

  /** dense, plus sparse/colbert where the graph has sparse_weights/colbert_vectors (bge export --heads). */
  get heads(): Head[] {
    const out: Head[] = ["dense"];
    if (this.session.outputNames.includes("sparse_weights")) out.push("sparse");
    if (this.session.outputNames.includes("colbert_vectors")) out.push("colbert");
    return out;
  }

  get dimension(): number {
    return this.spec.config.hiddenSize;
  }

  /** The output width the graph itself declares (undefined when symbolic). */
  get graphDimension(): number | undefined {
    return outputDimension(this.session);
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  static async load(modelPath: string, spec: ModelSpec, tokenizerDir: string, options: OnnxEmbedderOptions = {}): Promise<OnnxEmbedder> {
    const tokenizer = await loadCheckedTokenizer(tokenizerDir, spec.config.vocabSize);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(modelPath, {
        graphOptimizationLevel: "all",
        executionMode: "sequential",
        intraOpNumThreads: options.threads ?? availableParallelism(),
        interOpNumThreads: 1,
        executionProviders: executionProviders(),
      });
    } catch (err) {
      throw new UsageError(`${modelPath}: ONNX Runtime cannot load this model (${oneLine((err as Error).message)})`);
    }
    const missing = ["input_ids", "attention_mask"].filter((n) => !session.inputNames.includes(n));
    const unknown = session.inputNames.filter((n) => !["input_ids", "attention_mask", "token_type_ids"].includes(n));
    if (missing.length || unknown.length) {
      throw new UsageError(`${modelPath}: inputs ${session.inputNames.join(", ")} are not a BERT/XLM-R encoder's (need input_ids, attention_mask, optional token_type_ids)`);
    }
    const g = options.graphPooling;
    const useGraphPooling =
      session.outputNames.includes("sentence_embedding") && g !== undefined && g.pooling === spec.pooling && g.normalize === spec.normalize;
    const hiddenOutput = HIDDEN_OUTPUTS.find((n) => session.outputNames.includes(n));
    if (!useGraphPooling && !hiddenOutput) {
      throw new UsageError(`${modelPath}: outputs ${session.outputNames.join(", ")} include no hidden states (last_hidden_state or token_embeddings) to pool ${spec.pooling}`);
    }
    // Vectors are sliced by the config's hidden size: a graph of another width would give garbage, not an error.
    const graphDim = outputDimension(session);
    if (graphDim !== undefined && graphDim !== spec.config.hiddenSize) {
      await session.release();
      throw new UsageError(`${modelPath}: the graph outputs ${graphDim}-dimensional vectors but config.json says hidden_size ${spec.config.hiddenSize}: the model and its config do not belong together`);
    }
    const specials = await m3SpecialIds(tokenizerDir, tokenizer);
    return new OnnxEmbedder(modelPath, spec, session, tokenizer, useGraphPooling, hiddenOutput, options.precision ?? precisionFromFileName(modelPath), specials);
  }

  /** Whether the graph has hidden states to pool differently from its own sentence_embedding. */
  get hasHiddenStates(): boolean {
    return this.hiddenOutput !== undefined;
  }

  get hasTokenTypeInput(): boolean {
    return this.session.inputNames.includes("token_type_ids");
  }

  async embed(
    texts: readonly string[],
    kind: TextKind,
    options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<EmbedResult> {
    return this.embedWith(texts, kind, options);
  }

  /**
   * Like embed, with runtime settings changed for this call: what verify's diagnoses use to test a
   * hypothesis (another pooling, no normalisation, another instruction or max_length, transformed text)
   * without reloading the model. Pooling or normalisation other than the graph's own are computed
   * from the hidden states.
   */
  async embedWith(
    texts: readonly string[],
    kind: TextKind,
    options: EmbedOverrides & { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<EmbedResult> {
    const batchSize = options.batchSize ?? 32;
    const maxLength = options.maxLength ?? this.spec.maxLength;
    const queryInstruction = options.instruction === undefined ? this.spec.queryInstruction : (options.instruction ?? undefined);
    const pooling = options.pooling ?? this.spec.pooling;
    const normalize = options.normalize ?? this.spec.normalize;
    const useGraph = this.useGraphPooling && pooling === this.spec.pooling && normalize === this.spec.normalize;
    if (!useGraph && !this.hiddenOutput) throw new UsageError(`${this.modelPath} has no hidden-state output to pool ${pooling}`);
    const transform = options.transform ?? ((t: string) => t);
    const H = this.dimension;
    const inputIds = this.cachedIds(texts, `${kind}\u0000${maxLength}\u0000${queryInstruction ?? ""}`, options.transform, () =>
      texts.map((t) => this.tokenizer.encode(applyInstruction(transform(t), queryInstruction, kind), maxLength)),
    );
    const order = inputIds.map((_, i) => i).sort((a, b) => inputIds[b]!.length - inputIds[a]!.length || a - b);
    const embeddings = new Array<Float64Array>(texts.length);
    let done = 0;
    for (let start = 0; start < order.length; start += batchSize) {
      const batch = order.slice(start, start + batchSize);
      const S = Math.max(...batch.map((i) => inputIds[i]!.length));
      const B = batch.length;
      const feeds = this.feeds(batch.map((i) => inputIds[i]!));
      const fetch = useGraph ? ["sentence_embedding"] : [this.hiddenOutput!];
      const out = await this.session.run(feeds, fetch);
      const data = out[fetch[0]!]!.data as Float32Array;
      const layout = { seq: S, hidden: H, pooled: useGraph, pooling, normalize };
      batch.forEach((ti, r) => (embeddings[ti] = denseRow(data, layout, r, inputIds[ti]!.length)));
      done += B;
      options.onProgress?.(done, texts.length);
    }
    return { embeddings, inputIds };
  }

  /**
   * bge-m3's heads from the graph's outputs: the dense vector as {@link embed} computes it; sparse as
   * FlagEmbedding post-processes `sparse_weights` (specials and weights ≤ 0 dropped, max per id — the
   * graph's weight at special tokens is reported as specialWeight); ColBERT as the graph's
   * `colbert_vectors` rows for the text's tokens after CLS, taken as they are (not renormalised).
   */
  async embedHeads(
    texts: readonly string[],
    kind: TextKind,
    want: readonly Head[],
    options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<HeadsResult> {
    const batchSize = options.batchSize ?? 32;
    const { maxLength, pooling, normalize } = this.spec;
    const instruction = this.spec.queryInstruction;
    const inputIds = this.cachedIds(texts, `${kind}\u0000${maxLength}\u0000${instruction ?? ""}`, undefined, () =>
      texts.map((t) => this.tokenizer.encode(applyInstruction(t, instruction, kind), maxLength)),
    );
    const H = this.dimension;
    const dense = this.useGraphPooling ? "sentence_embedding" : this.hiddenOutput!;
    const fetch = [dense, ...(want.includes("sparse") ? ["sparse_weights"] : []), ...(want.includes("colbert") ? ["colbert_vectors"] : [])];
    const outputs = new Array<M3Output>(texts.length);
    const order = inputIds.map((_, i) => i).sort((a, b) => inputIds[b]!.length - inputIds[a]!.length || a - b);
    let done = 0;
    for (let start = 0; start < order.length; start += batchSize) {
      const batch = order.slice(start, start + batchSize);
      const S = Math.max(...batch.map((i) => inputIds[i]!.length));
      const out = await this.session.run(this.feeds(batch.map((i) => inputIds[i]!)), fetch);
      const d = out[dense]!.data as Float32Array;
      const sw = out.sparse_weights?.data as Float32Array | undefined;
      const cv = out.colbert_vectors;
      const D = cv ? Number(cv.dims[2]) : 0;
      const heads = { seq: S, hidden: H, dense: d, pooled: this.useGraphPooling, pooling, normalize, specials: this.specials, ...(sw ? { sparse: sw } : {}), ...(cv ? { colbert: { values: cv.data as Float32Array, dim: D } } : {}) };
      batch.forEach((ti, r) => (outputs[ti] = m3Row(heads, r, inputIds[ti]!)));
      done += batch.length;
      options.onProgress?.(done, texts.length);
    }
    return { outputs, inputIds };
  }

  /** Token ids of a texts array already tokenised with the same settings (verify runs each list twice). */
  private readonly idCache = new WeakMap<readonly string[], Map<string, number[][]>>();

  private cachedIds(texts: readonly string[], key: string, transform: ((t: string) => string) | undefined, compute: () => number[][]): number[][] {
    if (transform) return compute();
    let byKey = this.idCache.get(texts);
    if (!byKey) this.idCache.set(texts, (byKey = new Map()));
    let ids = byKey.get(key);
    if (!ids) byKey.set(key, (ids = compute()));
    return ids;
  }

  /** Right-padded int64 feeds for a batch of token id lists (token_type_ids all zero where the graph takes them). */
  feeds(batch: readonly (readonly number[])[]): Record<string, ort.Tensor> {
    return encoderFeeds(batch, this.tokenizer.padId, this.session.inputNames);
  }

  async deactivate(): Promise<void> {
    await this.session.release();
  }
}

/** The last axis of the vector or hidden-state output, where the graph declares it as a number. */
export function outputDimension(session: ort.InferenceSession): number | undefined {
  const meta = session.outputMetadata.find((m) => m.name === "sentence_embedding" || HIDDEN_OUTPUTS.includes(m.name));
  const last = meta?.isTensor ? meta.shape.at(-1) : undefined;
  return typeof last === "number" && last > 0 ? last : undefined;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}
