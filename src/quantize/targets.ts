/**
 * What INT8 quantises in a BERT/XLM-R encoder graph written by `bge export` (NVIDIA's QDQBERT
 * placement): the activation input and the weight of every linear layer (a Gemm with transB=1 on a
 * weight stored [out, in]), and both inputs of the two attention MatMuls (Q·Kᵀ and P·V). LayerNorm,
 * Softmax, GELU, residual adds, pooling and normalisation stay in float.
 */
export interface QuantTarget {
  /** The node that consumes the quantised tensors, e.g. `/encoder/layer.0/attention/self/query/Gemm`. */
  node: string;
  kind: "linear" | "attention-scores" | "attention-context";
  /** Encoder layer index, from the node name. */
  layer: number;
  /** Activation tensors feeding the node, in input order (per-tensor scales from calibration). */
  activations: string[];
  /** Linear layers: the weight initializer ([out, in]; per-output-channel scales along axis 0). */
  weight?: string;
}

interface NodeLike {
  name?: string;
  opType?: string;
  input?: string[];
}

interface GraphLike {
  node?: NodeLike[];
  initializer?: { name?: string }[];
}

const LAYER = /\/encoder\/layer\.(\d+)\//;
const ATTENTION_MATMUL = /\/attention\/self\/MatMul(_1)?$/;

export function findQuantTargets(graph: GraphLike): QuantTarget[] {
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  const targets: QuantTarget[] = [];
  for (const n of graph.node ?? []) {
    const name = n.name ?? "";
    const layer = LAYER.exec(name);
    if (!layer) continue;
    const inputs = n.input ?? [];
    if (n.opType === "Gemm" && inputs[1] && initializers.has(inputs[1])) {
      targets.push({ node: name, kind: "linear", layer: Number(layer[1]), activations: [inputs[0]!], weight: inputs[1] });
    } else if (n.opType === "MatMul" && ATTENTION_MATMUL.test(name)) {
      const context = name.endsWith("_1");
      targets.push({ node: name, kind: context ? "attention-context" : "attention-scores", layer: Number(layer[1]), activations: [inputs[0]!, inputs[1]!] });
    }
  }
  return targets;
}

/** Every activation tensor to calibrate, once each (the three Q/K/V Gemms share their input). */
export function calibrationTensors(targets: readonly QuantTarget[]): string[] {
  return [...new Set(targets.flatMap((t) => t.activations))];
}
