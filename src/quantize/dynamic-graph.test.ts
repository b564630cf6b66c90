import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../test/helpers/paths.js";
import { tempDir } from "../../test/helpers/tmp.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { writeFixture } from "../fixture/write-fixture.js";
import { exportOnnx } from "../onnx/export.js";
import { OnnxType } from "../onnx/proto.js";
import { OnnxEmbedder } from "../runners/onnx-embedder.js";
import { calibrate } from "./calibrate.js";
import { commonPath, writeDynamicInt8Model } from "./dynamic-graph.js";
import { pruneUnused, readOnnxModel, type OnnxModelFile } from "./onnx-model-io.js";
import { GraphBuilder } from "../onnx/graph-builder.js";
import { findQuantTargets } from "./targets.js";

const builtBy = { tool: "bge", version: "test", args: ["export"] };

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

async function vectors(dir: string, model: string, list: readonly string[]): Promise<Float64Array[]> {
  const spec = await readModelSpec(dir);
  const e = await OnnxEmbedder.load(model, spec, dir, { graphPooling: { pooling: spec.pooling, normalize: spec.normalize } });
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

const layerOf = (name: string) => /\/encoder\/layer\.(\d+)\//.exec(name)?.[1] ?? "outside";

function countPerLayer(file: OnnxModelFile, op: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const n of file.graph.node.filter((n) => n.opType === op)) counts[layerOf(n.name!)] = (counts[layerOf(n.name!)] ?? 0) + 1;
  return counts;
}

function signature(file: OnnxModelFile): unknown {
  const io = (vs: typeof file.graph.input) => vs.map((v) => ({ name: v.name, type: v.type?.tensorType?.elemType, dims: v.type?.tensorType?.shape?.dim?.map((d) => d.dimParam || d.dimValue) }));
  return { inputs: io(file.graph.input), outputs: io(file.graph.output) };
}

/**
 * The int8 weights of every linear layer, read back from the written graph: [in, out], within
 * [-qmax, qmax], scales max|row|/qmax, and each element within scale/2 of the fp32 weight.
 */
async function checkWeights(fp32: OnnxModelFile, q: OnnxModelFile, qmax: number): Promise<number> {
  const inits = new Map(q.graph.initializer.map((t) => [t.name!, t]));
  let largest = 0;
  for (const t of findQuantTargets(fp32.graph).filter((t) => t.kind === "linear")) {
    const src = fp32.graph.initializer.find((i) => i.name === t.weight)!;
    const [rows, cols] = src.dims as [number, number];
    const w = await fp32.floats(src);
    const qi = inits.get(`${t.weight}_quantized`)!;
    expect(qi).toMatchObject({ dataType: OnnxType.INT8, dims: [cols, rows] });
    const bytes = await q.tensorBytes(qi);
    const values = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const scales = await q.floats(inits.get(`${t.weight}_scale`)!);
    let worst = 0;
    const wrongScales: number[] = [];
    for (let r = 0; r < rows; r++) {
      let m = 0;
      for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(w[r * cols + c]!));
      if (scales[r] !== Math.fround(m / qmax)) wrongScales.push(r);
      for (let c = 0; c < cols; c++) {
        const v = values[c * rows + r]!; // transposed: [in, out]
        largest = Math.max(largest, Math.abs(v));
        worst = Math.max(worst, Math.abs(v * scales[r]! - w[r * cols + c]!) / scales[r]!);
      }
    }
    expect(wrongScales, `${t.weight}: channels whose scale is not max|row|/${qmax}`).toEqual([]);
    expect(worst, t.weight).toBeLessThanOrEqual(0.5 + 1e-5);
    expect(inits.has(t.weight!)).toBe(false);
  }
  return largest;
}

