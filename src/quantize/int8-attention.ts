import { ints, type GraphBuilder } from "../onnx/graph-builder.js";
import { OnnxType } from "../onnx/proto.js";
import type { NodeLike, OnnxModelFile } from "./onnx-model-io.js";
import type { QuantTarget } from "./targets.js";
import { INT7_MAX, INT8_MAX } from "./weights-int8.js";

/**
 * The two attention MatMuls of `model.int8.onnx` in int8 (static activations only: both operands are
 * activations, so their scales come from calibration). Per layer, bge's export writes
 *
 *   q ─ Reshape ─ Transpose ─ Mul(1/√d) ─┐
 *   k ─ Reshape ─ Transpose ─────────────┴ MatMul ─ Add(mask) ─ Softmax ─┐
 *   v ─ Reshape ─ Transpose ──────────────────────────────────────────────┴ MatMul_1 ─ …
 *
 * and this becomes
 *
 *   q ─ QuantizeLinear(u8) ─ Reshape ─ Transpose ─┐
 *   k ─ QuantizeLinear(s8) ─ Reshape ─ Transpose ─┴ MatMulIntegerToFloat ─ Add(mask) ─ Softmax ─ QuantizeLinear(u8) ─┐
 *   v ─ QuantizeLinear(s8) ─ Reshape ─ Transpose ──────────────────────────────────────────────────────────────────────┴ MatMulIntegerToFloat ─ …
 *
 * Q, K and V are quantised before their heads are split, so the transposes move bytes instead of
 * floats, and 1/√d goes into Q's scale (x·c quantised at amax(x·c)/127 is x quantised at
 * amax(x·c)/(127·c)). Q is u8 with zero point 128 and K, V are s8 symmetric (ONNX Runtime's u8×s8
 * kernels), in [-64, 64] where the linear weights are (`reduceRange`: the AVX2 kernel's int16 pair
 * sums, dynamic-graph.ts); the calibrated amax of each MatMul input (the Q/DQ graph's) sets the scale. The
 * probabilities are u8 at the fixed scale 1/255 with zero point 0: they lie in [0, 1] by construction,
 * and a calibrated range clips the near-certain rows of short texts (see calibrate.ts).
 * Measured on the bge-small-zh fixture (batch 32 × seq 128, 2 AVX-512 VNNI cores, same run): 178 →
 * 162 ms per batch, min cosine on the 240 verification texts 0.99873 (float attention: 0.99870).
 *
 * Planned from bge's node names and checked node by node (op types, wiring, perms, the scale
 * constant); a layer whose graph differs, or whose attention targets are excluded, keeps float
 * attention.
 */
export interface AttentionPlan {
  /** The source graph's nodes replaced (the Reshape/Transpose/Mul chains and both MatMuls). */
  replaced: Set<string>;
  /** Emits the int8 form at the position of the replaced node it is keyed by. */
  emitAt: Map<string, (g: GraphBuilder, zeros: AttentionZeros) => void>;
  /** Layers whose attention is int8. */
  layers: number[];
}

/** Shared scalar zero points: u8 128 (Q), u8 0 (probabilities), s8 0 (K, V). */
export interface AttentionZeros {
  u8mid: string;
  u8zero: string;
  s8zero: string;
}

export function attentionZeros(g: GraphBuilder): AttentionZeros {
  return {
    u8mid: g.initializer("/attention_quantizer/zero_point_u8_128", OnnxType.UINT8, [], () => Uint8Array.of(128)),
    u8zero: g.initializer("/attention_quantizer/zero_point_u8_0", OnnxType.UINT8, [], () => Uint8Array.of(0)),
    s8zero: g.initializer("/attention_quantizer/zero_point_s8_0", OnnxType.INT8, [], () => Uint8Array.of(0)),
  };
}

const PROBABILITY_SCALE = 1 / 255;

