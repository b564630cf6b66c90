import { describe, expect, it } from "vitest";
import type { EncoderConfig } from "../checkpoint/config.js";
import { gelu } from "./erf.js";
import { encoderForward, type EncoderWeights } from "./encoder.js";

/**
 * A 1-layer, 2-dim, 1-head BERT whose weights are identities, so every step has a closed form that
 * is worked out below by hand (LayerNorm of a 2-vector [a, b] is ±δ/√(δ²+ε)·[1, −1] with δ = (a−b)/2).
 */
const eps = 0.25;
const cfg: EncoderConfig = {
  arch: "bert",
  hiddenSize: 2,
  numLayers: 1,
  numHeads: 1,
  intermediateSize: 2,
  vocabSize: 3,
  maxPositionEmbeddings: 4,
  typeVocabSize: 1,
  layerNormEps: eps,
  padTokenId: 0,
  positionOffset: 0,
};
const I = () => Float64Array.from([1, 0, 0, 1]);
const Z = () => new Float64Array(2);
const ONE = () => Float64Array.from([1, 1]);
const weights: EncoderWeights = {
  wordEmb: Float64Array.from([0, 0, 1, 0, 0, 1]), // id 1 → [1,0], id 2 → [0,1]
  posEmb: new Float64Array(8),
  typeEmb: new Float64Array(2),
  embLn: [ONE(), Z()],
  layers: [{ q: [I(), Z()], k: [I(), Z()], v: [I(), Z()], attnOut: [I(), Z()], attnLn: [ONE(), Z()], inter: [I(), Z()], out: [I(), Z()], outLn: [Float64Array.from([2, 0.5]), Float64Array.from([0.1, -0.2])] }],
};

/** LayerNorm of [a, b] with unit gain, zero bias. */
const ln2 = (a: number, b: number) => {
  const d = (a - b) / 2;
  const s = d / Math.sqrt(d * d + eps);
  return [s, -s];
};

describe("reference encoder, hand-computed", () => {
  it("matches the closed form of a 1-layer identity BERT", () => {
    // Embeddings: token 1 → LN([1,0]) = [s0, −s0] with s0 = 0.5/√0.5 = 1/√2; token 2 → the negative.
    const s0 = 0.5 / Math.sqrt(0.5);
    const x0 = [s0, -s0];
    expect(ln2(1, 0)[0]).toBeCloseTo(Math.SQRT1_2, 15);
    // Attention (Q=K=V=x): same-token score 2s0²/√2, cross-token −2s0²/√2 → p = σ(4s0²/√2).
    const p = 1 / (1 + Math.exp((-4 * s0 * s0) / Math.SQRT2));
    // ctx0 = p·x0 + (1−p)·(−x0) = (2p−1)·x0; residual → 2p·x0; LayerNorm:
    const a0 = ln2(2 * p * x0[0]!, 2 * p * x0[1]!);
    // FFN with identity weights: GELU elementwise, residual, then the final LayerNorm with gain/bias.
    const f0 = [a0[0]! + gelu(a0[0]!), a0[1]! + gelu(a0[1]!)];
    const n0 = ln2(f0[0]!, f0[1]!);
    const expected0 = [2 * n0[0]! + 0.1, 0.5 * n0[1]! - 0.2];

    const { hidden, length } = encoderForward(cfg, weights, [1, 2]);
    expect(length).toBe(2);
    expect(hidden[0]).toBeCloseTo(expected0[0]!, 14);
    expect(hidden[1]).toBeCloseTo(expected0[1]!, 14);
    // Token 2 mirrors token 1 before the final gain: n1 = −n0.
    expect(hidden[2]).toBeCloseTo(-2 * n0[0]! + 0.1, 14);
    expect(hidden[3]).toBeCloseTo(-0.5 * n0[1]! - 0.2, 14);
  });

  it("ignores masked (padded) tokens exactly, as FlagModel's additive mask does", () => {
    const unpadded = encoderForward(cfg, weights, [1, 2]);
    const padded = encoderForward(cfg, weights, [1, 2, 0, 0], [1, 1, 0, 0]);
    expect(padded.length).toBe(2);
    expect(Array.from(padded.hidden)).toEqual(Array.from(unpadded.hidden));
  });

  it("attends across tokens: the CLS row depends on the rest of the sequence", () => {
    const alone = encoderForward(cfg, weights, [1]);
    const withOther = encoderForward(cfg, weights, [1, 2]);
    expect(Math.abs(alone.hidden[0]! - withOther.hidden[0]!)).toBeGreaterThan(1e-3);
  });

  it("refuses ids outside the vocabulary and sequences beyond the position table", () => {
    expect(() => encoderForward(cfg, weights, [1, 7])).toThrow(/outside the vocabulary/);
    expect(() => encoderForward(cfg, weights, [1, 1, 1, 1, 1])).toThrow(/max_position_embeddings/);
  });

  it("numbers XLM-R positions from pad_id + 1", () => {
    const xcfg: EncoderConfig = { ...cfg, arch: "xlm-roberta", padTokenId: 1, positionOffset: 2, maxPositionEmbeddings: 5 };
    // Position rows 2 and 3 are the only non-zero ones; a BERT numbering (0, 1) would miss them.
    const posEmb = Float64Array.from([0, 0, 0, 0, 5, -5, -5, 5, 0, 0]);
    const w = { ...weights, posEmb };
    // Id 2 is not the pad id, so it takes positions 2 and 3.
    const x = encoderForward(xcfg, w, [2, 2]);
    const b = encoderForward({ ...xcfg, arch: "bert" }, w, [2, 2]);
    expect(Math.abs(x.hidden[0]! - b.hidden[0]!)).toBeGreaterThan(1e-3);
  });
});
