/**
 * FlagModel's behaviour, re-derived independently: the Rust HF tokenizers (what FlagModel runs through
 * Python) pad and truncate a batch, the float64 encoder runs the padded batch with its mask, and the
 * recipe of FlagEmbedding's `encode` pools h[:, 0] and L2-normalises. The reference embedder must
 * agree to 1e-12; each test below would fail under the named mistake.
 */
import { Tokenizer as RustTokenizer } from "@anush008/tokenizers";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readModelSpec, type ModelSpec } from "../src/checkpoint/model-spec.js";
import { openWeights } from "../src/checkpoint/weights.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { encoderForward, loadEncoderWeights, type EncoderWeights } from "../src/reference/encoder.js";
import { ReferenceEmbedder } from "../src/runners/reference-embedder.js";
import { HAVE_SHARED, SHARED_MISSING_REASON, ZH_TOKENIZER } from "./helpers/paths.js";
import { tempDir } from "./helpers/tmp.js";

const PASSAGES = ["北京是中国的首都。", "The quick brown fox jumps over the lazy dog.", "向量检索 with BGE embeddings 很好用", "短"];
const QUERIES = ["中国的首都是哪里？", "what does the fox do"];
const ZH_INSTRUCTION = "为这个句子生成表示以用于检索相关文章：";

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
}

describe.skipIf(!HAVE_SHARED)("FlagModel semantics of the reference embedder (real bge-small-zh tokenizer)", () => {
  let dir: string;
  let spec: ModelSpec;
  let weights: EncoderWeights;
  let rust: RustTokenizer;
  let embedder: ReferenceEmbedder;

  /** FlagEmbedding 1.2 `encode`: tokenizer(batch, padding=True, truncation=True, max_length), h[:, 0], normalize. */
  async function flagModelEncode(texts: string[], maxLength: number, pooling: "cls" | "mean" = "cls", normalize = true): Promise<number[][]> {
    rust.setTruncation(maxLength);
    rust.setPadding({ padId: 0, padToken: "[PAD]" });
    const encs = await rust.encodeBatch(texts);
    return encs.map((e) => {
      const ids = e.getIds();
      const mask = e.getAttentionMask();
      const { hidden, length } = encoderForward(spec.config, weights, ids, mask);
      const H = spec.config.hiddenSize;
      let v = new Array<number>(H).fill(0);
      if (pooling === "cls") v = Array.from(hidden.slice(0, H));
      else for (let t = 0; t < length; t++) for (let d = 0; d < H; d++) v[d]! += hidden[t * H + d]! / length;
      if (!normalize) return v;
      const n = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
      return v.map((x) => x / n);
    });
  }

  beforeAll(async () => {
    dir = join(await tempDir(), "zh-tiny");
    await writeFixture({ dir, seed: 11, tokenizerDir: ZH_TOKENIZER });
    spec = await readModelSpec(dir);
    const src = await openWeights(dir);
    weights = await loadEncoderWeights(src, spec.config);
    await src.close();
    rust = RustTokenizer.fromFile(join(dir, "tokenizer.json"));
    embedder = await ReferenceEmbedder.load(spec);
  });

  it("pools CLS, not the mean", async () => {
    const expected = await flagModelEncode(PASSAGES, 512);
    const mean = await flagModelEncode(PASSAGES, 512, "mean");
    const got = await embedder.embed(PASSAGES, "passage", { batchSize: 3 });
    got.embeddings.forEach((v, i) => {
      v.forEach((x, d) => expect(x).toBeCloseTo(expected[i]![d]!, 12));
      // The mean-pooled vector is far enough away that the check above could not pass by accident.
      expect(cosine(v, mean[i]!)).toBeLessThan(0.99);
    });
  });

  it("L2-normalises", async () => {
    const raw = await flagModelEncode(PASSAGES, 512, "cls", false);
    const got = await embedder.embed(PASSAGES, "passage");
    got.embeddings.forEach((v, i) => {
      expect(Math.hypot(...v)).toBeCloseTo(1, 14);
      expect(Math.abs(Math.hypot(...raw[i]!) - 1)).toBeGreaterThan(1e-3);
    });
  });

  it("prepends the instruction to queries only", async () => {
    expect(spec.queryInstruction).toBe(ZH_INSTRUCTION);
    const q = await embedder.embed(QUERIES, "query");
    const expectedQ = await flagModelEncode(QUERIES.map((t) => ZH_INSTRUCTION + t), 512);
    const bare = await flagModelEncode(QUERIES, 512);
    q.embeddings.forEach((v, i) => {
      v.forEach((x, d) => expect(x).toBeCloseTo(expectedQ[i]![d]!, 12));
      expect(cosine(v, bare[i]!)).toBeLessThan(0.999);
    });
    const p = await embedder.embed(QUERIES, "passage");
    p.embeddings.forEach((v, i) => v.forEach((x, d) => expect(x).toBeCloseTo(bare[i]![d]!, 12)));
    expect(p.inputIds[0]!.length).toBeLessThan(q.inputIds[0]!.length);
  });

  it("truncates to max_length keeping [CLS] and [SEP]", async () => {
    const long = "这是一个很长的句子，用来测试截断。".repeat(20);
    const spec16 = await readModelSpec(dir, { maxLength: 16 });
    const short = await ReferenceEmbedder.load(spec16);
    const got = await short.embed([long, "短"], "passage");
    expect(got.inputIds[0]!.length).toBe(16);
    expect(got.inputIds[0]![0]).toBe(101);
    expect(got.inputIds[0]![15]).toBe(102);
    const expected = await flagModelEncode([long, "短"], 16);
    got.embeddings[0]!.forEach((x, d) => expect(x).toBeCloseTo(expected[0]![d]!, 12));
    // Cutting the token list after adding specials (dropping [SEP]) gives a different vector.
    const dropped = [...got.inputIds[0]!.slice(0, 15), 6];
    const { hidden } = encoderForward(spec.config, weights, dropped);
    expect(cosine(got.embeddings[0]!, hidden.slice(0, spec.config.hiddenSize))).toBeLessThan(0.9999);
  });

  it("returns vectors in input order whatever the batch size", async () => {
    const texts = [...PASSAGES, ...PASSAGES.slice().reverse()];
    const one = await embedder.embed(texts, "passage", { batchSize: 1 });
    const many = await embedder.embed(texts, "passage", { batchSize: 5 });
    texts.forEach((_, i) => many.embeddings[i]!.forEach((x, d) => expect(x).toBe(one.embeddings[i]![d])));
    one.embeddings.slice(0, 4).forEach((v, i) => v.forEach((x, d) => expect(x).toBe(one.embeddings[7 - i]![d])));
  });
});

if (!HAVE_SHARED) {
  describe("FlagModel semantics", () => {
    it.skip(`skipped: ${SHARED_MISSING_REASON}`, () => {});
  });
}
