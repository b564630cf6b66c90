import { UsageError } from "../errors.js";
import { int, ints, type GraphBuilder } from "../onnx/graph-builder.js";
import { OnnxType } from "../onnx/proto.js";
import type { WrittenModel } from "../onnx/write-model.js";
import { attentionZeros, planInt8Attention, type AttentionZeros } from "./int8-attention.js";
import { addOutputs, copyInitializer, copyNode, graphWithInputs, pruneUnused, readOnnxModel, writeRewrittenModel, type NodeLike, type OnnxModelFile, type TensorLike } from "./onnx-model-io.js";
import { targetPlace } from "./qdq-graph.js";
import { findQuantTargets, type QuantTarget } from "./targets.js";
import { bytesOf, INT7_MAX, INT8_MAX, quantizePerChannel, transposeInt8, type PerChannelInt8 } from "./weights-int8.js";

/**
 * `model.int8.onnx` for ONNX Runtime on CPU: int8 weights per output channel, activations quantised
 * at run time (u8, per token by default, see below) — no calibration. Every linear layer
 * becomes
 *
 *   x ─ DynamicQuantizeLinear ─ (x_u8, x_scale, x_zp) ─ MatMulInteger(x_u8, W_s8 [in, out], x_zp) ─ Cast ─ Mul(x_scale·w_scale) ─ Add(bias)
 *
 * with one DynamicQuantizeLinear per activation tensor (Q, K and V share theirs). These are standard
 * ONNX ops, and ORT's optimizer fuses exactly this pattern into its contrib kernels (u8 activations ×
 * s8 weights, the pairing its x86 kernels are built for): DynamicQuantizeMatMul where the quantised
 * input has one reader, MatMulIntegerToFloat (bias folded in) for Q/K/V. Writing those contrib ops
 * directly was measured and is no faster (bge-small-zh shape, batch 32 × seq 128, ORT 1.30 CPU on 2
 * AVX-512 VNNI cores, same run, best of 20: fp32 372 ms; this form 163 ms; DynamicQuantizeMatMul
 * everywhere 165 ms; MatMulIntegerToFloat 167 ms — within noise), while it would tie the file to
 * ORT's com.microsoft domain.
 *
 * That is the `per-tensor` form. `per-token`: each row of the input gets its own
 * scale (max|x| over the last axis → /127, x_u8 = round(x/scale) + 128 by a QuantizeLinear along
 * axis 0, fixed zero point 128: ORT's kernels take only a scalar a_zero_point, so the zero point
 * stays constant and the row scale goes on the result). DynamicQuantizeLinear's min/max over the
 * whole [batch·seq, in] input, padding rows included, made a text's vector depend on the rest of its
 * batch: on an outlier fixture verify measured a batch drift of 0.50 (gate 1e-3); per token it is
 * 2e-16. ORT fuses no per-row form, so per token runs ORT's contrib MatMulIntegerToFloat (com.microsoft;
 * a_scale 1, the weight scales inside) and then the row scales and the bias: two passes over the
 * output where MatMulInteger → Cast → Mul → Mul → Add made four (bge-small-zh shape, batch 32 × seq
 * 128, 2 AVX-512 VNNI cores, same run: fp32 451 ms, MatMulInteger form 251 ms, this form 213 ms).
 *
 * `static` (what `bge quantize` writes by default; this function's default stays per token, which
 * needs no calibration) takes each input's calibrated range instead (the Q/DQ graph's, after smoothing): one
 * QuantizeLinear and one MatMulIntegerToFloat with the bias inside per layer, no run-time reduction
 * — the fastest form (fp32 431 ms, static 179 ms in one run), independent of the batch like per
 * token, at the accuracy of a calibrated range (min cosine 0.9988 vs per token 0.9990 on the
 * bge-small-zh fixture's 240 verification texts).
 *
 * With static ranges the two attention MatMuls go int8 as well (int8-attention.ts: Q, K, V quantised
 * before their heads are split, probabilities at their bound 1/255): 178 → 162 ms in a one-off A/B
 * run, the same parity (npm run bench:int8 records the whole: docs/benchmarks.md). Per token and per
 * tensor keep them float: both operands are activations, with no calibrated range to use.
 * Embeddings, LayerNorm, GELU, Softmax, pooling and normalisation stay fp32. Measured once with
 * one-off scripts (not kept) and left out, no faster on 2 AVX-512 cores with ORT 1.30: the attention
 * core as ORT's MultiHeadAttention (75 ms vs ~70 for the standard ops it replaces, by the profiler)
 * and the embeddings as its EmbedLayerNormalization (180.6 vs 180.8 ms per batch over 40
 * interleaved rounds).
 */