describe("writeDynamicInt8Model: int8 weights, dynamically quantised activations, for ONNX Runtime CPU", () => {
  let root: string;
  let list: string[];
  beforeAll(async () => {
    root = await tempDir("bge-dyn-");
    list = await texts();
  });

  it("per token on an opset-18 export: the reductions take their axes as an input there", async () => {
    const root18 = await tempDir("bge-dyn18-");
    const modelDir = join(root18, "model");
    await writeFixture({ dir: modelDir, seed: 1 });
    for (const opset of [17, 18]) {
      const outDir = join(root18, `opset${opset}`);
      await exportOnnx({ modelDir, outDir, precisions: ["fp32"], opset, builtBy });
      const out = join(outDir, "model.int8.onnx");
      await writeDynamicInt8Model(join(outDir, "model.fp32.onnx"), out);
      const q = await readOnnxModel(out);
      for (const op of ["ReduceMax", "ReduceMin"]) {
        const n = q.graph.node.find((x) => x.opType === op)!;
        const axes = n.attribute?.find((a) => a.name === "axes");
        if (opset >= 18) {
          expect(axes, `${op} opset ${opset}`).toBeUndefined();
          const t = q.graph.initializer.find((i) => i.name === n.input![1])!;
          expect([t.dataType, Array.from(new BigInt64Array(Uint8Array.from(await q.tensorBytes(t)).buffer))]).toEqual([OnnxType.INT64, [-1n]]);
        } else {
          expect(n.input, `${op} opset ${opset}`).toHaveLength(1);
          expect(axes?.ints?.map(Number)).toEqual([-1]);
        }
      }
    }
  });

  for (const shape of ["tiny", "bge-small-zh-v1.5"]) {
    it(`${shape}: every linear layer as per-token quantisation + MatMulIntegerToFloat, attention MatMuls in float, vectors within cosine 0.99 of fp32; static calibrated scales fuse the bias too and take the attention MatMuls to int8`, async () => {
      const dir = await artifact(root, shape, { shape });
      const fp32Path = join(dir, "model.fp32.onnx");
      const fp32 = await readOnnxModel(fp32Path);
      const layers = new Set(findQuantTargets(fp32.graph).map((t) => String(t.layer)));
      const perLayer = (n: number) => Object.fromEntries([...layers].map((l) => [l, n]));
      const out = join(dir, "model.int8.onnx");
      const result = await writeDynamicInt8Model(fp32Path, out);
      const q = await readOnnxModel(out);

      expect(result.quantized).toHaveLength(6 * layers.size);
      // ONNX Runtime's fused u8×s8 kernel (weight scales inside; row scales and bias after it), in its
      // contrib domain, which the model imports.
      expect(countPerLayer(q, "MatMulIntegerToFloat")).toEqual(perLayer(6));
      expect(countPerLayer(q, "MatMulInteger")).toEqual({});
      expect(new Set(q.graph.node.filter((n) => n.opType === "MatMulIntegerToFloat").map((n) => n.domain))).toEqual(new Set(["com.microsoft"]));
      expect(q.model.opsetImport).toEqual(expect.arrayContaining([expect.objectContaining({ domain: "com.microsoft" })]));
      // Q, K and V share one quantised input: 4 per layer, not 6; per token (a scale per row) by default.
      expect(countPerLayer(q, "ReduceMax")).toEqual(perLayer(4));
      expect(countPerLayer(q, "DynamicQuantizeLinear")).toEqual({});
      // One QuantizeLinear per row scale (axis 0), zero point 128; no Abs copy of the input.
      expect(countPerLayer(q, "QuantizeLinear")).toEqual(perLayer(4));
      expect(countPerLayer(q, "Abs")).toEqual({});
      expect(q.graph.node.find((n) => n.opType === "ReduceMax")?.name).toBe("/encoder/layer.0/attention/self/input_quantizer/ReduceMax");
      expect(countPerLayer(q, "Gemm")).toEqual({});
      // The attention MatMuls read the same float tensors as in the fp32 graph.
      const fpMatMuls = fp32.graph.node.filter((n) => n.opType === "MatMul").map((n) => [n.name, n.input]);
      expect(q.graph.node.filter((n) => n.opType === "MatMul").map((n) => [n.name, n.input])).toEqual(fpMatMuls);
      // 7-bit weights by default (reduce_range): no int16 saturation on AVX2 without VNNI.
      expect(await checkWeights(fp32, q, 64)).toBe(64);

      expect(signature(q)).toEqual(signature(fp32));
      expect(q.metadata).toMatchObject({ model_id: fp32.metadata.model_id, pooling: "cls", normalize: "true", precision: "int8" });
      expect(JSON.parse(q.metadata.quantization!)).toMatchObject({ format: "dynamic", targets: 6 * layers.size, excluded: [] });

      const reference = await vectors(dir, fp32Path, list);
      const seven = cosines(await vectors(dir, out, list), reference);
      const full = join(dir, "model.int8.8bit.onnx");
      await writeDynamicInt8Model(fp32Path, full, { reduceRange: false });
      expect(await checkWeights(fp32, await readOnnxModel(full), 127)).toBe(127);
      const eight = cosines(await vectors(dir, full, list), reference);
      console.info(`${shape} dynamic int8 vs fp32 on ${list.length} texts: 7-bit weights min ${seven.min.toFixed(5)} mean ${seven.mean.toFixed(5)}; 8-bit min ${eight.min.toFixed(5)} mean ${eight.mean.toFixed(5)}`);
      expect(seven.min).toBeGreaterThanOrEqual(0.99);
      expect(eight.min).toBeGreaterThanOrEqual(0.99);

      // Per token, a text's vector does not depend on its batch: alone = in the padded batch.
      const alone = await vectors(dir, out, [list[0]!]);
      expect(cosines(alone, [(await vectors(dir, out, list))[0]!]).min).toBeGreaterThan(1 - 1e-9);

      // Per tensor: ORT's fused DynamicQuantizeLinear form, still within 0.99 of fp32.
      const tensor = join(dir, "model.int8.tensor.onnx");
      await writeDynamicInt8Model(fp32Path, tensor, { activations: "per-tensor" });
      const t = await readOnnxModel(tensor);
      expect(countPerLayer(t, "DynamicQuantizeLinear")).toEqual(perLayer(4));
      expect(t.graph.node.find((n) => n.opType === "DynamicQuantizeLinear")?.name).toBe("/encoder/layer.0/attention/self/input_quantizer/DynamicQuantizeLinear");
      expect(cosines(await vectors(dir, tensor, list), reference).min).toBeGreaterThanOrEqual(0.99);
      expect(countPerLayer(t, "MatMulInteger")).toEqual(perLayer(6));

      // Static: the calibrated range of each input, one QuantizeLinear and one fused kernel with the
      // bias per layer; no run-time reductions, and still independent of the batch.
      const cal = await calibrate({ modelPath: fp32Path, artifactDir: dir, texts: list.slice(0, 40), method: "minmax" });
      const amax = new Map([...cal.tensors].map(([name, c]) => [name, c.amax]));
      const fixed = join(dir, "model.int8.static.onnx");
      await writeDynamicInt8Model(fp32Path, fixed, { activations: "static", activationAmax: amax });
      const st = await readOnnxModel(fixed);
      // 6 linear layers and the two attention MatMuls per layer; quantisers: 4 linear inputs, Q, K, V
      // and the probabilities.
      expect(countPerLayer(st, "MatMulIntegerToFloat")).toEqual(perLayer(8));
      expect(countPerLayer(st, "QuantizeLinear")).toEqual(perLayer(8));
      expect(countPerLayer(st, "MatMul")).toEqual({});
      expect(countPerLayer(st, "ReduceMax")).toEqual({});
      expect(countPerLayer(st, "Add")).toEqual(countPerLayer(fp32, "Add"));
      const linearKernels = st.graph.node.filter((n) => n.opType === "MatMulIntegerToFloat" && !n.name!.includes("/attention/self/MatMul"));
      expect(linearKernels.length === 6 * layers.size && linearKernels.every((n) => n.input!.length === 7 && n.input![6]!.endsWith(".bias"))).toBe(true);
      // Q, K and V are split into heads as bytes; 1/√d went into Q's scale (no Mul left in attention).
      const transposes = st.graph.node.filter((n) => n.opType === "Transpose" && /\/(query|key|value)\//.test(n.name!));
      expect(transposes.map((n) => st.graph.node.find((m) => m.output?.[0] === st.graph.node.find((r) => r.output?.[0] === n.input![0])!.input![0])!.opType)).toEqual(transposes.map(() => "QuantizeLinear"));
      expect(st.graph.node.filter((n) => n.opType === "Mul" && n.name!.includes("/attention/self/"))).toEqual([]);
      const meta = JSON.parse(st.metadata.quantization!);
      expect(meta.activations).toMatch(/calibrated/);
      expect(meta.attention).toMatch(new RegExp(`^int8 in layers ${[...layers].join(", ")}:`));
      const staticVectors = await vectors(dir, fixed, list);
      const staticCos = cosines(staticVectors, reference);
      expect(staticCos.min).toBeGreaterThanOrEqual(0.99);
      expect(cosines(await vectors(dir, fixed, [list[0]!]), [staticVectors[0]!]).min).toBeGreaterThan(1 - 1e-9);
      // The same graph with float attention: the int8 attention costs little beside the linear layers' int8.
      const floatAttention = join(dir, "model.int8.static-float-attention.onnx");
      await writeDynamicInt8Model(fp32Path, floatAttention, { activations: "static", activationAmax: amax, int8Attention: false });
      expect(countPerLayer(await readOnnxModel(floatAttention), "MatMul")).toEqual(perLayer(2));
      const floatCos = cosines(await vectors(dir, floatAttention, list), reference);
      console.info(`${shape} static int8 vs fp32: int8 attention min ${staticCos.min.toFixed(5)} mean ${staticCos.mean.toFixed(5)}; float attention min ${floatCos.min.toFixed(5)} mean ${floatCos.mean.toFixed(5)}`);
      expect(1 - staticCos.mean).toBeLessThan(2 * (1 - floatCos.mean) + 1e-4);
      // An excluded attention target keeps its layer's attention float.
      const part = join(dir, "model.int8.static-partial.onnx");
      await writeDynamicInt8Model(fp32Path, part, { activations: "static", activationAmax: amax, exclude: (t) => t.kind === "attention-context" && t.layer === 0 });
      const pt = await readOnnxModel(part);
      expect(countPerLayer(pt, "MatMul")).toEqual({ "0": 2 });
      expect(JSON.parse(pt.metadata.quantization!).attention).toMatch(new RegExp(`^int8 in layers ${[...layers].filter((l) => l !== "0").join(", ")}:`));
      // No calibrated range for a layer's K: that layer's attention stays float rather than guessing one.
      const noKey = new Map([...amax].filter(([name]) => name !== "/encoder/layer.0/attention/self/key/Transpose_output_0"));
      const nk = join(dir, "model.int8.static-no-key-range.onnx");
      await writeDynamicInt8Model(fp32Path, nk, { activations: "static", activationAmax: noKey });
      expect(countPerLayer(await readOnnxModel(nk), "MatMul")).toEqual({ "0": 2 });
      // Without reduce_range, K and V use the full int8 range: their scales are amax/127 instead of amax/64.
      const eightBit = join(dir, "model.int8.static-8bit.onnx");
      await writeDynamicInt8Model(fp32Path, eightBit, { activations: "static", activationAmax: amax, reduceRange: false });
      const keyScale = async (path: string) => {
        const f = await readOnnxModel(path);
        return (await f.floats(f.graph.initializer.find((t) => t.name === "/encoder/layer.0/attention/self/key/input_scale")!))[0]!;
      };
      const keyAmax = amax.get("/encoder/layer.0/attention/self/key/Transpose_output_0")!;
      expect(await keyScale(fixed)).toBeCloseTo(keyAmax / 64, 6);
      expect(await keyScale(eightBit)).toBeCloseTo(keyAmax / 127, 6);
      await expect(writeDynamicInt8Model(fp32Path, join(dir, "x.onnx"), { activations: "static", activationAmax: new Map() })).rejects.toThrow(/no calibrated range for /);
    }, 240_000);
  }

  it("leaves excluded layers as float Gemms, and reads and writes external data", async () => {
    const dir = await artifact(root, "tiny-ext", { shape: "tiny" }, true);
    const fp32Path = join(dir, "model.fp32.onnx");
    expect((await readOnnxModel(fp32Path)).externalData).toBe(true);
    const out = join(dir, "model.int8.onnx");
    const result = await writeDynamicInt8Model(fp32Path, out, { exclude: (t) => t.layer === 0 && /intermediate|output\/dense/.test(t.node) });
    expect(result.model.externalDataPath).toBe(`${out}.data`);
    expect(result.excluded.map((t) => t.node)).toEqual(["/encoder/layer.0/attention/output/dense/Gemm", "/encoder/layer.0/intermediate/dense/Gemm", "/encoder/layer.0/output/dense/Gemm"]);
    const q = await readOnnxModel(out);
    expect(q.externalData).toBe(true);
    expect(countPerLayer(q, "Gemm")).toEqual({ "0": 3 });
    expect(countPerLayer(q, "MatMulIntegerToFloat")).toEqual({ "0": 3, "1": 6 });
    expect(q.graph.initializer.find((t) => t.name === "encoder.layer.0.intermediate.dense.weight")?.dataType).toBe(OnnxType.FLOAT);
    expect(cosines(await vectors(dir, out, list), await vectors(dir, fp32Path, list)).min).toBeGreaterThanOrEqual(0.99);
  }, 120_000);

  it("names a shared quantiser by the path its readers share", () => {
    expect(commonPath(["/encoder/layer.0/attention/self/query", "/encoder/layer.0/attention/self/key", "/encoder/layer.0/attention/self/value"])).toBe("/encoder/layer.0/attention/self");
    expect(commonPath(["/encoder/layer.2/intermediate/dense"])).toBe("/encoder/layer.2/intermediate/dense");
  });
});

describe("pruneUnused", () => {
  it("drops dead chains and the initializers only they read, keeping what reaches an output", () => {
    const g = new GraphBuilder("g");
    g.input("x", OnnxType.FLOAT, [2]);
    const one = g.constFloat("one", [1]);
    const two = g.constFloat("two", [2]);
    const live = g.op("Add", "live", ["x", one]);
    const dead = g.op("Mul", "dead", ["x", two]);
    g.op("Neg", "dead2", [dead]);
    g.output(live, OnnxType.FLOAT, [2]);
    pruneUnused(g);
    expect(g.nodes.map((n) => n.name)).toEqual(["live"]);
    expect(g.initializers.map((t) => t.name)).toEqual(["one"]);
  });
});
