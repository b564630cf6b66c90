import type { ModelSpec } from "../checkpoint/model-spec.js";
import { UsageError, ToolFailedError } from "../errors.js";
import { encoderInputNames } from "../onnx/encoder-graph.js";
import { applyInstruction, loadCheckedTokenizer, type FlagTokenizer } from "../tokenize/flag-tokenizer.js";
import type { TrtexecInfo } from "../trt/discover-trtexec.js";
import { checkEngineDevice, checkEngineVersion, type DeviceSeen, type EngineBinding } from "../trt/engine-binding.js";
import type { ExportedTensor } from "../trt/export-output.js";
import { runEngineWithLog, type RunEngineOptions } from "../trt/run-engine.js";
import { parseTrtexecLog } from "../trt/trtexec-log.js";
import type { EmbedResult, Embedder, HeadsResult, TextKind } from "./embedder.js";
import type { Head } from "../checkpoint/m3-heads.js";
import { m3SpecialIds, type M3Output } from "../reference/m3.js";
import { denseRow, m3Row } from "./batch-rows.js";
import type { EmbedOverrides } from "./onnx-embedder.js";

/** [batch, sequence] of one optimisation-profile corner. */
export type ProfileCorner = readonly [number, number];

export interface TrtEmbedderLoadOptions {
  /** The serialized engine (e.g. the artifact's model.fp16.plan). */
  enginePath: string;
  spec: ModelSpec;
  /** tokenizer.json and friends (the artifact folder). */
  tokenizerDir: string;
  trtexec: TrtexecInfo;
  /** The engine's optimisation profile (manifest `trt.shapes`): batches and sequences must lie within it. */
  profile: { min: ProfileCorner; opt: ProfileCorner; max: ProfileCorner };
  /** fp32, fp16, int8: which tolerances apply. */
  precision: string;
  /** The engine's inputs (manifest `trt.inputs`). @default from config.json's type_vocab_size */
  inputs?: readonly string[];
  /**
   * The engine's outputs (manifest `trt.outputs`: sentence_embedding, last_hidden_state).
   * @default ["last_hidden_state", "sentence_embedding"] when graphPooling is given, else ["last_hidden_state"]
   */
  outputs?: readonly string[];
  /** What the graph's `sentence_embedding` computes (manifest pooling/normalize), when bge wrote it. */
  graphPooling?: { pooling: "cls" | "mean" | "none"; normalize: boolean };
  /**
   * The TensorRT version and GPU that built the engine (manifest `trt`): another version is refused
   * at load, another GPU as soon as a run's log names the one it selected (before its outputs are used).
   */
  builtOn?: EngineBinding;
  /** Where each run's temporary folder goes. @default os.tmpdir() */
  workDir?: string;
  /** Per trtexec run. @default 10 min */
  timeoutMs?: number;
}

const HIDDEN_OUTPUTS = ["last_hidden_state", "token_embeddings"];

/**
 * A TensorRT engine behind the Embedder interface, driven through NVIDIA's trtexec: one trtexec run
 * per batch (the engine is loaded again each run, so `runs` is what a report shows as the cost).
 * Tokenisation is FlagModel's, as in OnnxEmbedder: texts sorted by token length, each batch padded
 * to its own longest text, the instruction on queries only, vectors in input order. The engine's
 * `sentence_embedding` is used when it pools as the spec asks; otherwise CLS/mean pooling and L2
 * normalisation run here on `last_hidden_state`.
 */
export class TrtEmbedder implements Embedder {
  readonly name = "trt";
  /** trtexec inference runs so far (each one loads the engine). */
  runs = 0;
  /** The GPU the last run selected, from its log (undefined until a run names one). */
  device: DeviceSeen | undefined;

  private constructor(
    readonly enginePath: string,
    readonly spec: ModelSpec,
    readonly trtexec: TrtexecInfo,
    readonly profile: TrtEmbedderLoadOptions["profile"],
    readonly precision: string,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
    private readonly tokenizer: FlagTokenizer,
    private readonly useGraphPooling: boolean,
    private readonly hiddenOutput: string | undefined,
    private readonly runOptions: Pick<RunEngineOptions, "workDir" | "timeoutMs">,
    readonly builtOn: EngineBinding | undefined,
    private readonly specials: Set<number>,
  ) {}

