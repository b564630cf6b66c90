import type { EncoderConfig } from "../checkpoint/config.js";
import { bytesToFloat32, floatToHalf } from "../checkpoint/dtype.js";
import type { Pooling } from "../checkpoint/model-spec.js";
import { ChunkScratch, DTYPE_BYTES, tensorChunks, type DType, type TensorSource } from "../checkpoint/tensor.js";
import { UsageError } from "../errors.js";
import { float, GraphBuilder, int, ints } from "./graph-builder.js";
import { OnnxType, type OnnxTypeCode } from "./proto.js";
import type { LinearHead } from "../checkpoint/m3-heads.js";

export type OnnxPrecision = "fp32" | "fp16";

export interface EncoderGraphOptions {
  precision: OnnxPrecision;
  /** `none` exports last_hidden_state only. */
  pooling: Pooling | "none";
  normalize: boolean;
  /** bge-m3's sparse and ColBERT heads, as outputs sparse_weights and colbert_vectors. */
  heads?: GraphHeads;
  /** The opset the graph is written for: from 18 on, reductions take their axes as an input. @default 17 */
  opset?: number;
}

export interface GraphHeads {
  sparse?: LinearHead;
  colbert?: LinearHead;
  /** The ids whose sparse weight is zeroed in the graph (CLS, EOS, PAD, UNK). */
  specialIds: number[];
  /**
   * Test only: graphs that break the heads' contract, for showing that the gate says no — a sparse
   * head that keeps CLS's weight, ColBERT vectors left unnormalised.
   */
  faults?: { sparseKeepsCls?: boolean; colbertUnnormalized?: boolean };
}

/**
 * The additive attention mask for padded keys. Large enough that exp() underflows to exactly 0 in
 * float32 (as finfo.min does in FlagModel), small enough to stay finite in FP16 — finfo(float32).min
 * turns into -inf there and a fully masked row into NaN.
 */
export const MASK_NEGATIVE = -10000;

/**
 * BertModel / XLMRobertaModel as an opset-17 ONNX graph, with FlagModel's pooling and L2
 * normalisation inside. FP32: everything float32. FP16: weights and matrix work in float16;
 * LayerNormalization, Softmax, pooling and normalisation run in float32 behind explicit Casts, and the
 * graph's inputs and outputs keep their types — a strongly typed graph TensorRT builds as it is.
 */
/** The inputs of an exported encoder graph, in order: token types only where the model has more than one. */
export function encoderInputNames(cfg: Pick<EncoderConfig, "typeVocabSize">): string[] {
  return cfg.typeVocabSize > 1 ? ["input_ids", "attention_mask", "token_type_ids"] : ["input_ids", "attention_mask"];
}

/** The outputs of an exported encoder graph: hidden states always, the pooled vector unless pooling is none. */
export function encoderOutputNames(pooling: Pooling | "none", heads: readonly string[] = ["dense"]): string[] {
  return [
    "last_hidden_state",
    ...(pooling === "none" ? [] : ["sentence_embedding"]),
    ...(heads.includes("sparse") ? ["sparse_weights"] : []),
    ...(heads.includes("colbert") ? ["colbert_vectors"] : []),
  ];
}

/** Nodes that must keep FP32 wherever a builder may lower precision (XLM-R position counts past 2048). */
export function fp32PinnedNodes(cfg: Pick<EncoderConfig, "arch">): string[] {
  return cfg.arch === "xlm-roberta" ? ["/embeddings/position_ids/MatMul"] : [];
}

/** The largest finite FP16 value. */
const FP16_MAX = 65504;

