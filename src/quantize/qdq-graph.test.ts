import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../test/helpers/paths.js";
import { tempDir } from "../../test/helpers/tmp.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { UsageError } from "../errors.js";
import { writeFixture } from "../fixture/write-fixture.js";
import { exportOnnx } from "../onnx/export.js";
import { ModelProto, OnnxType } from "../onnx/proto.js";
import { OnnxEmbedder } from "../runners/onnx-embedder.js";
import { ort } from "../runners/ort.js";
import { readOnnxModel, type OnnxModelFile } from "./onnx-model-io.js";
import { naiveActivationTensors, writeQdqModel } from "./qdq-graph.js";
import { calibrationTensors, findQuantTargets, type QuantTarget } from "./targets.js";

const builtBy = { tool: "bge", version: "test", args: ["export"] };

/** 50 passages: Chinese, English and mixed. */
async function texts(): Promise<string[]> {
  const peer = JSON.parse(await readFile(join(REPO_ROOT, "test", "data", "peer-texts.json"), "utf8"));
  return [...peer.zh.slice(0, 25), ...peer.en.slice(0, 15), ...peer.mixed.slice(0, 10)];
}

async function artifact(root: string, name: string, fixture: Partial<Parameters<typeof writeFixture>[0]>, externalData = false): Promise<string> {
  const modelDir = join(root, `${name}-model`);
  const outDir = join(root, name);
  await writeFixture({ dir: modelDir, seed: 1, ...fixture });
  await exportOnnx({ modelDir, outDir, precisions: ["fp32"], externalData, builtBy });
  return outDir;
}

async function embedder(dir: string, model: string): Promise<OnnxEmbedder> {
  const spec = await readModelSpec(dir);
  return OnnxEmbedder.load(model, spec, dir, { graphPooling: { pooling: spec.pooling, normalize: spec.normalize } });
}

async function vectors(dir: string, model: string, list: readonly string[]): Promise<Float64Array[]> {
  const e = await embedder(dir, model);
  try {
    return (await e.embed(list, "passage")).embeddings;
  } finally {
    await e.deactivate();
  }
}

function cosines(a: readonly Float64Array[], b: readonly Float64Array[]): { min: number; mean: number } {
  const c = a.map((u, i) => {
    const v = b[i]!;
    let dot = 0;
    let uu = 0;
    let vv = 0;
    for (let k = 0; k < u.length; k++) {
      dot += u[k]! * v[k]!;
      uu += u[k]! ** 2;
      vv += v[k]! ** 2;
    }
    return dot / Math.sqrt(uu * vv);
  });
  return { min: Math.min(...c), mean: c.reduce((s, x) => s + x, 0) / c.length };
}

/**
 * A minimal minmax calibration (the real calibrator is calibrate.ts): each text alone through the
 * fp32 graph with the tensors made outputs, and the largest |value| seen.
 */
async function minmaxAmax(dir: string, tensors: readonly string[], list: readonly string[]): Promise<Map<string, number>> {
  const model = ModelProto.decode(await readFile(join(dir, "model.fp32.onnx"))) as unknown as { graph: { output: unknown[] } };
  model.graph.output.push(...tensors.map((name) => ({ name, type: { tensorType: { elemType: OnnxType.FLOAT } } })));
  // Written beside the original, so that external data resolves as it does for the model itself.
  const probe = join(dir, "calibration-probe.onnx");
  await writeFile(probe, ModelProto.encode(ModelProto.fromObject(model as never)).finish());
  const session = await ort.InferenceSession.create(probe);
  const e = await embedder(dir, join(dir, "model.fp32.onnx"));
  const { inputIds } = await e.embed(list, "passage");
  const amax = new Map(tensors.map((t) => [t, 0]));
  try {
    for (const ids of inputIds) {
      const out = await session.run(e.feeds([ids]), [...tensors]);
      for (const t of tensors) for (const v of out[t]!.data as Float32Array) if (Math.abs(v) > amax.get(t)!) amax.set(t, Math.abs(v));
    }
  } finally {
    await session.release();
    await e.deactivate();
  }
  return amax;
}

