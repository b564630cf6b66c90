import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { EncoderConfig } from "../checkpoint/config.js";
import type { Head, LinearHead, M3Heads } from "../checkpoint/m3-heads.js";
import { UsageError } from "../errors.js";
import { encoderForward, type EncoderWeights } from "./encoder.js";
import { l2Normalize, poolHidden } from "./pooling.js";
import type { Pooling } from "../checkpoint/model-spec.js";

/** A text's sparse (lexical) vector: token id → the largest weight that id got in the text. */
export type SparseVector = Map<number, number>;

/** What bge-m3 gives for one text: its dense vector and, where asked for, the other heads. */
export interface M3Output {
  dense: Float64Array;
  sparse?: SparseVector;
  /** One L2-normalised vector per token after CLS (EOS included), padding dropped. */
  colbert?: Float64Array[];
  /**
   * ONNX runners only: the largest weight the graph's sparse_weights gave a special token (CLS, EOS,
   * PAD, UNK) — 0 for a graph that keeps the contract; the per-id vector drops them either way.
   */
  specialWeight?: number;
}

/**
 * FlagEmbedding's `_process_token_weights`: the weights of CLS, EOS, PAD and UNK ids are dropped, as
 * are weights ≤ 0, and each remaining id keeps the largest weight it got.
 */
export function sparseFromTokenWeights(ids: readonly number[], weights: ArrayLike<number>, specials: ReadonlySet<number>): SparseVector {
  const out: SparseVector = new Map();
  ids.forEach((id, t) => {
    const w = weights[t]!;
    if (specials.has(id) || !(w > 0)) return;
    if (!out.has(id) || w > out.get(id)!) out.set(id, w);
  });
  return out;
}

/** Lexical matching score: Σ over ids in both of w_q · w_p. */
export function lexicalScore(q: SparseVector, p: SparseVector): number {
  let s = 0;
  for (const [id, w] of q) {
    const v = p.get(id);
    if (v !== undefined) s += w * v;
  }
  return s;
}

/** ColBERT late-interaction score: mean over query vectors of the largest dot product with a passage vector. */
export function colbertScore(q: readonly ArrayLike<number>[], p: readonly ArrayLike<number>[]): number {
  if (q.length === 0 || p.length === 0) return 0;
  let total = 0;
  for (const a of q) {
    let best = -Infinity;
    for (const b of p) {
      let s = 0;
      for (let d = 0; d < a.length; d++) s += a[d]! * b[d]!;
      if (s > best) best = s;
    }
    total += best;
  }
  return total / q.length;
}

function applyLinear(head: LinearHead, hidden: Float64Array, row: number): Float64Array {
  const { inDim, outDim, weight, bias } = head;
  const out = new Float64Array(outDim);
  const o = row * inDim;
  for (let j = 0; j < outDim; j++) {
    let s = bias[j]!;
    const w = j * inDim;
    for (let d = 0; d < inDim; d++) s += weight[w + d]! * hidden[o + d]!;
    out[j] = s;
  }
  return out;
}

/**
 * bge-m3's three outputs for one unpadded sequence, in float64 (FlagEmbedding BGE_M3): dense =
 * normalised h[CLS]; sparse = relu(sparse_linear(h)) per token through {@link sparseFromTokenWeights};
 * ColBERT = colbert_linear(h[1:]) (every token after CLS is unmasked here), each vector normalised.
 */
export function m3Forward(
  cfg: EncoderConfig,
  w: EncoderWeights,
  heads: M3Heads,
  ids: readonly number[],
  specials: ReadonlySet<number>,
  want: readonly Head[],
  dense: { pooling: Pooling; normalize: boolean } = { pooling: "cls", normalize: true },
): M3Output {
  const { hidden, length } = encoderForward(cfg, w, ids);
  const H = cfg.hiddenSize;
  const pooled = poolHidden(hidden, length, H, new Array<number>(length).fill(1), dense.pooling);
  const out: M3Output = { dense: dense.normalize ? l2Normalize(pooled) : pooled };
  if (want.includes("sparse")) {
    const weights = new Float64Array(length);
    for (let t = 0; t < length; t++) weights[t] = Math.max(0, applyLinear(heads.sparse!, hidden, t)[0]!);
    out.sparse = sparseFromTokenWeights(ids, weights, specials);
  }
  if (want.includes("colbert")) {
    out.colbert = [];
    for (let t = 1; t < length; t++) out.colbert.push(l2Normalize(applyLinear(heads.colbert!, hidden, t)));
  }
  return out;
}

/**
 * The ids whose sparse weights FlagEmbedding drops: the tokenizer's cls, eos, pad and unk tokens. unk
 * comes from tokenizer.json (Unigram `unk_id`, WordPiece `unk_token` looked up in the vocabulary).
 */
export async function m3SpecialIds(dir: string, known: { clsId: number; sepId: number; padId: number }): Promise<Set<number>> {
  const ids = new Set([known.clsId, known.sepId, known.padId]);
  const path = join(dir, "tokenizer.json");
  let tok: { model?: { unk_id?: unknown; unk_token?: unknown; vocab?: unknown } };
  try {
    tok = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new UsageError(`${path}: cannot read tokenizer (${(err as Error).message})`);
  }
  const m = tok.model ?? {};
  if (typeof m.unk_id === "number") ids.add(m.unk_id);
  else if (typeof m.unk_token === "string" && m.vocab && typeof m.vocab === "object" && !Array.isArray(m.vocab)) {
    const id = (m.vocab as Record<string, unknown>)[m.unk_token];
    if (typeof id === "number") ids.add(id);
  }
  return ids;
}

/** Which heads a list names (`dense,sparse,colbert`), refused (exit 2) when one is unknown or none is given. */
export function parseHeads(list: string, flag: string): Head[] {
  const names = list.split(",").map((s) => s.trim()).filter(Boolean);
  const bad = names.find((n) => !["dense", "sparse", "colbert"].includes(n));
  if (bad !== undefined || names.length === 0) throw new UsageError(`${flag} ${list}: name heads from dense, sparse, colbert, comma-separated`);
  return (["dense", "sparse", "colbert"] as const).filter((h) => names.includes(h));
}