  static async load(options: TrtEmbedderLoadOptions): Promise<TrtEmbedder> {
    const { spec, profile, enginePath } = options;
    if (options.builtOn) checkEngineVersion(enginePath, options.builtOn, options.trtexec);
    for (const [corner, [b, s]] of Object.entries(profile)) {
      if (!(Number.isInteger(b) && b >= 1 && Number.isInteger(s) && s >= 1)) {
        throw new UsageError(`${enginePath}: profile ${corner} ${b}x${s} is not a BATCHxSEQ of positive integers`);
      }
    }
    if (profile.min[0] > profile.max[0] || profile.min[1] > profile.max[1]) {
      throw new UsageError(`${enginePath}: profile min ${profile.min.join("x")} exceeds max ${profile.max.join("x")}`);
    }
    const tokenizer = await loadCheckedTokenizer(options.tokenizerDir, spec.config.vocabSize);
    const inputNames = options.inputs ?? encoderInputNames(spec.config);
    const g = options.graphPooling;
    const outputNames = options.outputs ?? (g && g.pooling !== "none" ? ["last_hidden_state", "sentence_embedding"] : ["last_hidden_state"]);
    const useGraphPooling = outputNames.includes("sentence_embedding") && g !== undefined && g.pooling === spec.pooling && g.normalize === spec.normalize;
    const hiddenOutput = HIDDEN_OUTPUTS.find((n) => outputNames.includes(n));
    if (!useGraphPooling && !hiddenOutput) {
      throw new UsageError(`${enginePath}: outputs ${outputNames.join(", ")} include no hidden states (last_hidden_state) to pool ${spec.pooling}${spec.normalize ? " and normalise" : ""}`);
    }
    // The ids whose sparse weight FlagEmbedding drops (CLS, EOS, PAD, UNK), only for engines with the sparse head.
    const specials = outputNames.includes("sparse_weights") ? await m3SpecialIds(options.tokenizerDir, tokenizer) : new Set<number>();
    return new TrtEmbedder(enginePath, spec, options.trtexec, profile, options.precision, inputNames, outputNames, tokenizer, useGraphPooling, hiddenOutput, {
      ...(options.workDir !== undefined && { workDir: options.workDir }),
      ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }),
    }, options.builtOn, specials);
  }

  /** dense, plus sparse/colbert where the engine outputs sparse_weights/colbert_vectors (built from a graph with bge-m3's heads). */
  get heads(): Head[] {
    const out: Head[] = ["dense"];
    if (this.outputNames.includes("sparse_weights")) out.push("sparse");
    if (this.outputNames.includes("colbert_vectors")) out.push("colbert");
    return out;
  }

  get dimension(): number {
    return this.spec.config.hiddenSize;
  }

  /** Whether the engine has hidden states to pool differently from its own sentence_embedding. */
  get hasHiddenStates(): boolean {
    return this.hiddenOutput !== undefined;
  }

  get hasTokenTypeInput(): boolean {
    return this.inputNames.includes("token_type_ids");
  }

  async embed(
    texts: readonly string[],
    kind: TextKind,
    options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<EmbedResult> {
    return this.embedWith(texts, kind, options);
  }

  /**
   * Like embed, with settings changed for this call (verify's diagnoses). A max_length beyond the
   * profile's max sequence is honoured only for texts that still fit; a longer text is a UsageError.
   */
  async embedWith(
    texts: readonly string[],
    kind: TextKind,
    options: EmbedOverrides & { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<EmbedResult> {
    const [maxBatch] = this.profile.max;
    const batchSize = Math.min(options.batchSize ?? 32, maxBatch);
    if (!(batchSize >= 1)) throw new UsageError(`batch size ${options.batchSize} must be at least 1`);
    const maxLength = options.maxLength ?? this.spec.maxLength;
    const queryInstruction = options.instruction === undefined ? this.spec.queryInstruction : (options.instruction ?? undefined);
    const pooling = options.pooling ?? this.spec.pooling;
    const normalize = options.normalize ?? this.spec.normalize;
    const useGraph = this.useGraphPooling && pooling === this.spec.pooling && normalize === this.spec.normalize;
    if (!useGraph && !this.hiddenOutput) throw new UsageError(`${this.enginePath} has no hidden-state output to pool ${pooling}`);
    const transform = options.transform ?? ((t: string) => t);
    const inputIds = this.cachedIds(texts, `${kind}\u0000${maxLength}\u0000${queryInstruction ?? ""}`, options.transform, () =>
      texts.map((t) => this.tokenizer.encode(applyInstruction(transform(t), queryInstruction, kind), maxLength)),
    );
    this.checkLengths(texts, inputIds);

    const H = this.dimension;
    const fetch = useGraph ? "sentence_embedding" : this.hiddenOutput!;
    const order = inputIds.map((_, i) => i).sort((a, b) => inputIds[b]!.length - inputIds[a]!.length || a - b);
    const embeddings = new Array<Float64Array>(texts.length);
    let done = 0;
    for (const batch of batchesOf(order, inputIds, options.unpadded && batchSize === 1 ? { sameLength: maxBatch } : { size: batchSize })) {
      const { outputs, rows, S } = await this.runBatch(batch.map((i) => inputIds[i]!));
      const out = this.output(outputs, fetch);
      checkDims(out, fetch, useGraph ? [rows, H] : [rows, S, H], this.enginePath);
      const layout = { seq: S, hidden: H, pooled: useGraph, pooling, normalize };
      batch.forEach((ti, r) => (embeddings[ti] = denseRow(out.values, layout, r, inputIds[ti]!.length)));
      done += batch.length;
      options.onProgress?.(done, texts.length);
    }
    return { embeddings, inputIds };
  }

  /**
   * bge-m3's heads from the engine's outputs, as OnnxEmbedder.embedHeads reads them from the graph:
   * dense as {@link embed} computes it; sparse as FlagEmbedding post-processes `sparse_weights`
   * (specials and weights ≤ 0 dropped, max per id; the weight left at special tokens is reported as
   * specialWeight); ColBERT as the `colbert_vectors` rows of the text's tokens after CLS, as they are.
   */
  async embedHeads(
    texts: readonly string[],
    kind: TextKind,
    want: readonly Head[],
    options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<HeadsResult> {
    const batchSize = Math.min(options.batchSize ?? 32, this.profile.max[0]);
    const { maxLength, pooling, normalize } = this.spec;
    const instruction = this.spec.queryInstruction;
    const inputIds = this.cachedIds(texts, `${kind}\u0000${maxLength}\u0000${instruction ?? ""}`, undefined, () =>
      texts.map((t) => this.tokenizer.encode(applyInstruction(t, instruction, kind), maxLength)),
    );
    this.checkLengths(texts, inputIds);
    const H = this.dimension;
    const dense = this.useGraphPooling ? "sentence_embedding" : this.hiddenOutput!;
    const result = new Array<M3Output>(texts.length);
    const order = inputIds.map((_, i) => i).sort((a, b) => inputIds[b]!.length - inputIds[a]!.length || a - b);
    let done = 0;
    for (const batch of batchesOf(order, inputIds, { size: batchSize })) {
      const { outputs, rows, S } = await this.runBatch(batch.map((i) => inputIds[i]!));
      const d = this.output(outputs, dense);
      checkDims(d, dense, this.useGraphPooling ? [rows, H] : [rows, S, H], this.enginePath);
      const sw = want.includes("sparse") ? this.output(outputs, "sparse_weights") : undefined;
      if (sw) checkDims(sw, "sparse_weights", [rows, S], this.enginePath);
      const cv = want.includes("colbert") ? this.output(outputs, "colbert_vectors") : undefined;
      const D = cv?.dims[2] ?? 0;
      if (cv) checkDims(cv, "colbert_vectors", [rows, S - 1, D], this.enginePath);
      const heads = { seq: S, hidden: H, dense: d.values, pooled: this.useGraphPooling, pooling, normalize, specials: this.specials, ...(sw ? { sparse: sw.values } : {}), ...(cv ? { colbert: { values: cv.values, dim: D } } : {}) };
      batch.forEach((ti, r) => (result[ti] = m3Row(heads, r, inputIds[ti]!)));
      done += batch.length;
      options.onProgress?.(done, texts.length);
    }
    return { outputs: result, inputIds };
  }

  /** Checked before any run: a half-done verify that dies on text 90 wastes every run before it. */
  private checkLengths(texts: readonly string[], inputIds: readonly number[][]): void {
    const [maxBatch, maxSeq] = this.profile.max;
    inputIds.forEach((ids, i) => {
      if (ids.length > maxSeq) {
        throw new UsageError(
          `text ${i} (${excerpt(texts[i]!)}) is ${ids.length} tokens, beyond the engine's max sequence ${maxSeq} (profile max ${this.profile.max.join("x")}); ` +
            `the engine cannot take it: rebuild it with --max-shape ${maxBatch}x${ids.length} or more (at most the artifact's max_length), or lower --max-length to ${maxSeq}`,
        );
      }
    });
  }

  /**
   * One trtexec run on a batch of token-id rows (padded to the longest, at least the profile's
   * minimum sequence); below the profile's minimum batch the last row is repeated (its results are
   * dropped). The run's log binds the engine to its GPU before any output is used.
   */
  private async runBatch(ids: number[][]): Promise<{ outputs: Map<string, ExportedTensor>; rows: number; S: number }> {
    const [minBatch, minSeq] = this.profile.min;
    const rows = [...ids];
    while (rows.length < minBatch) rows.push(rows[rows.length - 1]!);
    const { outputs, log } = await runEngineWithLog({
      trtexec: this.trtexec,
      engine: this.enginePath,
      batch: rows,
      padId: this.tokenizer.padId,
      inputNames: this.inputNames,
      seqLength: minSeq,
      ...this.runOptions,
    });
    this.runs++;
    const gpu = parseTrtexecLog(log).gpu;
    if (gpu) {
      this.device = { name: gpu.name, ...(gpu.computeCapability !== undefined && { computeCapability: gpu.computeCapability }) };
      if (this.builtOn) checkEngineDevice(this.enginePath, this.builtOn, this.device);
    }
    return { outputs, rows: rows.length, S: Math.max(minSeq, ...rows.map((r) => r.length)) };
  }

  private output(outputs: Map<string, ExportedTensor>, name: string): ExportedTensor {
    const out = outputs.get(name);
    if (!out) {
      throw new ToolFailedError(`trtexec ran ${this.enginePath} but its outputs (${[...outputs.keys()].join(", ")}) have no ${name}; the engine is not the one the manifest describes: rebuild it with bge build`);
    }
    return out;
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

  async deactivate(): Promise<void> {
    // Nothing is held between runs: each trtexec process loads and frees the engine itself.
  }
}

function checkDims(t: ExportedTensor, name: string, expected: number[], engine: string): void {
  if (t.dims.length !== expected.length || t.dims.some((d, i) => d !== expected[i])) {
    throw new ToolFailedError(`trtexec ran ${engine} but its ${name} has dimensions ${t.dims.join("x")}, not ${expected.join("x")}; the engine does not match this model's config.json (hidden_size) or inputs`);
  }
}

function excerpt(text: string, chars = 40): string {
  const cps = Array.from(text);
  return JSON.stringify(cps.length > chars ? cps.slice(0, chars).join("") + "…" : text);
}

/**
 * Consecutive slices of `order` (texts sorted by length, longest first): `size` at a time, or with
 * `sameLength` runs of one token length only, at most that many each (no row is padded).
 */
function* batchesOf(order: readonly number[], inputIds: readonly number[][], how: { size: number } | { sameLength: number }): Generator<number[]> {
  if ("size" in how) {
    for (let start = 0; start < order.length; start += how.size) yield order.slice(start, start + how.size);
    return;
  }
  let batch: number[] = [];
  for (const i of order) {
    if (batch.length && (batch.length >= how.sameLength || inputIds[batch[0]!]!.length !== inputIds[i]!.length)) {
      yield batch;
      batch = [];
    }
    batch.push(i);
  }
  if (batch.length) yield batch;
}