const layerOf = (name: string) => /\/encoder\/layer\.(\d+)\//.exec(name)?.[1];

function countPerLayer(file: OnnxModelFile, op: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const n of file.graph.node.filter((n) => n.opType === op)) counts.set(layerOf(n.name!) ?? "outside", (counts.get(layerOf(n.name!) ?? "outside") ?? 0) + 1);
  return counts;
}

/** Inputs and outputs as runners see them: names, element types, dimensions. */
function signature(file: OnnxModelFile): unknown {
  const io = (vs: typeof file.graph.input) => vs.map((v) => ({ name: v.name, type: v.type?.tensorType?.elemType, dims: v.type?.tensorType?.shape?.dim?.map((d) => d.dimParam || d.dimValue) }));
  return { inputs: io(file.graph.input), outputs: io(file.graph.output) };
}

/** FFN down-projections: their input (GELU output) carries the outlier fixture's ~1e5 units. */
const ffnOutput = (t: QuantTarget) => /\/layer\.\d+\/output\/dense\/Gemm$/.test(t.node);

describe("writeQdqModel: explicit Q/DQ (QDQBERT placement) on bge graphs", () => {
  let root: string;
  let list: string[];
  beforeAll(async () => {
    root = await tempDir("bge-qdq-");
    list = await texts();
  });

  for (const shape of ["tiny", "bge-small-zh-v1.5"]) {
    it(`${shape}: Q/DQ exactly where QDQBERT puts them, weights int8 per channel, and vectors within cosine 0.99 of fp32`, async () => {
      const dir = await artifact(root, shape, { shape });
      const fp32Path = join(dir, "model.fp32.onnx");
      const fp32 = await readOnnxModel(fp32Path);
      const targets = findQuantTargets(fp32.graph);
      const amax = await minmaxAmax(dir, calibrationTensors(targets), list);
      const out = join(dir, "model.int8.qdq.onnx");
      const result = await writeQdqModel(fp32Path, out, { activationAmax: amax });
      const q = await readOnnxModel(out);
      const layers = new Set(targets.map((t) => String(t.layer)));

      // Per layer: 6 linear inputs + 2×2 attention MatMul inputs are quantised; 6 weights dequantised.
      expect(Object.fromEntries(countPerLayer(q, "QuantizeLinear"))).toEqual(Object.fromEntries([...layers].map((l) => [l, 10])));
      expect(Object.fromEntries(countPerLayer(q, "DequantizeLinear"))).toEqual(Object.fromEntries([...layers].map((l) => [l, 16])));
      expect(result).toMatchObject({ quantizeNodes: 10 * layers.size, dequantizeNodes: 16 * layers.size, excluded: [] });
      // Named by place, as QDQBERT's quantizers are.
      const names = new Set(q.graph.node.map((n) => n.name));
      for (const n of ["/encoder/layer.0/attention/self/query/input_quantizer/QuantizeLinear", "/encoder/layer.0/attention/self/query/weight_quantizer/DequantizeLinear", "/encoder/layer.0/attention/self/matmul_k_input_quantizer/DequantizeLinear", "/encoder/layer.0/attention/self/matmul_a_input_quantizer/QuantizeLinear"]) {
        expect(names.has(n), n).toBe(true);
      }

      // LayerNorm, Softmax and the residual adds read float tensors, never a DequantizeLinear.
      const producer = new Map(q.graph.node.flatMap((n) => (n.output ?? []).map((o) => [o, n.opType] as const)));
      for (const n of q.graph.node.filter((n) => ["LayerNormalization", "Softmax", "Add", "Erf", "Div"].includes(n.opType!))) {
        for (const i of n.input ?? []) expect(producer.get(i), `${n.name} reads ${i}`).not.toBe("DequantizeLinear");
      }
      // Each quantised tensor is the fp32 graph's own (calibration caches key on these names).
      const quantizedInputs = q.graph.node.filter((n) => n.opType === "QuantizeLinear").map((n) => n.input![0]!);
      expect(new Set(quantizedInputs)).toEqual(new Set(calibrationTensors(targets)));

      // Weights: int8 [out, in], scales max|row|/127, DequantizeLinear on axis 0, within scale/2.
      const inits = new Map(q.graph.initializer.map((t) => [t.name!, t]));
      for (const t of targets.filter((t) => t.weight)) {
        const w = await fp32.floats(fp32.graph.initializer.find((i) => i.name === t.weight)!);
        const [rows, cols] = fp32.graph.initializer.find((i) => i.name === t.weight)!.dims!;
        const qi = inits.get(`${t.weight}_quantized`)!;
        expect(qi).toMatchObject({ dataType: OnnxType.INT8, dims: [rows, cols] });
        expect(inits.has(t.weight!)).toBe(false);
        const bytes = await q.tensorBytes(qi);
        const values = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const scales = await q.floats(inits.get(`${t.weight}_scale`)!);
        expect(Array.from(await q.tensorBytes(inits.get(`${t.weight}_zero_point`)!))).toEqual(new Array(rows).fill(0));
        // Worst element error in units of its channel's scale (one expect: millions of elements).
        let worst = 0;
        const wrongScales: number[] = [];
        for (let r = 0; r < rows!; r++) {
          let m = 0;
          for (let c = 0; c < cols!; c++) m = Math.max(m, Math.abs(w[r * cols! + c]!));
          if (scales[r] !== Math.fround(m / 127)) wrongScales.push(r);
          for (let c = 0; c < cols!; c++) worst = Math.max(worst, Math.abs(values[r * cols! + c]! * scales[r]! - w[r * cols! + c]!) / scales[r]!);
        }
        expect(wrongScales, `${t.weight}: channels whose scale is not max|row|/127`).toEqual([]);
        expect(worst, t.weight).toBeLessThanOrEqual(0.5 + 1e-5);
        const dq = q.graph.node.find((n) => n.opType === "DequantizeLinear" && n.input![0] === qi.name)!;
        expect(dq.attribute?.find((a) => a.name === "axis")?.i).toBe(0);
        // The Gemm reads the dequantised weight and its float bias, unchanged.
        const gemm = q.graph.node.find((n) => n.name === t.node)!;
        expect(gemm.input![1]).toBe(dq.output![0]);
        expect(inits.get(gemm.input![2]!)?.dataType).toBe(OnnxType.FLOAT);
      }

      // Same interface and metadata as the fp32 graph, plus what the quantisation was.
      expect(signature(q)).toEqual(signature(fp32));
      expect(q.metadata).toMatchObject({ model_id: fp32.metadata.model_id, pooling: "cls", normalize: "true", precision: "int8-qdq" });
      expect(JSON.parse(q.metadata.quantization!)).toMatchObject({ format: "qdq", placement: "QDQBERT", targets: targets.length });

      const { min, mean } = cosines(await vectors(dir, out, list), await vectors(dir, fp32Path, list));
      console.info(`${shape} Q/DQ vs fp32 on ${list.length} texts: min cosine ${min.toFixed(5)}, mean ${mean.toFixed(5)}`);
      expect(min).toBeGreaterThanOrEqual(0.99);
    }, 240_000);
  }

  it("leaves excluded targets in float and refuses tensors without a calibrated range", async () => {
    const dir = await artifact(root, "tiny-excl", { shape: "tiny" });
    const fp32Path = join(dir, "model.fp32.onnx");
    const targets = findQuantTargets((await readOnnxModel(fp32Path)).graph);
    const amax = await minmaxAmax(dir, calibrationTensors(targets), list.slice(0, 5));
    const out = join(dir, "excl.onnx");
    const result = await writeQdqModel(fp32Path, out, { activationAmax: amax, exclude: (t) => t.layer === 1 });
    const q = await readOnnxModel(out);
    expect(result.excluded.map((t) => t.layer)).toEqual(new Array(8).fill(1));
    expect(q.graph.node.some((n) => /layer\.1\/.*quantizer/.test(n.name!))).toBe(false);
    expect(q.graph.initializer.find((t) => t.name === "encoder.layer.1.intermediate.dense.weight")?.dataType).toBe(OnnxType.FLOAT);
    expect(JSON.parse(q.metadata.quantization!).excluded).toHaveLength(8);

    const partial = new Map(amax);
    partial.delete(targets[0]!.activations[0]!);
    const err = await writeQdqModel(fp32Path, join(dir, "no.onnx"), { activationAmax: partial }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toContain(targets[0]!.activations[0]!);
  }, 120_000);

  it("reads a model whose weights are in external data and writes its own beside it", async () => {
    const dir = await artifact(root, "tiny-ext", { shape: "tiny" }, true);
    const fp32Path = join(dir, "model.fp32.onnx");
    const fp32 = await readOnnxModel(fp32Path);
    expect(fp32.externalData).toBe(true);
    const amax = await minmaxAmax(dir, calibrationTensors(findQuantTargets(fp32.graph)), list);
    const out = join(dir, "model.int8.qdq.onnx");
    const result = await writeQdqModel(fp32Path, out, { activationAmax: amax });
    expect(result.model.externalDataPath).toBe(`${out}.data`);
    expect(cosines(await vectors(dir, out, list), await vectors(dir, fp32Path, list)).min).toBeGreaterThanOrEqual(0.99);
  }, 120_000);

  it("on the outlier fixture, the naive placement (LayerNorm and Softmax quantised, per-tensor weights) is far worse than QDQBERT's", async () => {
    const dir = await artifact(root, "outliers", { shape: "bge-small-zh-v1.5", outliers: true });
    const fp32Path = join(dir, "model.fp32.onnx");
    const amax = await minmaxAmax(dir, naiveActivationTensors((await readOnnxModel(fp32Path)).graph), list);
    const reference = await vectors(dir, fp32Path, list);
    // Both leave the FFN down-projections in float: their input holds ~1e5 outlier units beside O(1)
    // ones, which no per-tensor int8 scale holds (the gate's diagnosis names them for --exclude).
    const proper = join(dir, "proper.onnx");
    const naive = join(dir, "naive.onnx");
    await writeQdqModel(fp32Path, proper, { activationAmax: amax, exclude: ffnOutput });
    const naiveResult = await writeQdqModel(fp32Path, naive, { activationAmax: amax, exclude: ffnOutput, naive: true });
    const q = await readOnnxModel(naive);
    // Naive: every LayerNorm reads and writes through Q/DQ, every Softmax reads through one.
    expect(q.graph.node.filter((n) => /LayerNormalization\/(input|output)_quantizer\/QuantizeLinear$/.test(n.name!))).toHaveLength(2 * 9);
    expect(q.graph.node.filter((n) => /Softmax\/input_quantizer\/QuantizeLinear$/.test(n.name!))).toHaveLength(4);
    expect(q.graph.initializer.find((t) => t.name === "encoder.layer.0.attention.self.query.weight_scale")?.dims).toEqual([]);
    expect(JSON.parse(q.metadata.quantization!).placement).toMatch(/^naive/);
    expect(naiveResult.quantizeNodes).toBeGreaterThan(0);

    const good = cosines(await vectors(dir, proper, list), reference);
    const bad = cosines(await vectors(dir, naive, list), reference);
    console.info(`outlier fixture, FFN down-projections in float: QDQBERT min ${good.min.toFixed(5)} mean ${good.mean.toFixed(5)}; naive min ${bad.min.toFixed(5)} mean ${bad.mean.toFixed(5)}`);
    expect(good.mean).toBeGreaterThanOrEqual(0.99);
    expect(good.min).toBeGreaterThan(0.9);
    expect(bad.mean).toBeLessThan(0.98);
    expect(bad.min).toBeLessThan(good.min - 0.4);
  }, 240_000);
});
