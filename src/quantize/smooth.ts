import { UsageError } from "../errors.js";
import { OnnxType } from "../onnx/proto.js";
import type { WrittenModel } from "../onnx/write-model.js";
import { addOutputs, copyInitializer, copyNode, graphWithInputs, readOnnxModel, writeRewrittenModel, type OnnxModelFile, type TensorLike } from "./onnx-model-io.js";
import { commonPath } from "./dynamic-graph.js";
import { targetPlace } from "./qdq-graph.js";
import type { QuantTarget } from "./targets.js";
import { bytesOf } from "./weights-int8.js";

/**
 * SmoothQuant (Xiao et al. 2022) for the linear layers of a bge encoder graph. Trained BERTs carry a
 * few hidden channels two orders of magnitude above the rest; an INT8 scale per token (or per tensor)
 * is then set by those channels and the bulk rounds to a few steps, or to zero. Per input channel j
 * of a linear layer y = x·Wᵀ:
 *
 *   s_j = max|x_j|^α / max|W_·j|^(1−α),   x' = x · diag(1/s),   W' = W · diag(s)
 *
 * so that x'·W'ᵀ = x·Wᵀ exactly in real arithmetic, while x' has no outlier channel left (its
 * difficulty moved into the weights, which INT8 quantises per output channel and so tolerate it).
 * Q, K and V read one tensor and share one s, taken over their concatenated weights.
 *
 * bge's encoders are post-LayerNorm (BERT, XLM-R): the LayerNorm output that feeds Q/K/V and the FFN
 * up-projection is also the residual, so 1/s cannot be folded into LayerNorm's gamma and beta as in
 * pre-LN models (OPT, LLaMA) without changing the residual stream; and the FFN down-projection reads
 * GELU's output, which has nothing to fold into. The graph gets an explicit Mul by 1/s on the linear
 * branch instead (`<place>/smooth/Mul`, one per smoothed tensor), ahead of where INT8 quantises it.
 */

/** `auto`: α = 0.5 on linear inputs with outlier channels; a number: that α on every linear input; `off`. */
export type SmoothSetting = "auto" | "off" | number;

/** `--smooth` as given: auto, off, or α in (0, 1); undefined for anything else. */
export function parseSmoothSetting(value: string): SmoothSetting | undefined {
  const v = value.trim();
  if (v === "auto" || v === "off") return v;
  if (!/^(0?\.[0-9]+|0)$/.test(v)) return undefined;
  const alpha = Number(v);
  return alpha > 0 && alpha < 1 ? alpha : undefined;
}

/** SmoothQuant's default migration strength: the outlier is split evenly between x and W. */
export const SMOOTH_ALPHA = 0.5;

/**
 * `auto` smooths a linear input whose largest channel max|x_j| is at least this many times its median
 * channel's. Inputs without outlier channels measure 1.5–3.2 on the bge-small-zh-shaped fixture; the
 * `--outliers` fixture's outlier inputs 8.7 (Q/K/V after an output LayerNorm) to 8·10⁴ (FFN down).
 */
export const OUTLIER_CHANNEL_RATIO = 6;

/** SmoothQuant's floor on max|x_j| and max|W_·j| (a dead channel must not make s zero or infinite). */
const FLOOR = 1e-5;

export interface SmoothedInput {
  /** The activation tensor that the linear layers read (the fp32 graph's name). */
  tensor: string;
  /** The linear layers that read it (Gemm node names): Q/K/V together, or one layer. */
  nodes: string[];
  /** Where the Mul goes: the common path of those layers (`/encoder/layer.1/attention/self`). */
  place: string;
  alpha: number;
  /** max|x_j| of the largest channel ÷ that of the median channel, before smoothing. */
  spread: number;
  /** The same of x/s, from the same statistics (max|x_j|/s_j per channel). */
  smoothedSpread: number;
  /** s_j per input channel: x is divided by it, the weights' column j multiplied. */
  scales: Float32Array;
}

/** Largest channel absmax ÷ median channel absmax (1 for an all-zero tensor). */
export function channelSpread(channelAbsMax: Float32Array): number {
  const sorted = Float32Array.from(channelAbsMax).sort();
  const n = sorted.length;
  const median = n % 2 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
  const max = sorted[n - 1] ?? 0;
  return median > 0 ? max / median : max > 0 ? Infinity : 1;
}