export function buildEncoderGraph(cfg: EncoderConfig, source: TensorSource, options: EncoderGraphOptions): GraphBuilder {
  const g = new GraphBuilder(cfg.arch === "bert" ? "bert_encoder" : "xlm_roberta_encoder");
  const H = cfg.hiddenSize;
  const heads = cfg.numHeads;
  const dh = H / heads;
  const half = options.precision === "fp16";
  const T: OnnxTypeCode = half ? OnnxType.FLOAT16 : OnnxType.FLOAT;
  const dtypes = new Map(source.list().map((i) => [i.name, i.dtype]));

  /** A checkpoint tensor as an initializer in the compute type (or float32), dims as stored. */
  const weight = (name: string, dims: number[], opts: { keepFloat32?: boolean } = {}): string => {
    const f16 = half && !opts.keepFloat32;
    return g.initializer(name, f16 ? OnnxType.FLOAT16 : OnnxType.FLOAT, dims, () => weightChunks(name, dtypes.get(name)!, f16));
  };
  // Weights stream from the checkpoint through two pairs of reused buffers (read, converted): the
  // export never holds a whole tensor, and a 2 GB checkpoint costs a few tens of MB.
  // The converted chunk is at most twice the read one (an F16/BF16 checkpoint exported as float32).
  const readScratch = new ChunkScratch(8 << 20);
  const outScratch = new ChunkScratch(16 << 20);
  async function* weightChunks(name: string, dtype: DType, f16: boolean): AsyncGenerator<Uint8Array> {
    let first = 0;
    for await (const bytes of tensorChunks(source, name, readScratch, DTYPE_BYTES[dtype])) {
      // Float32 weights go into the graph byte for byte.
      if (!f16 && dtype === "F32") {
        yield bytes;
        continue;
      }
      const values = bytesToFloat32(bytes, dtype, name);
      const out = outScratch.next(values.length * (f16 ? 2 : 4));
      if (!f16) new Float32Array(out.buffer, 0, values.length).set(values);
      else {
        const half = new Uint16Array(out.buffer, 0, values.length);
        for (let i = 0; i < values.length; i++) {
          const v = values[i]!;
          // Past 65504 a weight becomes ±inf in FP16 and every vector it touches is lost: refused by name.
          if (Math.abs(v) > FP16_MAX) {
            throw new UsageError(`${name}: weight ${v} at element ${first + i} does not fit FP16 (|w| ≤ ${FP16_MAX}); export --precision fp32, or keep this layer in float32`);
          }
          half[i] = floatToHalf(v);
        }
      }
      first += values.length;
      yield out;
    }
  }
  const scalar = (name: string, value: number): string =>
    half ? g.initializer(name, OnnxType.FLOAT16, [], () => new Uint8Array(new Uint16Array([floatToHalf(value)]).buffer)) : g.constFloat(name, [value], []);
  const toF32 = (x: string, name: string) => (half ? g.op("Cast", name, [x], { to: int(OnnxType.FLOAT) }) : x);
  const toCompute = (x: string, name: string) => (half ? g.op("Cast", name, [x], { to: int(OnnxType.FLOAT16) }) : x);

  const inputIds = g.input("input_ids", OnnxType.INT64, ["batch", "sequence"]);
  const attentionMask = g.input("attention_mask", OnnxType.INT64, ["batch", "sequence"]);
  // XLM-R has a single token type: its row is added as a constant and the input is left out.
  const tokenTypeIds = encoderInputNames(cfg).includes("token_type_ids") ? g.input("token_type_ids", OnnxType.INT64, ["batch", "sequence"]) : undefined;

  // ---- embeddings
  const wordEmb = weight("embeddings.word_embeddings.weight", [cfg.vocabSize, H]);
  const posEmb = weight("embeddings.position_embeddings.weight", [cfg.maxPositionEmbeddings, H]);
  const typeEmb = weight("embeddings.token_type_embeddings.weight", [cfg.typeVocabSize, H]);
  const words = g.op("Gather", "/embeddings/word_embeddings/Gather", [wordEmb, inputIds], { axis: int(0) });
  const seqLen = g.op("Shape", "/embeddings/Shape", [inputIds], { start: int(1), end: int(2) });
  let positions: string;
  if (cfg.arch === "bert") {
    // Positions 0..S-1 are the first S rows of the table.
    const zero = g.constInt64("/embeddings/position_start", [0]);
    positions = g.op("Slice", "/embeddings/position_embeddings/Slice", [posEmb, zero, seqLen, zero]);
  } else {
    const ids = xlmrPositionIds(g, inputIds, seqLen, cfg.padTokenId);
    positions = g.op("Gather", "/embeddings/position_embeddings/Gather", [posEmb, ids], { axis: int(0) });
  }
  let emb = g.op("Add", "/embeddings/Add", [words, positions]);
  if (tokenTypeIds) {
    const types = g.op("Gather", "/embeddings/token_type_embeddings/Gather", [typeEmb, tokenTypeIds], { axis: int(0) });
    emb = g.op("Add", "/embeddings/Add_1", [emb, types]);
  } else {
    const row = g.op("Gather", "/embeddings/token_type_embeddings/Gather", [typeEmb, g.constInt64("/embeddings/type_zero", [0], [])], { axis: int(0) });
    emb = g.op("Add", "/embeddings/Add_1", [emb, row]);
  }
  const layerNorm = (x: string, prefix: string, path: string): string => {
    const gamma = weight(`${prefix}.weight`, [H], { keepFloat32: true });
    const beta = weight(`${prefix}.bias`, [H], { keepFloat32: true });
    const x32 = toF32(x, `${path}/Cast`);
    return g.op("LayerNormalization", `${path}/LayerNormalization`, [x32, gamma, beta], { axis: int(-1), epsilon: float(cfg.layerNormEps) });
  };
  // The residual stream is float32 (LayerNorm output) and flat, [batch·sequence, hidden], so that every
  // nn.Linear is one Gemm with transB=1 on the weight exactly as the checkpoint stores it ([out, in]):
  // no transposed copies at export, bias fused, the layout ORT and TensorRT run best.
  const flatShape = g.constInt64("/encoder/flat_shape", [-1, H]);
  let hidden = g.op("Reshape", "/embeddings/Reshape", [layerNorm(emb, "embeddings.LayerNorm", "/embeddings/LayerNorm"), flatShape]);

  // ---- additive attention mask [batch, 1, 1, sequence]
  const maskF = g.op("Cast", "/attention_mask/Cast", [attentionMask], { to: int(OnnxType.FLOAT) });
  const inverted = g.op("Sub", "/attention_mask/Sub", [g.constFloat("/attention_mask/one", [1], []), maskF]);
  const additive32 = g.op("Mul", "/attention_mask/Mul", [inverted, g.constFloat("/attention_mask/min", [MASK_NEGATIVE], [])]);
  const additive4d = g.op("Unsqueeze", "/attention_mask/Unsqueeze", [additive32, g.constInt64("/attention_mask/axes", [1, 2])]);

  const headShape = g.op("Concat", "/encoder/head_shape/Concat", [g.constInt64("/encoder/head_shape/batch", [-1]), seqLen, g.constInt64("/encoder/head_shape/heads", [heads, dh])], { axis: int(0) });
  const scale = scalar("/encoder/attention_scale", 1 / Math.sqrt(dh));

  const linear = (x: string, prefix: string, path: string, inDim: number, outDim: number): string => {
    const w = weight(`${prefix}.weight`, [outDim, inDim]);
    const b = weight(`${prefix}.bias`, [outDim]);
    return g.op("Gemm", `${path}/Gemm`, [x, w, b], { transB: int(1) });
  };

  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `encoder.layer.${l}`;
    const path = `/encoder/layer.${l}`;
    const x = toCompute(hidden, `${path}/attention/Cast`);
    const splitHeads = (t: string, name: string, perm: number[]) => {
      const r = g.op("Reshape", `${path}/attention/self/${name}/Reshape`, [t, headShape]);
      return g.op("Transpose", `${path}/attention/self/${name}/Transpose`, [r], { perm: ints(perm) });
    };
    const q = linear(x, `${p}.attention.self.query`, `${path}/attention/self/query`, H, H);
    const k = linear(x, `${p}.attention.self.key`, `${path}/attention/self/key`, H, H);
    const v = linear(x, `${p}.attention.self.value`, `${path}/attention/self/value`, H, H);
    // Scaling Q before the product keeps FP16 scores a factor √d smaller.
    const qs = g.op("Mul", `${path}/attention/self/Mul`, [splitHeads(q, "query", [0, 2, 1, 3]), scale]);
    const kt = splitHeads(k, "key", [0, 2, 3, 1]);
    const vh = splitHeads(v, "value", [0, 2, 1, 3]);
    const scores = g.op("MatMul", `${path}/attention/self/MatMul`, [qs, kt]);
    const masked = g.op("Add", `${path}/attention/self/Add`, [toF32(scores, `${path}/attention/self/Cast`), additive4d]);
    const probs = g.op("Softmax", `${path}/attention/self/Softmax`, [masked], { axis: int(-1) });
    const ctx = g.op("MatMul", `${path}/attention/self/MatMul_1`, [toCompute(probs, `${path}/attention/self/Cast_1`), vh]);
    const ctxT = g.op("Transpose", `${path}/attention/self/Transpose`, [ctx], { perm: ints([0, 2, 1, 3]) });
    const merged = g.op("Reshape", `${path}/attention/self/Reshape`, [ctxT, flatShape]);
    const attnOut = linear(merged, `${p}.attention.output.dense`, `${path}/attention/output/dense`, H, H);
    const attnRes = g.op("Add", `${path}/attention/output/Add`, [attnOut, x]);
    const attn = layerNorm(attnRes, `${p}.attention.output.LayerNorm`, `${path}/attention/output/LayerNorm`);

    const a = toCompute(attn, `${path}/intermediate/Cast`);
    const inter = linear(a, `${p}.intermediate.dense`, `${path}/intermediate/dense`, H, cfg.intermediateSize);
    // Exact GELU: x·½·(1 + erf(x/√2)); ORT fuses this pattern into its Gelu kernel.
    const div = g.op("Div", `${path}/intermediate/intermediate_act_fn/Div`, [inter, scalar(`${path}/intermediate/sqrt2`, Math.SQRT2)]);
    const erf = g.op("Erf", `${path}/intermediate/intermediate_act_fn/Erf`, [div]);
    const onePlus = g.op("Add", `${path}/intermediate/intermediate_act_fn/Add`, [erf, scalar(`${path}/intermediate/one`, 1)]);
    const prod = g.op("Mul", `${path}/intermediate/intermediate_act_fn/Mul`, [inter, onePlus]);
    const act = g.op("Mul", `${path}/intermediate/intermediate_act_fn/Mul_1`, [prod, scalar(`${path}/intermediate/half`, 0.5)]);
    const out = linear(act, `${p}.output.dense`, `${path}/output/dense`, cfg.intermediateSize, H);
    const outRes = g.op("Add", `${path}/output/Add`, [out, a]);
    hidden = layerNorm(outRes, `${p}.output.LayerNorm`, `${path}/output/LayerNorm`);
  }

  const flatHidden = hidden;
  const outShape = g.op("Concat", "/last_hidden_state/shape/Concat", [g.constInt64("/last_hidden_state/shape/batch", [-1]), seqLen, g.constInt64("/last_hidden_state/shape/hidden", [H])], { axis: int(0) });
  hidden = g.op("Reshape", "/last_hidden_state/Reshape", [hidden, outShape]);
  g.output(g.op("Identity", "/last_hidden_state/Identity", [hidden]), OnnxType.FLOAT, ["batch", "sequence", H]);
  renameLastOutput(g, "last_hidden_state");

  if (options.pooling !== "none") {
    let pooled: string;
    if (options.pooling === "cls") {
      pooled = g.op("Gather", "/pooling/Gather", [hidden, g.constInt64("/pooling/cls_index", [0], [])], { axis: int(1) });
    } else {
      const m = g.op("Unsqueeze", "/pooling/Unsqueeze", [maskF, g.constInt64("/pooling/axes", [-1])]);
      const summed = g.op("ReduceSum", "/pooling/ReduceSum", [g.op("Mul", "/pooling/Mul", [hidden, m]), g.constInt64("/pooling/seq_axis", [1])], { keepdims: int(0) });
      const count = g.op("ReduceSum", "/pooling/ReduceSum_1", [m, g.constInt64("/pooling/seq_axis_1", [1])], { keepdims: int(0) });
      const safe = g.op("Max", "/pooling/Max", [count, g.constFloat("/pooling/min_count", [1e-9], [])]);
      pooled = g.op("Div", "/pooling/Div", [summed, safe]);
    }
    if (options.normalize) {
      // torch.nn.functional.normalize: v / max(‖v‖₂, 1e-12).
      const norm =
        (options.opset ?? 17) >= 18
          ? g.op("ReduceL2", "/normalize/ReduceL2", [pooled, g.constInt64("/normalize/axes", [-1])], { keepdims: int(1) })
          : g.op("ReduceL2", "/normalize/ReduceL2", [pooled], { axes: ints([-1]), keepdims: int(1) });
      const safe = g.op("Max", "/normalize/Max", [norm, g.constFloat("/normalize/eps", [1e-12], [])]);
      pooled = g.op("Div", "/normalize/Div", [pooled, safe]);
    }
    g.output(g.op("Identity", "/sentence_embedding/Identity", [pooled]), OnnxType.FLOAT, ["batch", H]);
    renameLastOutput(g, "sentence_embedding");
  }

  const m3 = options.heads;
  if (m3?.sparse || m3?.colbert) {
    /** A head's Linear in the compute type, on the flat hidden states: Gemm(x, W[out, in], b, transB=1) → float32. */
    const headLinear = (name: string, head: LinearHead): string => {
      const type = half ? OnnxType.FLOAT16 : OnnxType.FLOAT;
      const bytes = (v: Float64Array) => (half ? new Uint8Array(Uint16Array.from(v, (x) => floatToHalf(x)).buffer) : new Uint8Array(Float32Array.from(v).buffer));
      const w = g.initializer(`${name}.weight`, type, [head.outDim, head.inDim], () => bytes(head.weight));
      const b = g.initializer(`${name}.bias`, type, [head.outDim], () => bytes(head.bias));
      const x = toCompute(flatHidden, `/${name}/Cast`);
      return toF32(g.op("Gemm", `/${name}/Gemm`, [x, w, b], { transB: int(1) }), `/${name}/Cast_1`);
    };
    const batchSeq = g.op("Concat", "/heads/shape/Concat", [g.constInt64("/heads/shape/batch", [-1]), seqLen], { axis: int(0) });
    if (m3.sparse) {
      // relu(sparse_linear(h)) [batch, sequence], zero where the mask is 0 and at special ids.
      const raw = g.op("Reshape", "/sparse_linear/Reshape", [headLinear("sparse_linear", m3.sparse), batchSeq]);
      const relu = g.op("Relu", "/sparse_linear/Relu", [raw]);
      const specials = m3.faults?.sparseKeepsCls ? m3.specialIds.slice(1) : m3.specialIds;
      const ids3 = g.op("Unsqueeze", "/sparse_linear/special/Unsqueeze", [inputIds, g.constInt64("/sparse_linear/special/axes", [-1])]);
      const hits = g.op("Equal", "/sparse_linear/special/Equal", [ids3, g.constInt64("/sparse_linear/special/ids", specials)]);
      // The ids are distinct, so the sum of matches is 0 or 1 (ReduceSum takes its axes as an input from opset 13 on).
      const isSpecial = g.op("ReduceSum", "/sparse_linear/special/ReduceSum", [g.op("Cast", "/sparse_linear/special/Cast", [hits], { to: int(OnnxType.FLOAT) }), g.constInt64("/sparse_linear/special/reduce_axes", [-1])], { keepdims: int(0) });
      const keep = g.op("Mul", "/sparse_linear/keep/Mul", [maskF, g.op("Sub", "/sparse_linear/keep/Sub", [g.constFloat("/sparse_linear/keep/one", [1], []), isSpecial])]);
      g.output(g.op("Mul", "/sparse_linear/Mul", [relu, keep]), OnnxType.FLOAT, ["batch", "sequence"]);
      renameLastOutput(g, "sparse_weights");
    }
    if (m3.colbert) {
      // colbert_linear(h[:, 1:]) * mask[:, 1:], each vector L2-normalised: [batch, sequence − 1, D].
      const D = m3.colbert.outDim;
      const shape3 = g.op("Concat", "/colbert_linear/shape/Concat", [batchSeq, g.constInt64("/colbert_linear/shape/dim", [D])], { axis: int(0) });
      const all = g.op("Reshape", "/colbert_linear/Reshape", [headLinear("colbert_linear", m3.colbert), shape3]);
      const from1 = g.constInt64("/colbert_linear/slice/start", [1]);
      const end = g.constInt64("/colbert_linear/slice/end", [2 ** 62]);
      const axis1 = g.constInt64("/colbert_linear/slice/axes", [1]);
      const tokens = g.op("Slice", "/colbert_linear/Slice", [all, from1, end, axis1]);
      const mask1 = g.op("Slice", "/colbert_linear/mask/Slice", [maskF, from1, end, axis1]);
      const mask3 = g.op("Unsqueeze", "/colbert_linear/mask/Unsqueeze", [mask1, g.constInt64("/colbert_linear/mask/axes", [-1])]);
      let vectors = g.op("Mul", "/colbert_linear/Mul", [tokens, mask3]);
      if (!m3.faults?.colbertUnnormalized) {
        const squares = g.op("Mul", "/colbert_normalize/Mul", [vectors, vectors]);
        const sum = g.op("ReduceSum", "/colbert_normalize/ReduceSum", [squares, g.constInt64("/colbert_normalize/axes", [-1])], { keepdims: int(1) });
        const norm = g.op("Sqrt", "/colbert_normalize/Sqrt", [sum]);
        const safe = g.op("Max", "/colbert_normalize/Max", [norm, g.constFloat("/colbert_normalize/eps", [1e-12], [])]);
        vectors = g.op("Div", "/colbert_normalize/Div", [vectors, safe]);
      }
      g.output(g.op("Identity", "/colbert_vectors/Identity", [vectors]), OnnxType.FLOAT, ["batch", "sequence_minus_1", D]);
      renameLastOutput(g, "colbert_vectors");
    }
  }
  return g;
}

