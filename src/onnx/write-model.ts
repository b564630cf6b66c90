import { createHash, type Hash } from "node:crypto";
import { basename } from "node:path";
import { ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto, ONNX_IR_VERSION, encodeVarint, lengthDelimitedKey } from "./proto.js";
import { BYTES_PER_ELEMENT, encodeAttribute, type GraphBuilder, type InitializerSpec, type ValueSpec } from "./graph-builder.js";
import { createPendingFile, writeAtomic } from "../util/atomic.js";
import { rm, type FileHandle } from "node:fs/promises";

export interface WriteModelOptions {
  opset: number;
  producerName: string;
  producerVersion: string;
  docString?: string;
  metadata?: Record<string, string>;
  /**
   * Put initializers in `<file>.data` beside the model (4096-aligned offsets). Needed past protobuf's
   * 2 GB message limit; "auto" switches on above 1.8 GB of weights.
   */
  externalData?: boolean | "auto";
}

export interface WrittenModel {
  path: string;
  bytes: number;
  /** sha256 of the model file, computed while writing it. */
  sha256: string;
  externalDataPath?: string;
  externalDataBytes?: number;
  externalDataSha256?: string;
}

const EXTERNAL_ALIGN = 4096;
const AUTO_EXTERNAL_BYTES = 1.8e9;
/** Initializers smaller than this stay inside the .onnx even with external data (shapes, scalars). */
const INLINE_MAX_BYTES = 1024;

function initializerBytes(t: InitializerSpec): number {
  const per = BYTES_PER_ELEMENT[t.dataType];
  if (!per) throw new Error(`no element size for ONNX type ${t.dataType}`);
  return t.dims.reduce((a, b) => a * b, 1) * per;
}

