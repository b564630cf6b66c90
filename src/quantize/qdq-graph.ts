import { UsageError } from "../errors.js";
import { int, type GraphBuilder } from "../onnx/graph-builder.js";
import { OnnxType } from "../onnx/proto.js";
import type { WrittenModel } from "../onnx/write-model.js";
import { addOutputs, copyInitializer, copyNode, graphWithInputs, readOnnxModel, writeRewrittenModel, type GraphLike, type NodeLike, type OnnxModelFile, type TensorLike } from "./onnx-model-io.js";
import { findQuantTargets, type QuantTarget } from "./targets.js";
import { bytesOf, INT8_MAX, quantizePerChannel, quantizePerTensor, symmetricScale, type PerChannelInt8 } from "./weights-int8.js";

/**
 * `model.int8.qdq.onnx`: the fp32 graph with explicit quantisation, the form TensorRT builds INT8
 * engines from (and the only one TensorRT 11 keeps). NVIDIA's QDQBERT placement: every linear
 * layer's input and both inputs of the attention MatMuls get QuantizeLinear→DequantizeLinear
 * (symmetric int8, per tensor, scale = amax/127 from calibration, zero point 0); every linear
 * weight is stored as int8 per output channel and dequantised (axis 0: our Gemms take [out, in] with
 * transB=1). Biases, LayerNorm, Softmax, GELU, residual adds, pooling and normalisation stay float,
 * which is where INT8 BERTs lose accuracy otherwise. ONNX Runtime runs the same graph on CPU, which
 * is how its parity is checked without a GPU.
 */

export interface QdqOptions {
  /** Calibrated |max| per activation tensor (the fp32 graph's tensor names). */
  activationAmax: ReadonlyMap<string, number>;
  /** Targets to leave in float (e.g. a layer the gate's diagnosis named). */
  exclude?: (t: QuantTarget) => boolean;
  /**
   * Test-only: the careless INT8 the gate must refuse — per-tensor scales on everything, weights
   * included, and Q/DQ on LayerNorm inputs and outputs and on Softmax inputs (their tensors need
   * amax too: see naiveActivationTensors).
   */
  naive?: boolean;
}

export interface QdqResult {
  model: WrittenModel;
  /** Targets quantised, and those left in float by `exclude`. */
  quantized: QuantTarget[];
  excluded: QuantTarget[];
  quantizeNodes: number;
  dequantizeNodes: number;
}

/** The module path of a target, as QDQBERT names its quantizers: the Gemm's node name less `/Gemm`. */
export function targetPlace(node: string): string {
  return node.replace(/\/(Gemm|MatMul(_1)?)$/, "");
}

/**
 * Where each activation quantizer of a target sits, in QDQBERT's names: `<linear>/input_quantizer`;
 * the attention scores' `matmul_q_input_quantizer` / `matmul_k_input_quantizer`, the context's
 * `matmul_a_input_quantizer` (probabilities) / `matmul_v_input_quantizer`.
 */
export function activationQuantizerNames(t: QuantTarget): string[] {
  const place = targetPlace(t.node);
  if (t.kind === "linear") return [`${place}/input_quantizer`];
  const [a, b] = t.kind === "attention-scores" ? ["q", "k"] : ["a", "v"];
  return [`${place}/matmul_${a}_input_quantizer`, `${place}/matmul_${b}_input_quantizer`];
}

/**
 * Every tensor the naive placement quantises per tensor: the targets' activations plus the inputs
 * and outputs of LayerNormalization and the inputs of Softmax. Calibrate these to build a naive graph.
 */
export function naiveActivationTensors(graph: GraphLike): string[] {
  const extra = (graph.node ?? []).flatMap((n) =>
    n.opType === "LayerNormalization" ? [n.input![0]!, n.output![0]!] : n.opType === "Softmax" ? [n.input![0]!] : [],
  );
  return [...new Set([...findQuantTargets(graph).flatMap((t) => t.activations), ...extra])];
}

