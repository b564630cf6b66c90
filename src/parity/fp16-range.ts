import { readFile } from "node:fs/promises";
import { ort } from "../runners/ort.js";
import { ModelProto, OnnxType } from "../onnx/proto.js";

export interface Fp16RangeResult {
  /** FP16 tensors inside the graph whose values were checked. */
  probed: number;
  /** Texts run through the probe. */
  texts: number;
  /** Tensors that do not fit FP16 (|x| > 65504 becomes ±inf) on at least one text, worst first. */
  overflowing: { tensor: string; texts: number }[];
  /** Why the probe could not run, when it did not. */
  skipped?: string;
}

interface NodeLike {
  opType?: string;
  input?: string[];
  output?: string[];
  attribute?: { name?: string; i?: number | { toNumber(): number }; t?: { dataType?: number } }[];
}

/**
 * Operators whose output cannot leave the range of their FP16 input (data movement) or is bounded
 * by construction (Erf, Softmax, Sigmoid, Tanh): their outputs need no probe, their inputs have one.
 */
const RANGE_PRESERVING = new Set(["Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Slice", "Gather", "Split", "Expand", "Erf", "Softmax", "Sigmoid", "Tanh", "Relu"]);
/** Outputs within [-1, 1], and casts or moves of them (Softmax probabilities cast back to FP16). */
const BOUNDED = new Set(["Erf", "Softmax", "Sigmoid", "Tanh"]);
const MOVES = new Set(["Cast", "Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather"]);

const BOOL_OPS = new Set(["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"]);
const INT64_OPS = new Set(["Shape", "Size", "NonZero", "ArgMax", "ArgMin"]);

function num(v: number | { toNumber(): number } | undefined): number | undefined {
  return v === undefined ? undefined : typeof v === "number" ? v : v.toNumber();
}

/**
 * The element type of every tensor a graph computes, by ONNX's typing rules for the operators
 * encoder graphs use (casts, comparisons, shape ops; otherwise the type of the first typed input).
 */
export function inferElementTypes(graph: { input?: { name?: string; type?: { tensorType?: { elemType?: number } } }[]; initializer?: { name?: string; dataType?: number }[]; node?: NodeLike[] }): Map<string, number> {
  const types = new Map<string, number>();
  for (const i of graph.input ?? []) if (i.name && i.type?.tensorType?.elemType) types.set(i.name, i.type.tensorType.elemType);
  for (const t of graph.initializer ?? []) if (t.name && t.dataType) types.set(t.name, t.dataType);
  for (const n of graph.node ?? []) {
    const out = n.output?.[0];
    if (!out) continue;
    const attr = (name: string) => n.attribute?.find((a) => a.name === name);
    let t: number | undefined;
    if (n.opType === "Cast") t = num(attr("to")?.i);
    else if (n.opType === "Constant" || n.opType === "ConstantOfShape") t = attr("value")?.t?.dataType ?? (n.opType === "ConstantOfShape" ? OnnxType.FLOAT : undefined);
    else if (BOOL_OPS.has(n.opType ?? "")) t = OnnxType.BOOL;
    else if (INT64_OPS.has(n.opType ?? "")) t = OnnxType.INT64;
    else if (n.opType === "Where") t = types.get(n.input?.[1] ?? "");
    else t = (n.input ?? []).map((x) => types.get(x)).find((x) => x !== undefined);
    if (t !== undefined) types.set(out, t);
  }
  return types;
}

interface ModelLike {
  opsetImport?: { domain?: string; version?: number | { toNumber(): number } }[];
  graph: {
    input?: [];
    output: { name: string }[];
    initializer?: { name?: string; dataType?: number; dataLocation?: number; dims?: number[]; rawData?: Uint8Array }[];
    node?: (NodeLike & { name?: string; attribute?: unknown[] })[];
  };
}

/**
 * Adds, per probed tensor t, `ReduceMax(Abs(Flatten(t)), axis 1)` as an FP16 graph output: one value
 * per leading row instead of the whole tensor. ORT computes the chain in FP32 and casts the result
 * to FP16 at the output, so a row whose largest |value| passes 65504 still comes back as inf — and
 * ONNX Runtime, not JavaScript, does the scanning.
 */
function withReducedProbes(model: ModelLike, probes: string[]): { outputs: string[] } {
  const opset = num(model.opsetImport?.find((o) => !o.domain || o.domain === "ai.onnx")?.version) ?? 17;
  const outputs: string[] = [];
  const nodes = model.graph.node ?? (model.graph.node = []);
  const axesName = "bge_probe/axes";
  if (opset >= 18) model.graph.initializer = [...(model.graph.initializer ?? []), { name: axesName, dataType: OnnxType.INT64, dims: [1], rawData: new Uint8Array(new BigInt64Array([1n]).buffer) }];
  probes.forEach((t, k) => {
    const flat = `bge_probe/${k}/flat`;
    const abs = `bge_probe/${k}/abs`;
    const max = `bge_probe/${k}/max`;
    nodes.push({ name: `bge_probe/${k}/Flatten`, opType: "Flatten", input: [t], output: [flat], attribute: [{ name: "axis", type: 2, i: 1 }] });
    nodes.push({ name: `bge_probe/${k}/Abs`, opType: "Abs", input: [flat], output: [abs] });
    nodes.push(
      opset >= 18
        ? { name: `bge_probe/${k}/ReduceMax`, opType: "ReduceMax", input: [abs, axesName], output: [max], attribute: [{ name: "keepdims", type: 2, i: 0 }] }
        : { name: `bge_probe/${k}/ReduceMax`, opType: "ReduceMax", input: [abs], output: [max], attribute: [{ name: "axes", type: 7, ints: [1] }, { name: "keepdims", type: 2, i: 0 }] },
    );
    outputs.push(max);
  });
  return { outputs };
}

