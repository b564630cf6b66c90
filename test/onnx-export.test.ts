import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readManifest } from "../src/artifacts/manifest.js";
import { readModelSpec } from "../src/checkpoint/model-spec.js";
import { hashWeights, openWeights } from "../src/checkpoint/weights.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { buildEncoderGraph } from "../src/onnx/encoder-graph.js";
import { exportOnnx } from "../src/onnx/export.js";
import { GraphBuilder } from "../src/onnx/graph-builder.js";
import { OnnxType } from "../src/onnx/proto.js";
import { writeOnnxModel } from "../src/onnx/write-model.js";
import { compareEmbeddings } from "../src/parity/metrics.js";
import { ReferenceEmbedder } from "../src/runners/reference-embedder.js";
import { loadEmbedder } from "../src/runners/load-embedder.js";
import { loadFlagTokenizer } from "../src/tokenize/flag-tokenizer.js";
import { HAVE_SHARED, REPO_ROOT, SHARED_MISSING_REASON, ZH_TOKENIZER } from "./helpers/paths.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

const builtBy = { tool: "bge", version: "test", args: ["export"] };
let root: string;
let corpus: string[];

beforeAll(async () => {
  root = await tempDir("bge-onnx-");
  corpus = (JSON.parse(await readFile(join(REPO_ROOT, "test", "data", "tokenizer-corpus.json"), "utf8")) as { texts: string[] }).texts;
});

/** Reference vs ONNX (fp32 and fp16) on the same texts; returns the summaries. */
async function parity(modelDir: string, outDir: string, texts: string[]) {
  await exportOnnx({ modelDir, outDir, builtBy });
  const spec = await readModelSpec(modelDir);
  const ref = await (await ReferenceEmbedder.load(spec)).embed(texts, "passage");
  const result: Record<string, ReturnType<typeof compareEmbeddings>["summary"]> = {};
  for (const precision of ["fp32", "fp16"]) {
    const { embedder } = await loadEmbedder(outDir, { precision });
    const got = await embedder.embed(texts, "passage", { batchSize: 16 });
    expect(got.inputIds).toEqual(ref.inputIds);
    result[precision] = compareEmbeddings(ref.embeddings, got.embeddings).summary;
    await embedder.deactivate();
  }
  return { result, ref };
}

describe("native ONNX export: parity with the float64 reference", () => {
  it.each(["bert", "xlm-roberta"] as const)("tiny %s, the whole tokenizer corpus incl. truncated texts", async (arch) => {
    const dir = join(root, `tiny-${arch}`);
    await writeFixture({ dir, arch, seed: 21 });
    const { result, ref } = await parity(dir, join(root, `tiny-${arch}-onnx`), corpus);
    console.log(`tiny ${arch}: ${JSON.stringify(result)}`);
    expect(ref.inputIds.some((ids) => ids.length === 512)).toBe(true); // truncated texts are in the set
    expect(result.fp32!.n).toBe(corpus.length);
    expect(result.fp32!.min_cosine).toBeGreaterThanOrEqual(0.99999);
    expect(result.fp32!.max_abs_diff).toBeLessThanOrEqual(1e-4);
    expect(result.fp16!.min_cosine).toBeGreaterThanOrEqual(0.999);
    expect(result.fp16!.non_finite).toBe(0);
  });

  it.skipIf(!HAVE_SHARED)("bge-small-zh-v1.5 shape with the real tokenizer, 100+ texts", async () => {
    const dir = join(root, "small-zh");
    await writeFixture({ dir, shape: "bge-small-zh-v1.5", seed: 22, tokenizerDir: ZH_TOKENIZER });
    const tok = await loadFlagTokenizer(dir);
    const short = corpus.filter((t) => tok.encode(t, 512).length <= 64).slice(0, 110);
    const long = corpus.filter((t) => tok.encode(t, 100_000).length > 512).slice(0, 2);
    const texts = [...short, ...long];
    expect(texts.length).toBeGreaterThanOrEqual(100);
    const { result } = await parity(dir, join(root, "small-zh-onnx"), texts);
    console.log(`bge-small-zh-v1.5-shaped: ${JSON.stringify(result)}`);
    expect(result.fp32!.min_cosine).toBeGreaterThanOrEqual(0.99999);
    expect(result.fp32!.max_abs_diff).toBeLessThanOrEqual(1e-4);
    expect(result.fp16!.min_cosine).toBeGreaterThanOrEqual(0.999);
  }, 180_000);
  if (!HAVE_SHARED) it.skip(`bge-small-zh-v1.5 shape: ${SHARED_MISSING_REASON}`, () => {});
});

