import { describe, expect, it } from "vitest";
import type { GoldenFile } from "../artifacts/golden.js";
import type { ModelSpec } from "../checkpoint/model-spec.js";
import type { DiagnosableCandidate } from "./diagnose.js";
import { spearman, retrievalAgreement } from "./retrieval.js";
import { DEFAULT_TOLERANCES, resolveTolerance } from "./tolerances.js";
import { verifyAgainstGolden } from "./verify.js";

const unit = (v: number[]) => {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
};

/** Four orthogonal-ish passages and two queries, each query closest to one passage. */
function golden(): GoldenFile {
  const passages = [unit([1, 0.1, 0, 0]), unit([0, 1, 0.1, 0]), unit([0, 0, 1, 0.1]), unit([0.1, 0, 0, 1])];
  const queries = [unit([1, 0.3, 0, 0]), unit([0, 0, 0.3, 1])];
  return {
    format: "bge-golden/1",
    model: { id: "m", revision: null, weights_sha256: "0".repeat(64) },
    producer: { name: "bge-reference", version: "t", pooling: "cls", normalize: true, use_fp16: false, max_length: 512, query_instruction: null, device: "cpu" },
    items: [
      ...passages.map((embedding, i) => ({ text: `p${i}`, kind: "passage" as const, input_ids: [101, i, 102], embedding })),
      ...queries.map((embedding, i) => ({ text: `q${i}`, kind: "query" as const, input_ids: [101, 9, i, 102], embedding })),
    ],
  };
}

/** A candidate that returns the golden's vectors, transformed. */
function fake(g: GoldenFile, transform: (text: string, v: number[], batchSize: number) => number[]): DiagnosableCandidate {
  return {
    spec: { pooling: "cls", normalize: true, maxLength: 512, queryInstruction: undefined, config: { typeVocabSize: 2 } } as unknown as ModelSpec,
    hasHiddenStates: false,
    hasTokenTypeInput: true,
    precision: "fp32",
    async embedWith(texts, _kind, overrides) {
      const items = texts.map((t) => g.items.find((i) => i.text === t)!);
      return {
        embeddings: items.map((i) => Float64Array.from(transform(i.text, i.embedding, overrides.batchSize ?? 32))),
        inputIds: items.map((i) => i.input_ids),
      };
    },
  };
}

const opts = { goldenPath: "g.json", candidatePath: "c.onnx", tolerance: DEFAULT_TOLERANCES.fp32!, toleranceNotes: ["fp32 defaults"], backend: "fake" };

describe("verifyAgainstGolden", () => {
  it("passes a candidate that reproduces the golden", async () => {
    const g = golden();
    const r = await verifyAgainstGolden(fake(g, (_t, v) => v), g, opts);
    expect(r.pass).toBe(true);
    expect(r.summary.min_cosine).toBeCloseTo(1, 15);
    expect(r.retrieval).toMatchObject({ k: 2, queries: 2, passages: 4, topk_agreement: 1 });
  });

  it("fails on rankings when the candidate swaps two passages, even though each vector is unit length", async () => {
    const g = golden();
    const swap: Record<string, string> = { p0: "p3", p3: "p0" };
    const byText = new Map(g.items.map((i) => [i.text, i.embedding]));
    const r = await verifyAgainstGolden(fake(g, (t, v) => byText.get(swap[t] ?? t) ?? v), g, { ...opts, tolerance: { ...opts.tolerance, min_cosine: -1, mean_cosine: -1 } });
    expect(r.pass).toBe(false);
    expect(r.failures).toEqual(["top-2 agreement 0.500 < 0.99"]);
    expect(r.retrieval!.mean_spearman).toBeLessThan(1);
  });

  it("fails the batch-drift gate when a vector depends on its batch", async () => {
    const g = golden();
    const r = await verifyAgainstGolden(fake(g, (_t, v, b) => (b === 1 ? v : unit(v.map((x, i) => x + (i === 0 ? 0.01 : 0))))), g, { ...opts, tolerance: { ...opts.tolerance, min_cosine: 0.99, mean_cosine: 0.99 } });
    expect(r.failures.some((f) => f.startsWith("batch drift"))).toBe(true);
    expect(r.diagnoses.map((d) => d.code)).toContain("batch-dependence");
  });

  it("counts NaN vectors as failures with a non-finite diagnosis", async () => {
    const g = golden();
    const r = await verifyAgainstGolden(fake(g, (t, v) => (t === "p1" ? v.map(() => NaN) : v)), g, opts);
    expect(r.pass).toBe(false);
    expect(r.summary.non_finite).toBe(1);
    expect(r.diagnoses[0]!.code).toBe("non-finite");
  });
});

describe("tolerances", () => {
  it("uses SPEC's defaults per precision and lets --tolerance override the minimum", () => {
    expect(resolveTolerance("fp32").tolerance.min_cosine).toBe(0.99999);
    expect(resolveTolerance("fp16").tolerance).toMatchObject({ min_cosine: 0.999, mean_cosine: 0.9999 });
    expect(resolveTolerance("int8-dynamic").tolerance).toMatchObject({ min_cosine: 0.98, mean_cosine: 0.99 });
    expect(resolveTolerance("fp16", { cli: 0.9995 }).tolerance.min_cosine).toBe(0.9995);
    expect(resolveTolerance("fp32", { pipeline: { min_cosine: 0.99998, norm: 1e-4 } }).tolerance).toMatchObject({ min_cosine: 0.99998, norm: 1e-4, mean_cosine: 0.999999 });
    expect(() => resolveTolerance("fp32", { cli: 1.5 })).toThrow(/must be a cosine/);
  });

  it("caps an fp32 gate at fp16 agreement when the golden itself was computed in FP16, and says so", () => {
    const r = resolveTolerance("fp32", { goldenUsesFp16: true });
    expect(r.tolerance).toMatchObject({ min_cosine: 0.999, mean_cosine: 0.9999 });
    expect(r.notes.join(" ")).toMatch(/golden was computed in FP16/);
    expect(resolveTolerance("fp32", { goldenUsesFp16: false }).tolerance.min_cosine).toBe(0.99999);
  });
});

describe("retrieval metrics", () => {
  it("computes Spearman with ties", () => {
    expect(spearman([1, 2, 3], [10, 20, 30])).toBeCloseTo(1, 15);
    expect(spearman([1, 2, 3], [3, 2, 1])).toBeCloseTo(-1, 15);
    expect(spearman([1, 1, 2], [1, 2, 3])).toBeCloseTo(0.8660254, 6);
  });

  it("returns nothing without queries", () => {
    expect(retrievalAgreement({ queries: [], passages: [[1], [0]] }, { queries: [], passages: [[1], [0]] })).toBeUndefined();
  });
});