/**
 * XLM-R position ids [batch, sequence] (int64) by transformers' rule,
 * `cumsum(ids != pad) * (ids != pad) + pad`: a literal `<pad>` in a text is attended to but neither
 * numbered nor counted. CumSum is miscomputed by TensorRT 10.x (NVIDIA/TensorRT#4551), so the running
 * count is `keep @ U` with U the sequence×sequence upper-triangular ones matrix built for the dynamic
 * length. Float32 whatever the graph's precision: sums of 0/1 are exact below 2^24, while FP16 would
 * lose integers past 2048.
 */
function xlmrPositionIds(g: GraphBuilder, inputIds: string, seqLen: string, padId: number): string {
  const p = "/embeddings/position_ids";
  const pad = g.constInt64(`${p}/pad_id`, [padId], []);
  const isPad = g.op("Equal", `${p}/Equal`, [inputIds, pad]);
  const keep = g.op("Cast", `${p}/Cast`, [g.op("Not", `${p}/Not`, [isPad])], { to: int(OnnxType.FLOAT) });
  // U[i, j] = (i <= j): column j of keep @ U sums keep[0..j].
  const length = g.op("Squeeze", `${p}/Squeeze`, [seqLen, g.constInt64(`${p}/squeeze_axes`, [0])]);
  const range = g.op("Range", `${p}/Range`, [g.constInt64(`${p}/zero`, [0], []), length, g.constInt64(`${p}/one`, [1], [])]);
  const rows = g.op("Unsqueeze", `${p}/Unsqueeze`, [range, g.constInt64(`${p}/row_axes`, [1])]);
  const cols = g.op("Unsqueeze", `${p}/Unsqueeze_1`, [range, g.constInt64(`${p}/col_axes`, [0])]);
  const upper = g.op("Cast", `${p}/Cast_1`, [g.op("LessOrEqual", `${p}/LessOrEqual`, [rows, cols])], { to: int(OnnxType.FLOAT) });
  const counts = g.op("MatMul", `${p}/MatMul`, [keep, upper]);
  const numbered = g.op("Add", `${p}/Add`, [g.op("Mul", `${p}/Mul`, [counts, keep]), g.constFloat(`${p}/pad_id_float`, [padId], [])]);
  return g.op("Cast", `${p}/Cast_2`, [numbered], { to: int(OnnxType.INT64) });
}

/** Graph outputs carry their public names; the node that produces one writes that name directly. */
function renameLastOutput(g: GraphBuilder, name: string): void {
  const out = g.outputs.at(-1)!;
  const node = g.nodes.find((n) => n.outputs.includes(out.name))!;
  node.outputs = node.outputs.map((o) => (o === out.name ? name : o));
  out.name = name;
}
