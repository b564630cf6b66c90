import type { EncoderConfig } from "../checkpoint/config.js";
import { bytesToFloat64 } from "../checkpoint/dtype.js";
import type { TensorSource } from "../checkpoint/tensor.js";
import { checkEncoderShapes } from "../checkpoint/weights.js";
import type { Pooling } from "../checkpoint/model-spec.js";
import { poolHidden } from "./pooling.js";
import { gelu } from "./erf.js";
import { addInPlace, layerNormInPlace, linear } from "./linalg.js";

interface LayerWeights {
  q: [Float64Array, Float64Array];
  k: [Float64Array, Float64Array];
  v: [Float64Array, Float64Array];
  attnOut: [Float64Array, Float64Array];
  attnLn: [Float64Array, Float64Array];
  inter: [Float64Array, Float64Array];
  out: [Float64Array, Float64Array];
  outLn: [Float64Array, Float64Array];
}

export interface EncoderWeights {
  wordEmb: Float64Array;
  posEmb: Float64Array;
  typeEmb: Float64Array;
  embLn: [Float64Array, Float64Array];
  layers: LayerWeights[];
}

/** Reads every encoder tensor into float64 (exact for F32/F16/BF16 sources), after checking shapes against the config. */
export async function loadEncoderWeights(source: TensorSource, cfg: EncoderConfig): Promise<EncoderWeights> {
  checkEncoderShapes(source, cfg);
  const dtypes = new Map(source.list().map((i) => [i.name, i.dtype]));
  const get = async (name: string) => bytesToFloat64(await source.readBytes(name), dtypes.get(name)!, name);
  const pair = async (prefix: string): Promise<[Float64Array, Float64Array]> => [await get(`${prefix}.weight`), await get(`${prefix}.bias`)];
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `encoder.layer.${l}`;
    layers.push({
      q: await pair(`${p}.attention.self.query`),
      k: await pair(`${p}.attention.self.key`),
      v: await pair(`${p}.attention.self.value`),
      attnOut: await pair(`${p}.attention.output.dense`),
      attnLn: await pair(`${p}.attention.output.LayerNorm`),
      inter: await pair(`${p}.intermediate.dense`),
      out: await pair(`${p}.output.dense`),
      outLn: await pair(`${p}.output.LayerNorm`),
    });
  }
  return {
    wordEmb: await get("embeddings.word_embeddings.weight"),
    posEmb: await get("embeddings.position_embeddings.weight"),
    typeEmb: await get("embeddings.token_type_embeddings.weight"),
    embLn: await pair("embeddings.LayerNorm"),
    layers,
  };
}

/**
 * The float64 forward pass of BertModel / XLMRobertaModel for one sequence, returning
 * last_hidden_state rows for the tokens whose mask is 1 (in order).
 *
 * Padding is handled by dropping masked tokens before the pass. That is exactly what FlagModel's
 * padded batch computes for the unmasked tokens: its additive mask (finfo.min) drives every padded
 * key's softmax weight to exactly 0, and XLM-R's position ids (see {@link positionIds}) are taken
 * from the ids before anything is dropped. So the reference is independent of batch composition by
 * construction.
 */
export function encoderForward(
  cfg: EncoderConfig,
  w: EncoderWeights,
  inputIds: readonly number[],
  attentionMask?: readonly number[],
  tokenTypeIds?: readonly number[],
  probe?: ActivationProbe,
): { hidden: Float64Array; length: number } {
  const keep: number[] = [];
  inputIds.forEach((_, i) => {
    if (!attentionMask || attentionMask[i]) keep.push(i);
  });
  const L = keep.length;
  const H = cfg.hiddenSize;
  const positions = positionIds(cfg, inputIds);
  const x = new Float64Array(L * H);
  for (let t = 0; t < L; t++) {
    const src = keep[t]!;
    const id = inputIds[src]!;
    if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) throw new RangeError(`token id ${id} outside the vocabulary (${cfg.vocabSize})`);
    const type = tokenTypeIds?.[src] ?? 0;
    // BERT: position = index among the kept tokens (right padding only ever drops a tail).
    const pos = cfg.arch === "bert" ? t : positions[src]!;
    if (pos >= cfg.maxPositionEmbeddings) throw new RangeError(`sequence of ${L} tokens exceeds max_position_embeddings ${cfg.maxPositionEmbeddings}`);
    const o = t * H;
    for (let d = 0; d < H; d++) x[o + d] = w.wordEmb[id * H + d]! + w.posEmb[pos * H + d]! + w.typeEmb[type * H + d]!;
  }
  layerNormInPlace(x, L, H, w.embLn[0], w.embLn[1], cfg.layerNormEps);
  let h: Float64Array = x;
  w.layers.forEach((layer, l) => (h = encoderLayer(cfg, layer, h, L, l, probe)));
  return { hidden: h, length: L };
}

