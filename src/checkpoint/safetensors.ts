import { open, type FileHandle } from "node:fs/promises";
import { UsageError } from "../errors.js";
import { assertInputFile } from "../util/io-paths.js";
import { StreamDigest } from "../util/hash-worker.js";
import { ChunkScratch, DTYPE_BYTES, elementCount, type DType, type TensorInfo, type TensorSource } from "./tensor.js";

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
    return new SafetensorsSource(path, handle, entries, (await handle.stat()).size);
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

/** Hashing the file while it is read: `at` is how far it has been hashed, in order. */
interface Tap {
  digest: StreamDigest;
  /** For the bytes between tensors (the header, tensors nobody reads, the tail). */
  scratch: ChunkScratch;
  at: number;
  broken: boolean;
  /** Per scratch buffer, the hashing of the chunk it last held: awaited before the buffer is filled again. */
  pending: Map<ArrayBufferLike, Promise<void>>;
}

class SafetensorsSource implements TensorSource {
  private tap: Tap | undefined;
  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly entries: Map<string, Entry>,
    private readonly size: number,
  ) {}

  position(name: string): number | undefined {
    return this.entries.get(name)?.start;
  }

  startDigest(): boolean {
    void this.tap?.digest.close();
    this.tap = { digest: new StreamDigest(), scratch: new ChunkScratch(4 << 20), at: 0, broken: false, pending: new Map() };
    return true;
  }

  async finishDigest(): Promise<string | undefined> {
    const tap = this.tap;
    this.tap = undefined;
    if (!tap) return undefined;
    try {
      if (tap.broken) return undefined;
      await this.hashThrough(tap, this.size);
      await Promise.all(tap.pending.values());
      return await tap.digest.digest();
    } finally {
      await tap.digest.close();
    }
  }

  /** A scratch buffer to read into, once the hashing of what it held before is done. */
  private async fresh(scratch: ChunkScratch, bytes: number): Promise<Uint8Array> {
    const chunk = scratch.next(bytes);
    const tap = this.tap;
    if (tap) {
      await tap.pending.get(chunk.buffer);
      tap.pending.delete(chunk.buffer);
    }
    return chunk;
  }

  private hashChunk(tap: Tap, chunk: Uint8Array): void {
    const done = tap.digest.update(chunk);
    done.catch(() => undefined); // surfaces at finishDigest
    tap.pending.set(chunk.buffer, done);
    tap.at += chunk.byteLength;
  }

  /** Reads and hashes the bytes no tensor read covered, up to `end`. */
  private async hashThrough(tap: Tap, end: number): Promise<void> {
    const step = tap.scratch.chunkBytes;
    while (tap.at < end) {
      const chunk = await this.fresh(tap.scratch, Math.min(step, end - tap.at));
      await this.readAt(chunk, tap.at, "(between tensors)");
      this.hashChunk(tap, chunk);
    }
  }

  list(): TensorInfo[] {
    return [...this.entries.values()].map(({ name, dtype, shape }) => ({ name, dtype, shape }));
  }

  async readBytes(name: string): Promise<Uint8Array> {
    const e = this.entry(name);
    // 8-byte aligned storage so that typed-array views of any dtype work on the result.
    const out = new Uint8Array(new ArrayBuffer(Math.ceil(e.length / 8) * 8), 0, e.length);
    await this.readAt(out, e.start, name);
    return out;
  }

  async *readChunks(name: string, scratch: ChunkScratch): AsyncGenerator<Uint8Array> {
    const e = this.entry(name);
    let tap = this.tap && !this.tap.broken ? this.tap : undefined;
    if (tap && e.start < tap.at) {
      // Read out of file order (a tensor again, or an earlier one): the one-pass hash is off.
      tap.broken = true;
      tap = undefined;
    }
    if (tap) await this.hashThrough(tap, e.start);
    const step = scratch.chunkFor(DTYPE_BYTES[e.dtype]);
    for (let at = 0; at < e.length; at += step) {
      const chunk = await this.fresh(scratch, Math.min(step, e.length - at));
      await this.readAt(chunk, e.start + at, name);
      if (tap) this.hashChunk(tap, chunk);
      yield chunk;
    }
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new UsageError(`${this.path}: no tensor named ${name}`);
    return e;
  }

  /** Fills `out` from `position` on; a file that ends early (truncated after the header was read) is refused. */
  private async readAt(out: Uint8Array, position: number, name: string): Promise<void> {
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await this.handle.read(out, done, Math.min(out.length - done, 1 << 30), position + done);
      if (bytesRead === 0) throw new UsageError(`${this.path}: file ended inside tensor ${name}`);
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    await this.tap?.digest.close();
    this.tap = undefined;
    await this.handle.close();
  }
}