export interface DynamicInt8Options {
  /** Linear layers to leave in float. Attention MatMul targets are never quantised here. */
  exclude?: (t: QuantTarget) => boolean;
  /**
   * 7-bit weights ([-64, 64]), ONNX Runtime's `reduce_range`. On x86 CPUs without VNNI, ORT's u8×s8
   * kernel (MLAS QgemmU8S8KernelAvx2) multiplies with VPMADDUBSW, which adds each pair of adjacent
   * u8·s8 products into a saturating int16; u8 activations sit around their zero point ~128, so two
   * large weights of one sign overflow it. 7-bit weights make that impossible (255·64·2 < 32767).
   * Measured by emulating that kernel on the bge-small-zh fixture's real activations: with 8-bit
   * weights 0.011% of pair sums saturate and the saturation error (2.0e-2 of each layer's output) is
   * larger than the whole quantisation error (1.1e-2); 7-bit weights cost 1.7e-2 and never saturate.
   * On VNNI CPUs (VPDPBUSD, no int16 step) 8-bit weights are exact and a little better (min cosine
   * 0.9997 vs 0.9992 on that fixture) — but an artifact does not know which CPU will run it, and ORT
   * fixes the overflow only behind a session option (`session.x64quantprecision`) that switches to
   * its slower u8×u8 kernel. So 7-bit by default; `false` for VNNI-only deployments.
   * @default true
   */
  reduceRange?: boolean;
  /**
   * How activations are quantised at run time. `per-token` (the default): each row of a linear
   * layer's input [tokens, in] gets its own scale, max|row|/127, stored as u8 with the fixed zero
   * point 128 — so a text's vectors do not depend on the other texts in its batch or on padding.
   * `per-tensor`: DynamicQuantizeLinear over the whole [batch·seq, in] input (padding rows
   * included), ORT's fused form — faster, but one text's range sets every text's resolution.
   * `static`: the calibrated range per input (`activationAmax`, as the Q/DQ graph uses), one
   * QuantizeLinear and one fused MatMulIntegerToFloat (bias included) per layer — the fastest, and
   * independent of the batch, at the accuracy of a calibrated range.
   * @default "per-token"
   */
  activations?: DynamicActivations;
  /** `static`: the calibrated amax of every linear input (the source graph's tensor names). */
  activationAmax?: ReadonlyMap<string, number>;
  /**
   * `static`: the two attention MatMuls in int8 too (int8-attention.ts), from the calibrated ranges of
   * their inputs (`activationAmax`); `false` keeps them float. Other modes always keep them float.
   * @default true
   */
  int8Attention?: boolean;
}

export const DYNAMIC_ACTIVATIONS = ["static", "per-token", "per-tensor"] as const;
export type DynamicActivations = (typeof DYNAMIC_ACTIVATIONS)[number];

/** ONNX Runtime's fused u8×s8 matmul with float output (com.microsoft domain, CPU). */
const CONTRIB_MATMUL = "MatMulIntegerToFloat";

/** Puts the node just added into ONNX Runtime's contrib domain. */
function contrib(g: GraphBuilder): void {
  g.nodes.at(-1)!.domain = "com.microsoft";
}

export interface DynamicInt8Result {
  model: WrittenModel;
  quantized: QuantTarget[];
  excluded: QuantTarget[];
}

