import { AttrType, OnnxType, type OnnxTypeCode } from "./proto.js";

export type AttrValue =
  | { kind: "int"; value: number }
  | { kind: "float"; value: number }
  | { kind: "ints"; value: number[] }
  | { kind: "string"; value: string };

export const int = (value: number): AttrValue => ({ kind: "int", value });
export const float = (value: number): AttrValue => ({ kind: "float", value });
export const ints = (value: number[]): AttrValue => ({ kind: "ints", value });
export const str = (value: string): AttrValue => ({ kind: "string", value });

export interface NodeSpec {
  name: string;
  opType: string;
  inputs: string[];
  outputs: string[];
  attributes: Record<string, AttrValue>;
  domain?: string;
}

export interface InitializerSpec {
  name: string;
  dataType: OnnxTypeCode;
  dims: number[];
  /**
   * Bytes in little-endian element order, whole or as consecutive chunks (each valid until the
   * iterator has been advanced twice, so that chunks can live in reused buffers); called once, when
   * the model is written (so weights stream).
   */
  data: () => Uint8Array | Promise<Uint8Array> | AsyncIterable<Uint8Array>;
}

export interface ValueSpec {
  name: string;
  dataType: OnnxTypeCode;
  /** Numbers are fixed sizes, strings are symbolic (dynamic) dimensions. */
  dims: (number | string)[];
}

export const BYTES_PER_ELEMENT: Partial<Record<OnnxTypeCode, number>> = {
  [OnnxType.FLOAT]: 4,
  [OnnxType.FLOAT16]: 2,
  [OnnxType.INT64]: 8,
  [OnnxType.INT32]: 4,
  [OnnxType.INT8]: 1,
  [OnnxType.UINT8]: 1,
  [OnnxType.DOUBLE]: 8,
  [OnnxType.BOOL]: 1,
};

/**
 * Collects an ONNX graph: nodes named by where they sit in the model (`/encoder/layer.3/attention/...`,
 * as PyTorch's exporter names them, so that per-layer precision pinning and debugging can address
 * them), initializers whose bytes are produced lazily, and typed graph inputs and outputs.
 */
export class GraphBuilder {
  readonly nodes: NodeSpec[] = [];
  readonly initializers: InitializerSpec[] = [];
  readonly inputs: ValueSpec[] = [];
  readonly outputs: ValueSpec[] = [];
  private readonly names = new Set<string>();

  constructor(readonly name: string) {}

  input(name: string, dataType: OnnxTypeCode, dims: (number | string)[]): string {
    this.claim(name);
    this.inputs.push({ name, dataType, dims });
    return name;
  }

  output(name: string, dataType: OnnxTypeCode, dims: (number | string)[]): void {
    this.outputs.push({ name, dataType, dims });
  }

  initializer(name: string, dataType: OnnxTypeCode, dims: number[], data: InitializerSpec["data"]): string {
    this.claim(name);
    this.initializers.push({ name, dataType, dims, data });
    return name;
  }

  /** Small constants (shapes, scalars) as initializers with their bytes at hand. */
  constInt64(name: string, values: number[], dims: number[] = [values.length]): string {
    const bytes = new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer);
    return this.initializer(name, OnnxType.INT64, dims, () => bytes);
  }

  constFloat(name: string, values: number[], dims: number[] = [values.length]): string {
    const bytes = new Uint8Array(Float32Array.from(values).buffer);
    return this.initializer(name, OnnxType.FLOAT, dims, () => bytes);
  }

  /**
   * Adds a node named `name` (its path in the model) and returns its output names,
   * `${name}_output_${k}` unless given.
   */
  node(opType: string, name: string, inputs: string[], attributes: Record<string, AttrValue> = {}, outputs: number | string[] = 1): string[] {
    const outs = typeof outputs === "number" ? Array.from({ length: outputs }, (_, k) => `${name}_output_${k}`) : outputs;
    if (this.nodes.some((n) => n.name === name)) throw new Error(`duplicate node name ${name}`);
    for (const o of outs) this.claim(o);
    this.nodes.push({ name, opType, inputs, outputs: outs, attributes });
    return outs;
  }

  /** Single-output convenience. */
  op(opType: string, name: string, inputs: string[], attributes: Record<string, AttrValue> = {}): string {
    return this.node(opType, name, inputs, attributes, 1)[0]!;
  }

  private claim(name: string): void {
    if (this.names.has(name)) throw new Error(`duplicate value name ${name}`);
    this.names.add(name);
  }
}

export function encodeAttribute(name: string, a: AttrValue): Record<string, unknown> {
  switch (a.kind) {
    case "int":
      return { name, type: AttrType.INT, i: a.value };
    case "float":
      return { name, type: AttrType.FLOAT, f: a.value };
    case "ints":
      return { name, type: AttrType.INTS, ints: a.value };
    case "string":
      return { name, type: AttrType.STRING, s: Buffer.from(a.value, "utf8") };
  }
}
