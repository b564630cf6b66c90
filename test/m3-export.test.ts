import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readManifest } from "../src/artifacts/manifest.js";
import { readModelSpec } from "../src/checkpoint/model-spec.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { exportOnnx } from "../src/onnx/export.js";
import type { Embedder, HeadsResult } from "../src/runners/embedder.js";
import { loadEmbedder } from "../src/runners/load-embedder.js";
import type { OnnxEmbedder } from "../src/runners/onnx-embedder.js";
import { ReferenceEmbedder } from "../src/runners/reference-embedder.js";
import { tempDir } from "./helpers/tmp.js";
import { usageError } from "./helpers/usage-error.js";
import { cosineSimilarity as cosine } from "../src/parity/metrics.js";

const builtBy = { tool: "bge", version: "test", args: ["export"] };
const ALL = ["dense", "sparse", "colbert"] as const;
/** A literal <pad>, mixed scripts, a one-token text and one long enough to be truncated to 512 positions. */
const TEXTS = [
  "hello <pad> world",
  "<pad><pad> 你好 мир hello مرحبا",
  "数学 математика mathematics",
  "a",
  Array.from({ length: 700 }, (_, i) => ["lorem", "你好", "мир", "ipsum", "<pad>", "dolor"][i % 6]).join(" "),
  "BGE M3 multi-lingual hybrid retrieval, 多语言检索",
];

let root: string;
let model: string;
let reference: HeadsResult;

beforeAll(async () => {
  root = await tempDir("bge-m3-export-");
  model = join(root, "m3");
  // bge-m3's architecture (XLM-R, 8194 positions' rule, fp16 heads) with 2 layers of width 32.
  await writeFixture({ dir: model, arch: "xlm-roberta", seed: 41 });
  await exportOnnx({ modelDir: model, outDir: join(root, "onnx"), builtBy });
  const ref = await ReferenceEmbedder.load(await readModelSpec(model), { threads: 1 });
  reference = await ref.embedHeads(TEXTS, "passage", [...ALL]);
  await ref.deactivate();
}, 120_000);


describe("bge export: bge-m3's sparse and ColBERT heads in one graph", () => {
  it("records the heads in the manifest and the graph has sparse_weights [B, S] and colbert_vectors [B, S−1, H]", async () => {
    const m = await readManifest(join(root, "onnx"));
    expect(m.heads).toEqual(["dense", "sparse", "colbert"]);
    const { embedder } = await loadEmbedder(join(root, "onnx"), { precision: "fp32" });
    const onnx = embedder as OnnxEmbedder;
    expect(onnx.heads).toEqual(["dense", "sparse", "colbert"]);
    const feeds = onnx.feeds([[0, 10, 11, 2], [0, 12, 2]]);
    const session = (onnx as unknown as { session: { run: (f: unknown) => Promise<Record<string, { dims: readonly number[]; data: Float32Array }>> } }).session;
    const out = await session.run(feeds);
    expect(out.sparse_weights!.dims).toEqual([2, 4]);
    expect(out.colbert_vectors!.dims).toEqual([2, 3, 32]);
    const sw = out.sparse_weights!.data;
    expect([sw[0], sw[3], sw[4], sw[6], sw[7]]).toEqual([0, 0, 0, 0, 0]); // CLS, EOS, PAD positions
    const cv = out.colbert_vectors!.data;
    expect(Array.from(cv.subarray(5 * 32, 6 * 32)).every((v) => v === 0)).toBe(true); // padding row
    expect(Math.hypot(...cv.subarray(0, 32))).toBeCloseTo(1, 5);
    await embedder.deactivate();
  });

  it.each([
    ["fp32", 0.99999, 1e-4],
    ["fp16", 0.999, 2e-2],
  ] as const)("%s agrees with the float64 reference per head (literal <pad>, mixed scripts, a 512-token text)", async (precision, minCos, maxWeightDiff) => {
    const { embedder } = await loadEmbedder(join(root, "onnx"), { precision });
    const got = await (embedder as Embedder).embedHeads!(TEXTS, "passage", [...ALL], { batchSize: 4 });
    await embedder.deactivate();
    expect(got.inputIds).toEqual(reference.inputIds);
    expect(reference.inputIds[4]).toHaveLength(512);
    expect(reference.inputIds[0]).toContain(1); // literal <pad> = the pad id, attended to
    let worstDense = 1;
    let worstToken = 1;
    let worstWeight = 0;
    reference.outputs.forEach((r, i) => {
      const o = got.outputs[i]!;
      worstDense = Math.min(worstDense, cosine(r.dense, o.dense));
      expect(o.specialWeight).toBe(0);
      // Ids whose weight is near zero may fall either side in fp16; every other id must be in both.
      for (const [id, w] of r.sparse!) {
        const v = o.sparse!.get(id) ?? 0;
        if (w > maxWeightDiff) expect(o.sparse!.has(id)).toBe(true);
        worstWeight = Math.max(worstWeight, Math.abs(w - v));
      }
      for (const [id, v] of o.sparse!) if (!r.sparse!.has(id)) worstWeight = Math.max(worstWeight, v);
      if (precision === "fp32") expect([...o.sparse!.keys()].sort()).toEqual([...r.sparse!.keys()].sort());
      expect(o.colbert).toHaveLength(r.colbert!.length);
      r.colbert!.forEach((v, t) => (worstToken = Math.min(worstToken, cosine(v, o.colbert![t]!))));
      for (const v of o.colbert!) expect(Math.hypot(...v)).toBeCloseTo(1, precision === "fp32" ? 5 : 2);
    });
    console.log(`bge-m3-shaped ${precision}: dense min cosine ${worstDense}, sparse max |Δw| ${worstWeight}, ColBERT min token cosine ${worstToken}`);
    expect(worstDense).toBeGreaterThanOrEqual(minCos);
    expect(worstToken).toBeGreaterThanOrEqual(minCos);
    expect(worstWeight).toBeLessThanOrEqual(maxWeightDiff);
    expect(reference.outputs.reduce((n, o) => n + o.sparse!.size, 0)).toBeGreaterThan(10);
  });

  it("--heads chooses; heads the checkpoint lacks or a list without dense are exit 2", async () => {
    const out = join(root, "dense-only");
    await exportOnnx({ modelDir: model, outDir: out, builtBy, precisions: ["fp32"], heads: ["dense"] });
    expect((await readManifest(out)).heads).toBeUndefined();
    const { embedder } = await loadEmbedder(out);
    expect((embedder as Embedder).heads).toEqual(["dense"]);
    await embedder.deactivate();
    const sparseOnly = join(root, "sparse");
    await exportOnnx({ modelDir: model, outDir: sparseOnly, builtBy, precisions: ["fp32"], heads: ["dense", "sparse"] });
    expect((await readManifest(sparseOnly)).heads).toEqual(["dense", "sparse"]);
    const bert = join(root, "bert");
    await writeFixture({ dir: bert, seed: 2 });
    expect((await usageError(() => exportOnnx({ modelDir: bert, outDir: join(root, "x"), builtBy, heads: ["dense", "colbert"] }))).message).toMatch(/no colbert_linear\.pt, so no colbert head/);
    expect((await usageError(() => exportOnnx({ modelDir: model, outDir: join(root, "y"), builtBy, heads: ["sparse"] }))).message).toMatch(/dense is always exported/);
  });
});