/**
 * XLM-R position ids for a whole (possibly padded) sequence, by transformers'
 * `create_position_ids_from_input_ids`: `cumsum(id != pad) * (id != pad) + pad`. They count ids, not
 * the attention mask: a literal `<pad>` in a text is tokenised to the pad id and attended to, yet it
 * gets position pad_id and does not advance the count for the tokens after it. BERT: 0, 1, 2, ….
 */
export function positionIds(cfg: EncoderConfig, inputIds: readonly number[]): number[] {
  if (cfg.arch === "bert") return inputIds.map((_, i) => i);
  let count = 0;
  return inputIds.map((id) => (id === cfg.padTokenId ? cfg.padTokenId : cfg.padTokenId + ++count));
}

/**
 * One unpadded sequence through the encoder, pooled (not normalised). The forward pass returns only
 * unmasked rows, so every row counts for mean pooling. Shared by the single-threaded path and the
 * worker threads, so both compute exactly the same numbers.
 */
export function pooledForward(cfg: EncoderConfig, w: EncoderWeights, ids: readonly number[], pooling: Pooling): Float64Array {
  const { hidden, length } = encoderForward(cfg, w, ids);
  return poolHidden(hidden, length, cfg.hiddenSize, new Array<number>(length).fill(1), pooling);
}

/** Sees intermediate activations by the ONNX node path they correspond to (for range checks and debugging). */
export type ActivationProbe = (path: string, values: Float64Array) => void;

function encoderLayer(cfg: EncoderConfig, w: LayerWeights, x: Float64Array, L: number, index: number, probe?: ActivationProbe): Float64Array {
  const H = cfg.hiddenSize;
  const heads = cfg.numHeads;
  const dh = H / heads;
  const q = linear(x, L, H, w.q[0], w.q[1], H);
  const k = linear(x, L, H, w.k[0], w.k[1], H);
  const v = linear(x, L, H, w.v[0], w.v[1], H);
  const ctx = new Float64Array(L * H);
  const scores = new Float64Array(L);
  const scale = 1 / Math.sqrt(dh);
  for (let hd = 0; hd < heads; hd++) {
    const off = hd * dh;
    for (let i = 0; i < L; i++) {
      let max = -Infinity;
      for (let j = 0; j < L; j++) {
        let s = 0;
        for (let d = 0; d < dh; d++) s += q[i * H + off + d]! * k[j * H + off + d]!;
        s *= scale;
        scores[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j < L; j++) {
        const e = Math.exp(scores[j]! - max);
        scores[j] = e;
        sum += e;
      }
      for (let j = 0; j < L; j++) {
        const p = scores[j]! / sum;
        for (let d = 0; d < dh; d++) ctx[i * H + off + d]! += p * v[j * H + off + d]!;
      }
    }
  }
  const attn = linear(ctx, L, H, w.attnOut[0], w.attnOut[1], H);
  addInPlace(attn, x);
  layerNormInPlace(attn, L, H, w.attnLn[0], w.attnLn[1], cfg.layerNormEps);
  const inter = linear(attn, L, H, w.inter[0], w.inter[1], cfg.intermediateSize);
  probe?.(`/encoder/layer.${index}/intermediate/dense`, inter);
  for (let i = 0; i < inter.length; i++) inter[i] = gelu(inter[i]!);
  const out = linear(inter, L, cfg.intermediateSize, w.out[0], w.out[1], H);
  addInPlace(out, attn);
  probe?.(`/encoder/layer.${index}/output/residual`, out);
  layerNormInPlace(out, L, H, w.outLn[0], w.outLn[1], cfg.layerNormEps);
  return out;
}