export async function writeQdqModel(fp32Path: string, outPath: string, options: QdqOptions): Promise<QdqResult> {
  const file = await readOnnxModel(fp32Path);
  const naive = options.naive ?? false;
  const targets = findQuantTargets(file.graph);
  if (!targets.length) throw new UsageError(`${fp32Path}: no linear layers or attention MatMuls to quantise (not a bge encoder graph?)`);
  const quantized = targets.filter((t) => !options.exclude?.(t));
  const excluded = targets.filter((t) => options.exclude?.(t));
  const byNode = new Map(quantized.map((t) => [t.node, t]));
  const nodes = new Map(file.graph.node.map((n) => [n.name ?? "", n]));
  const initializers = new Map(file.graph.initializer.map((t) => [t.name ?? "", t]));

  const lnAndSoftmax = naive ? file.graph.node.filter((n) => n.opType === "LayerNormalization" || n.opType === "Softmax") : [];
  const needed = [...new Set([...quantized.flatMap((t) => t.activations), ...lnAndSoftmax.flatMap((n) => (n.opType === "Softmax" ? [n.input![0]!] : [n.input![0]!, n.output![0]!]))])];
  const missing = needed.filter((x) => options.activationAmax.get(x) === undefined);
  if (missing.length) {
    throw new UsageError(`no calibrated range for ${missing.length} tensor(s) to quantise: ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", …" : ""}`);
  }
  const weights = new Map<string, { target: QuantTarget; tensor: TensorLike }>();
  for (const t of quantized) {
    if (!t.weight) continue;
    const tensor = initializers.get(t.weight)!;
    checkLinear(fp32Path, nodes.get(t.node)!, tensor);
    weights.set(t.weight, { target: t, tensor });
  }

  const g = graphWithInputs(file);
  let quantizeNodes = 0;
  let dequantizeNodes = 0;
  const qdq = (x: string, amaxOf: string, prefix: string): string => {
    const scale = g.constFloat(`${prefix}/scale`, [symmetricScale(options.activationAmax.get(amaxOf)!)], []);
    const zero = g.initializer(`${prefix}/zero_point`, OnnxType.INT8, [], () => new Uint8Array(1));
    const q = g.op("QuantizeLinear", `${prefix}/QuantizeLinear`, [x, scale, zero]);
    quantizeNodes++;
    dequantizeNodes++;
    return g.op("DequantizeLinear", `${prefix}/DequantizeLinear`, [q, scale, zero]);
  };

  // Initializers: quantised weights replace their float originals; the rest are copied as they are.
  const dequantized = new Map<string, () => string>();
  for (const t of file.graph.initializer) {
    const w = weights.get(t.name ?? "");
    if (!w) {
      const c = copyInitializer(file, t);
      g.initializer(c.name, c.dataType, c.dims, c.data);
      continue;
    }
    dequantized.set(t.name!, addWeight(g, file, t, targetPlace(w.target.node), naive, () => dequantizeNodes++));
  }

  const renamed = new Map<string, string>();
  const input = (x: string) => renamed.get(x) ?? x;
  for (const n of file.graph.node) {
    const name = n.name ?? "";
    const target = byNode.get(name);
    let inputs = (n.input ?? []).map(input);
    if (target) {
      const names = activationQuantizerNames(target);
      target.activations.forEach((x, k) => (inputs[k] = qdq(input(x), x, names[k]!)));
      if (target.weight) inputs[1] = dequantized.get(target.weight)!();
    } else if (naive && (n.opType === "LayerNormalization" || n.opType === "Softmax")) {
      inputs = [qdq(inputs[0]!, n.input![0]!, `${name}/input_quantizer`), ...inputs.slice(1)];
    }
    copyNode(g, n, inputs);
    if (naive && n.opType === "LayerNormalization") {
      const out = n.output![0]!;
      renamed.set(out, qdq(out, out, `${name}/output_quantizer`));
    }
  }
  addOutputs(g, file);

  const model = await writeRewrittenModel(file, outPath, g, {
    precision: "int8-qdq",
    docSuffix: naive ? " → naive int8 Q/DQ (test only)" : " → int8 Q/DQ",
    quantization: {
      format: "qdq",
      placement: naive ? "naive: per-tensor everywhere, LayerNorm and Softmax included (test only)" : "QDQBERT",
      weights: naive ? "int8 symmetric per tensor" : "int8 symmetric per output channel (DequantizeLinear axis 0)",
      activations: "int8 symmetric per tensor, scale = amax/127, zero point 0",
      targets: quantized.length,
      excluded: excluded.map((t) => t.node),
    },
  });
  return { model, quantized, excluded, quantizeNodes, dequantizeNodes };
}

function checkLinear(path: string, node: NodeLike, w: TensorLike): void {
  const transB = node.attribute?.find((a) => a.name === "transB")?.i ?? 0;
  if (transB !== 1 || w.dims?.length !== 2) throw new UsageError(`${path}: ${node.name} is not a Gemm with transB=1 on a 2-D weight [out, in], as bge exports linear layers`);
  if (w.dataType !== OnnxType.FLOAT) throw new UsageError(`${path}: weight ${w.name} is ONNX type ${w.dataType}, not float32: quantise the fp32 graph`);
}

/**
 * Adds a weight as int8 + scale + zero point (`<name>_quantized`, `_scale`, `_zero_point`) and
 * returns a function that adds its DequantizeLinear (called where the Gemm sits, so the node lands
 * in topological order). The quantisation runs once, when the writer asks for the int8 bytes.
 */
function addWeight(g: GraphBuilder, file: OnnxModelFile, t: TensorLike, place: string, perTensor: boolean, counted: () => void): () => string {
  const [rows, cols] = t.dims as [number, number];
  let cached: Promise<PerChannelInt8> | undefined;
  const quantize = () =>
    (cached ??= file.floats(t).then((w) => {
      if (!perTensor) return quantizePerChannel(w, rows, cols, INT8_MAX);
      const { values, scale } = quantizePerTensor(w, INT8_MAX);
      return { values, scales: Float32Array.of(scale) };
    }));
  const name = t.name!;
  const q = g.initializer(`${name}_quantized`, OnnxType.INT8, [rows, cols], async () => bytesOf((await quantize()).values));
  const scaleDims = perTensor ? [] : [rows];
  const scale = g.initializer(`${name}_scale`, OnnxType.FLOAT, scaleDims, async () => {
    const { scales } = await quantize();
    cached = undefined; // the int8 bytes were written before: free the copy
    return bytesOf(scales);
  });
  const zero = g.initializer(`${name}_zero_point`, OnnxType.INT8, scaleDims, () => new Uint8Array(perTensor ? 1 : rows));
  return () => {
    counted();
    return g.op("DequantizeLinear", `${place}/weight_quantizer/DequantizeLinear`, [q, scale, zero], perTensor ? {} : { axis: int(0) });
  };
}