function valueInfo(v: ValueSpec): Record<string, unknown> {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: v.dataType,
        shape: { dim: v.dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function field(num: number, payload: Uint8Array): Uint8Array[] {
  return [lengthDelimitedKey(num), encodeVarint(payload.length), payload];
}

/**
 * Writes the model without ever holding all weights: the protobuf is assembled by hand at the top
 * level (ModelProto → GraphProto → each TensorProto), whose lengths are known from the initializer
 * shapes, and each initializer's bytes are produced and written in turn. Everything else is encoded
 * with protobufjs. The file (and its external data) appear under their final names only when complete.
 */
export async function writeOnnxModel(path: string, graph: GraphBuilder, options: WriteModelOptions): Promise<WrittenModel> {
  const totalWeights = graph.initializers.reduce((s, t) => s + initializerBytes(t), 0);
  const external = options.externalData === "auto" || options.externalData === undefined ? totalWeights > AUTO_EXTERNAL_BYTES : options.externalData;
  const dataPath = `${path}.data`;
  const dataLocation = basename(dataPath);

  // Layout of the external data file: aligned offsets per large initializer.
  const externalOffsets = new Map<string, number>();
  let dataSize = 0;
  if (external) {
    for (const t of graph.initializers) {
      const n = initializerBytes(t);
      if (n < INLINE_MAX_BYTES) continue;
      dataSize = Math.ceil(dataSize / EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
      externalOffsets.set(t.name, dataSize);
      dataSize += n;
    }
  }

  const graphHead: Uint8Array[] = [];
  for (const n of graph.nodes) {
    const msg = NodeProto.fromObject({
      name: n.name,
      opType: n.opType,
      input: n.inputs,
      output: n.outputs,
      domain: n.domain ?? "",
      attribute: Object.entries(n.attributes).map(([k, v]) => encodeAttribute(k, v)),
    });
    graphHead.push(...field(1, NodeProto.encode(msg).finish()));
  }
  graphHead.push(...field(2, Buffer.from(graph.name, "utf8")));
  for (const v of graph.inputs) graphHead.push(...field(11, ValueInfoProto.encode(ValueInfoProto.fromObject(valueInfo(v))).finish()));
  for (const v of graph.outputs) graphHead.push(...field(12, ValueInfoProto.encode(ValueInfoProto.fromObject(valueInfo(v))).finish()));

  // Each initializer: TensorProto metadata, then (inline) raw_data whose bytes are streamed.
  const tensors = graph.initializers.map((t) => {
    const n = initializerBytes(t);
    const offset = externalOffsets.get(t.name);
    const meta = TensorProto.encode(
      TensorProto.fromObject({
        name: t.name,
        dims: t.dims,
        dataType: t.dataType,
        ...(offset !== undefined
          ? {
              dataLocation: 1,
              externalData: [
                { key: "location", value: dataLocation },
                { key: "offset", value: String(offset) },
                { key: "length", value: String(n) },
              ],
            }
          : {}),
      }),
    ).finish();
    const rawHead = offset === undefined ? Buffer.concat([lengthDelimitedKey(9), encodeVarint(n)]) : new Uint8Array(0);
    const tensorLen = meta.length + rawHead.length + (offset === undefined ? n : 0);
    return { spec: t, n, offset, head: Buffer.concat([lengthDelimitedKey(5), encodeVarint(tensorLen), meta, rawHead]), tensorLen };
  });
  const graphLen = graphHead.reduce((s, b) => s + b.length, 0) + tensors.reduce((s, t) => s + t.head.length + (t.offset === undefined ? t.n : 0), 0);

  const modelHead = ModelProto.encode(
    ModelProto.fromObject({
      irVersion: ONNX_IR_VERSION,
      producerName: options.producerName,
      producerVersion: options.producerVersion,
      docString: options.docString ?? "",
      // ONNX Runtime's contrib ops (com.microsoft, version 1) where a graph uses them.
      opsetImport: [{ domain: "", version: options.opset }, ...[...new Set(graph.nodes.map((n) => n.domain ?? "").filter((d) => d !== ""))].sort().map((domain) => ({ domain, version: 1 }))],
      metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
    }),
  ).finish();

  let bytesWritten = 0;
  const modelHash = createHash("sha256");
  const dataHash = createHash("sha256");
  const writeModel = async (handle: FileHandle, externalHandle?: FileHandle) => {
    const model = new SyncingWriter(handle, modelHash);
    const data = externalHandle ? new SyncingWriter(externalHandle, dataHash) : undefined;
    const put = async (b: Uint8Array) => {
      bytesWritten += b.length;
      await model.write(b);
    };
    await put(modelHead);
    await put(Buffer.concat([lengthDelimitedKey(7), encodeVarint(graphLen)]));
    for (const b of graphHead) await put(b);
    let dataPos = 0;
    await pump(tensors, async (t) => {
      await put(t.head);
      if (t.offset === undefined) {
        bytesWritten += t.n;
        return model;
      }
      if (t.offset > dataPos) await data!.write(new Uint8Array(t.offset - dataPos));
      dataPos = t.offset + t.n;
      return data!;
    });
    await Promise.all([model.drain(), data?.drain()]);
  };

  if (!external || externalOffsets.size === 0) {
    await writeAtomic(path, (h) => writeModel(h));
    return { path, bytes: bytesWritten, sha256: modelHash.digest("hex") };
  }
  // Both files are complete before either takes its final name; a failure removes both.
  const data = await createPendingFile(dataPath);
  const model = await createPendingFile(path).catch(async (err) => {
    await data.abort();
    throw err;
  });
  let dataCommitted = false;
  try {
    await writeModel(model.handle, data.handle);
    await data.commit();
    dataCommitted = true;
    await model.commit();
  } catch (err) {
    await model.abort();
    await data.abort();
    if (dataCommitted) await rm(dataPath, { force: true });
    throw err;
  }
  return { path, bytes: bytesWritten, sha256: modelHash.digest("hex"), externalDataPath: dataPath, externalDataBytes: dataSize, externalDataSha256: dataHash.digest("hex") };
}

/** Dirty bytes after which a data sync is started in the background while writing goes on. */
const SYNC_EVERY_BYTES = 64 << 20;
/**
 * Buffers shorter than this are copied into one gathered write instead of a write each: a graph
 * holds thousands of small protos, headers and biases (bge-large: ~2,100 before the first weight),
 * and each write is a round trip through libuv's thread pool.
 */
const GATHER_BELOW = 64 << 10;
const GATHER_BYTES = 1 << 20;

/**
 * Writes a file front to back, hashing each buffer in file order, and flushes to disk as it goes:
 * every SYNC_EVERY_BYTES an fdatasync runs beside the next writes, so that the final sync before the
 * rename finds little left to do (the disk works while bge converts). Each write names its offset,
 * so a gathered write and the large write after it may be in flight together.
 */
export class SyncingWriter {
  private position = 0;
  private unsynced = 0;
  private syncing: Promise<void> | undefined;
  private gathered = new Uint8Array(GATHER_BYTES);
  private gatheredBytes = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;
  constructor(
    private readonly handle: FileHandle,
    private readonly sha: Hash,
  ) {}

  /**
   * Writes `b` next. A small buffer is copied (the promise settles at once); a large one's bytes
   * must stay unchanged until the returned promise settles.
   */
  write(b: Uint8Array): Promise<void> {
    if (b.byteLength < GATHER_BELOW) {
      if (this.gatheredBytes + b.byteLength > GATHER_BYTES) this.flushGathered();
      this.gathered.set(b, this.gatheredBytes);
      this.gatheredBytes += b.byteLength;
      this.sha.update(b);
      return this.failure ? Promise.reject(this.failure.error) : Promise.resolve();
    }
    const written = this.start(b);
    this.sha.update(b);
    return written;
  }

  /**
   * Starts writing `b` (not copied, not gathered) without hashing it: the caller must call hash(b)
   * next, before anything else is written (the hash follows the file's byte order).
   */
  start(b: Uint8Array): Promise<void> {
    this.flushGathered();
    return this.put(b);
  }

  hash(b: Uint8Array): void {
    this.sha.update(b);
  }

  /** Writes what is gathered and waits for every write and sync; the first failure is thrown. */
  async drain(): Promise<void> {
    this.flushGathered();
    while (this.inFlight.size || this.syncing) await Promise.allSettled([...this.inFlight, this.syncing]);
    if (this.failure) throw this.failure.error;
  }

  private flushGathered(): void {
    if (this.gatheredBytes === 0) return;
    // A copy of exactly the gathered bytes goes out, so the gathering buffer is free at once.
    const b = this.gathered.slice(0, this.gatheredBytes);
    this.gatheredBytes = 0;
    this.put(b).catch(() => undefined); // recorded in failure: reported by the next write or drain
  }

  private put(b: Uint8Array): Promise<void> {
    const at = this.position;
    this.position += b.byteLength;
    const written = writeFully(this.handle, b, at).catch((error: unknown) => {
      this.failure ??= { error };
      throw error;
    });
    const tracked = written.finally(() => this.inFlight.delete(tracked));
    tracked.catch(() => undefined);
    this.inFlight.add(tracked);
    this.unsynced += b.byteLength;
    if (this.unsynced >= SYNC_EVERY_BYTES && !this.syncing) {
      this.unsynced = 0;
      const started = written.then(() => this.handle.datasync());
      this.syncing = started.finally(() => (this.syncing = undefined));
      this.syncing.catch((error: unknown) => (this.failure ??= { error }));
    }
    return written;
  }
}

/** Writes all of `b` at `position` (a short write, as on a nearly full disk, is continued, not lost). */
async function writeFully(handle: FileHandle, b: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < b.byteLength) {
    const { bytesWritten } = await handle.write(b, done, b.byteLength - done, position + done);
    if (bytesWritten === 0) throw new Error(`wrote 0 of ${b.byteLength - done} bytes at offset ${position + done}`);
    done += bytesWritten;
  }
}

/** Chunks from which the writer lets the next read start before it hashes this one. */
const OVERLAP_BYTES = 1 << 20;

/** Lets pending promise continuations run (a generator reach its next read) before this thread goes on. */
const ioTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** An initializer to write: its spec and byte count. */
interface PumpedTensor {
  spec: InitializerSpec;
  n: number;
}

/**
 * Every initializer's bytes, chunk by chunk, in order, each chunk tagged with its initializer; one
 * whose bytes are not the count its shape promised is an error before anything after it is produced.
 * A tensor of no bytes still gives one (empty) chunk, so that its header is written.
 */
async function* initializerChunks<T extends PumpedTensor>(tensors: readonly T[]): AsyncGenerator<{ tensor: T; chunk: Uint8Array }> {
  for (const tensor of tensors) {
    const produced = await tensor.spec.data();
    let total = 0;
    if (Symbol.asyncIterator in produced) {
      for await (const chunk of produced as AsyncIterable<Uint8Array>) {
        total += chunk.byteLength;
        if (total > tensor.n) break;
        yield { tensor, chunk };
      }
    } else {
      total = (produced as Uint8Array).byteLength;
      if (total > 0 && total <= tensor.n) yield { tensor, chunk: produced as Uint8Array };
    }
    if (total !== tensor.n) throw new Error(`initializer ${tensor.spec.name}: produced ${total > tensor.n ? "at least " : ""}${total} bytes, expected ${tensor.n}`);
    if (total === 0) yield { tensor, chunk: new Uint8Array(0) };
  }
}

/**
 * Writes the initializers' bytes: `begin` writes what goes before an initializer (its header) and
 * names the file it goes to. The next chunk is produced (read, converted) while this one is being
 * written — across initializers too, so that a one-chunk tensor's read overlaps the write before it;
 * one chunk's write is awaited before the next is handed over (the producer reuses its buffers).
 */
async function pump<T extends PumpedTensor>(tensors: readonly T[], begin: (t: T) => Promise<SyncingWriter>): Promise<void> {
  const iter = initializerChunks(tensors);
  let current: T | undefined;
  let out: SyncingWriter | undefined;
  let next = iter.next();
  try {
    for (;;) {
      const r = await next;
      if (r.done) break;
      const { tensor, chunk } = r.value;
      if (tensor !== current) {
        current = tensor;
        out = await begin(tensor);
      }
      if (chunk.byteLength === 0) {
        next = iter.next();
        continue;
      }
      // A large chunk's write starts, then the producer is let on to issue the next chunk's read
      // (into its other buffer), and only then is this one hashed on this thread — the hash overlaps
      // the read instead of delaying it (2 of every ~9 ms per 8 MB chunk on 2 cores). A small one
      // is hashed at once.
      const large = chunk.byteLength >= OVERLAP_BYTES;
      const written = large ? out!.start(chunk) : out!.write(chunk);
      next = iter.next();
      next.catch(() => undefined); // awaited on the next turn; not unhandled if the write fails first
      if (large) {
        await ioTurn();
        out!.hash(chunk);
      }
      await written;
    }
  } catch (err) {
    // The producer may be mid-read: let it settle, then close it (its files, its hashing).
    await next.catch(() => undefined);
    await iter.return(undefined);
    throw err;
  }
}
