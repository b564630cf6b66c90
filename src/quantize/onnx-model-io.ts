import { open, readFile } from "node:fs/promises";
import { dirname, isAbsolute, join, normalize, sep } from "node:path";
import { BYTES_PER_ELEMENT, GraphBuilder, float, int, ints, str, type AttrValue, type InitializerSpec } from "../onnx/graph-builder.js";
import { AttrType, ModelProto, OnnxType, type OnnxTypeCode } from "../onnx/proto.js";
import { writeOnnxModel, type WrittenModel } from "../onnx/write-model.js";

/**
 * Reading an ONNX model that bge exported (or one shaped like it) into a GraphBuilder that the
 * quantisers rewrite, and writing the result back through bge's own streaming writer — so that the
 * quantised graphs get the same atomic writes and external-data handling as the export.
 */

export interface TensorLike {
  name?: string;
  dims?: number[];
  dataType?: number;
  rawData?: Uint8Array;
  floatData?: number[];
  int32Data?: number[];
  int64Data?: number[];
  doubleData?: number[];
  externalData?: { key?: string; value?: string }[];
  dataLocation?: number;
}

interface AttributeLike {
  name?: string;
  type?: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  ints?: number[];
}

export interface NodeLike {
  name?: string;
  opType?: string;
  domain?: string;
  input?: string[];
  output?: string[];
  attribute?: AttributeLike[];
}

interface ValueInfoLike {
  name?: string;
  type?: { tensorType?: { elemType?: number; shape?: { dim?: { dimValue?: number; dimParam?: string }[] } } };
}

export interface GraphLike {
  name?: string;
  node?: NodeLike[];
  initializer?: TensorLike[];
  input?: ValueInfoLike[];
  output?: ValueInfoLike[];
}

export interface ModelLike {
  irVersion?: number;
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  opsetImport?: { domain?: string; version?: number }[];
  metadataProps?: { key?: string; value?: string }[];
  graph?: GraphLike;
}

export interface OnnxModelFile {
  path: string;
  model: ModelLike;
  graph: Required<Pick<GraphLike, "node" | "initializer" | "input" | "output">> & { name: string };
  /** The default-domain opset. */
  opset: number;
  /** Whether any initializer lives in an external data file. */
  externalData: boolean;
  metadata: Record<string, string>;
  /** An initializer's bytes (little-endian, element order), wherever the model keeps them. */
  tensorBytes(t: TensorLike): Promise<Uint8Array>;
  /** A float32 initializer's values. */
  floats(t: TensorLike): Promise<Float32Array>;
}

/**
 * Decodes a model. Inline initializers stay views into the file's bytes; external ones are read,
 * one tensor at a time, only when asked for (a 2 GB bge-m3 `.onnx.data` is never held whole).
 */
export async function readOnnxModel(path: string): Promise<OnnxModelFile> {
  const bytes = await readFile(path);
  const model = ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, arrays: true }) as ModelLike;
  const g = model.graph;
  if (!g) throw new Error(`${path}: no graph in this ONNX model`);
  const graph = { name: g.name ?? "graph", node: g.node ?? [], initializer: g.initializer ?? [], input: g.input ?? [], output: g.output ?? [] };
  const opset = model.opsetImport?.find((o) => !o.domain || o.domain === "ai.onnx")?.version;
  if (opset === undefined) throw new Error(`${path}: no default-domain opset import`);
  const metadata = Object.fromEntries((model.metadataProps ?? []).map((p) => [p.key ?? "", p.value ?? ""]));
  const dir = dirname(path);

  const tensorBytes = async (t: TensorLike): Promise<Uint8Array> => {
    const n = elementCount(t.dims ?? []);
    if (t.dataLocation === 1) return readExternal(dir, t, n);
    if (t.rawData && (t.rawData.length > 0 || n === 0)) return t.rawData;
    return typedFieldBytes(t, n);
  };
  const floats = async (t: TensorLike): Promise<Float32Array> => {
    if (t.dataType !== OnnxType.FLOAT) throw new Error(`initializer ${t.name}: expected float32, found ONNX type ${t.dataType}`);
    const b = await tensorBytes(t);
    // Copy when unaligned: a view into the file's bytes may start at any offset.
    return b.byteOffset % 4 === 0 ? new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4) : new Float32Array(new Uint8Array(b).buffer); // (Buffer.slice would be a view)
  };
  return { path, model, graph, opset, externalData: graph.initializer.some((t) => t.dataLocation === 1), metadata, tensorBytes, floats };
}