export async function writeDynamicInt8Model(fp32Path: string, outPath: string, options: DynamicInt8Options = {}): Promise<DynamicInt8Result> {
  const file = await readOnnxModel(fp32Path);
  const reduceRange = options.reduceRange ?? true;
  const mode = options.activations ?? "per-token";
  if (mode === "static" && !options.activationAmax) throw new Error("static activations need the calibrated activationAmax");
  const targets = findQuantTargets(file.graph);
  const linear = targets.filter((t) => t.kind === "linear");
  if (!linear.length) throw new UsageError(`${fp32Path}: no linear layers to quantise (not a bge encoder graph?)`);
  const quantized = linear.filter((t) => !options.exclude?.(t));
  const excluded = linear.filter((t) => options.exclude?.(t));
  const byNode = new Map(quantized.map((t) => [t.node, t]));
  const nodes = new Map(file.graph.node.map((n) => [n.name ?? "", n]));
  const initializers = new Map(file.graph.initializer.map((t) => [t.name ?? "", t]));
  const weights = new Set<string>();
  for (const t of quantized) {
    checkGemm(fp32Path, nodes.get(t.node)!, initializers.get(t.weight!)!);
    weights.add(t.weight!);
  }
  // One DynamicQuantizeLinear per activation tensor (Q, K and V read the same one), named by the
  // path its consumers share: /encoder/layer.N/attention/self for Q/K/V.
  const consumers = new Map<string, string[]>();
  for (const t of quantized) consumers.set(t.activations[0]!, [...(consumers.get(t.activations[0]!) ?? []), targetPlace(t.node)]);

  const g = graphWithInputs(file);
  const int8 = new Map<string, { q: string; scale: string }>();
  for (const t of file.graph.initializer) {
    if (weights.has(t.name ?? "")) {
      int8.set(t.name!, addTransposedWeight(g, file, t, reduceRange ? INT7_MAX : INT8_MAX));
    } else {
      const c = copyInitializer(file, t);
      g.initializer(c.name, c.dataType, c.dims, c.data);
    }
  }

  const quantizedInputs = new Map<string, string[]>();
  let tokenConsts: { inv: string; tiny: string; zeroU8: string; axis1: string; lastAxis?: string } | undefined;
  const quantizeInput = (x: string): string[] => {
    let outs = quantizedInputs.get(x);
    if (!outs) {
      const prefix = `${commonPath(consumers.get(x)!)}/input_quantizer`;
      if (mode === "per-tensor") {
        outs = g.node("DynamicQuantizeLinear", `${prefix}/DynamicQuantizeLinear`, [x], {}, 3);
      } else if (mode === "static") {
        // The calibrated range (after smoothing, as the Q/DQ graph's): amax/127, zero point 128.
        const amax = options.activationAmax!.get(x);
        if (!(amax !== undefined && amax > 0 && Number.isFinite(amax))) throw new Error(`no calibrated range for ${x}`);
        const scale = g.constFloat(`${prefix}/scale`, [amax / INT8_MAX], []);
        const zero = g.initializer(`${prefix}/zero_point`, OnnxType.UINT8, [], () => Uint8Array.of(128));
        outs = [g.op("QuantizeLinear", `${prefix}/QuantizeLinear`, [x, scale, zero]), scale, zero];
      } else {
        // Symmetric per row: scale = max|x_row|/127 ([M]), x_u8 = round(x/scale) + 128 ∈ [1, 255] by one
        // QuantizeLinear along axis 0 (zero point 128 on every row). max|x| is max(max x, −min x): two
        // reductions that only read x, where Abs would first write a copy of it. Same values as
        // Abs/ReduceMax/Div/Round/Add/Cast, in 4 passes over [M, K] instead of 6 (and 5 intermediate tensors fewer).
        tokenConsts ??= {
          inv: g.constFloat("/input_quantizer/inv_qmax", [1 / INT8_MAX], []),
          tiny: g.constFloat("/input_quantizer/tiny", [1e-30], []),
          zeroU8: g.initializer("/input_quantizer/zero_point", OnnxType.UINT8, [], () => Uint8Array.of(128)),
          axis1: g.initializer("/input_quantizer/axis1", OnnxType.INT64, [1], () => new Uint8Array(BigInt64Array.of(1n).buffer)),
          // Opset 18 moved the reductions' axes from an attribute to an input.
          lastAxis: file.opset >= 18 ? g.initializer("/input_quantizer/last_axis", OnnxType.INT64, [1], () => new Uint8Array(BigInt64Array.of(-1n).buffer)) : undefined,
        };
        const c = tokenConsts;
        const reduce = (op: string) =>
          c.lastAxis ? g.op(op, `${prefix}/${op}`, [x, c.lastAxis], { keepdims: int(0) }) : g.op(op, `${prefix}/${op}`, [x], { axes: ints([-1]), keepdims: int(0) });
        const max = reduce("ReduceMax");
        const min = reduce("ReduceMin");
        const amax = g.op("Max", `${prefix}/AbsMax`, [max, g.op("Neg", `${prefix}/Neg`, [min])]);
        const scale = g.op("Mul", `${prefix}/scale/Mul`, [g.op("Max", `${prefix}/Max`, [amax, c.tiny]), c.inv]);
        const zero = g.op("Expand", `${prefix}/zero_point/Expand`, [c.zeroU8, g.op("Shape", `${prefix}/zero_point/Shape`, [scale])]);
        const q = g.op("QuantizeLinear", `${prefix}/QuantizeLinear`, [x, scale, zero], { axis: int(0) });
        // The accumulator [M, N] takes the row scales as a column.
        const column = g.op("Unsqueeze", `${prefix}/scale/Unsqueeze`, [scale, c.axis1]);
        outs = [q, column, c.zeroU8];
      }
      quantizedInputs.set(x, outs);
    }
    return outs;
  };
  // Static ranges cover the attention MatMuls' inputs too: those go int8 where the graph is bge's.
  const attention = mode === "static" && options.int8Attention !== false ? await planInt8Attention(file, targets, options.activationAmax!, { exclude: options.exclude, reduceRange }) : undefined;
  let zeros: AttentionZeros | undefined;
  let oneF: string | undefined;
  for (const n of file.graph.node) {
    if (attention?.replaced.has(n.name ?? "")) {
      attention.emitAt.get(n.name!)?.(g, (zeros ??= attentionZeros(g)));
      continue;
    }
    const t = byNode.get(n.name ?? "");
    if (!t) {
      copyNode(g, n);
      continue;
    }
    const place = targetPlace(t.node);
    const [x, , bias] = n.input!;
    const w = int8.get(t.weight!)!;
    const out = n.output!;
    const [xq, xScale, xZero] = quantizeInput(x!);
    if (mode === "static") {
      // One fused kernel: (x_u8 − 128)·W_s8 · (a_scale·w_scale) + bias.
      g.node(CONTRIB_MATMUL, `${place}/${CONTRIB_MATMUL}`, [xq!, w.q, xScale!, w.scale, xZero!, "", bias!], {}, out);
      contrib(g);
      continue;
    }
    if (mode === "per-token") {
      // acc·w_scale in the fused kernel (a_scale 1), then the row scales, then the bias: two passes
      // over the output where MatMulInteger → Cast → Mul → Mul → Add made four.
      oneF ??= g.constFloat("/input_quantizer/one", [1], []);
      const mm = g.op(CONTRIB_MATMUL, `${place}/${CONTRIB_MATMUL}`, [xq!, w.q, oneF, w.scale, xZero!]);
      contrib(g);
      g.node("Add", `${place}/Add`, [g.op("Mul", `${place}/scale/Mul`, [mm, xScale!]), bias!], {}, out);
      continue;
    }
    const acc = g.op("MatMulInteger", `${place}/MatMulInteger`, [xq!, w.q, xZero!]);
    const accF = g.op("Cast", `${place}/Cast`, [acc], { to: int(OnnxType.FLOAT) });
    // Per tensor, x_scale·w_scale is one [out] vector; per token, x_scale is [M, 1] and is applied
    // to the accumulator on its own (an [M, out] product of the two scales would be one more pass).
    const y = g.op("Mul", `${place}/Mul`, [accF, g.op("Mul", `${place}/scale/Mul`, [xScale!, w.scale])]);
    g.node("Add", `${place}/Add`, [y, bias!], {}, out);
  }
  addOutputs(g, file);
  pruneUnused(g);

  const model = await writeRewrittenModel(file, outPath, g, {
    precision: "int8",
    docSuffix: " → int8 dynamic (ONNX Runtime CPU)",
    quantization: {
      format: "dynamic",
      weights: `int8 symmetric per output channel${reduceRange ? ", 7-bit range [-64, 64] (reduce_range)" : ""}, stored [in, out]`,
      activations:
        mode === "per-token"
          ? "uint8 symmetric per token (scale max|row|/127, zero point 128), computed per row at run time"
          : mode === "static"
            ? "uint8 symmetric per tensor, calibrated (scale amax/127, zero point 128), fixed in the graph"
            : "uint8 asymmetric per tensor, computed per batch (DynamicQuantizeLinear)",
      targets: quantized.length,
      excluded: excluded.map((t) => t.node),
      attention: attention?.layers.length
        ? `int8 in layers ${attention.layers.join(", ")}: Q uint8 (zero point 128), K and V int8 symmetric${reduceRange ? " [-64, 64]" : ""} at their calibrated ranges, probabilities uint8 at 1/255; MatMulIntegerToFloat`
        : "float",
    },
  });
  return { model, quantized, excluded };
}