/**
 * ONNX Runtime's CPU provider computes FP16 graphs in FP32 (it inserts and then folds Casts), so an
 * FP16 model that overflows on a GPU can look perfect on CPU. This probe makes every FP16 tensor
 * inside the graph (reduced to its largest |value| per row) a graph output — ORT must then hand it
 * over as FP16, where values beyond 65504 become ±inf — runs the texts, and reports the tensors that
 * do not fit: what TensorRT or CUDA would overflow on.
 */
export async function probeFp16Range(
  modelPath: string,
  feeds: AsyncIterable<Record<string, ort.Tensor>> | Iterable<Record<string, ort.Tensor>>,
): Promise<Fp16RangeResult> {
  const bytes = await readFile(modelPath);
  const decoded = () => ModelProto.decode(bytes) as unknown as ModelLike;
  let model = decoded();
  if (model.graph.initializer?.some((t) => t.dataLocation === 1)) return { probed: 0, texts: 0, overflowing: [], skipped: "the model keeps its weights in external data" };
  const types = inferElementTypes(model.graph as never);
  const existing = new Set(model.graph.output.map((o) => o.name));
  const initializers = new Set((model.graph.initializer ?? []).map((t) => t.name));
  const safe = new Set((model.graph.node ?? []).filter((n) => RANGE_PRESERVING.has(n.opType ?? "")).flatMap((n) => n.output ?? []));
  const bounded = new Set<string>();
  for (const n of model.graph.node ?? []) {
    const op = n.opType ?? "";
    if (BOUNDED.has(op) || (MOVES.has(op) && bounded.has(n.input?.[0] ?? ""))) for (const o of n.output ?? []) bounded.add(o);
  }
  for (const b of bounded) safe.add(b);
  const probes = [...types].filter(([name, t]) => t === OnnxType.FLOAT16 && !existing.has(name) && !initializers.has(name) && !safe.has(name)).map(([name]) => name);
  if (!probes.length) return { probed: 0, texts: 0, overflowing: [] };

  const open = async (outputs: string[]) => {
    const graph = model.graph as unknown as { output: unknown[] };
    graph.output = [...model.graph.output, ...outputs.map((name) => ({ name, type: { tensorType: { elemType: OnnxType.FLOAT16 } } }))];
    return ort.InferenceSession.create(ModelProto.encode(ModelProto.fromObject(model as never)).finish(), { graphOptimizationLevel: "disabled" });
  };
  let fetch = withReducedProbes(model, probes).outputs;
  let session: ort.InferenceSession;
  try {
    session = await open(fetch);
  } catch {
    // A graph the reduction does not fit (e.g. a scalar FP16 tensor): fetch the tensors whole.
    model = decoded();
    fetch = probes;
    session = await open(fetch);
  }
  const counts = new Map<string, number>();
  let texts = 0;
  try {
    for await (const feed of feeds) {
      const out = await session.run(feed, fetch);
      const batch = Number(feed.input_ids?.dims[0] ?? 1);
      texts += batch;
      fetch.forEach((outName, k) => {
        const name = probes[k]!;
        const t = out[outName]!;
        const data = t.data as Uint16Array;
        // Two halves per 32-bit word: 4 bytes per step instead of 2.
        const words = data.byteOffset % 4 === 0 ? new Uint32Array(data.buffer, data.byteOffset, data.length >> 1) : undefined;
        // FP16 ±inf and NaN have all exponent bits set. A leading axis of batch or batch·sequence
        // (bge's flat [B·S, H] activations) is laid out text by text, so texts are counted apart.
        const split = batch > 0 && Number(t.dims[0]) % batch === 0 ? batch : 1;
        const perText = data.length / split;
        for (let b = 0; b < split; b++) {
          if (textOverflows(data, words, b * perText, (b + 1) * perText)) counts.set(name, (counts.get(name) ?? 0) + 1);
        }
      });
    }
  } finally {
    await session.release();
  }
  const overflowing = [...counts].map(([tensor, texts]) => ({ tensor, texts })).sort((a, b) => b.texts - a.texts);
  return { probed: probes.length, texts, overflowing };
}

/**
 * Whether FP16 values [from, to) hold an inf or NaN (all exponent bits set). Two halves per 32-bit
 * word, branch-free: adding 0x0400 to an exponent field of 0x7c00 (all ones) carries into the half's
 * top bit, and only then; the low half's carry cannot reach the high half.
 */
export function textOverflows(data: Uint16Array, words: Uint32Array | undefined, from: number, to: number): boolean {
  let i = from;
  let acc = 0;
  if (words && from % 2 === 0) {
    const end = to >> 1;
    for (let w = from >> 1; w < end; w++) acc |= (words[w]! & 0x7c007c00) + 0x04000400;
    i = end << 1;
  }
  for (; i < to; i++) acc |= (data[i]! & 0x7c00) + 0x0400;
  return (acc & 0x80008000) !== 0;
}
