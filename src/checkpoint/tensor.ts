/** Element types that BGE checkpoints use (safetensors names; torch storages map onto them). */
export type DType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export interface TensorInfo {
  /** Name as stored in the file (before prefix normalisation). */
  name: string;
  dtype: DType;
  shape: number[];
}

/**
 * A checkpoint's tensors, read one at a time so that a reader never holds more than one tensor's
 * bytes beyond what the caller keeps.
 */
export interface TensorSource {
  /** The file or index the tensors come from (for messages). */
  readonly path: string;
  list(): TensorInfo[];
  /** The tensor's raw little-endian bytes, exactly as stored. */
  readBytes(name: string): Promise<Uint8Array>;
  /**
   * The tensor's bytes in order, in chunks read into `scratch`'s two buffers in turn (each chunk a
   * whole number of elements): a chunk stays valid until the iterator has been advanced twice, so a
   * consumer may write one chunk while the next is read. Sources without it are read with readBytes.
   */
  readChunks?(name: string, scratch: ChunkScratch): AsyncIterable<Uint8Array>;
  /**
   * Where the tensor's bytes lie among the source's (file order; shards in turn): reading tensors in
   * this order lets a source that hashes while it reads (startDigest) cover its files in one pass.
   */
  position?(name: string): number | undefined;
  /**
   * Starts hashing the source's files from what readChunks reads, in file order (gaps between the
   * tensors read are read and hashed as they are passed). Returns false where this source cannot.
   */
  startDigest?(): boolean;
  /** The weights hash (as hashWeights computes it) once every byte has been hashed in order; undefined if reads went back. */
  finishDigest?(): Promise<string | undefined>;
  close(): Promise<void>;
}

/**
 * Two reusable buffers handed out in turn. Streaming a checkpoint through them instead of a fresh
 * buffer per tensor keeps memory flat and avoids touching new pages, which costs more than the copy
 * itself on a virtual machine (≈ 3 s per GB where page faults are trapped).
 */
export class ChunkScratch {
  private readonly buffers: (SharedArrayBuffer | undefined)[] = [undefined, undefined];
  private turn = 0;
  constructor(readonly chunkBytes = 8 << 20) {
    if (!(chunkBytes >= 8 && chunkBytes % 8 === 0)) throw new RangeError(`chunk size ${chunkBytes} must be a positive multiple of 8`);
  }
  /** The next buffer, `bytes` ≤ chunkBytes long. */
  next(bytes: number): Uint8Array {
    if (bytes > this.chunkBytes) throw new RangeError(`chunk of ${bytes} bytes exceeds the scratch's ${this.chunkBytes}`);
    const i = this.turn;
    this.turn ^= 1;
    // Shared, so that a hashing thread can read a chunk without a copy (StreamDigest).
    const buffer = (this.buffers[i] ??= new SharedArrayBuffer(this.chunkBytes));
    return new Uint8Array(buffer, 0, bytes);
  }
  /** The largest chunk of whole `elementBytes`-sized elements. */
  chunkFor(elementBytes: number): number {
    return Math.floor(this.chunkBytes / elementBytes) * elementBytes;
  }
}

/** A tensor's bytes chunk by chunk: through readChunks where the source streams, else read whole and sliced. */
export async function* tensorChunks(source: TensorSource, name: string, scratch: ChunkScratch, elementBytes: number): AsyncGenerator<Uint8Array> {
  if (source.readChunks) {
    yield* source.readChunks(name, scratch);
    return;
  }
  yield* sliceChunks(await source.readBytes(name), scratch.chunkFor(elementBytes));
}

/** Bytes already read whole, handed out as consecutive views of at most `step` bytes. */
export function* sliceChunks(bytes: Uint8Array, step: number): Generator<Uint8Array> {
  for (let at = 0; at < bytes.byteLength; at += step) yield bytes.subarray(at, Math.min(at + step, bytes.byteLength));
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
