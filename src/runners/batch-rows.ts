import type { Pooling } from "../checkpoint/model-spec.js";
import { sparseFromTokenWeights, type M3Output } from "../reference/m3.js";
import { l2Normalize, poolHidden } from "../reference/pooling.js";

/** How a batch's dense output is laid out: flat row-major, the batch padded to `seq` tokens. */
export interface DenseLayout {
  seq: number;
  hidden: number;
  /** `sentence_embedding` [B, H] (pooled and normalised by the graph) when true, else hidden states [B, S, H] to pool here. */
  pooled: boolean;
  pooling: Pooling;
  normalize: boolean;
}

/** Row `r`'s vector (a text of `len` tokens): the graph's own, or its hidden states pooled and normalised here. */
export function denseRow(values: Float32Array, layout: DenseLayout, r: number, len: number): Float64Array {
  const { seq: S, hidden: H } = layout;
  if (layout.pooled) return Float64Array.from(values.subarray(r * H, (r + 1) * H));
  const pooled = poolHidden(values.subarray(r * S * H, (r + 1) * S * H), len, H, new Array<number>(len).fill(1), layout.pooling);
  return layout.normalize ? l2Normalize(pooled) : pooled;
}

/** A batch's head outputs as a backend returns them. */
export interface M3BatchOutputs extends DenseLayout {
  dense: Float32Array;
  /** `sparse_weights` [B, S]. */
  sparse?: Float32Array;
  /** `colbert_vectors` [B, S − 1, D]. */
  colbert?: { values: Float32Array; dim: number };
  /** The ids FlagEmbedding drops from the sparse head (CLS, EOS, PAD, UNK). */
  specials: ReadonlySet<number>;
}

/**
 * Row `r`'s heads, as FlagEmbedding post-processes a graph's or engine's outputs: dense as given (or
 * pooled and normalised here); sparse from `sparse_weights` (specials and weights ≤ 0 dropped, max
 * per id; the weight left at special tokens reported as specialWeight); ColBERT as the
 * `colbert_vectors` rows of the text's tokens after CLS, taken as they are (not renormalised).
 */
export function m3Row(out: M3BatchOutputs, r: number, ids: readonly number[]): M3Output {
  const S = out.seq;
  const len = ids.length;
  const o: M3Output = { dense: denseRow(out.dense, out, r, len) };
  if (out.sparse) {
    const row = out.sparse.subarray(r * S, r * S + len);
    o.sparse = sparseFromTokenWeights(ids, row, out.specials);
    o.specialWeight = 0;
    ids.forEach((id, t) => {
      if (out.specials.has(id)) o.specialWeight = Math.max(o.specialWeight!, row[t]!);
    });
  }
  if (out.colbert) {
    const { values, dim: D } = out.colbert;
    const base = r * (S - 1) * D;
    o.colbert = Array.from({ length: len - 1 }, (_, t) => Float64Array.from(values.subarray(base + t * D, base + (t + 1) * D)));
  }
  return o;
}
