import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { HAVE_SHARED, REPO_ROOT, SHARED_MISSING_REASON, ZH_TOKENIZER } from "../../test/helpers/paths.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { writeFixture } from "../fixture/write-fixture.js";
import { exportOnnx } from "../onnx/export.js";
import { ModelProto, OnnxType } from "../onnx/proto.js";
import { ort } from "../runners/ort.js";
import { loadFlagTokenizer } from "../tokenize/flag-tokenizer.js";
import { amaxFromStatistics, calibrate, type CalibrationMethod } from "./calibrate.js";
import { calibrationTensors, findQuantTargets } from "./targets.js";

const builtBy = { tool: "bge", version: "test", args: ["export"] };
const METHODS: CalibrationMethod[] = ["minmax", "percentile", "entropy"];

async function passages(n: number): Promise<string[]> {
  const text = await readFile(join(REPO_ROOT, "golden", "texts", "verify-passages.txt"), "utf8");
  return text.split("\n").filter(Boolean).slice(0, n);
}

async function artifact(root: string, name: string, fixture: Partial<Parameters<typeof writeFixture>[0]>, externalData = false): Promise<string> {
  const modelDir = join(root, `${name}-model`);
  const outDir = join(root, name);
  await writeFixture({ dir: modelDir, seed: 1, ...fixture });
  await exportOnnx({ modelDir, outDir, precisions: ["fp32"], externalData, builtBy });
  return outDir;
}

/**
 * The second path to the same numbers: each text alone (batch 1, so no padding at all) through the
 * graph with every calibrated tensor made an output here, and the extremes of the whole tensors.
 */
async function extremesOneByOne(dir: string, texts: readonly string[]): Promise<Map<string, { min: number; max: number; count: number }>> {
  const model = ModelProto.decode(await readFile(join(dir, "model.fp32.onnx"))) as unknown as { graph: { output: unknown[] } & Parameters<typeof findQuantTargets>[0] };
  const names = calibrationTensors(findQuantTargets(model.graph));
  model.graph.output.push(...names.map((name) => ({ name, type: { tensorType: { elemType: OnnxType.FLOAT } } })));
  const session = await ort.InferenceSession.create(ModelProto.encode(ModelProto.fromObject(model as never)).finish());
  const tokenizer = await loadFlagTokenizer(dir);
  const spec = await readModelSpec(dir);
  const out = new Map(names.map((n) => [n, { min: Infinity, max: -Infinity, count: 0 }]));
  try {
    for (const text of texts) {
      const ids = tokenizer.encode(text, spec.maxLength);
      const shape = [1, ids.length];
      const result = await session.run(
        {
          input_ids: new ort.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), shape),
          attention_mask: new ort.Tensor("int64", new BigInt64Array(ids.length).fill(1n), shape),
          token_type_ids: new ort.Tensor("int64", new BigInt64Array(ids.length), shape),
        },
        names,
      );
      for (const n of names) {
        const data = result[n]!.data as Float32Array;
        const e = out.get(n)!;
        for (const v of data) {
          e.min = Math.min(e.min, v);
          e.max = Math.max(e.max, v);
        }
        e.count += data.length;
      }
    }
  } finally {
    await session.release();
  }
  return out;
}

const close = (a: number, b: number, rel: number) => expect(Math.abs(a - b), `${a} vs ${b}`).toBeLessThanOrEqual(rel * Math.max(Math.abs(a), Math.abs(b)));

