import { DTYPE_BYTES, elementCount, sliceChunks, type ChunkScratch, type TensorInfo, type TensorSource } from "./tensor.js";
import { openZip, type ZipEntry, type ZipReader } from "./zip.js";
import { PickleDict, TorchTensor, unpickleTorch, type PickleValue } from "./unpickle.js";
import { UsageError } from "../errors.js";

/** Where a tensor's elements live: a strided view into one storage entry of the archive. */
export interface TorchTensorInfo extends TensorInfo {
  /** The storage's key: its bytes are the zip entry `<archive>/data/<key>`. */
  storageKey: string;
  /** Offset into the storage, in elements. */
  storageOffset: number;
  /** Strides in elements. */
  stride: number[];
}

export interface TorchBinSource extends TensorSource {
  list(): TorchTensorInfo[];
}

/** data.pkl of a real checkpoint is tens of kilobytes; anything this large is not a state dict. */
const MAX_PICKLE_BYTES = 256 * 1024 * 1024;
/** Keys under which training scripts nest the weights (`torch.save({"state_dict": ...})`). */
const WRAPPER_KEYS = ["state_dict", "model_state_dict", "model", "module"];

interface Tensor {
  info: TorchTensorInfo;
  entry: ZipEntry;
}

/**
 * Open a `pytorch_model.bin` written by torch.save (torch ≥ 1.6 zip format). Only the pickle and the
 * zip directory are read here; each tensor's bytes are read on demand by `readBytes`.
 */
export async function openTorchBin(path: string): Promise<TorchBinSource> {
  const zip = await openZip(path);
  try {
    const tensors = await readStateDict(path, zip);
    return new TorchBin(path, zip, tensors);
  } catch (err) {
    await zip.close().catch(() => undefined);
    throw err;
  }
}

class TorchBin implements TorchBinSource {
  constructor(
    readonly path: string,
    private readonly zip: ZipReader,
    private readonly tensors: ReadonlyMap<string, Tensor>,
  ) {}

  list(): TorchTensorInfo[] {
    return [...this.tensors.values()].map(({ info }) => ({
      ...info,
      shape: [...info.shape],
      stride: [...info.stride],
    }));
  }

  async readBytes(name: string): Promise<Uint8Array> {
    const tensor = this.tensors.get(name);
    if (!tensor) throw new UsageError(`${this.path}: no tensor named ${name}`);
    const { info, entry } = tensor;
    const size = DTYPE_BYTES[info.dtype];
    const numel = elementCount(info.shape);
    if (numel === 0) return new Uint8Array(0);
    const start = info.storageOffset * size;
    if (isContiguous(info.shape, info.stride)) return this.zip.readStored(entry, start, numel * size);

    // A strided view (a transpose, an expand): read the span it touches and gather its elements.
    const span = (maxIndex(info) - info.storageOffset + 1) * size;
    const raw = await this.zip.readStored(entry, start, span);
    return gather(raw, info.shape, info.stride, size, numel);
  }

  /** Contiguous tensors stream from their storage (CRC checked when one covers it whole); strided views are gathered whole. */
  async *readChunks(name: string, scratch: ChunkScratch): AsyncGenerator<Uint8Array> {
    const tensor = this.tensors.get(name);
    if (!tensor) throw new UsageError(`${this.path}: no tensor named ${name}`);
    const { info, entry } = tensor;
    const size = DTYPE_BYTES[info.dtype];
    const numel = elementCount(info.shape);
    if (numel > 0 && isContiguous(info.shape, info.stride)) {
      yield* this.zip.readStoredChunks(entry, info.storageOffset * size, numel * size, scratch, scratch.chunkFor(size));
      return;
    }
    yield* sliceChunks(await this.readBytes(name), scratch.chunkFor(size));
  }

  close(): Promise<void> {
    return this.zip.close();
  }
}

async function readStateDict(path: string, zip: ZipReader): Promise<Map<string, Tensor>> {
  const prefix = archivePrefix(path, zip);

  const byteorder = zip.get(`${prefix}byteorder`);
  if (byteorder) {
    const order = new TextDecoder().decode(await zip.readEntry(byteorder, 64)).trim();
    if (order !== "little") {
      throw new UsageError(`${path}: tensors are stored ${order}-endian; only little-endian checkpoints are supported — re-save it on a little-endian machine`);
    }
  }

  const pickle = await zip.readEntry(zip.get(`${prefix}data.pkl`)!, MAX_PICKLE_BYTES);
  const stateDict = findStateDict(path, unpickleTorch(pickle, { file: path }));

  const tensors = new Map<string, Tensor>();
  for (const [key, value] of stateDict.entries) {
    if (!(value instanceof TorchTensor)) continue; // e.g. an "epoch" counter beside the weights
    if (typeof key !== "string") throw new UsageError(`${path}: state dict key ${String(key)} is not a string; this is not a model state dict`);
    const info: TorchTensorInfo = {
      name: key,
      dtype: value.storage.dtype,
      shape: [...value.shape],
      storageKey: value.storage.key,
      storageOffset: value.storageOffset,
      stride: [...value.stride],
    };
    const entry = await storageEntry(path, zip, prefix, value);
    checkExtent(path, info, entry, value.storage.numel);
    tensors.set(key, { info, entry });
  }
  if (tensors.size === 0) throw new UsageError(`${path}: the state dict holds no tensors; check that this is a model checkpoint`);
  return tensors;
}

