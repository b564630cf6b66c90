import { open, type FileHandle } from "node:fs/promises";
import { UsageError } from "../errors.js";
import { assertInputFile } from "../util/io-paths.js";
import { DTYPE_BYTES, elementCount, type DType, type TensorInfo, type TensorSource } from "./tensor.js";

/** A header larger than this is not a BGE checkpoint (bge-m3's has ~400 entries, a few tens of KB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

interface Entry extends TensorInfo {
  /** Absolute byte offset of the tensor's data in the file. */
  start: number;
  length: number;
}

/**
 * Opens a .safetensors file and validates its header without reading any tensor data: every
 * offset and length is checked against the file size and the tensor's dtype × shape, and tensors may
 * not overlap. Tensor bytes are read on demand, one tensor at a time.
 */
export async function readSafetensors(path: string): Promise<TensorSource> {
  let handle: FileHandle;
  await assertInputFile(path, "safetensors file");
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw new UsageError(`${path}: cannot open safetensors file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  try {
    const entries = await readHeader(handle, path);
    return new SafetensorsSource(path, handle, entries);
  } catch (err) {
    await handle.close();
    throw err;
  }
}

async function readHeader(handle: FileHandle, path: string): Promise<Map<string, Entry>> {
  const { size } = await handle.stat();
  const bad = (why: string) => new UsageError(`${path}: corrupt safetensors file: ${why}`);
  if (size < 8) throw bad(`file is ${size} bytes, shorter than the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  await handle.read(lenBuf, 0, 8, 0);
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(Math.min(size - 8, MAX_HEADER_BYTES))) {
    throw bad(`header length ${headerLen} exceeds the file (${size} bytes)`);
  }
  const n = Number(headerLen);
  const headerBuf = Buffer.alloc(n);
  await handle.read(headerBuf, 0, n, 8);
  let header: unknown;
  try {
    header = JSON.parse(headerBuf.toString("utf8"));
  } catch {
    throw bad("header is not valid JSON");
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) throw bad("header is not a JSON object");
  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  const entries = new Map<string, Entry>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") continue;
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t !== "object" || t === null) throw bad(`entry ${name} is not an object`);
    if (typeof t.dtype !== "string" || !(t.dtype in DTYPE_BYTES)) throw bad(`tensor ${name} has unsupported dtype ${String(t.dtype)}`);
    const dtype = t.dtype as DType;
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(`tensor ${name} has an invalid shape`);
    }
    const shape = t.shape as number[];
    const offs = t.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw bad(`tensor ${name} has invalid data_offsets`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end || end > dataSize) {
      throw bad(`tensor ${name} data_offsets [${begin}, ${end}] fall outside the ${dataSize}-byte data section`);
    }
    const expected = elementCount(shape) * DTYPE_BYTES[dtype];
    if (end - begin !== expected) {
      throw bad(`tensor ${name} spans ${end - begin} bytes but ${dtype}${JSON.stringify(shape)} needs ${expected}`);
    }
    entries.set(name, { name, dtype, shape, start: dataStart + begin, length: expected });
  }
  const sorted = [...entries.values()].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (sorted[i]!.start < prev.start + prev.length) throw bad(`tensors ${prev.name} and ${sorted[i]!.name} overlap`);
  }
  return entries;
}

class SafetensorsSource implements TensorSource {
  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly entries: Map<string, Entry>,
  ) {}

  list(): TensorInfo[] {
    return [...this.entries.values()].map(({ name, dtype, shape }) => ({ name, dtype, shape }));
  }

  async readBytes(name: string): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) throw new UsageError(`${this.path}: no tensor named ${name}`);
    // 8-byte aligned storage so that typed-array views of any dtype work on the result.
    const out = new Uint8Array(new ArrayBuffer(Math.ceil(e.length / 8) * 8), 0, e.length);
    let done = 0;
    while (done < e.length) {
      const { bytesRead } = await this.handle.read(out, done, Math.min(e.length - done, 1 << 30), e.start + done);
      if (bytesRead === 0) throw new UsageError(`${this.path}: file ended inside tensor ${name}`);
      done += bytesRead;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