describe("every opset bge export offers", () => {
  it("writes graphs ONNX Runtime loads, each giving the opset-17 vectors (from 18 on, reductions take their axes as an input)", async () => {
    const { SUPPORTED_OPSETS } = await import("../src/onnx/export.js");
    const dir = join(root, "opsets-tiny");
    await writeFixture({ dir, seed: 23 });
    const texts = corpus.slice(0, 12);
    let base: Float64Array[] | undefined;
    for (const opset of SUPPORTED_OPSETS) {
      const out = join(root, `opset-${opset}`);
      await exportOnnx({ modelDir: dir, outDir: out, precisions: ["fp32"], opset, builtBy });
      const { embedder } = await loadEmbedder(out, { precision: "fp32" });
      const got = (await embedder.embed(texts, "passage")).embeddings;
      await embedder.deactivate();
      if (!base) base = got;
      else expect(compareEmbeddings(base, got).summary.min_cosine, `opset ${opset}`).toBeGreaterThanOrEqual(0.9999999);
    }
    expect(SUPPORTED_OPSETS).toContain(18);
  });
});

describe("ONNX files and folders", () => {
  let tiny: string;
  beforeAll(async () => {
    tiny = join(root, "files-tiny");
    await writeFixture({ dir: tiny, seed: 23 });
  });

  it("writes a manifest listing every file with its role, sha256 and provenance; embed refuses a modified file", async () => {
    const out = join(root, "files-onnx");
    const r = await runBge(["export", tiny, "-o", out, "--precision", "fp32"]);
    expect(r.code).toBe(0);
    const m = await readManifest(out);
    expect(m.format).toBe("bge-artifact/1");
    expect(m).toMatchObject({ pooling: "cls", normalize: true, max_length: 512, query_instruction: "为这个句子生成表示以用于检索相关文章：" });
    expect(m.source.model_id).toBe("bge-fixture/bge-tiny-zh");
    // Hashed from the bytes the export read (one pass, file order): still the file's own sha256.
    expect(m.source.weights_sha256).toBe(createHash("sha256").update(await readFile(join(tiny, "model.safetensors"))).digest("hex"));
    const onnx = m.files.find((f) => f.role === "onnx-fp32")!;
    expect(onnx.sha256).toBe(createHash("sha256").update(await readFile(join(out, "model.fp32.onnx"))).digest("hex"));
    expect(onnx.path).toBe("model.fp32.onnx");
    expect(onnx.built_by).toMatchObject({ tool: "bge", args: ["export", tiny, "-o", out, "--precision", "fp32"] });
    expect(m.files.filter((f) => f.role === "tokenizer").map((f) => f.path).sort()).toEqual(["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]);
    expect(m.files.some((f) => f.role === "onnx-fp16")).toBe(false);

    const bytes = await readFile(join(out, "model.fp32.onnx"));
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 1;
    await writeFile(join(out, "model.fp32.onnx"), bytes);
    const bad = await runBge(["embed", out, "hello"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/model\.fp32\.onnx has sha256 [0-9a-f]{64}, the manifest says [0-9a-f]{64}: the artifact was modified/);
  });

  it("names nodes by their place in the model and keeps FP32 islands in the FP16 graph", async () => {
    const spec = await readModelSpec(tiny);
    const src = await openWeights(tiny);
    const g = buildEncoderGraph(spec.config, src, { precision: "fp16", pooling: "cls", normalize: true });
    await src.close();
    const names = g.nodes.map((n) => n.name);
    expect(names).toContain("/encoder/layer.1/attention/self/Softmax");
    expect(names).toContain("/encoder/layer.0/intermediate/intermediate_act_fn/Erf");
    const producer = new Map(g.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
    for (const n of g.nodes.filter((n) => n.opType === "LayerNormalization" || n.opType === "Softmax")) {
      // The input of every LayerNorm/Softmax is a Cast to float32 (or the float32 embedding sum / residual).
      const from = producer.get(n.inputs[0]!);
      expect(from?.opType === "Cast" ? from.attributes.to : { kind: "int", value: OnnxType.FLOAT }).toEqual({ kind: "int", value: OnnxType.FLOAT });
    }
    expect(g.nodes.filter((n) => n.opType === "CumSum")).toEqual([]);
    const init = new Map(g.initializers.map((i) => [i.name, i]));
    expect(init.get("encoder.layer.0.attention.self.query.weight")!.dataType).toBe(OnnxType.FLOAT16);
    expect(init.get("encoder.layer.0.output.LayerNorm.weight")!.dataType).toBe(OnnxType.FLOAT);
    expect(g.inputs.map((i) => [i.name, i.dataType])).toEqual([["input_ids", 7], ["attention_mask", 7], ["token_type_ids", 7]]);
    expect(g.outputs.map((o) => [o.name, o.dataType])).toEqual([["last_hidden_state", 1], ["sentence_embedding", 1]]);
  });

  it("writes external data at 4096-aligned offsets that ONNX Runtime loads", async () => {
    const out = join(root, "external");
    await exportOnnx({ modelDir: tiny, outDir: out, precisions: ["fp32"], externalData: true, builtBy });
    const m = await readManifest(out);
    const onnx = m.files.find((f) => f.role === "onnx-fp32")!;
    expect(onnx.external_data).toBe("model.fp32.onnx.data");
    expect(m.files.find((f) => f.path === "model.fp32.onnx.data")?.role).toBe("onnx-data");
    expect(onnx.size).toBeLessThan(50_000);
    const text = (await readFile(join(out, "model.fp32.onnx"))).toString("latin1");
    const offsets = [...text.matchAll(/offset\x12([\x01-\x7f])(\d+)/g)].map((x) => Number(x[2]));
    expect(offsets.length).toBeGreaterThan(10);
    expect(offsets.every((o) => o % 4096 === 0)).toBe(true);
    const { embedder } = await loadEmbedder(out);
    const got = await embedder.embed(["北京", "hello"], "passage");
    const ref = await (await ReferenceEmbedder.load(await readModelSpec(tiny))).embed(["北京", "hello"], "passage");
    expect(compareEmbeddings(ref.embeddings, got.embeddings).summary.min_cosine).toBeGreaterThan(0.99999);
  });

  it("takes an existing ONNX with only last_hidden_state (optimum's layout) and pools outside the graph", async () => {
    const dir = join(root, "optimum-like");
    await writeFixture({ dir, seed: 23 });
    const out = join(root, "hidden-only");
    await exportOnnx({ modelDir: dir, outDir: out, precisions: ["fp32"], pooling: "none", builtBy });
    await mkdir(join(dir, "onnx"));
    await copyFile(join(out, "model.fp32.onnx"), join(dir, "onnx", "model.onnx"));
    const texts = ["北京是首都", "hello world"];
    const viaOnnx = await runBge(["embed", dir, ...texts, "--backend", "onnx", "--json"]);
    expect(viaOnnx.code).toBe(0);
    const ref = await runBge(["embed", dir, ...texts, "--json"]);
    const a = JSON.parse(viaOnnx.stdout).embeddings as number[][];
    const b = JSON.parse(ref.stdout).embeddings as number[][];
    expect(compareEmbeddings(b, a).summary.min_cosine).toBeGreaterThan(0.99999);
    // Mean pooling asked of the same hidden-state graph is computed outside it, too.
    const mean = JSON.parse((await runBge(["embed", join(dir, "onnx", "model.onnx"), ...texts, "--pooling", "mean", "--json"])).stdout).embeddings as number[][];
    const meanRef = JSON.parse((await runBge(["embed", dir, ...texts, "--pooling", "mean", "--json"])).stdout).embeddings as number[][];
    expect(compareEmbeddings(meanRef, mean).summary.min_cosine).toBeGreaterThan(0.99999);
    expect(compareEmbeddings(b, mean).summary.min_cosine).toBeLessThan(0.999);
  });
});

describe("export refuses bad input cleanly", () => {
  it("an unsupported architecture: exit 2, nothing created", async () => {
    const dir = join(root, "bad-arch");
    await writeFixture({ dir });
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, architectures: ["DistilBertModel"], model_type: "distilbert" }));
    const out = join(root, "bad-arch-onnx");
    const r = await runBge(["export", dir, "-o", out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unsupported architecture DistilBertModel; supported: BertModel, XLMRobertaModel/);
    expect(existsSync(out)).toBe(false);
  });

  it("tensor shapes contradicting config.json: exit 2, nothing created", async () => {
    const dir = join(root, "bad-shape");
    await writeFixture({ dir });
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, num_hidden_layers: 3 }));
    const out = join(root, "bad-shape-onnx");
    const r = await runBge(["export", dir, "-o", out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/tensor encoder\.layer\.2\.attention\.self\.query\.weight is missing/);
    expect(existsSync(out)).toBe(false);
  });

  it("a write error mid-export leaves no file under a final name, and no temporary file", async () => {
    const out = join(root, "write-error");
    await mkdir(out);
    const g = new GraphBuilder("g");
    const x = g.input("x", OnnxType.FLOAT, [2]);
    let calls = 0;
    for (let i = 0; i < 4; i++) {
      g.initializer(`w${i}`, OnnxType.FLOAT, [512], () => {
        if (++calls === 3) throw Object.assign(new Error("ENOSPC: no space left on device (injected)"), { code: "ENOSPC" });
        return new Uint8Array(2048);
      });
    }
    g.output(g.op("Identity", "/id", [x]), OnnxType.FLOAT, [2]);
    for (const externalData of [false, true]) {
      calls = 0;
      await expect(writeOnnxModel(join(out, "model.onnx"), g, { opset: 17, producerName: "t", producerVersion: "0", externalData })).rejects.toThrow(/injected/);
      expect(await readdir(out)).toEqual([]);
    }
  });

  it("streams every checkpoint layout: sharded, BF16/F16 and pytorch_model.bin export to the reference's vectors, each recording its weights' hash", async () => {
    const texts = corpus.slice(0, 24);
    const cases: { name: string; prep: (dir: string) => Promise<void> }[] = [
      { name: "sharded", prep: async (dir) => void (await writeFixture({ dir, seed: 5, shards: 3 })) },
      { name: "bf16", prep: async (dir) => void (await writeFixture({ dir, seed: 5, dtype: "BF16" })) },
      { name: "f16", prep: async (dir) => void (await writeFixture({ dir, seed: 5, dtype: "F16" })) },
      {
        name: "bin",
        prep: async (dir) => {
          await writeFixture({ dir, seed: 5 });
          const { convertFixtureToBin } = await import("./helpers/convert-to-bin.js");
          await convertFixtureToBin(dir);
        },
      },
    ];
    for (const c of cases) {
      const dir = join(root, `layout-${c.name}`);
      await c.prep(dir);
      const out = join(root, `layout-${c.name}-onnx`);
      const { manifest } = await exportOnnx({ modelDir: dir, outDir: out, precisions: ["fp32", "fp16"], builtBy });
      expect(manifest.source.weights_sha256, c.name).toBe(await hashWeights(dir));
      const ref = await (await ReferenceEmbedder.load(await readModelSpec(dir))).embed(texts, "passage");
      for (const precision of ["fp32", "fp16"]) {
        const { embedder } = await loadEmbedder(out, { precision });
        const got = await embedder.embed(texts, "passage");
        await embedder.deactivate();
        expect(compareEmbeddings(ref.embeddings, got.embeddings).summary.min_cosine, `${c.name} ${precision}`).toBeGreaterThan(precision === "fp32" ? 0.99999 : 0.999);
      }
    }
  });

  it("corrupt weights found mid-export (a flipped byte in a late tensor of pytorch_model.bin): exit 2, no model, no manifest", async () => {
    const dir = join(root, "crc-export");
    await writeFixture({ dir });
    const { convertFixtureToBin, flipLateByte } = await import("./helpers/convert-to-bin.js");
    await convertFixtureToBin(dir);
    await flipLateByte(join(dir, "pytorch_model.bin"));
    const out = join(root, "crc-export-onnx");
    const r = await runBge(["export", dir, "-o", out]);
    expect(r.code).toBe(2);
    const errors = r.stderr.trim().split("\n").filter((l) => l.startsWith("bge:"));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/CRC/i);
    // The folder was this run's: it is removed again, with everything in it.
    expect(existsSync(out)).toBe(false);
  });
});
