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
import { headTolerance } from "../src/parity/tolerances.js";


describe("bge-m3's heads at 8192 positions", () => {
  it("an 8192-token text with literal <pad>s and mixed scripts: the fp32 and fp16 exports agree with the float64 reference per head, within each precision's head tolerances", async () => {
    const root = await tempDir("bge-m3-long-");
    const model = join(root, "m3");
    // bge-m3's 8194 position rows on the tiny XLM-R body.
    await writeFixture({ dir: model, arch: "xlm-roberta", seed: 53, maxPositions: 8194 });
    const out = join(root, "onnx");
    await exportOnnx({ modelDir: model, outDir: out, builtBy: { tool: "bge", version: "test", args: [] }, precisions: ["fp32", "fp16"], maxLength: 8192 });
    const text = Array.from({ length: 9000 }, (_, i) => ["hello", "<pad>", "你好", "мир", "مرحبا", "数学"][i % 6]).join(" ");
    const spec = await readModelSpec(model, { maxLength: 8192 });
    const ref = await ReferenceEmbedder.load(spec, { threads: 1 });
    const want = await ref.embedHeads([text], "passage", ["dense", "sparse", "colbert"]);
    await ref.deactivate();
    expect(want.inputIds[0]).toHaveLength(8192);
    const r = want.outputs[0]!;
    for (const precision of ["fp32", "fp16"] as const) {
      const tol = headTolerance(precision);
      const { embedder } = await loadEmbedder(out, { precision, maxLength: 8192 });
      const got = await (embedder as Embedder).embedHeads!([text], "passage", ["dense", "sparse", "colbert"], { batchSize: 1 });
      await embedder.deactivate();
      expect(got.inputIds).toEqual(want.inputIds);
      const o = got.outputs[0]!;
      expect(cosine(r.dense, o.dense), precision).toBeGreaterThanOrEqual(precision === "fp32" ? 0.99999 : 0.999);
      // Every id weighing more than the precision's rounding-around-zero allowance is in both sets.
      const heavy = (m: Map<number, number>) => [...m].filter(([, w]) => w > tol.sparse_zero).map(([id]) => id);
      for (const id of heavy(r.sparse!)) expect(o.sparse!.has(id), `${precision}: id ${id}`).toBe(true);
      for (const id of heavy(o.sparse!)) expect(r.sparse!.has(id), `${precision}: id ${id}`).toBe(true);
      let maxDiff = 0;
      for (const id of new Set([...r.sparse!.keys(), ...o.sparse!.keys()])) maxDiff = Math.max(maxDiff, Math.abs((r.sparse!.get(id) ?? 0) - (o.sparse!.get(id) ?? 0)));
      expect(maxDiff, precision).toBeLessThanOrEqual(tol.sparse_weight_diff);
      expect(o.colbert).toHaveLength(8191);
      let minCos = 1;
      let normErr = 0;
      r.colbert!.forEach((v, t) => {
        const c = o.colbert![t]!;
        minCos = Math.min(minCos, cosine(v, c));
        normErr = Math.max(normErr, Math.abs(Math.hypot(...c) - 1));
      });
      expect(minCos, precision).toBeGreaterThanOrEqual(tol.colbert_min_cosine);
      expect(normErr, precision).toBeLessThanOrEqual(tol.colbert_norm);
      console.log(`8192 tokens, ${precision}: dense cosine ${cosine(r.dense, o.dense)}, sparse max |Δw| ${maxDiff}, ColBERT min token cosine ${minCos}, max |‖v‖−1| ${normErr}`);
    }
  }, 300_000);
});