/** s_j = max(a_j, ε)^α / max(w_j, ε)^(1−α) in float32, per channel. */
export function smoothingScales(activationAbsMax: Float32Array, weightAbsMax: Float32Array, alpha: number): Float32Array {
  if (activationAbsMax.length !== weightAbsMax.length) throw new Error(`smoothing: ${activationAbsMax.length} activation channels but ${weightAbsMax.length} weight columns`);
  const s = new Float32Array(activationAbsMax.length);
  for (let j = 0; j < s.length; j++) {
    const v = Math.max(activationAbsMax[j]!, FLOOR) ** alpha / Math.max(weightAbsMax[j]!, FLOOR) ** (1 - alpha);
    s[j] = Number.isFinite(v) && v > 0 ? v : 1;
  }
  return s;
}

/** max|W[r, j]| per column j of row-major [rows, cols] weights (our Gemms store W as [out, in]). */
export function columnAbsMax(weights: readonly { values: Float32Array; rows: number; cols: number }[]): Float32Array {
  const cols = weights[0]!.cols;
  const out = new Float32Array(cols);
  for (const w of weights) {
    if (w.cols !== cols) throw new Error(`smoothing: weights of ${w.cols} and ${cols} input channels read one tensor`);
    for (let r = 0; r < w.rows; r++) {
      const row = r * cols;
      for (let j = 0; j < cols; j++) {
        const a = Math.abs(w.values[row + j]!);
        if (a > out[j]!) out[j] = a;
      }
    }
  }
  return out;
}

export interface SmoothingPlanOptions {
  setting: SmoothSetting;
  /** The linear targets of the fp32 graph (attention MatMuls have two activations and are not smoothed). */
  targets: readonly QuantTarget[];
  /** Per-channel max|x| of each linear input, from calibration (calibrate's channelAbsMax). */
  channelAbsMax: (tensor: string) => Float32Array | undefined;
  /** A weight initializer's float32 values and [out, in] shape. */
  weight: (name: string) => Promise<{ values: Float32Array; rows: number; cols: number }>;
}

/**
 * Which linear inputs to smooth, and by how much. `auto`: those whose channel spread is at least
 * OUTLIER_CHANNEL_RATIO and which smoothing narrows; none on a model without outlier channels. A
 * number: every linear input, with that α. `off`: none.
 */
export async function smoothingPlan(options: SmoothingPlanOptions): Promise<SmoothedInput[]> {
  const { setting } = options;
  if (setting === "off") return [];
  const alpha = setting === "auto" ? SMOOTH_ALPHA : setting;
  if (!(alpha > 0 && alpha < 1)) throw new UsageError(`--smooth ${alpha}: expected auto, off, or a migration strength α in (0, 1) (0.5 is SmoothQuant's default)`);
  const readers = new Map<string, QuantTarget[]>();
  for (const t of options.targets) {
    if (t.kind !== "linear" || !t.weight) continue;
    readers.set(t.activations[0]!, [...(readers.get(t.activations[0]!) ?? []), t]);
  }
  const plan: SmoothedInput[] = [];
  for (const [tensor, ts] of readers) {
    const a = options.channelAbsMax(tensor);
    if (!a) throw new Error(`smoothing: no per-channel statistics for ${tensor} (calibrate with channelAbsMax)`);
    const spread = channelSpread(a);
    if (setting === "auto" && !(spread >= OUTLIER_CHANNEL_RATIO)) continue;
    const weights = await Promise.all(ts.map((t) => options.weight(t.weight!)));
    if (weights[0]!.cols !== a.length) throw new Error(`smoothing: ${tensor} has ${a.length} channels, ${ts[0]!.weight} ${weights[0]!.cols} input columns`);
    const scales = smoothingScales(a, columnAbsMax(weights), alpha);
    const smoothedSpread = channelSpread(Float32Array.from(a, (v, j) => v / scales[j]!));
    // Where the weights carry their own outliers on the same channels (the units reading an outlier
    // dimension), dividing by s can widen x's spread instead: auto leaves such an input as it is.
    if (setting === "auto" && !(smoothedSpread < spread)) continue;
    plan.push({ tensor, nodes: ts.map((t) => t.node), place: commonPath(ts.map((t) => targetPlace(t.node))), alpha, spread, smoothedSpread, scales });
  }
  return plan;
}