export async function planInt8Attention(
  file: OnnxModelFile,
  targets: readonly QuantTarget[],
  amax: ReadonlyMap<string, number>,
  options: { exclude?: (t: QuantTarget) => boolean; reduceRange: boolean },
): Promise<AttentionPlan> {
  const { exclude } = options;
  const kvMax = options.reduceRange ? INT7_MAX : INT8_MAX;
  const nodes = new Map(file.graph.node.map((n) => [n.name ?? "", n]));
  const inits = new Map(file.graph.initializer.map((t) => [t.name ?? "", t]));
  const readers = new Map<string, NodeLike[]>();
  for (const n of file.graph.node) {
    for (const i of n.input ?? []) {
      const list = readers.get(i);
      if (list) list.push(n);
      else readers.set(i, [n]);
    }
  }
  const plan: AttentionPlan = { replaced: new Set(), emitAt: new Map(), layers: [] };
  const byLayer = new Map<number, QuantTarget[]>();
  for (const t of targets) if (t.kind !== "linear") byLayer.set(t.layer, [...(byLayer.get(t.layer) ?? []), t]);

  for (const [layer, pair] of byLayer) {
    if (pair.length !== 2 || pair.some((t) => exclude?.(t))) continue;
    const P = `/encoder/layer.${layer}/attention/self`;
    const get = (suffix: string, op: string) => {
      const n = nodes.get(`${P}/${suffix}`);
      return n?.opType === op ? n : undefined;
    };
    const c = {
      qR: get("query/Reshape", "Reshape"), qT: get("query/Transpose", "Transpose"), qS: get("Mul", "Mul"),
      kR: get("key/Reshape", "Reshape"), kT: get("key/Transpose", "Transpose"),
      vR: get("value/Reshape", "Reshape"), vT: get("value/Transpose", "Transpose"),
      scores: get("MatMul", "MatMul"), probs: get("Softmax", "Softmax"), ctx: get("MatMul_1", "MatMul"),
    };
    if (Object.values(c).some((n) => !n)) continue;
    const n = c as { [K in keyof typeof c]: NodeLike };
    const o = (x: NodeLike) => x.output![0]!;
    const perm = (x: NodeLike) => x.attribute?.find((a) => a.name === "perm")?.ints ?? [];
    const wired =
      n.qT.input?.[0] === o(n.qR) && n.kT.input?.[0] === o(n.kR) && n.vT.input?.[0] === o(n.vR) && n.qS.input?.[0] === o(n.qT) &&
      perm(n.qT).join() === "0,2,1,3" && perm(n.kT).join() === "0,2,3,1" && perm(n.vT).join() === "0,2,1,3" &&
      n.scores.input?.[0] === o(n.qS) && n.scores.input?.[1] === o(n.kT) && n.ctx.input?.[0] === o(n.probs) && n.ctx.input?.[1] === o(n.vT);
    if (!wired) continue;
    // The transposed and scaled copies must have no other reader: they are not written any more.
    const chain = [n.qR, n.qT, n.qS, n.kR, n.kT, n.vR, n.vT];
    if (chain.some((x) => (readers.get(o(x)) ?? []).some((r) => ![...chain, n.scores, n.ctx].includes(r)))) continue;
    const scaleInit = inits.get(n.qS.input?.[1] ?? "");
    if (!scaleInit || scaleInit.dataType !== OnnxType.FLOAT || (scaleInit.dims ?? []).some((d) => d !== 1)) continue;
    const scale = (await file.floats(scaleInit))[0]!;
    const range = (x: string) => {
      const a = amax.get(x);
      return a !== undefined && a > 0 && Number.isFinite(a) ? a : undefined;
    };
    const [aq, ak, av] = [range(o(n.qS)), range(o(n.kT)), range(o(n.vT))];
    if (!(scale > 0 && Number.isFinite(scale)) || aq === undefined || ak === undefined || av === undefined) continue;

    for (const x of [...chain, n.scores, n.ctx]) plan.replaced.add(x.name!);
    plan.layers.push(layer);
    // Per projection (query, key, value): its input scale and its int8 heads, named by the projection.
    const scaleOf = (name: string) => `${P}/${name}/input_scale`;
    const headsOf = (name: string) => `${P}/${name}/heads_int8`;
    // Q, K, V: quantised flat, then split into heads as bytes (the original Reshape's shape input and Transpose perm).
    const heads = (reshape: NodeLike, transpose: NodeLike, name: string, s: number, zero: (z: AttentionZeros) => string) => (g: GraphBuilder, z: AttentionZeros) => {
      const sc = g.constFloat(scaleOf(name), [s], []);
      const q = g.op("QuantizeLinear", `${P}/${name}/QuantizeLinear`, [reshape.input![0]!, sc, zero(z)]);
      const r = g.op("Reshape", `${P}/${name}/Reshape`, [q, reshape.input![1]!]);
      g.node("Transpose", `${P}/${name}/Transpose`, [r], { perm: ints(perm(transpose)) }, [headsOf(name)]);
    };
    plan.emitAt.set(n.qR.name!, heads(n.qR, n.qT, "query", aq / INT8_MAX / scale, (z) => z.u8mid));
    plan.emitAt.set(n.kR.name!, heads(n.kR, n.kT, "key", ak / kvMax, (z) => z.s8zero));
    plan.emitAt.set(n.vR.name!, heads(n.vR, n.vT, "value", av / kvMax, (z) => z.s8zero));
    plan.emitAt.set(n.scores.name!, (g, z) => {
      const qScaled = g.constFloat(`${P}/MatMul/a_scale`, [aq / INT8_MAX], []);
      g.node("MatMulIntegerToFloat", `${P}/MatMul/MatMulIntegerToFloat`, [headsOf("query"), headsOf("key"), qScaled, scaleOf("key"), z.u8mid, z.s8zero], {}, [o(n.scores)]);
      g.nodes.at(-1)!.domain = "com.microsoft";
    });
    plan.emitAt.set(n.ctx.name!, (g, z) => {
      const ps = g.constFloat(`${P}/MatMul_1/probabilities_scale`, [PROBABILITY_SCALE], []);
      const p = g.op("QuantizeLinear", `${P}/MatMul_1/QuantizeLinear`, [o(n.probs), ps, z.u8zero]);
      g.node("MatMulIntegerToFloat", `${P}/MatMul_1/MatMulIntegerToFloat`, [p, headsOf("value"), ps, scaleOf("value"), z.u8zero, z.s8zero], {}, [o(n.ctx)]);
      g.nodes.at(-1)!.domain = "com.microsoft";
    });
  }
  plan.layers.sort((a, b) => a - b);
  return plan;
}
