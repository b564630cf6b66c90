import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { writeGolden } from "../src/artifacts/golden.js";
import { readManifest } from "../src/artifacts/manifest.js";
import { readModelSpec } from "../src/checkpoint/model-spec.js";
import { hashWeights } from "../src/checkpoint/weights.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { exportOnnx } from "../src/onnx/export.js";
import { makeNativeGolden } from "../src/parity/native-golden.js";
import { cosineSimilarity } from "../src/parity/metrics.js";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

/**
 * bge-m3's sparse and ColBERT heads through TensorRT engines: `bge build` carries the heads'
 * outputs into the engine (TensorRT 10 double: it runs the engine's ONNX on onnxruntime), the
 * engine runner reads them, and verify gates each head as it does for the ONNX graphs.
 */
const DOUBLE = join(REPO_ROOT, "test", "helpers", "trtexec-double.mjs");
const builtBy = { tool: "bge", version: "test", args: ["export"] };
// Few texts: every batch is one trtexec run (one engine load in the double).
const PASSAGES = ["hello <pad> world", "你好 мир hello مرحبا", "BGE M3 多语言检索 retrieval"];
const QUERIES = ["hello", "<pad> retrieval"];

let root: string;
let model: string;
let golden: string;
let trtexec: string;

async function built(name: string, faults?: { sparseKeepsCls?: boolean; colbertUnnormalized?: boolean }): Promise<string> {
  const out = join(root, name);
  await exportOnnx({ modelDir: model, outDir: out, precisions: ["fp32"], builtBy, ...(faults ? { headFaults: faults } : {}) });
  const r = await runBge(["build", out, "--precision", "fp16", "--trtexec", trtexec, "--quiet"]);
  expect(r.code, r.stderr).toBe(0);
  return out;
}

type Entry = { pass: boolean; candidate: { backend: string; precision: string }; failures: string[]; diagnoses: { code: string }[]; heads: { sparse: Record<string, number> | null; colbert: Record<string, number> | null; combined: Record<string, number> | null } | null };

beforeAll(async () => {
  root = await tempDir("bge-m3-trt-");
  await mkdir(join(root, "bin"));
  trtexec = join(root, "bin", "trtexec");
  await writeFile(trtexec, `#!/bin/sh\nTRTEXEC_DOUBLE_VERSION=10.16.0 exec "${process.execPath}" "${DOUBLE}" "$@"\n`);
  await chmod(trtexec, 0o755);
  model = join(root, "m3");
  await writeFixture({ dir: model, arch: "xlm-roberta", seed: 47 });
  golden = join(root, "golden.json");
  await writeGolden(golden, await makeNativeGolden({ spec: await readModelSpec(model), weightsSha256: await hashWeights(model), passages: PASSAGES, queries: QUERIES, batchSize: 8, version: "test" }));
}, 120_000);

describe("bge-m3 heads in TensorRT engines", () => {
  it("the engine carries sparse_weights and colbert_vectors; verify --backend trt gates every head and passes; embed --output reads them as the ONNX backend does", async () => {
    const dir = await built("good");
    const engine = (await readManifest(dir)).files.find((f) => f.path === "model.fp16.plan")!;
    expect(engine.trt!.outputs).toEqual(["last_hidden_state", "sentence_embedding", "sparse_weights", "colbert_vectors"]);

    const r = await runBge(["verify", dir, "--golden", golden, "--backend", "trt", "--trtexec", trtexec, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const [e] = (JSON.parse(r.stdout) as { artifacts: Entry[] }).artifacts;
    expect(e).toMatchObject({ pass: true, candidate: { backend: "trt", precision: "fp16" } });
    expect(e!.heads!.sparse).toMatchObject({ id_set_mismatches: 0, special_weight: 0 });
    expect(e!.heads!.colbert).toMatchObject({ count_mismatches: 0 });
    expect(e!.heads!.colbert!.min_token_cosine).toBeGreaterThan(0.999);
    expect(e!.heads!.combined).toMatchObject({ topk_agreement: 1, queries: QUERIES.length, passages: PASSAGES.length });

    const texts = [...PASSAGES, "短"];
    const trt = await runBge(["embed", dir, ...texts, "--backend", "trt", "--trtexec", trtexec, "--output", "dense,sparse,colbert", "--json"]);
    expect(trt.code, trt.stderr).toBe(0);
    const onnx = await runBge(["embed", dir, ...texts, "--output", "dense,sparse,colbert", "--json"]);
    expect(onnx.code, onnx.stderr).toBe(0);
    type Row = { dense: number[]; sparse: Record<string, number>; colbert: number[][] };
    // --json: {"dense": [per text], "sparse": [per text], "colbert": [per text]}
    const rows = (s: string): Row[] => {
      const j = JSON.parse(s) as { dense: number[][]; sparse: Record<string, number>[]; colbert: number[][][] };
      return j.dense.map((dense, i) => ({ dense, sparse: j.sparse[i]!, colbert: j.colbert[i]! }));
    };
    const [a, b] = [rows(trt.stdout), rows(onnx.stdout)];
    expect(a).toHaveLength(texts.length);
    a.forEach((x, i) => {
      const y = b[i]!;
      expect(cosineSimilarity(x.dense, y.dense)).toBeGreaterThan(0.999);
      expect(Object.keys(x.sparse).sort()).toEqual(Object.keys(y.sparse).sort());
      for (const [id, w] of Object.entries(y.sparse)) expect(Math.abs(x.sparse[id]! - w)).toBeLessThan(5e-3);
      expect(x.colbert).toHaveLength(y.colbert.length);
      x.colbert.forEach((v, t) => expect(cosineSimilarity(v, y.colbert[t]!)).toBeGreaterThan(0.999));
    });
  }, 300_000);

  it("says no (exit 1) to an engine whose sparse head keeps CLS, and to one whose ColBERT vectors are unnormalised, each with its diagnosis", async () => {
    for (const [name, faults, code] of [
      ["keeps-cls", { sparseKeepsCls: true }, "sparse-specials"],
      ["unnormalised", { colbertUnnormalized: true }, "colbert-unnormalized"],
    ] as const) {
      const dir = await built(name, faults);
      const report = join(root, `${name}.json`);
      const r = await runBge(["verify", dir, "--golden", golden, "--backend", "trt", "--trtexec", trtexec, "--report", report]);
      expect(r.code, r.stderr).toBe(1);
      const [e] = (JSON.parse(await readFile(report, "utf8")) as { artifacts: Entry[] }).artifacts;
      expect(e!.pass).toBe(false);
      expect(e!.diagnoses.map((d) => d.code)).toContain(code);
    }
  }, 300_000);
});
