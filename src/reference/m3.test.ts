import { Writable } from "node:stream";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { usageError } from "../../test/helpers/usage-error.js";
import { createOutput } from "../cli/output.js";
import { embedCommand } from "../commands/embed.js";
import { loadM3Heads } from "../checkpoint/m3-heads.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { openWeights } from "../checkpoint/weights.js";
import { writeFixture } from "../fixture/write-fixture.js";
import { ReferenceEmbedder } from "../runners/reference-embedder.js";
import { loadFlagTokenizer } from "../tokenize/flag-tokenizer.js";
import { encoderForward, loadEncoderWeights } from "./encoder.js";
import { colbertScore, lexicalScore, m3SpecialIds, parseHeads, sparseFromTokenWeights } from "./m3.js";

let root: string;
let m3: string;
let bert: string;

beforeAll(async () => {
  root = await tempDir();
  m3 = join(root, "m3");
  bert = join(root, "bert");
  await writeFixture({ dir: m3, arch: "xlm-roberta", seed: 14 });
  await writeFixture({ dir: bert, seed: 14 });
}, 60_000);

function capture(json: boolean) {
  let stdout = "";
  const sink = new Writable({ write: (c, _e, cb) => ((stdout += c), cb()) });
  const quiet = new Writable({ write: (_c, _e, cb) => cb() });
  return { out: createOutput({ json, quiet: true }, sink as unknown as typeof process.stdout, quiet as unknown as typeof process.stderr), text: () => stdout };
}

describe("bge-m3 heads: the rules FlagEmbedding applies", () => {
  it("sparse drops special ids and weights ≤ 0 and keeps each id's largest weight", () => {
    const specials = new Set([0, 1, 2, 3]);
    const sparse = sparseFromTokenWeights([0, 10, 11, 10, 1, 3, 12, 2], [9, 0.5, 0, 0.7, 5, 4, -1, 8], specials);
    expect([...sparse]).toEqual([[10, 0.7]]);
    expect(lexicalScore(new Map([[1, 2], [5, 3]]), new Map([[5, 0.5], [7, 9]]))).toBe(1.5);
  });

  it("ColBERT score is the mean over query vectors of the best dot product", () => {
    expect(colbertScore([[1, 0], [0, 1]], [[1, 0], [0.6, 0.8]])).toBeCloseTo((1 + 0.8) / 2, 15);
    expect(colbertScore([], [[1, 0]])).toBe(0);
  });

  it("parses head lists", () => {
    expect(parseHeads("colbert, dense", "--output")).toEqual(["dense", "colbert"]);
    expect(() => parseHeads("dense,lexical", "--output")).toThrow(/--output dense,lexical/);
  });
});

describe("bge-m3 heads: the float64 reference", () => {
  it("computes dense = CLS+L2, sparse and ColBERT from the same hidden states, with a literal <pad> and mixed scripts", async () => {
    const spec = await readModelSpec(m3);
    const ref = await ReferenceEmbedder.load(spec, { threads: 1 });
    expect(ref.heads).toEqual(["dense", "sparse", "colbert"]);
    const texts = ["hello <pad> world", "你好 мир hello", "a"];
    const { outputs, inputIds } = await ref.embedHeads(texts, "passage", ["dense", "sparse", "colbert"]);
    const { embeddings } = await ref.embed(texts, "passage");
    const tok = await loadFlagTokenizer(m3);
    const specials = await m3SpecialIds(m3, tok);
    expect([...specials].sort()).toEqual([0, 1, 2, 3]);
    expect(inputIds[0]).toContain(1); // the literal <pad> is tokenised to the pad id
    const src = await openWeights(m3);
    const w = await loadEncoderWeights(src, spec.config);
    await src.close();
    const heads = await loadM3Heads(m3, 32);
    outputs.forEach((o, i) => {
      expect(Array.from(o.dense)).toEqual(Array.from(embeddings[i]!));
      const ids = inputIds[i]!;
      // Independent recomputation of the heads from the hidden states.
      const { hidden } = encoderForward(spec.config, w, ids);
      const expectSparse = new Map<number, number>();
      ids.forEach((id, t) => {
        let s = heads.sparse!.bias[0]!;
        for (let d = 0; d < 32; d++) s += heads.sparse!.weight[d]! * hidden[t * 32 + d]!;
        if (s > 0 && !specials.has(id)) expectSparse.set(id, Math.max(s, expectSparse.get(id) ?? 0));
      });
      expect(o.sparse).toEqual(expectSparse);
      expect(o.colbert).toHaveLength(ids.length - 1); // CLS dropped, EOS kept
      for (const v of o.colbert!) expect(Math.hypot(...v)).toBeCloseTo(1, 12);
      const t = 1;
      const raw = Array.from({ length: 32 }, (_, j) => {
        let s = heads.colbert!.bias[j]!;
        for (let d = 0; d < 32; d++) s += heads.colbert!.weight[j * 32 + d]! * hidden[t * 32 + d]!;
        return s;
      });
      const n = Math.hypot(...raw);
      raw.forEach((r, j) => expect(o.colbert![0]![j]).toBeCloseTo(r / n, 13));
    });
    expect(outputs.reduce((n, o) => n + o.sparse!.size, 0)).toBeGreaterThan(3);
    await ref.deactivate();
  });

  it("bge embed --output prints each head; --json as {dense, sparse, colbert}", async () => {
    const c = capture(true);
    await embedCommand({ model: m3, texts: ["hello world", "你好"], query: false, normalize: true, batchSize: 32, output: "dense,sparse,colbert" }, c.out);
    const j = JSON.parse(c.text());
    expect(Object.keys(j)).toEqual(["dense", "sparse", "colbert"]);
    expect(j.dense).toHaveLength(2);
    expect(j.dense[0]).toHaveLength(32);
    expect(Object.keys(j.sparse[0]).every((k: string) => /^\d+$/.test(k) && !["0", "1", "2", "3"].includes(k))).toBe(true);
    expect(j.colbert[0][0]).toHaveLength(32);
    const h = capture(false);
    await embedCommand({ model: m3, texts: ["hello world"], query: false, normalize: true, batchSize: 32, output: "sparse" }, h.out);
    expect(Object.keys(JSON.parse(h.text().trim()))).toEqual(["sparse"]);
  });

  it("refuses sparse/ColBERT for a model without those heads (exit 2)", async () => {
    const e = await usageError(() => embedCommand({ model: bert, texts: ["hello"], query: false, normalize: true, batchSize: 32, output: "dense,sparse" }, capture(true).out));
    expect(e.message).toMatch(/has no sparse head \(it has: dense\)/);
  });
});
