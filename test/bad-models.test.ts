import { existsSync } from "node:fs";
import { cp, mkdir, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { assertFiniteTensor, floatToBf16, floatToHalf } from "../src/checkpoint/dtype.js";
import { readSafetensors } from "../src/checkpoint/safetensors.js";
import { writeSafetensors } from "../src/checkpoint/safetensors-writer.js";
import { DTYPE_BYTES, elementCount, type DType } from "../src/checkpoint/tensor.js";
import { exportOnnx } from "../src/onnx/export.js";
import { assertFiniteEmbedding } from "../src/runners/embedder.js";
import { loadFlagTokenizer } from "../src/tokenize/flag-tokenizer.js";
import { EN_TOKENIZER, HAVE_SHARED, ZH_TOKENIZER } from "./helpers/paths.js";
import { runBge, type BgeRun } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";
import { usageError } from "./helpers/usage-error.js";

/**
 * Bad models are refused up front with exit 2 and one line naming the field, tensor or text, by
 * every command that would otherwise print NaNs, write a garbage golden or artifact, or exit 70.
 */

let root: string;
/** A tiny BERT fixture (2 layers, vocab 1500, hidden 32) that each case copies and breaks. */
let base: string;
let texts: string;
let caseNo = 0;

beforeAll(async () => {
  root = await tempDir("bge-bad-models-");
  base = join(root, "base");
  const r = await runBge(["fixture", base, "--shape", "tiny", "--seed", "3"]);
  expect(r.code).toBe(0);
  texts = join(root, "texts.txt");
  await writeFile(texts, "hello\n北京\n");
});

/** A fresh copy of the fixture, for one case to break. */
async function copyOfBase(): Promise<string> {
  const dir = join(root, `case-${++caseNo}`);
  await cp(base, dir, { recursive: true });
  return dir;
}

async function patchJson(file: string, patch: (json: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
  patch(json);
  await writeFile(file, JSON.stringify(json, null, 2));
}

async function withConfig(patch: Record<string, unknown>): Promise<string> {
  const dir = await copyOfBase();
  await patchJson(join(dir, "config.json"), (c) => Object.assign(c, patch));
  return dir;
}

/** Overwrites element `index` of a tensor inside a .safetensors file with `bits`, in place. */
async function pokeElement(file: string, tensor: string, index: number, bits: Uint8Array): Promise<void> {
  const buf = await readFile(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const entry = (JSON.parse(buf.subarray(8, 8 + headerLen).toString()) as Record<string, { dtype: DType; data_offsets: [number, number] }>)[tensor]!;
  expect(bits.byteLength).toBe(DTYPE_BYTES[entry.dtype]);
  const handle = await open(file, "r+");
  try {
    await handle.write(bits, 0, bits.byteLength, 8 + headerLen + entry.data_offsets[0] + index * bits.byteLength);
  } finally {
    await handle.close();
  }
}

function float32Bits(value: number): Uint8Array {
  return new Uint8Array(new Float32Array([value]).buffer);
}

/** Rewrites a .safetensors file with one tensor replaced (another dtype and values allowed). */
async function replaceTensor(file: string, tensor: string, dtype: DType, fill: (count: number) => Uint8Array): Promise<void> {
  const source = await readSafetensors(file);
  try {
    const infos = source.list().map((t) => (t.name === tensor ? { ...t, dtype } : t));
    const bytes = new Map<string, Uint8Array>();
    for (const t of infos) bytes.set(t.name, t.name === tensor ? fill(elementCount(t.shape)) : await source.readBytes(t.name));
    await writeSafetensors(file, infos, (t) => bytes.get(t.name)!);
  } finally {
    await source.close();
  }
}

/** Exit 2, exactly one stderr line (the runs are --quiet), no stack trace, matching `pattern`. */
function expectRefusal(r: BgeRun, pattern: RegExp): void {
  expect(r.stderr).toMatch(pattern);
  expect(r.code).toBe(2);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toMatch(/^bge: /);
  expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  expect(r.stdout).toBe("");
}

async function embed(dir: string, ...extra: string[]): Promise<BgeRun> {
  return runBge(["embed", dir, "hello", "北京", "--quiet", ...extra]);
}

/** golden must refuse and leave no golden (nor a temporary of one) behind. */
async function expectGoldenRefused(dir: string, pattern: RegExp): Promise<void> {
  const out = join(root, `golden-${caseNo}.json`);
  const r = await runBge(["golden", dir, "--texts", texts, "--queries", texts, "-o", out, "--quiet"]);
  expectRefusal(r, pattern);
  expect((await readdir(root)).filter((f) => f.startsWith(`golden-${caseNo}`))).toEqual([]);
}

/** export must refuse before it writes anything: the output folder is never created. */
async function expectExportRefused(dir: string, pattern: RegExp): Promise<void> {
  const out = join(root, `onnx-${caseNo}`);
  const r = await runBge(["export", dir, "-o", out, "--quiet"]);
  expectRefusal(r, pattern);
  expect(existsSync(out)).toBe(false);
}

describe("config.json against itself and the weights", () => {
  it("layer_norm_eps 0: embed, golden and export refuse it naming the field", async () => {
    const dir = await withConfig({ layer_norm_eps: 0 });
    const pattern = /config\.json: layer_norm_eps must be a positive finite number, got 0 /;
    expectRefusal(await embed(dir), pattern);
    await expectGoldenRefused(dir, pattern);
    await expectExportRefused(dir, pattern);
  });

  it("layer_norm_eps -1 and 1e999 (Infinity)", async () => {
    expectRefusal(await embed(await withConfig({ layer_norm_eps: -1 })), /layer_norm_eps must be a positive finite number, got -1 /);
    const dir = await copyOfBase();
    const cfg = await readFile(join(dir, "config.json"), "utf8");
    await writeFile(join(dir, "config.json"), cfg.replace(/"layer_norm_eps": [^,\n]+/, '"layer_norm_eps": 1e999'));
    expectRefusal(await embed(dir), /layer_norm_eps must be a positive finite number, got Infinity /);
  });

  it("num_hidden_layers 0", async () => {
    const dir = await withConfig({ num_hidden_layers: 0 });
    const pattern = /config\.json: num_hidden_layers is 0; a BGE encoder needs at least 1/;
    expectRefusal(await embed(dir), pattern);
    await expectGoldenRefused(dir, pattern);
    await expectExportRefused(dir, pattern);
  });

  it("num_hidden_layers fewer than the layers present (their weights would be silently skipped)", async () => {
    const dir = await withConfig({ num_hidden_layers: 1 });
    const pattern = /model\.safetensors: config\.json num_hidden_layers is 1 but the weights hold 2 encoder layers \(encoder\.layer\.1 and beyond would be ignored\)/;
    expectRefusal(await embed(dir), pattern);
    await expectGoldenRefused(dir, pattern);
    await expectExportRefused(dir, pattern);
  });

  it("num_hidden_layers more than the layers present", async () => {
    const dir = await withConfig({ num_hidden_layers: 4 });
    const pattern = /config\.json num_hidden_layers is 4 but the weights hold 2 encoder layers \(tensor encoder\.layer\.2\.attention\.self\.query\.weight is missing\)/;
    expectRefusal(await embed(dir), pattern);
    await expectGoldenRefused(dir, pattern);
    await expectExportRefused(dir, pattern);
  });

  it("vocab_size other than the word-embedding rows, in either direction", async () => {
    const bigger = await withConfig({ vocab_size: 1600 });
    const pattern = /embeddings\.word_embeddings\.weight has shape \[1500, 32\] but config\.json implies \[1600, 32\] \(config\.json vocab_size is 1600, the weights have 1500\)/;
    expectRefusal(await embed(bigger), pattern);
    await expectGoldenRefused(bigger, pattern);
    await expectExportRefused(bigger, pattern);
    // Smaller: the weights' mismatch is reported, not the tokenizer's ids beyond the (wrong) vocab_size.
    expectRefusal(await embed(await withConfig({ vocab_size: 1400 })), /config\.json vocab_size is 1400, the weights have 1500/);
  });

  it("max_position_embeddings and type_vocab_size other than their tables' rows", async () => {
    expectRefusal(await embed(await withConfig({ max_position_embeddings: 1024 })), /position_embeddings\.weight .*\(config\.json max_position_embeddings is 1024, the weights have 512\)/);
    expectRefusal(await embed(await withConfig({ type_vocab_size: 3 })), /token_type_embeddings\.weight .*\(config\.json type_vocab_size is 3, the weights have 2\)/);
  });

  it("pad_token_id beyond the vocabulary", async () => {
    expectRefusal(await embed(await withConfig({ pad_token_id: 1500 })), /config\.json: pad_token_id 1500 is not below vocab_size 1500/);
  });
});

describe("the tokenizer against the model", () => {
  /** A copy whose tokenizer.json knows 100 more tokens (ids 1500–1599) than the 1500-row embedding table. */
  async function oversizedTokenizer(): Promise<string> {
    const dir = await copyOfBase();
    await patchJson(join(dir, "tokenizer.json"), (t) => {
      const vocab = (t.model as { vocab: Record<string, number> }).vocab;
      for (let i = 0; i < 100; i++) vocab[`extra${i}`] = 1500 + i;
    });
    return dir;
  }
  const pattern = /tokenizer\.json: the tokenizer has token ids up to 1599 but config\.json vocab_size is 1500/;

  it("a tokenizer vocabulary larger than vocab_size: tokenize, embed, golden, export refuse it up front", async () => {
    const dir = await oversizedTokenizer();
    expectRefusal(await runBge(["tokenize", dir, "hello"]), pattern);
    expectRefusal(await embed(dir), pattern);
    await expectGoldenRefused(dir, pattern);
    await expectExportRefused(dir, pattern);
  });

  it("also for the ONNX backend (a bare model.onnx beside the tokenizer)", async () => {
    const dir = await oversizedTokenizer();
    const artifact = join(root, "artifact-for-tokenizer");
    await exportOnnx({ modelDir: base, outDir: artifact, precisions: ["fp32"], builtBy: { tool: "bge", version: "test", args: [] } });
    await cp(join(artifact, "model.fp32.onnx"), join(dir, "model.onnx"));
    expectRefusal(await embed(join(dir, "model.onnx")), pattern);
  });

  it("a special token id outside the vocabulary", async () => {
    const dir = await copyOfBase();
    await patchJson(join(dir, "tokenizer.json"), (t) => {
      ((t.post_processor as { special_tokens: Record<string, { ids: number[] }> }).special_tokens["[SEP]"]!).ids = [5000];
    });
    await expectExportRefused(dir, /tokenizer\.json: special token id 5000 is not a token of the vocabulary \(highest id 1499\)/);
  });

  it("export probes the tokenizer before writing: missing tokenizer.json", async () => {
    const dir = await copyOfBase();
    await rm(join(dir, "tokenizer.json"));
    await expectExportRefused(dir, /tokenizer\.json not found/);
  });

  it("export: tokenizer.json that is not JSON, or has no model section", async () => {
    const dir = await copyOfBase();
    const text = await readFile(join(dir, "tokenizer.json"), "utf8");
    await writeFile(join(dir, "tokenizer.json"), text.slice(0, text.length / 2));
    await expectExportRefused(dir, /tokenizer\.json is not valid JSON/);
    await writeFile(join(dir, "tokenizer.json"), JSON.stringify({ ...JSON.parse(text), model: undefined }));
    await expectExportRefused(dir, /tokenizer\.json: model is missing/);
  });

  it("export: missing tokenizer_config.json", async () => {
    const dir = await copyOfBase();
    await rm(join(dir, "tokenizer_config.json"));
    await expectExportRefused(dir, /tokenizer_config\.json not found/);
  });

  it.skipIf(!HAVE_SHARED)("real BGE tokenizers pass the probe against their own config.json", async () => {
    for (const dir of [ZH_TOKENIZER, EN_TOKENIZER]) {
      const vocab = (JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as { vocab_size: number }).vocab_size;
      const tokenizer = await loadFlagTokenizer(dir);
      expect(() => tokenizer.probe(vocab)).not.toThrow();
      expect((await usageError(async () => tokenizer.probe(vocab - 1))).message).toMatch(new RegExp(`token ids up to ${vocab - 1} but config\\.json vocab_size is ${vocab - 1}`));
    }
  });
});

describe("non-finite weights", () => {
  it("a NaN float32 in model.safetensors: embed, golden and export name the tensor and element", async () => {
    const dir = await copyOfBase();
    await pokeElement(join(dir, "model.safetensors"), "encoder.layer.1.output.dense.weight", 7, float32Bits(NaN));
    const pattern = /model\.safetensors: tensor encoder\.layer\.1\.output\.dense\.weight holds NaN at element 7 of 2048; the weights are corrupt/;
    expectRefusal(await embed(dir), pattern);
    await expectGoldenRefused(dir, pattern);
    // Found while the weights stream into the graph: the folder this run created is removed again.
    const out = join(root, `onnx-${caseNo}`);
    expectRefusal(await runBge(["export", dir, "-o", out, "--quiet"]), pattern);
    expect(existsSync(out)).toBe(false);
  });

  it("a finite weight beyond FP16's range: the fp16 export names it, the fp32 export is fine", async () => {
    const dir = await copyOfBase();
    await pokeElement(join(dir, "model.safetensors"), "encoder.layer.0.intermediate.dense.weight", 11, float32Bits(1e5));
    const out = join(root, `onnx-${caseNo}`);
    expectRefusal(
      await runBge(["export", dir, "-o", out, "--precision", "fp32,fp16", "--quiet"]),
      /^bge: encoder\.layer\.0\.intermediate\.dense\.weight: weight 100000 at element 11 does not fit FP16 \(\|w\| ≤ 65504\); export --precision fp32/,
    );
    expect(existsSync(out)).toBe(false);
    expect((await runBge(["export", dir, "-o", out, "--precision", "fp32", "--quiet"])).code).toBe(0);
  });

  it("-Infinity in the word embeddings", async () => {
    const dir = await copyOfBase();
    await pokeElement(join(dir, "model.safetensors"), "embeddings.word_embeddings.weight", 40, float32Bits(-Infinity));
    expectRefusal(await embed(dir), /tensor embeddings\.word_embeddings\.weight holds -Infinity at element 40 of 48000/);
  });

  it("every floating dtype is checked on its stored bits", () => {
    const cases: [DType, Uint8Array][] = [
      ["F32", new Uint8Array(new Float32Array([1, 2, NaN]).buffer)],
      ["F64", new Uint8Array(new Float64Array([1, 2, Infinity]).buffer)],
      ["F16", new Uint8Array(new Uint16Array([floatToHalf(1), floatToHalf(2), floatToHalf(-Infinity)]).buffer)],
      ["BF16", new Uint8Array(new Uint16Array([floatToBf16(1), floatToBf16(2), floatToBf16(NaN)]).buffer)],
    ];
    for (const [dtype, bytes] of cases) {
      expect(() => assertFiniteTensor(bytes, dtype, "w")).toThrow(/^w holds (NaN|-?Infinity) at element 2 of 3;/);
      expect(() => assertFiniteTensor(bytes.subarray(0, 2 * DTYPE_BYTES[dtype]), dtype, "w")).not.toThrow();
    }
    // Large finite values and integer buffers are not refused.
    expect(() => assertFiniteTensor(new Uint8Array(new Float32Array([3.4e38, -3.4e38]).buffer), "F32", "w")).not.toThrow();
    expect(() => assertFiniteTensor(new Uint8Array(new BigInt64Array([-1n]).buffer), "I64", "w")).not.toThrow();
  });
});

describe("a non-finite output vector is never printed nor written", () => {
  /** Finite weights whose forward pass overflows float64: a row of 1e308 sums to Infinity in LayerNorm. */
  async function overflowingReference(): Promise<string> {
    const dir = await copyOfBase();
    await replaceTensor(join(dir, "model.safetensors"), "embeddings.word_embeddings.weight", "F64", (n) => new Uint8Array(new Float64Array(n).fill(1e308).buffer));
    return dir;
  }

  it("embed (reference) names the text by index and prefix, prints nothing", async () => {
    const dir = await overflowingReference();
    const r = await runBge(["embed", dir, "The quick brown fox jumps over the lazy dog\nand more", "--quiet"]);
    expectRefusal(r, /^bge: text 0 \("The quick brown fox jump…"\): the model produced a non-finite vector \(NaN at dimension 0\)/);
  });

  it("golden writes no file", async () => {
    await expectGoldenRefused(await overflowingReference(), /^bge: passage 0 \("hello"\): the model produced a non-finite vector/);
  });

  it("embed with the ONNX backend (float32 attention scores overflow to ±Infinity)", async () => {
    const dir = await copyOfBase();
    for (const m of ["query", "key"]) {
      await replaceTensor(join(dir, "model.safetensors"), `encoder.layer.0.attention.self.${m}.weight`, "F32", (n) => new Uint8Array(new Float32Array(n).fill(1e20).buffer));
    }
    const artifact = join(root, "overflowing-artifact");
    await mkdir(artifact);
    await exportOnnx({ modelDir: dir, outDir: artifact, precisions: ["fp32"], builtBy: { tool: "bge", version: "test", args: [] } });
    expectRefusal(await embed(artifact), /^bge: text 0 \("hello"\): the model produced a non-finite vector/);
  });

  it("the guard itself: the first bad dimension, a one-line quoted prefix", async () => {
    expect(() => assertFiniteEmbedding([0.5, 0.5], "text 0", "ok")).not.toThrow();
    const err = await usageError(async () => assertFiniteEmbedding([0.1, Infinity, NaN], "query 3", "line one\nline two is long enough to cut"));
    expect(err.message).toBe(
      'query 3 ("line one\\nline two is lon…"): the model produced a non-finite vector (Infinity at dimension 1), which bge never outputs; check the model\'s weights and config.json, or use a higher precision',
    );
  });
});
