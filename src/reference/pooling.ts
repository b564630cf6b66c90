import type { Pooling } from "../checkpoint/model-spec.js";

/**
 * FlagModel's pooling: `cls` takes the first token's hidden state, `mean` averages the hidden states
 * of the tokens whose attention mask is 1. `hidden` is one sequence, row-major [seqLen, hiddenSize].
 */
export function poolHidden(hidden: ArrayLike<number>, seqLen: number, hiddenSize: number, mask: ArrayLike<number>, pooling: Pooling): Float64Array {
  const out = new Float64Array(hiddenSize);
  if (pooling === "cls") {
    for (let d = 0; d < hiddenSize; d++) out[d] = hidden[d]!;
    return out;
  }
  let count = 0;
  for (let t = 0; t < seqLen; t++) {
    if (!mask[t]) continue;
    count++;
    const row = t * hiddenSize;
    for (let d = 0; d < hiddenSize; d++) out[d]! += hidden[row + d]!;
  }
  // torch.clamp(sum(mask), min=1e-9) in sentence-transformers; FlagModel divides by sum(mask).
  const denom = Math.max(count, 1e-9);
  for (let d = 0; d < hiddenSize; d++) out[d]! /= denom;
  return out;
}

/** torch.nn.functional.normalize(v, dim=-1): v / max(‖v‖₂, 1e-12). */
export function l2Normalize(v: Float64Array): Float64Array {
  let sq = 0;
  for (let i = 0; i < v.length; i++) sq += v[i]! * v[i]!;
  const norm = Math.max(Math.sqrt(sq), 1e-12);
  const out = new Float64Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i]! / norm;
  return out;
}