/** A weight initializer of a decoded model as float32 values with its [rows, cols] shape. */
export function weightReader(file: OnnxModelFile): (name: string) => Promise<{ values: Float32Array; rows: number; cols: number }> {
  const byName = new Map(file.graph.initializer.map((t) => [t.name ?? "", t]));
  return async (name) => {
    const t = byName.get(name);
    if (!t || t.dims?.length !== 2 || t.dataType !== OnnxType.FLOAT) throw new UsageError(`${file.path}: ${name} is not a 2-D float32 weight`);
    const [rows, cols] = t.dims as [number, number];
    return { values: await file.floats(t), rows, cols };
  };
}

/**
 * Writes the fp32 graph with the plan applied: a Mul by 1/s before the layers that read each smoothed
 * tensor (placed just before the first of them), and their weights' columns multiplied by s. The
 * float graph computes what the original computes, up to float32 rounding; the INT8 writers then
 * quantise it like any other fp32 graph.
 */
export async function writeSmoothedModel(fp32Path: string, outPath: string, plan: readonly SmoothedInput[]): Promise<WrittenModel> {
  const file = await readOnnxModel(fp32Path);
  const byNode = new Map<string, SmoothedInput>();
  const byWeight = new Map<string, SmoothedInput>();
  const nodes = new Map(file.graph.node.map((n) => [n.name ?? "", n]));
  for (const p of plan) {
    for (const name of p.nodes) {
      const n = nodes.get(name);
      if (!n || n.opType !== "Gemm" || n.input?.[0] !== p.tensor) throw new UsageError(`${fp32Path}: ${name} is not a Gemm reading ${p.tensor}`);
      const transB = n.attribute?.find((a) => a.name === "transB")?.i ?? 0;
      if (transB !== 1) throw new UsageError(`${fp32Path}: ${name} is not a Gemm with transB=1 (weights [out, in]), as bge exports linear layers`);
      byNode.set(name, p);
      byWeight.set(n.input[1]!, p);
    }
  }
  const g = graphWithInputs(file);
  for (const t of file.graph.initializer) {
    const p = byWeight.get(t.name ?? "");
    if (!p) {
      const c = copyInitializer(file, t);
      g.initializer(c.name, c.dataType, c.dims, c.data);
      continue;
    }
    g.initializer(t.name!, OnnxType.FLOAT, t.dims!, async () => bytesOf(scaleColumns(await file.floats(t), t, p.scales)));
  }
  const smoothed = new Map<string, string>();
  for (const n of file.graph.node) {
    const p = byNode.get(n.name ?? "");
    if (!p) {
      copyNode(g, n);
      continue;
    }
    let x = smoothed.get(p.tensor);
    if (!x) {
      const inv = g.constFloat(`${p.place}/smooth/inv_scale`, Array.from(p.scales, (s) => 1 / s), [p.scales.length]);
      x = g.op("Mul", `${p.place}/smooth/Mul`, [p.tensor, inv]);
      smoothed.set(p.tensor, x);
    }
    copyNode(g, n, [x, ...n.input!.slice(1)]);
  }
  addOutputs(g, file);
  return writeRewrittenModel(file, outPath, g, {
    precision: "fp32",
    docSuffix: " → SmoothQuant",
    quantization: { format: "smoothed", inputs: plan.map((p) => ({ place: p.place, alpha: p.alpha, spread: Number(p.spread.toPrecision(4)), smoothed_spread: Number(p.smoothedSpread.toPrecision(4)) })) },
  });
}

/** W[r, j]·s_j for row-major [out, in] weights, in a new array (the source may be a view into the file). */
function scaleColumns(w: Float32Array, t: TensorLike, s: Float32Array): Float32Array {
  const [rows, cols] = t.dims as [number, number];
  if (cols !== s.length) throw new Error(`smoothing: ${t.name} has ${cols} input columns, the plan ${s.length} scales`);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) out[r * cols + j] = w[r * cols + j]! * s[j]!;
  return out;
}