/** torch names every record `<archive>/…`; the archive name varies (file stem, or "archive"). */
function archivePrefix(path: string, zip: ZipReader): string {
  // TorchScript archives have a data.pkl too, full of __torch__ globals: say what the file is instead.
  if (zip.entries.some((e) => /^[^/]+\/(constants\.pkl|code\/)/.test(e.name))) {
    throw new UsageError(
      `${path}: this is a TorchScript archive (torch.jit.save), not a torch.save state dict; save the model's state_dict() with torch.save`,
    );
  }
  const pickles = zip.entries.filter((e) => /^[^/]+\/data\.pkl$/.test(e.name));
  if (pickles.length === 0) {
    throw new UsageError(`${path}: zip archive without <archive>/data.pkl, so not a torch.save checkpoint; check that the file is pytorch_model.bin`);
  }
  if (pickles.length > 1) {
    throw new UsageError(`${path}: zip archive holds ${pickles.length} data.pkl records; a torch.save checkpoint has one`);
  }
  return pickles[0]!.name.slice(0, -"data.pkl".length);
}

function findStateDict(path: string, root: PickleValue): PickleDict {
  if (!(root instanceof PickleDict)) {
    throw new UsageError(`${path}: data.pkl holds a ${describe(root)}, not a state dict; save the model's state_dict()`);
  }
  if (holdsTensors(root)) return root;
  for (const key of WRAPPER_KEYS) {
    const inner = root.entries.get(key);
    if (inner instanceof PickleDict && holdsTensors(inner)) return inner;
  }
  const nested = [...root.entries.values()].filter((v): v is PickleDict => v instanceof PickleDict && holdsTensors(v));
  if (nested.length === 1) return nested[0]!;
  throw new UsageError(`${path}: found no tensors in the state dict; check that this is a model checkpoint`);
}

function holdsTensors(dict: PickleDict): boolean {
  for (const v of dict.entries.values()) if (v instanceof TorchTensor) return true;
  return false;
}

function describe(v: PickleValue): string {
  if (v === null) return "None";
  if (Array.isArray(v)) return "list";
  if (typeof v === "object") return v.constructor.name;
  return typeof v;
}

async function storageEntry(path: string, zip: ZipReader, prefix: string, tensor: TorchTensor): Promise<ZipEntry> {
  const { key, dtype, numel } = tensor.storage;
  const entry = zip.get(`${prefix}data/${key}`);
  if (!entry) throw new UsageError(`${path}: storage ${key} is missing from the archive; the file is corrupt or truncated — download it again`);
  if (entry.method !== 0) {
    throw new UsageError(
      `${path}: storage ${key} is compressed (zip method ${entry.method}); tensor data must be stored as torch.save writes it — re-save the checkpoint with torch.save`,
    );
  }
  const need = BigInt(numel) * BigInt(DTYPE_BYTES[dtype]);
  if (need > BigInt(entry.uncompressedSize)) {
    throw new UsageError(
      `${path}: storage ${key} holds ${entry.uncompressedSize} bytes but declares ${numel} ${dtype} elements (${need} bytes); the file is corrupt or truncated — download it again`,
    );
  }
  await zip.dataOffset(entry); // validates the local header now rather than at the first read
  return entry;
}

/** Every element the view can touch must lie inside both the declared storage and its zip entry. */
function checkExtent(path: string, info: TorchTensorInfo, entry: ZipEntry, storageNumel: number): void {
  let numel = 1n;
  for (const d of info.shape) numel *= BigInt(d);
  if (numel === 0n) return;
  if (numel > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`${path}: tensor ${info.name} has an impossible shape [${info.shape.join(", ")}]`);
  let last = BigInt(info.storageOffset);
  info.shape.forEach((d, i) => (last += BigInt(d - 1) * BigInt(info.stride[i]!)));
  const size = BigInt(DTYPE_BYTES[info.dtype]);
  if (last + 1n > BigInt(storageNumel) || (last + 1n) * size > BigInt(entry.uncompressedSize)) {
    throw new UsageError(
      `${path}: tensor ${info.name} (shape [${info.shape.join(", ")}], offset ${info.storageOffset}) needs ${last + 1n} elements but storage ${info.storageKey} holds ${storageNumel}; the file is corrupt — download it again`,
    );
  }
}

function maxIndex(info: TorchTensorInfo): number {
  let last = info.storageOffset;
  info.shape.forEach((d, i) => (last += (d - 1) * info.stride[i]!));
  return last;
}

/** Row-major strides, ignoring size-1 dimensions (torch's own contiguity rule). */
function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expected) return false;
    expected *= shape[i]!;
  }
  return true;
}

function gather(raw: Uint8Array, shape: readonly number[], stride: readonly number[], size: number, numel: number): Uint8Array {
  const out = new Uint8Array(numel * size);
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  let from = 0; // element index into raw
  for (let n = 0; n < numel; n++) {
    out.set(raw.subarray(from * size, from * size + size), n * size);
    // Odometer: advance the last dimension, carrying into earlier ones.
    for (let d = rank - 1; d >= 0; d--) {
      index[d]!++;
      from += stride[d]!;
      if (index[d]! < shape[d]!) break;
      from -= index[d]! * stride[d]!;
      index[d] = 0;
    }
  }
  return out;
}
