import { readFile } from "node:fs/promises";
import { Writable } from "node:stream";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { writeGolden } from "../src/artifacts/golden.js";
import { readModelSpec } from "../src/checkpoint/model-spec.js";
import { hashWeights } from "../src/checkpoint/weights.js";
import { createOutput } from "../src/cli/output.js";
import { verifyCommand } from "../src/commands/verify.js";
import { ParityError } from "../src/errors.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { exportOnnx, type ExportOptions } from "../src/onnx/export.js";
import { makeNativeGolden } from "../src/parity/native-golden.js";
import { tempDir } from "./helpers/tmp.js";

const builtBy = { tool: "bge", version: "test", args: ["export"] };
const PASSAGES = [
  "hello <pad> world",
  "你好 мир hello مرحبا",
  "BGE M3 multi-lingual hybrid retrieval, 多语言检索",
  "数学 математика mathematics",
  Array.from({ length: 300 }, (_, i) => ["lorem", "你好", "мир", "<pad>"][i % 4]).join(" "),
];
const QUERIES = ["hello", "你好 мир", "<pad> retrieval"];

let root: string;
let model: string;
let golden: string;

beforeAll(async () => {
  root = await tempDir("bge-m3-verify-");
  model = join(root, "m3");
  await writeFixture({ dir: model, arch: "xlm-roberta", seed: 47 });
  const spec = await readModelSpec(model);
  golden = join(root, "golden.json");
  await writeGolden(golden, await makeNativeGolden({ spec, weightsSha256: await hashWeights(model), passages: PASSAGES, queries: QUERIES, batchSize: 8, version: "test" }));
}, 120_000);

const quiet = () => {
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  return createOutput({ quiet: true }, sink as unknown as typeof process.stdout, sink as unknown as typeof process.stderr);
};

type HeadsJson = { sparse: Record<string, number> | null; colbert: Record<string, number> | null; combined: { topk_agreement: number; queries: number; passages: number } | null; unverified: string[] };
type Entry = { pass: boolean; candidate: { precision: string }; failures: string[]; diagnoses: { code: string; message: string }[]; heads: HeadsJson | null };

/** Exports with these options, verifies against the golden; returns the exit code (0 or ParityError's 1) and the report. */
async function exportAndVerify(name: string, options: Partial<ExportOptions>): Promise<{ code: number; artifacts: Entry[]; message: string }> {
  const out = join(root, name);
  await exportOnnx({ modelDir: model, outDir: out, builtBy, ...options });
  const report = join(root, `${name}.json`);
  let code = 0;
  let message = "";
  try {
    await verifyCommand({ candidate: out, golden, batchSize: 4, report }, quiet());
  } catch (err) {
    expect(err).toBeInstanceOf(ParityError);
    code = (err as ParityError).exitCode;
    message = (err as Error).message;
  }
  return { code, artifacts: JSON.parse(await readFile(report, "utf8")).artifacts, message };
}

describe("bge verify: bge-m3's heads, per head", () => {
  it("passes the export (fp32 and fp16) on every head, with per-head numbers in the report", async () => {
    const { code, artifacts } = await exportAndVerify("good", {});
    expect(code).toBe(0);
    expect(artifacts.map((a) => a.candidate.precision)).toEqual(["fp32", "fp16"]);
    for (const a of artifacts) {
      expect(a.pass).toBe(true);
      expect(a.heads!.sparse).toMatchObject({ id_set_mismatches: 0, special_weight: 0 });
      expect(a.heads!.colbert).toMatchObject({ count_mismatches: 0 });
      expect(a.heads!.combined).toMatchObject({ topk_agreement: 1, queries: 3, passages: 5 });
      console.log(`bge-m3-shaped ${a.candidate.precision}: ${JSON.stringify({ sparse: a.heads!.sparse, colbert: a.heads!.colbert })}`);
    }
    expect(artifacts[0]!.heads!.colbert!.min_token_cosine).toBeGreaterThanOrEqual(0.99999);
    expect(artifacts[0]!.heads!.sparse!.max_weight_diff).toBeLessThanOrEqual(1e-4);
  });

  it("says no (exit 1) to a graph whose sparse head keeps CLS, with the diagnosis", async () => {
    const { code, artifacts, message } = await exportAndVerify("keeps-cls", { precisions: ["fp32"], headFaults: { sparseKeepsCls: true } });
    expect(code).toBe(1);
    expect(message).toMatch(/sparse: special tokens weigh up to/);
    const a = artifacts[0]!;
    expect(a.pass).toBe(false);
    expect(a.heads!.sparse!.special_weight).toBeGreaterThan(0);
    expect(a.diagnoses.map((d) => d.code)).toContain("sparse-specials");
    expect(a.diagnoses.find((d) => d.code === "sparse-specials")!.message).toMatch(/keep special tokens.*FlagEmbedding drops CLS, EOS, PAD and UNK/);
    expect(a.diagnoses.map((d) => d.code)).not.toContain("unexplained");
  });

  it("says no (exit 1) to ColBERT vectors left unnormalised, with the diagnosis", async () => {
    const { code, artifacts } = await exportAndVerify("unnormalised", { precisions: ["fp32"], headFaults: { colbertUnnormalized: true } });
    expect(code).toBe(1);
    const a = artifacts[0]!;
    expect(a.failures.some((f) => /colbert: vector lengths differ from 1/.test(f))).toBe(true);
    expect(a.diagnoses.map((d) => d.code)).toContain("colbert-unnormalized");
    // Cosine alone cannot see it: the per-token directions are right.
    expect(a.heads!.colbert!.min_token_cosine).toBeGreaterThanOrEqual(0.99999);
  });

  it("says no (exit 1) when the graph lacks a head the golden holds", async () => {
    const { code, artifacts } = await exportAndVerify("dense-only", { precisions: ["fp32"], heads: ["dense"] });
    expect(code).toBe(1);
    const a = artifacts[0]!;
    expect(a.failures).toEqual(["sparse head missing", "colbert head missing"]);
    expect(a.diagnoses.filter((d) => d.code === "head-missing").map((d) => d.message)).toEqual([
      expect.stringMatching(/no sparse_weights output: export it with bge export --heads dense,sparse,colbert/),
      expect.stringMatching(/no colbert_vectors output/),
    ]);
  });
});