describe("calibrate on the tiny fixture", () => {
  let dir: string;
  let texts: string[];
  beforeAll(async () => {
    dir = await artifact(await tempDir("bge-calib-"), "tiny", { shape: "tiny" });
    // Lengths from 3 tokens to several hundred, so batches pad a lot.
    texts = [...(await passages(30)), "好", (await passages(40)).join("").slice(0, 400)];
  });

  it("gives every target tensor a finite positive amax, and min-max equals max |x| of each text run alone", async () => {
    const progress: [number, number][] = [];
    const r = await calibrate({ modelPath: join(dir, "model.fp32.onnx"), artifactDir: dir, texts, method: "minmax", batchSize: 8, onProgress: (d, t) => progress.push([d, t]) });
    const reference = await extremesOneByOne(dir, texts);
    expect([...r.tensors.keys()]).toEqual([...reference.keys()]);
    expect(r.tensors.size).toBe(16); // 2 layers × (QKV in, Q, Kᵀ, P, V, attention-out in, FFN in, FFN-out in)
    expect(progress.at(-1)).toEqual([texts.length, texts.length]);
    expect(r.summary.texts).toBe(texts.length);
    expect(r.summary.runs).toBe(Math.ceil(texts.length / 8));
    for (const [name, t] of r.tensors) {
      const ref = reference.get(name)!;
      // Padding excluded: exactly the values of the texts run alone are counted.
      expect(t.count, name).toBe(ref.count);
      // Batched and alone differ in the last float32 digits (FlagEmbedding #1113), not more.
      close(t.min, ref.min, 1e-5);
      close(t.max, ref.max, 1e-5);
      expect(t.method).toBe("minmax");
      // Attention probabilities take their bound [0, 1], not the corpus maximum (which is below it).
      if (name.endsWith("/Softmax_output_0")) {
        expect(t.amax).toBe(1);
        expect(ref.max).toBeLessThan(1);
        expect(ref.min).toBeGreaterThanOrEqual(0);
        continue;
      }
      close(t.amax, Math.max(-ref.min, ref.max), 1e-5);
      for (const m of METHODS) {
        const a = amaxFromStatistics(r.statistics.get(name)!, m);
        expect(Number.isFinite(a) && a > 0, `${name} ${m} amax ${a}`).toBe(true);
        expect(a).toBeLessThanOrEqual(t.amax * (1 + 1e-9));
      }
    }
  });

  it("runs one text at a time to exactly the extremes of the one-by-one path", async () => {
    const some = texts.slice(0, 6);
    const r = await calibrate({ modelPath: join(dir, "model.fp32.onnx"), artifactDir: dir, texts: some, method: "minmax", batchSize: 1 });
    const reference = await extremesOneByOne(dir, some);
    for (const [name, t] of r.tensors) expect([t.min, t.max, t.count]).toEqual([reference.get(name)!.min, reference.get(name)!.max, reference.get(name)!.count]);
  });

  it("excludes padding: a long and a short text batched together calibrate like the two run one at a time", async () => {
    const pair = [texts.at(-1)!, "好"];
    const run = (batchSize: number) => calibrate({ modelPath: join(dir, "model.fp32.onnx"), artifactDir: dir, texts: pair, method: "entropy", batchSize });
    const [together, apart] = [await run(2), await run(1)];
    expect(together.summary.runs).toBe(1);
    expect(apart.summary.runs).toBe(2);
    expect(together.summary.tokens).toBe(apart.summary.tokens);
    for (const [name, a] of apart.statistics) {
      const b = together.statistics.get(name)!;
      expect(b.histogram.total, name).toBe(a.histogram.total);
      close(b.min, a.min, 1e-5);
      close(b.max, a.max, 1e-5);
      // Histograms depend on the values only, not on batching (histogram.ts): what differs is at most
      // a value flipping bins on a last-digit difference — up to one bin of the 2048 for entropy.
      close(amaxFromStatistics(b, "percentile"), amaxFromStatistics(a, "percentile"), 1e-4);
      close(amaxFromStatistics(b, "entropy"), amaxFromStatistics(a, "entropy"), 1 / 128);
    }
  });

  it("fetches the tensors in groups when one text's tensors exceed the memory budget, with the same result", async () => {
    const some = texts.slice(0, 5);
    const whole = await calibrate({ modelPath: join(dir, "model.fp32.onnx"), artifactDir: dir, texts: some, method: "percentile", batchSize: 1 });
    const grouped = await calibrate({ modelPath: join(dir, "model.fp32.onnx"), artifactDir: dir, texts: some, method: "percentile", batchSize: 4, memoryBudget: 1 });
    expect(grouped.summary.runs).toBe(some.length * 16);
    for (const [name, t] of whole.tensors) expect(grouped.tensors.get(name)).toEqual(t);
  });

  it("calibrates a model whose weights are in external data", async () => {
    const ext = await artifact(await tempDir("bge-calib-ext-"), "tiny-ext", { shape: "tiny" }, true);
    const a = await calibrate({ modelPath: join(ext, "model.fp32.onnx"), artifactDir: ext, texts: texts.slice(0, 4), method: "minmax" });
    const b = await calibrate({ modelPath: join(dir, "model.fp32.onnx"), artifactDir: dir, texts: texts.slice(0, 4), method: "minmax" });
    expect([...a.tensors]).toEqual([...b.tensors]);
  });

  it("refuses an empty corpus, an unknown method and a percentile out of range", async () => {
    const base = { modelPath: join(dir, "model.fp32.onnx"), artifactDir: dir, texts };
    await expect(calibrate({ ...base, texts: [], method: "minmax" })).rejects.toThrow(/corpus is empty/);
    await expect(calibrate({ ...base, method: "mse" as never })).rejects.toThrow(/minmax, percentile, entropy/);
    await expect(calibrate({ ...base, method: "percentile", percentile: 0 })).rejects.toThrow(/percentile 0/);
  });
});

