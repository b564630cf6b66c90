/**
 * The committed golden locks the numbers: the fixture generator (weights hash), the tokenizer (ids)
 * and the float64 reference (vectors) must reproduce it, and an export of the fixture must pass it.
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readGolden } from "../src/artifacts/golden.js";
import { readTextsFile } from "../src/cli/inputs.js";
import { readModelSpec } from "../src/checkpoint/model-spec.js";
import { hashWeights } from "../src/checkpoint/weights.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { ReferenceEmbedder } from "../src/runners/reference-embedder.js";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

const GOLDEN = join(REPO_ROOT, "golden", "bge-tiny-zh.seed0.json");

describe("golden/bge-tiny-zh.seed0.json", () => {
  it("is reproduced by the fixture generator, the tokenizer and the reference encoder", async () => {
    const golden = await readGolden(GOLDEN);
    const dir = join(await tempDir(), "tiny");
    await writeFixture({ dir, shape: "tiny", seed: 0 });
    expect(await hashWeights(dir)).toBe(golden.model.weights_sha256);
    const passages = await readTextsFile(join(REPO_ROOT, "golden", "texts", "verify-passages.txt"));
    const queries = await readTextsFile(join(REPO_ROOT, "golden", "texts", "verify-queries.txt"));
    expect(golden.items.map((i) => i.text)).toEqual([...passages, ...queries]);
    const ref = await ReferenceEmbedder.load(await readModelSpec(dir));
    const p = await ref.embed(passages, "passage");
    const q = await ref.embed(queries, "query");
    const ids = [...p.inputIds, ...q.inputIds];
    const vecs = [...p.embeddings, ...q.embeddings];
    let maxDiff = 0;
    golden.items.forEach((item, i) => {
      expect(ids[i]).toEqual(item.input_ids);
      item.embedding.forEach((x, d) => (maxDiff = Math.max(maxDiff, Math.abs(x - vecs[i]![d]!))));
    });
    expect(maxDiff).toBeLessThanOrEqual(1e-12);

    // The CLI runs the reference on a thread pool: the same numbers, bit for bit.
    const viaCli = join(dir, "..", "cli-golden.json");
    const g = await runBge(["golden", dir, "--texts", join(REPO_ROOT, "golden", "texts", "verify-passages.txt"), "--queries", join(REPO_ROOT, "golden", "texts", "verify-queries.txt"), "-o", viaCli, "-q"]);
    expect(g.code).toBe(0);
    const threaded = await readGolden(viaCli);
    threaded.items.forEach((item, i) => expect(item.embedding).toEqual(Array.from(vecs[i]!)));

    const out = join(dir, "..", "onnx");
    expect((await runBge(["export", dir, "-o", out, "-q"])).code).toBe(0);
    const v = await runBge(["verify", out, "--golden", GOLDEN, "-q"]);
    expect(v.stderr).toBe("");
    expect(v.code).toBe(0);
  });
});
