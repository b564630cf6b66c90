import { describe, expect, it } from "vitest";
import type { GoldenFile } from "../artifacts/golden.js";
import type { ModelSpec } from "../checkpoint/model-spec.js";
import { usageError } from "../../test/helpers/usage-error.js";
import type { DiagnosableCandidate } from "./diagnose.js";
import { spearman, retrievalAgreement } from "./retrieval.js";
import { DEFAULT_TOLERANCES, resolveTolerance } from "./tolerances.js";
import { reportJson } from "./report.js";
import { settingsDifferences, verifyAgainstGolden } from "./verify.js";

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

describe("the golden's settings against the candidate's", () => {
  const spec = { pooling: "cls" as const, normalize: true, maxLength: 512, queryInstruction: undefined };

  it("names each differing setting with both values; the instruction only where the golden has queries", () => {
    const g = golden();
    expect(settingsDifferences(g, spec)).toEqual([]);
    const other = { pooling: "mean" as const, normalize: false, maxLength: 128, queryInstruction: "Q: " };
    expect(settingsDifferences(g, other).map((d) => d.message)).toEqual([
      "golden was made with pooling cls but the candidate pools mean",
      "golden was made with normalize true but the candidate runs with normalize false",
      "golden was made with max_length 512 but the candidate truncates at 128",
      'golden was made with query instruction none but the candidate uses "Q: "',
    ]);
    const passagesOnly = { ...g, items: g.items.filter((i) => i.kind === "passage") };
    expect(settingsDifferences(passagesOnly, { ...spec, queryInstruction: "Q: " })).toEqual([]);
  });

  it("refuses a mismatch (exit 2, one line) unless allowed; allowed, a passing run still carries a settings diagnosis", async () => {
    const g = golden();
    const candidate = fake(g, (_t, v) => v);
    candidate.spec = { ...candidate.spec, maxLength: 64 };
    const e = await usageError(() => verifyAgainstGolden(candidate, g, opts));
    expect(e.message).toMatch(/^g\.json does not match c\.onnx: golden was made with max_length 512 but the candidate truncates at 64\. .*--allow-settings-mismatch/);
    const r = await verifyAgainstGolden(candidate, g, { ...opts, allowSettingsMismatch: true });
    expect(r.pass).toBe(true);
    expect(r.diagnoses).toEqual([{ code: "settings", message: expect.stringMatching(/max_length 512 but the candidate truncates at 64/) }]);
  });
});

describe("the JSON report", () => {
  it("has one shape for one candidate and for two: {format, pass, golden, artifacts}", async () => {
    const g = golden();
    const a = await verifyAgainstGolden(fake(g, (_t, v) => v), g, { ...opts, candidateRole: "onnx-fp32" });
    const one = reportJson([a]) as Record<string, unknown>;
    const two = reportJson([a, { ...a, pass: false }]) as Record<string, unknown>;
    for (const [rep, n] of [[one, 1], [two, 2]] as const) {
      expect(Object.keys(rep).sort()).toEqual(["artifacts", "format", "golden", "pass"]);
      expect(rep.format).toBe("bge-verify/1");
      expect(rep.golden).toEqual({ path: "g.json", model_id: "m", items: 6, producer: "bge-reference t" });
      expect(rep.artifacts).toHaveLength(n);
      const entry = (rep.artifacts as Record<string, unknown>[])[0]!;
      expect(entry.candidate).toEqual({ path: "c.onnx", role: "onnx-fp32", precision: "fp32", backend: "fake" });
      expect(entry).not.toHaveProperty("golden");
    }
    expect(one.pass).toBe(true);
    expect(two.pass).toBe(false);
  });
});

describe("tolerances", () => {
  it("uses SPEC's defaults per precision and lets --tolerance override the minimum", () => {
    expect(resolveTolerance("fp32").tolerance.min_cosine).toBe(0.99999);
    expect(resolveTolerance("fp16").tolerance).toMatchObject({ min_cosine: 0.999, mean_cosine: 0.9999 });
    expect(resolveTolerance("int8-dynamic").tolerance).toMatchObject({ min_cosine: 0.98, mean_cosine: 0.99 });
    expect(resolveTolerance("fp16", { cli: 0.9995 }).tolerance.min_cosine).toBe(0.9995);
    expect(resolveTolerance("fp32", { pipeline: { min_cosine: 0.99998, norm: 1e-4 } }).tolerance).toMatchObject({ min_cosine: 0.99998, norm: 1e-4, mean_cosine: 0.999999 });
    expect(() => resolveTolerance("fp32", { cli: 1.5 })).toThrow(/--tolerance 1\.5 must be/);
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
