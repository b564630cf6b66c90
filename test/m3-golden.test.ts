import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { GOLDEN_FORMAT, readGolden, validateGolden, writeGolden, type GoldenFile } from "../src/artifacts/golden.js";
import { readModelSpec } from "../src/checkpoint/model-spec.js";
import { hashWeights } from "../src/checkpoint/weights.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { makeNativeGolden } from "../src/parity/native-golden.js";
import { runFlagModelGolden } from "../src/reference/flagmodel-golden.js";
import { REPO_ROOT } from "./helpers/paths.js";
import { tempDir } from "./helpers/tmp.js";
import { usageError } from "./helpers/usage-error.js";

const HAVE_PYTHON = spawnSync("python3", ["--version"]).status === 0;
const DOUBLE = join(REPO_ROOT, "test", "python");

let root: string;
let model: string;
let golden: GoldenFile;

beforeAll(async () => {
  root = await tempDir("bge-m3-golden-");
  model = join(root, "m3");
  await writeFixture({ dir: model, arch: "xlm-roberta", seed: 43 });
  const spec = await readModelSpec(model);
  golden = await makeNativeGolden({ spec, weightsSha256: await hashWeights(model), passages: ["hello <pad> world", "你好 мир"], queries: ["where"], batchSize: 8, version: "test" });
}, 60_000);

describe("bge-golden/1 with bge-m3's heads", () => {
  it("bge golden stores sparse ({token id: weight}) and ColBERT (every token after CLS) per item, and reads back", async () => {
    for (const item of golden.items) {
      expect(Object.keys(item.sparse!).every((k) => /^\d+$/.test(k) && !["0", "1", "2", "3"].includes(k))).toBe(true);
      expect(item.colbert).toHaveLength(item.input_ids.length - 1);
      expect(item.colbert![0]).toHaveLength(32);
    }
    const path = join(root, "g.json");
    await writeGolden(path, golden);
    const back = await readGolden(path);
    expect(back.items).toEqual(golden.items);
  });

  it.each([
    ["a ColBERT count that is not the tokens after CLS", (g: GoldenFile) => g.items[0]!.colbert!.pop(), /item 0 colbert must hold one vector per token after CLS/],
    ["a sparse key that is not a token id", (g: GoldenFile) => (g.items[1]!.sparse!["x1"] = 0.5), /item 1 sparse key "x1" is not a token id/],
    ["a sparse weight ≤ 0", (g: GoldenFile) => (g.items[1]!.sparse!["7"] = 0), /item 1 sparse\[7\] must be a finite weight > 0/],
    ["a head on some items only", (g: GoldenFile) => delete g.items[2]!.sparse, /item 2 has no sparse head but item 0 has one/],
    ["a ColBERT vector of another width", (g: GoldenFile) => g.items[1]!.colbert![0]!.push(0), /item 1 colbert\[0\] must be a vector of 32 numbers/],
  ])("refuses %s (exit 2)", async (_what, mutate, message) => {
    const g = structuredClone(golden);
    mutate(g);
    const e = await usageError(async () => validateGolden(g, "g.json"));
    expect(e.message).toMatch(message);
  });
});

describe.skipIf(!HAVE_PYTHON)("flagmodel_golden.py --m3 (BGEM3FlagModel test double)", () => {
  it("runs BGEM3FlagModel with every setting explicit and return_dense/sparse/colbert_vecs=True", async () => {
    const log = join(root, "calls.jsonl");
    const env = { PYTHONPATH: process.env.PYTHONPATH, FAKE_FLAGMODEL_LOG: process.env.FAKE_FLAGMODEL_LOG };
    process.env.PYTHONPATH = DOUBLE;
    process.env.FAKE_FLAGMODEL_LOG = log;
    try {
      const spec = await readModelSpec(model);
      const produced = await runFlagModelGolden({ spec, passages: ["hello", "你好"], queries: ["q"], useFp16: false, batchSize: 4, m3: true });
      const g = validateGolden({ format: GOLDEN_FORMAT, model: { id: spec.id, revision: null, weights_sha256: "0".repeat(64) }, ...produced }, "flagmodel");
      expect(g.producer).toMatchObject({ name: "FlagEmbedding.BGEM3FlagModel", pooling: "cls", normalize: true, use_fp16: false, max_length: 512 });
      expect(g.items.map((i) => [i.kind, i.text])).toEqual([["passage", "hello"], ["passage", "你好"], ["query", "q"]]);
      expect(g.items[0]!.colbert).toHaveLength(g.items[0]!.input_ids.length - 1);
      expect(Object.keys(g.items[0]!.sparse!).length).toBeGreaterThan(0);
      const calls = (await readFile(log, "utf8")).trim().split("\n").map((l) => JSON.parse(l));
      expect(calls[0]).toEqual({ event: "m3-init", model, pooling_method: "cls", normalize_embeddings: true, use_fp16: false });
      expect(calls.find((c) => c.event === "m3-encode")).toEqual({
        event: "m3-encode", sentences: ["hello", "你好"], batch_size: 4, max_length: 512, return_dense: true, return_sparse: true, return_colbert_vecs: true,
      });
    } finally {
      for (const [k, v] of Object.entries(env)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});
