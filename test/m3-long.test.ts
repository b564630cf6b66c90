import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readModelSpec } from "../src/checkpoint/model-spec.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { exportOnnx } from "../src/onnx/export.js";
import type { Embedder } from "../src/runners/embedder.js";
import { loadEmbedder } from "../src/runners/load-embedder.js";
import { ReferenceEmbedder } from "../src/runners/reference-embedder.js";
import { tempDir } from "./helpers/tmp.js";
import { cosineSimilarity as cosine } from "../src/parity/metrics.js";


describe("bge-m3's heads at 8192 positions", () => {
  it("an 8192-token text with literal <pad>s and mixed scripts: the fp32 export agrees with the float64 reference per head", async () => {
    const root = await tempDir("bge-m3-long-");
    const model = join(root, "m3");
    // bge-m3's 8194 position rows on the tiny XLM-R body.
    await writeFixture({ dir: model, arch: "xlm-roberta", seed: 53, maxPositions: 8194 });
    const out = join(root, "onnx");
    await exportOnnx({ modelDir: model, outDir: out, builtBy: { tool: "bge", version: "test", args: [] }, precisions: ["fp32"], maxLength: 8192 });
    const text = Array.from({ length: 9000 }, (_, i) => ["hello", "<pad>", "你好", "мир", "مرحبا", "数学"][i % 6]).join(" ");
    const spec = await readModelSpec(model, { maxLength: 8192 });
    const ref = await ReferenceEmbedder.load(spec, { threads: 1 });
    const want = await ref.embedHeads([text], "passage", ["dense", "sparse", "colbert"]);
    await ref.deactivate();
    expect(want.inputIds[0]).toHaveLength(8192);
    const { embedder } = await loadEmbedder(out, { precision: "fp32", maxLength: 8192 });
    const got = await (embedder as Embedder).embedHeads!([text], "passage", ["dense", "sparse", "colbert"], { batchSize: 1 });
    await embedder.deactivate();
    expect(got.inputIds).toEqual(want.inputIds);
    const r = want.outputs[0]!;
    const o = got.outputs[0]!;
    expect(cosine(r.dense, o.dense)).toBeGreaterThanOrEqual(0.99999);
    expect([...o.sparse!.keys()].sort()).toEqual([...r.sparse!.keys()].sort());
    let maxDiff = 0;
    for (const [id, w] of r.sparse!) maxDiff = Math.max(maxDiff, Math.abs(w - o.sparse!.get(id)!));
    expect(maxDiff).toBeLessThanOrEqual(1e-4);
    expect(o.colbert).toHaveLength(8191);
    let minCos = 1;
    r.colbert!.forEach((v, t) => (minCos = Math.min(minCos, cosine(v, o.colbert![t]!))));
    expect(minCos).toBeGreaterThanOrEqual(0.99999);
    console.log(`8192 tokens, fp32: sparse max |Δw| ${maxDiff}, ColBERT min token cosine ${minCos}`);
  }, 300_000);
});
