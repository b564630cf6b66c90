import { readFile } from "node:fs/promises";
import { ModelProto, OnnxType } from "../onnx/proto.js";
import { encoderFeeds } from "../runners/feeds.js";
import { ort } from "../runners/ort.js";
import { findQuantTargets, type QuantTarget } from "./targets.js";

/** How far one quantised layer moved its output away from the fp32 graph's, on the same texts. */
export interface LayerDrift {
  node: string;
  layer: number;
  kind: QuantTarget["kind"];
  /** Cosine of the layer's output, int8 vs fp32, over every real token of the texts. */
  outputCosine: number;
  /** The worst cosine among its inputs: the drift it inherited from the layers before. */
  inputCosine: number;
  /** 1 − outputCosine / inputCosine: what this layer itself added. */
  added: number;
  /**
   * Whether the int8 graph quantises this layer: false where its node is still there in float
   * (kept by --exclude or auto-exclusion, or the attention MatMuls of model.int8.onnx).
   */
  quantized: boolean;
}

export interface LayerDriftReport {
  texts: number;
  layers: LayerDrift[];
  skipped?: string;
}

interface GraphLike {
  node?: { name?: string; opType?: string; input?: string[]; output?: string[] }[];
  initializer?: { name?: string; dataLocation?: number }[];
  output: { name?: string; type?: unknown }[];
}

/** Accumulates Σx·y, Σx², Σy² per tensor: one cosine over all of a tensor's values and texts. */
class CosineSum {
  private xy = 0;
  private xx = 0;
  private yy = 0;
  add(a: Float32Array, b: Float32Array): void {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) {
      const x = a[i]!;
      const y = b[i]!;
      this.xy += x * y;
      this.xx += x * x;
      this.yy += y * y;
    }
  }
  get cosine(): number {
    if (this.xx === 0 && this.yy === 0) return 1;
    return this.xy / Math.sqrt(this.xx * this.yy);
  }
}

/**
 * The targets that a graph computes in float: the node is there under its fp32 name, with no
 * DequantizeLinear feeding it (the Q/DQ graph keeps quantised nodes' names, the integer-MatMul graph
 * replaces them).
 */
function floatTargets(g: GraphLike, targets: readonly QuantTarget[]): Set<string> {
  const nodes = new Map((g.node ?? []).map((n) => [n.name ?? "", n]));
  const dequantized = new Set((g.node ?? []).filter((n) => n.opType === "DequantizeLinear").flatMap((n) => n.output ?? []));
  return new Set(
    targets
      .filter((t) => {
        const n = nodes.get(t.node);
        return n !== undefined && !(n.input ?? []).some((x) => dequantized.has(x));
      })
      .map((t) => t.node),
  );
}

async function sessionWithOutputs(path: string, names: string[], targets: readonly QuantTarget[] = []): Promise<{ session: ort.InferenceSession; present: Set<string>; inFloat: Set<string> } | string> {
  const model = ModelProto.decode(await readFile(path)) as unknown as { graph: GraphLike };
  const g = model.graph;
  if (g.initializer?.some((t) => t.dataLocation === 1)) return "the model keeps its weights in external data";
  const produced = new Set((g.node ?? []).flatMap((n) => n.output ?? []));
  const existing = new Set(g.output.map((o) => o.name));
  const present = new Set(names.filter((n) => produced.has(n)));
  g.output = [...g.output, ...[...present].filter((n) => !existing.has(n)).map((name) => ({ name, type: { tensorType: { elemType: OnnxType.FLOAT } } }))];
  const inFloat = floatTargets(g, targets);
  const session = await ort.InferenceSession.create(ModelProto.encode(ModelProto.fromObject(model as never)).finish(), { graphOptimizationLevel: "basic" });
  return { session, present, inFloat };
}

/**
 * Where INT8 loses parity: runs the fp32 and the int8 graph on the same texts (one text per run,
 * so no padding enters the sums) with each quantised layer's inputs and output exposed, and measures
 * per layer the cosine of its output against fp32 and how much of the drift that layer itself added.
 * Both graphs keep the fp32 graph's tensor names around the quantised nodes, which is what makes
 * them comparable tensor by tensor.
 */
export async function measureLayerDrift(fp32Path: string, int8Path: string, texts: readonly (readonly number[])[]): Promise<LayerDriftReport> {
  const fp32Model = ModelProto.decode(await readFile(fp32Path)) as unknown as { graph: GraphLike };
  const targets = findQuantTargets(fp32Model.graph as never);
  const outputOf = new Map((fp32Model.graph.node ?? []).map((n) => [n.name ?? "", n.output?.[0] ?? ""]));
  const watched = targets.map((t) => ({ t, inputs: t.activations, output: outputOf.get(t.node)! }));
  const names = [...new Set(watched.flatMap((w) => [...w.inputs, w.output]))];
  const a = await sessionWithOutputs(fp32Path, names);
  if (typeof a === "string") return { texts: 0, layers: [], skipped: a };
  const b = await sessionWithOutputs(int8Path, names, targets);
  if (typeof b === "string") {
    await a.session.release();
    return { texts: 0, layers: [], skipped: b };
  }
  const common = names.filter((n) => a.present.has(n) && b.present.has(n));
  const sums = new Map(common.map((n) => [n, new CosineSum()]));
  try {
    for (const ids of texts) {
      const [ra, rb] = [await a.session.run(encoderFeeds([ids], 0, a.session.inputNames), common), await b.session.run(encoderFeeds([ids], 0, b.session.inputNames), common)];
      for (const n of common) sums.get(n)!.add(ra[n]!.data as Float32Array, rb[n]!.data as Float32Array);
    }
  } finally {
    await a.session.release();
    await b.session.release();
  }
  const layers: LayerDrift[] = [];
  for (const w of watched) {
    const out = sums.get(w.output);
    if (!out) continue;
    const inputCosine = Math.min(1, ...w.inputs.map((n) => sums.get(n)?.cosine ?? 1));
    const outputCosine = out.cosine;
    layers.push({ node: w.t.node, layer: w.t.layer, kind: w.t.kind, outputCosine, inputCosine, added: Math.max(0, 1 - outputCosine / inputCosine), quantized: !b.inFloat.has(w.t.node) });
  }
  return { texts: texts.length, layers };
}