/**
 * bge-small-zh-v1.5's shape with planted outliers (write-fixture.ts): 3 hidden dims carry ~8×
 * activations after attention's LayerNorm, and 4 of the 2048 FFN units reach ~1e5 after GELU. The
 * FFN-output Gemm's input is the tensor that breaks INT8.
 */
describe.skipIf(!HAVE_SHARED)("calibrate on the outlier fixture (bge-small-zh-v1.5 shape)", () => {
  it("percentile clips the FFN outliers that min-max keeps; no method saves the FFN-output input; LayerNorm's outlier dims set its range", async () => {
    const dir = await artifact(await tempDir("bge-calib-out-"), "outliers", { shape: "bge-small-zh-v1.5", tokenizerDir: ZH_TOKENIZER, outliers: true });
    const r = await calibrate({ modelPath: join(dir, "model.fp32.onnx"), artifactDir: dir, texts: await passages(40), method: "minmax" });
    for (let layer = 0; layer < 4; layer++) {
      const ffnOut = r.statistics.get(`/encoder/layer.${layer}/intermediate/intermediate_act_fn/Mul_1_output_0`)!;
      const lnOut = r.statistics.get(`/encoder/layer.${layer}/attention/output/LayerNorm/LayerNormalization_output_0`)!;
      const [minmax, percentile, entropy] = METHODS.map((m) => amaxFromStatistics(ffnOut, m));
      expect(minmax, `layer ${layer}`).toBeGreaterThan(1e5);
      expect(minmax / percentile!, `layer ${layer}`).toBeGreaterThan(1.2);
      // Percentile cuts into the outlier units' tail, entropy (whose bulk sits in bin 0) keeps most of
      // it; whatever the method, one int8 step (amax/127) is larger than 99.9% of |x|: per-tensor
      // int8 zeroes the bulk, which only smoothing (or float) saves.
      const bulk = ffnOut.histogram.percentile(99.9);
      for (const a of [minmax!, percentile!, entropy!]) expect(a / 127).toBeGreaterThan(bulk);
      // Gain 8 on the outlier dims: their |8·z| sets the range, above the bulk of LayerNorm's outputs (|z| ≲ 3).
      expect(amaxFromStatistics(lnOut, "minmax"), `layer ${layer}`).toBeGreaterThan(6);
      expect(amaxFromStatistics(lnOut, "minmax"), `layer ${layer}`).toBeLessThan(50);
    }
  }, 120_000);
});
if (!HAVE_SHARED) console.warn(SHARED_MISSING_REASON);
