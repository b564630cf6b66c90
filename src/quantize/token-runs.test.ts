import { describe, expect, it } from "vitest";
import { forEachTokenRun, tokenLayout } from "./token-runs.js";

function runs(dims: number[], kind: "linear" | "attention-scores" | "attention-context", input: number, lengths: number[], seq: number): [number, number][] {
  const out: [number, number][] = [];
  forEachTokenRun("t", dims, tokenLayout({ kind }, input), lengths, seq, (from, to) => out.push([from, to]));
  return out;
}

describe("token runs (padding left out of calibration)", () => {
  it("keeps the real rows of flat [B·S, K] linear inputs", () => {
    // Texts of 3 and 1 tokens padded to 3, K = 2: rows 0-2 of text 0, row 3 of text 1.
    expect(runs([6, 2], "linear", 0, [3, 1], 3)).toEqual([[0, 6], [6, 8]]);
    expect(runs([2, 3, 2], "linear", 0, [3, 1], 3)).toEqual([[0, 6], [6, 8]]);
  });

  it("keeps query rows of Q and V, key columns of Kᵀ, and both of the probabilities", () => {
    // One head, seq 3, head dim 2; the text has 2 tokens.
    expect(runs([1, 1, 3, 2], "attention-scores", 0, [2], 3)).toEqual([[0, 4]]); // Q [B,h,S,d]
    expect(runs([1, 1, 2, 3], "attention-scores", 1, [2], 3)).toEqual([[0, 2], [3, 5]]); // Kᵀ [B,h,d,S]
    expect(runs([1, 1, 3, 3], "attention-context", 0, [2], 3)).toEqual([[0, 2], [3, 5]]); // P [B,h,S,S]
    expect(runs([1, 1, 3, 2], "attention-context", 1, [2], 3)).toEqual([[0, 4]]); // V [B,h,S,d]
    // Second text, second head: offsets move by whole [S, ·] blocks.
    expect(runs([2, 2, 3, 3], "attention-context", 0, [3, 1], 3)).toEqual([[0, 9], [9, 18], [18, 19], [27, 28]]);
  });

  it("refuses a tensor whose shape does not hold the batch and sequence where the layout says", () => {
    expect(() => runs([5, 2], "linear", 0, [3, 1], 3)).toThrow(/t: shape \[5, 2\] is not \[batch·seq, K\]/);
    expect(() => runs([1, 1, 3, 2], "attention-scores", 1, [2], 3)).toThrow(/does not have batch 1 and seq 3/);
  });
});