/** The longest common `/`-path of node places: query, key, value → their attention/self. */
export function commonPath(places: readonly string[]): string {
  const parts = places.map((p) => p.split("/"));
  const first = parts[0]!;
  let k = 0;
  while (k < first.length && parts.every((p) => p[k] === first[k])) k++;
  return first.slice(0, k).join("/");
}

function checkGemm(path: string, node: NodeLike, w: TensorLike): void {
  const attr = (name: string) => node.attribute?.find((a) => a.name === name);
  const ok = (attr("transB")?.i ?? 0) === 1 && (attr("transA")?.i ?? 0) === 0 && (attr("alpha")?.f ?? 1) === 1 && (attr("beta")?.f ?? 1) === 1;
  if (!ok || w.dims?.length !== 2 || node.input?.length !== 3) throw new UsageError(`${path}: ${node.name} is not a Gemm(x, W[out, in], bias) with transB=1, as bge exports linear layers`);
  if (w.dataType !== OnnxType.FLOAT) throw new UsageError(`${path}: weight ${w.name} is ONNX type ${w.dataType}, not float32: quantise the fp32 graph`);
}

/**
 * A weight [out, in] as int8 [in, out] (`<name>_quantized`; MatMulInteger's B is K×N) with its
 * per-output-channel scales (`<name>_scale`, [out]). Zero points are 0 and left out (the default).
 */
function addTransposedWeight(g: GraphBuilder, file: OnnxModelFile, t: TensorLike, qmax: number): { q: string; scale: string } {
  const [rows, cols] = t.dims as [number, number];
  let cached: Promise<PerChannelInt8> | undefined;
  const quantize = () => (cached ??= file.floats(t).then((w) => quantizePerChannel(w, rows, cols, qmax)));
  const q = g.initializer(`${t.name}_quantized`, OnnxType.INT8, [cols, rows], async () => bytesOf(transposeInt8((await quantize()).values, rows, cols)));
  const scale = g.initializer(`${t.name}_scale`, OnnxType.FLOAT, [rows], async () => {
    const { scales } = await quantize();
    cached = undefined;
    return bytesOf(scales);
  });
  return { q, scale };
}
