import { describe, expect, it } from "vitest";
import { UsageError } from "../errors.js";
import { flopsPerSequence, matMulChain } from "./ceiling.js";
import { benchGrid, syntheticRows } from "./grid.js";
import { latencyStats, percentile, timeInterleaved } from "./timing.js";

describe("percentiles", () => {
  it("nearest rank on unsorted samples", () => {
    const xs = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
    expect(percentile(xs, 50)).toBe(5);
    expect(percentile(xs, 95)).toBe(10);
    expect(percentile(xs, 10)).toBe(1);
    expect(latencyStats([3, 1, 2])).toMatchObject({ runs: 3, meanMs: 2, p50Ms: 2, p95Ms: 3, p99Ms: 3 });
  });

  it("interleaves: each function's runs alternate with the others'", async () => {
    const order: string[] = [];
    const times = await timeInterleaved([async () => order.push("a"), async () => order.push("b")], { warmup: 1, runs: 2 });
    expect(order).toEqual(["a", "b", "a", "b", "a", "b"]);
    expect(times.map((t) => t.length)).toEqual([2, 2]);
  });
});

describe("FLOPs per sequence", () => {
  it("is layers·(24·L·H² + 4·L²·H) when the intermediate size is 4H", () => {
    const [n, H, L] = [12, 768, 128];
    expect(flopsPerSequence({ numLayers: n, hiddenSize: H, intermediateSize: 4 * H }, L)).toBe(n * (24 * L * H * H + 4 * L * L * H));
  });
});

describe("the ceiling graphs", () => {
  it("chain MatMuls of the given widths, one initializer per distinct shape", () => {
    const g = matMulChain("ffn", 8, [32, 8, 32, 8]);
    expect(g.nodes.filter((n) => n.opType === "MatMul")).toHaveLength(4);
    expect(g.initializers.map((t) => t.dims)).toEqual([[8, 32], [32, 8]]);
    expect(g.outputs[0]!.dims).toEqual(["rows", 8]);
  });
});

describe("grids", () => {
  it("refuses a sequence beyond the model's positions and a batch outside an engine's profile, naming flag and limit", () => {
    expect(() => benchGrid([1], [600], { maxSeq: 512, maxSeqWhy: "max_position_embeddings 512" })).toThrow(new UsageError("--seq 600: longer than the model allows (512, max_position_embeddings 512)"));
    const profile = { min: [1, 2] as const, max: [8, 128] as const, engine: "e.plan" };
    expect(() => benchGrid([16], [64], { maxSeq: 512, maxSeqWhy: "", profile })).toThrow(/^--batch 16: outside the engine's profile \(batch 1 to 8/);
    expect(() => benchGrid([4], [256], { maxSeq: 512, maxSeqWhy: "", profile })).toThrow(/^--seq 256: outside the engine's profile \(sequence 2 to 128/);
    expect(benchGrid([1, 8], [16, 128], { maxSeq: 512, maxSeqWhy: "" })).toEqual([
      { batch: 1, seq: 16 },
      { batch: 1, seq: 128 },
      { batch: 8, seq: 16 },
      { batch: 8, seq: 128 },
    ]);
  });

  it("synthetic rows have exactly seq tokens, specials at both ends, ids in the vocabulary and never the pad id", () => {
    const rows = syntheticRows({ batch: 3, seq: 64 }, 1200, 1100, { first: 101, last: 102 });
    expect(rows).toHaveLength(3);
    for (const r of rows) {
      expect(r).toHaveLength(64);
      expect(r[0]).toBe(101);
      expect(r[63]).toBe(102);
      expect(r.every((id) => id >= 0 && id < 1200 && id !== 1100)).toBe(true);
    }
    expect(new Set(rows.flat()).size).toBeGreaterThan(30);
  });
});