export function elementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

async function readExternal(dir: string, t: TensorLike, n: number): Promise<Uint8Array> {
  const entry = (key: string) => t.externalData?.find((e) => e.key === key)?.value;
  const location = entry("location");
  if (!location) throw new Error(`initializer ${t.name}: external data without a location`);
  // The ONNX spec resolves locations relative to the model's folder and forbids leaving it.
  const file = normalize(join(dir, location));
  if (isAbsolute(location) || !(file + sep).startsWith(normalize(dir) + sep)) throw new Error(`initializer ${t.name}: external data location ${location} leaves the model's folder`);
  const per = BYTES_PER_ELEMENT[t.dataType as OnnxTypeCode];
  if (!per) throw new Error(`initializer ${t.name}: no element size for ONNX type ${t.dataType}`);
  const offset = Number(entry("offset") ?? 0);
  const length = Number(entry("length") ?? n * per);
  if (length !== n * per) throw new Error(`initializer ${t.name}: external length ${length} does not match its shape (${n * per} bytes)`);
  const fh = await open(file, "r");
  try {
    const out = new Uint8Array(length);
    const { bytesRead } = await fh.read(out, 0, length, offset);
    if (bytesRead !== length) throw new Error(`initializer ${t.name}: ${location} ends before offset ${offset} + ${length}`);
    return out;
  } finally {
    await fh.close();
  }
}

/** Initializers written with the typed repeated fields instead of raw_data (models made elsewhere). */
function typedFieldBytes(t: TensorLike, n: number): Uint8Array {
  const as = (arr: ArrayBufferView) => new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  switch (t.dataType) {
    case OnnxType.FLOAT:
      if (t.floatData?.length === n) return as(Float32Array.from(t.floatData));
      break;
    case OnnxType.DOUBLE:
      if (t.doubleData?.length === n) return as(Float64Array.from(t.doubleData));
      break;
    case OnnxType.INT64:
      if (t.int64Data?.length === n) return as(BigInt64Array.from(t.int64Data.map(BigInt)));
      break;
    case OnnxType.INT32:
      if (t.int32Data?.length === n) return as(Int32Array.from(t.int32Data));
      break;
    case OnnxType.INT8:
      if (t.int32Data?.length === n) return as(Int8Array.from(t.int32Data));
      break;
    case OnnxType.UINT8:
    case OnnxType.BOOL:
      if (t.int32Data?.length === n) return Uint8Array.from(t.int32Data);
      break;
    case OnnxType.FLOAT16:
    case OnnxType.BFLOAT16:
      // int32_data holds the 16-bit patterns, one per element.
      if (t.int32Data?.length === n) return as(Uint16Array.from(t.int32Data));
      break;
  }
  throw new Error(`initializer ${t.name}: no data for ${n} elements of ONNX type ${t.dataType}`);
}

/** An attribute of a decoded node in the graph builder's form (the kinds bge's graphs use). */
export function attrValue(a: AttributeLike, where: string): AttrValue {
  const type = a.type ?? (a.ints?.length ? AttrType.INTS : a.s?.length ? AttrType.STRING : a.f !== undefined ? AttrType.FLOAT : AttrType.INT);
  switch (type) {
    case AttrType.INT:
      return int(a.i ?? 0);
    case AttrType.FLOAT:
      return float(a.f ?? 0);
    case AttrType.INTS:
      return ints(a.ints ?? []);
    case AttrType.STRING:
      return str(Buffer.from(a.s ?? new Uint8Array()).toString("utf8"));
  }
  throw new Error(`${where}: attribute ${a.name} of type ${type} is not supported by the quantiser (bge's graphs use int, float, ints and string attributes)`);
}

export function nodeAttributes(n: NodeLike): Record<string, AttrValue> {
  return Object.fromEntries((n.attribute ?? []).map((a) => [a.name ?? "", attrValue(a, n.name ?? n.opType ?? "node")]));
}

/** A copy of a decoded initializer whose bytes are produced when the model is written. */
export function copyInitializer(file: OnnxModelFile, t: TensorLike): InitializerSpec {
  return { name: t.name ?? "", dataType: t.dataType as OnnxTypeCode, dims: t.dims ?? [], data: () => file.tensorBytes(t) };
}

function valueDims(v: ValueInfoLike): (number | string)[] {
  return (v.type?.tensorType?.shape?.dim ?? []).map((d, i) => (d.dimParam ? d.dimParam : d.dimValue !== undefined ? d.dimValue : `${v.name}_dim${i}`));
}

/** Starts the rewritten graph: the model's inputs, same names, types and dimensions. */
export function graphWithInputs(file: OnnxModelFile): GraphBuilder {
  const g = new GraphBuilder(file.graph.name);
  const initNames = new Set(file.graph.initializer.map((t) => t.name));
  for (const v of file.graph.input) {
    // IR < 4 lists initializers among the inputs; they are not runtime inputs.
    if (initNames.has(v.name)) continue;
    g.input(v.name ?? "", (v.type?.tensorType?.elemType ?? OnnxType.FLOAT) as OnnxTypeCode, valueDims(v));
  }
  return g;
}

/** Ends the rewritten graph: the model's outputs, unchanged, so runners see the same interface. */
export function addOutputs(g: GraphBuilder, file: OnnxModelFile): void {
  for (const v of file.graph.output) g.output(v.name ?? "", (v.type?.tensorType?.elemType ?? OnnxType.FLOAT) as OnnxTypeCode, valueDims(v));
}

/** Copies a decoded node into the builder, inputs renamed where `inputs` says. */
export function copyNode(g: GraphBuilder, n: NodeLike, inputs: string[] = n.input ?? []): void {
  g.node(n.opType ?? "", n.name ?? "", inputs, nodeAttributes(n), n.output ?? []);
  if (n.domain) g.nodes.at(-1)!.domain = n.domain;
}

export interface RewrittenModelOptions {
  /** Stored as the `precision` metadata entry (what the graph now computes in). */
  precision: string;
  /** Stored as the `quantization` metadata entry (JSON). */
  quantization: Record<string, unknown>;
  docSuffix: string;
}

/**
 * Writes the rewritten graph with the source's opset, producer and metadata (model_id, pooling,
 * normalize: the runners check them against the manifest) plus `quantization`. External data
 * follows the source: a model whose weights were beside it in `.data` gets its own `<out>.data`.
 */
export async function writeRewrittenModel(file: OnnxModelFile, outPath: string, g: GraphBuilder, options: RewrittenModelOptions): Promise<WrittenModel> {
  const others = (file.model.opsetImport ?? []).filter((o) => o.domain && o.domain !== "ai.onnx");
  if (others.length) throw new Error(`${file.path}: opset domains ${others.map((o) => o.domain).join(", ")} are not supported by the quantiser`);
  return writeOnnxModel(outPath, g, {
    opset: file.opset,
    producerName: file.model.producerName || "bge",
    producerVersion: file.model.producerVersion ?? "",
    docString: `${file.model.docString ?? ""}${options.docSuffix}`.trim(),
    metadata: { ...file.metadata, precision: options.precision, quantization: JSON.stringify(options.quantization) },
    externalData: file.externalData ? true : "auto",
  });
}

/**
 * Drops what a rewrite left unread: nodes none of whose outputs reach a graph output (repeatedly,
 * so whole dead chains go) and initializers no remaining node reads. Initializer bytes are lazy, so
 * a dropped weight is never read from the source.
 */
export function pruneUnused(g: GraphBuilder): void {
  const needed = new Set(g.outputs.map((o) => o.name));
  const keep = new Set<number>();
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i]!;
    if (!n.outputs.some((o) => needed.has(o))) continue;
    keep.add(i);
    for (const x of n.inputs) if (x) needed.add(x);
  }
  const nodes = g.nodes.filter((_, i) => keep.has(i));
  g.nodes.splice(0, g.nodes.length, ...nodes);
  const initializers = g.initializers.filter((t) => needed.has(t.name));
  g.initializers.splice(0, g.initializers.length, ...initializers);
}
