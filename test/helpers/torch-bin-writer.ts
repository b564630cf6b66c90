/**
 * Writes torch.save-format checkpoints (`pytorch_model.bin`) from TypeScript, for tests: a STORED zip
 * holding `<archive>/data.pkl` (a protocol 2 pickle of an OrderedDict of `_rebuild_tensor_v2` calls
 * on persistent-id storages), `<archive>/data/<key>`, `<archive>/version` and `<archive>/byteorder`,
 * with torch's 64-byte data alignment. Also writes hostile pickles into otherwise valid archives.
 */
import { open, writeFile } from "node:fs/promises";
import { deflateRawSync } from "node:zlib";
import { crc32 } from "../../src/checkpoint/zip.js";
import { DTYPE_BYTES, type DType } from "../../src/checkpoint/tensor.js";

const STORAGE_CLASS: Record<DType, string> = {
  F64: "DoubleStorage",
  F32: "FloatStorage",
  F16: "HalfStorage",
  BF16: "BFloat16Storage",
  I64: "LongStorage",
  I32: "IntStorage",
  I16: "ShortStorage",
  I8: "CharStorage",
  U8: "ByteStorage",
  BOOL: "BoolStorage",
};

// ---------------------------------------------------------------------------------------------
// zip

export interface ZipEntrySpec {
  name: string;
  data: Uint8Array;
  /** 0 = stored (default, as torch), 8 = deflate. */
  method?: 0 | 8;
}

export interface ZipOptions {
  /** Write ZIP64 records everywhere (sizes/offsets as 0xFFFFFFFF + extra field, ZIP64 EOCD + locator). */
  zip64?: boolean;
  /** Pad each entry's data to 64 bytes with an "FB" extra field, as torch does (default true). */
  align?: boolean;
  /**
   * The zip will be written at this file offset after a hole of zeros (see `writeSparse`): every
   * offset inside it is shifted, so a tiny archive can have offsets past 4 GiB.
   */
  baseOffset?: number;
}

export function buildZip(entries: readonly ZipEntrySpec[], opts: ZipOptions = {}): Uint8Array {
  const zip64 = opts.zip64 ?? false;
  const align = opts.align ?? true;
  const base = opts.baseOffset ?? 0;
  const out = new ByteSink();
  const central: Uint8Array[] = [];
  for (const entry of entries) {
    const name = new TextEncoder().encode(entry.name);
    const method = entry.method ?? 0;
    const body = method === 8 ? new Uint8Array(deflateRawSync(entry.data)) : entry.data;
    const crc = crc32(entry.data);
    const offset = base + out.length;
    if (!zip64 && offset + body.length >= 0xffffffff) throw new Error("offsets past 4 GiB need zip64: true");

    const zip64Local = zip64 ? extraField(0x0001, u64(entry.data.length), u64(body.length)) : new Uint8Array(0);
    let extra = zip64Local;
    if (align) {
      const start = offset + 30 + name.length + zip64Local.length + 4;
      const pad = (64 - (start % 64)) % 64;
      extra = concat([zip64Local, extraField(0x4246, new Uint8Array(pad).fill(0x5a))]); // "FB" + 'Z'*pad
    }
    out.push(u32(0x04034b50), u16(zip64 ? 45 : 20), u16(0x0800), u16(method), u16(0), u16(0x21));
    out.push(u32(crc), u32(zip64 ? 0xffffffff : body.length), u32(zip64 ? 0xffffffff : entry.data.length));
    out.push(u16(name.length), u16(extra.length), name, extra, body);

    const cdExtra = zip64 ? extraField(0x0001, u64(entry.data.length), u64(body.length), u64(offset)) : new Uint8Array(0);
    central.push(
      concat([
        u32(0x02014b50), u16(zip64 ? 45 : 20), u16(zip64 ? 45 : 20), u16(0x0800), u16(method), u16(0), u16(0x21),
        u32(crc), u32(zip64 ? 0xffffffff : body.length), u32(zip64 ? 0xffffffff : entry.data.length),
        u16(name.length), u16(cdExtra.length), u16(0), u16(0), u16(0), u32(0),
        u32(zip64 ? 0xffffffff : offset), name, cdExtra,
      ]),
    );
  }
  const cdOffset = base + out.length;
  for (const c of central) out.push(c);
  const cdSize = base + out.length - cdOffset;
  if (zip64) {
    const recordOffset = base + out.length;
    out.push(u32(0x06064b50), u64(44), u16(45), u16(45), u32(0), u32(0));
    out.push(u64(entries.length), u64(entries.length), u64(cdSize), u64(cdOffset));
    out.push(u32(0x07064b50), u32(0), u64(recordOffset), u32(1));
  }
  const n = zip64 ? 0xffff : entries.length;
  out.push(u32(0x06054b50), u16(0), u16(0), u16(n), u16(n));
  out.push(u32(zip64 ? 0xffffffff : cdSize), u32(zip64 ? 0xffffffff : cdOffset), u16(0));
  return out.bytes();
}

/** Write `bytes` at `offset` of a new file whose first `offset` bytes are a hole (sparse on Linux/macOS). */
export async function writeSparse(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const fh = await open(path, "w");
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// pickle (protocol 2, as torch.save's default pickle_protocol writes it)

/** Emits opcodes with Python's memo habits: every string and global is BINPUT, and reused by BINGET. */
export class PickleWriter {
  private readonly out = new ByteSink();
  private readonly memo = new Map<string, number>();
  private next = 0;

  proto(version = 2): this {
    return this.raw(0x80, version);
  }
  raw(...bytes: (number | Uint8Array | string)[]): this {
    for (const b of bytes) {
      if (typeof b === "number") this.out.push(Uint8Array.of(b));
      else if (typeof b === "string") this.out.push(new TextEncoder().encode(b));
      else this.out.push(b);
    }
    return this;
  }
  /** BINPUT the value on top of the stack into the next memo slot. */
  put(): this {
    const i = this.next++;
    return i < 256 ? this.raw(0x71, i) : this.raw(0x72, u32(i));
  }
  private memoized(key: string, emit: () => void): this {
    const at = this.memo.get(key);
    if (at !== undefined) return at < 256 ? this.raw(0x68, at) : this.raw(0x6a, u32(at));
    emit();
    this.memo.set(key, this.next);
    return this.put();
  }
  global(module: string, name: string): this {
    return this.memoized(`g:${module}.${name}`, () => this.raw(0x63, `${module}\n${name}\n`));
  }
  str(s: string): this {
    return this.memoized(`s:${s}`, () => {
      const b = new TextEncoder().encode(s);
      this.raw(0x58, u32(b.length), b);
    });
  }
  int(v: number): this {
    if (v >= 0 && v < 256) return this.raw(0x4b, v);
    if (v >= 0 && v < 65536) return this.raw(0x4d, u16(v));
    if (v >= -(2 ** 31) && v < 2 ** 31) return this.raw(0x4a, i32(v));
    // LONG1, little-endian two's complement
    let x = BigInt(v);
    const bytes: number[] = [];
    while (true) {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
      if ((x === 0n && !(bytes[bytes.length - 1]! & 0x80)) || (x === -1n && bytes[bytes.length - 1]! & 0x80)) break;
    }
    return this.raw(0x8a, bytes.length, Uint8Array.from(bytes));
  }
  bool(v: boolean): this {
    return this.raw(v ? 0x88 : 0x89);
  }
  /** A tuple of already-emittable parts, using TUPLE1/2/3 as protocol 2 does. */
  tuple(parts: (() => void)[]): this {
    if (parts.length === 0) return this.raw(0x29);
    if (parts.length <= 3) {
      parts.forEach((p) => p());
      this.raw(0x84 + parts.length);
    } else {
      this.raw(0x28);
      parts.forEach((p) => p());
      this.raw(0x74);
    }
    return this.put();
  }
  bytes(): Uint8Array {
    return this.out.bytes();
  }
}

export interface TorchStorageSpec {
  key: string;
  dtype: DType;
  data: Uint8Array;
  /** The element count the persistent id declares (default: what `data` holds). */
  numel?: number;
}

export interface TorchTensorRefSpec {
  name: string;
  storage: string;
  shape: number[];
  /** Default: row-major contiguous. */
  stride?: number[];
  storageOffset?: number;
  /** Wrap in `_rebuild_parameter` as nn.Parameter does. */
  parameter?: boolean;
}

export interface StateDictPickleOptions {
  /** Emit the `_metadata` attribute (BUILD on the OrderedDict) as torch does (default true). */
  metadata?: boolean;
  /** Nest the OrderedDict under this key of a plain dict (`{"state_dict": ...}`). */
  wrapKey?: string;
}

/** The data.pkl torch.save writes for an OrderedDict state dict. */
export function stateDictPickle(
  tensors: readonly TorchTensorRefSpec[],
  storages: readonly TorchStorageSpec[],
  opts: StateDictPickleOptions = {},
): Uint8Array {
  const byKey = new Map(storages.map((s) => [s.key, s]));
  const w = new PickleWriter().proto(2);
  if (opts.wrapKey !== undefined) w.raw(0x7d).put().str(opts.wrapKey);
  const orderedDict = (): void => {
    w.global("collections", "OrderedDict").raw(0x29, 0x52);
  };
  orderedDict();
  w.put();
  const setItems = <T>(items: readonly T[], emit: (item: T) => void): void => {
    for (let i = 0; i < items.length; i += 1000) {
      const batch = items.slice(i, i + 1000);
      if (batch.length === 1) {
        emit(batch[0]!);
        w.raw(0x73);
      } else {
        w.raw(0x28);
        batch.forEach(emit);
        w.raw(0x75);
      }
    }
  };
  setItems(tensors, (t) => {
    const storage = byKey.get(t.storage);
    if (!storage) throw new Error(`no storage ${t.storage}`);
    const numel = storage.numel ?? storage.data.length / DTYPE_BYTES[storage.dtype];
    const stride = t.stride ?? contiguousStride(t.shape);
    w.str(t.name);
    const rebuild = (): void => {
      w.global("torch._utils", "_rebuild_tensor_v2");
      w.tuple([
        () => {
          w.tuple([
            () => w.str("storage"),
            () => w.global("torch", STORAGE_CLASS[storage.dtype]),
            () => w.str(storage.key),
            () => w.str("cpu"),
            () => w.int(numel),
          ]).raw(0x51); // BINPERSID
        },
        () => w.int(t.storageOffset ?? 0),
        () => w.tuple(t.shape.map((d) => () => w.int(d))),
        () => w.tuple(stride.map((d) => () => w.int(d))),
        () => w.bool(false),
        () => {
          orderedDict();
        },
      ]);
      w.raw(0x52);
    };
    if (t.parameter) {
      w.global("torch._utils", "_rebuild_parameter");
      w.tuple([rebuild, () => w.bool(true), orderedDict]);
      w.raw(0x52);
    } else rebuild();
  });
  if (opts.metadata ?? true) {
    // state = {"_metadata": OrderedDict({"": {"version": 1}})}; BUILD
    w.raw(0x7d).str("_metadata");
    orderedDict();
    w.str("").raw(0x7d).str("version").int(1).raw(0x73).raw(0x73);
    w.raw(0x73).raw(0x62);
  }
  if (opts.wrapKey !== undefined) w.raw(0x73);
  return w.raw(0x2e).bytes();
}

export interface TorchArchiveOptions extends ZipOptions {
  /** The top-level folder name (torch uses "archive", older versions the file stem). */
  archiveName?: string;
  /** Write `<archive>/byteorder` (default "little"; null to omit, as torch < 2.1 did). */
  byteorder?: string | null;
  /** Compress data.pkl with deflate (torch never does; readers should cope). */
  deflatePickle?: boolean;
}

/** A torch.save archive around a given data.pkl and storages. */
export function buildTorchArchive(
  pickle: Uint8Array,
  storages: readonly Pick<TorchStorageSpec, "key" | "data">[],
  opts: TorchArchiveOptions = {},
): Uint8Array {
  const a = opts.archiveName ?? "archive";
  const entries: ZipEntrySpec[] = [{ name: `${a}/data.pkl`, data: pickle, method: opts.deflatePickle ? 8 : 0 }];
  const byteorder = opts.byteorder === undefined ? "little" : opts.byteorder;
  if (byteorder !== null) entries.push({ name: `${a}/byteorder`, data: ascii(byteorder) });
  for (const s of storages) entries.push({ name: `${a}/data/${s.key}`, data: s.data });
  entries.push({ name: `${a}/version`, data: ascii("3\n") });
  return buildZip(entries, opts);
}

export interface TorchBinTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /** Little-endian element bytes, row-major. */
  data: Uint8Array;
}

export interface WriteTorchBinOptions extends TorchArchiveOptions, StateDictPickleOptions {
  /** Wrap every tensor as an nn.Parameter. */
  parameters?: boolean;
}

/** One storage per tensor, as `torch.save(model.state_dict())` writes untied weights. */
export async function writeTorchBin(
  path: string,
  tensors: readonly TorchBinTensor[],
  opts: WriteTorchBinOptions = {},
): Promise<void> {
  const storages = tensors.map((t, i) => ({ key: String(i), dtype: t.dtype, data: t.data }));
  const refs = tensors.map((t, i) => ({ name: t.name, storage: String(i), shape: t.shape, parameter: opts.parameters }));
  await writeFile(path, buildTorchArchive(stateDictPickle(refs, storages, opts), storages, opts));
}

/** General form: tensors as views on shared storages. */
export async function writeTorchBinViews(
  path: string,
  storages: readonly TorchStorageSpec[],
  tensors: readonly TorchTensorRefSpec[],
  opts: WriteTorchBinOptions = {},
): Promise<void> {
  await writeFile(path, buildTorchArchive(stateDictPickle(tensors, storages, opts), storages, opts));
}

// ---------------------------------------------------------------------------------------------
// hostile pickles

/** The classic protocol 0 payload: `c<module>\n<name>\n(S'<arg>'\ntR.` */
export function hostileProto0Pickle(module: string, name: string, arg: string): Uint8Array {
  return ascii(`c${module}\n${name}\n(S'${arg.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'\ntR.`);
}

/** Protocol 4 STACK_GLOBAL form: `module name STACK_GLOBAL (arg,) REDUCE`. */
export function hostileStackGlobalPickle(module: string, name: string, arg: string): Uint8Array {
  const s = (t: string): Uint8Array => {
    const b = new TextEncoder().encode(t);
    const head = b.length < 256 ? Uint8Array.of(0x8c, b.length) : concat([Uint8Array.of(0x58), u32(b.length)]);
    return concat([head, b, Uint8Array.of(0x94)]);
  };
  return concat([Uint8Array.of(0x80, 0x04), s(module), s(name), Uint8Array.of(0x93, 0x94), s(arg), Uint8Array.of(0x85, 0x52, 0x2e)]);
}

/**
 * A state dict whose first entry is a real tensor and whose second is `module.name(arg)`, so that a
 * reader must refuse mid-stream, after it has already accepted valid data.
 */
export function hostileStateDictPickle(module: string, name: string, arg: string): Uint8Array {
  const w = new PickleWriter().proto(2);
  w.global("collections", "OrderedDict").raw(0x29, 0x52).raw(0x28);
  w.str("ok.weight").global("torch._utils", "_rebuild_tensor_v2");
  w.tuple([
    () => w.tuple([() => w.str("storage"), () => w.global("torch", "FloatStorage"), () => w.str("0"), () => w.str("cpu"), () => w.int(1)]).raw(0x51),
    () => w.int(0),
    () => w.tuple([() => w.int(1)]),
    () => w.tuple([() => w.int(1)]),
    () => w.bool(false),
    () => w.global("collections", "OrderedDict").raw(0x29, 0x52),
  ]);
  w.raw(0x52);
  w.str("evil").global(module, name).tuple([() => w.str(arg)]).raw(0x52);
  return w.raw(0x75, 0x2e).bytes();
}

/** A valid archive (one real storage) whose data.pkl is `pickle`. */
export async function writeTorchBinWithPickle(path: string, pickle: Uint8Array, opts: TorchArchiveOptions = {}): Promise<void> {
  await writeFile(path, buildTorchArchive(pickle, [{ key: "0", data: f32Bytes([1]) }], opts));
}

// ---------------------------------------------------------------------------------------------
// a hand-assembled real-world-like pickle: views sharing one storage

/**
 * Byte for byte what CPython's pickler emits (protocol 2) for
 *   s = torch.arange(10, dtype=torch.float32)
 *   torch.save(OrderedDict(a=s[0:4].view(2, 2), b=s[4:7], t=s[0:4].view(2, 2).t()), f)
 * without the `_metadata` state: the second and third references to storage "0" reuse the memoized
 * 'storage', FloatStorage, '0' and 'cpu' through BINGET, as real files do for tied weights.
 */
export const SHARED_STORAGE_PICKLE: Uint8Array = assemble([
  [0x80, 0x02], //                                       PROTO 2
  "ccollections\nOrderedDict\n", [0x71, 0x00], //       GLOBAL collections.OrderedDict; BINPUT 0
  [0x29, 0x52, 0x71, 0x01], //                           EMPTY_TUPLE REDUCE; BINPUT 1
  [0x28], //                                             MARK (SETITEMS batch)
  // "a": _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 10), 0, (2, 2), (2, 1), False, OrderedDict())
  [0x58, 1, 0, 0, 0], "a", [0x71, 0x02], //             BINUNICODE 'a'; BINPUT 2
  "ctorch._utils\n_rebuild_tensor_v2\n", [0x71, 0x03], // GLOBAL; BINPUT 3
  [0x28], //                                             MARK (args)
  [0x28], //                                             MARK (persistent id)
  [0x58, 7, 0, 0, 0], "storage", [0x71, 0x04], //       'storage'; BINPUT 4
  "ctorch\nFloatStorage\n", [0x71, 0x05], //            GLOBAL torch.FloatStorage; BINPUT 5
  [0x58, 1, 0, 0, 0], "0", [0x71, 0x06], //             key '0'; BINPUT 6
  [0x58, 3, 0, 0, 0], "cpu", [0x71, 0x07], //           'cpu'; BINPUT 7
  [0x4b, 10], //                                         BININT1 10 (numel)
  [0x74, 0x71, 0x08, 0x51], //                           TUPLE; BINPUT 8; BINPERSID
  [0x4b, 0], //                                          storage_offset 0
  [0x4b, 2, 0x4b, 2, 0x86, 0x71, 0x09], //               (2, 2); BINPUT 9
  [0x4b, 2, 0x4b, 1, 0x86, 0x71, 0x0a], //               (2, 1); BINPUT 10
  [0x89], //                                             NEWFALSE
  [0x68, 0x00, 0x29, 0x52, 0x71, 0x0b], //               BINGET 0 () REDUCE -> OrderedDict(); BINPUT 11
  [0x74, 0x71, 0x0c, 0x52, 0x71, 0x0d], //               TUPLE; BINPUT 12; REDUCE; BINPUT 13
  // "b": storage offset 4, shape (3,), stride (1,)
  [0x58, 1, 0, 0, 0], "b", [0x71, 0x0e],
  [0x68, 0x03, 0x28, 0x28], //                           BINGET 3 (_rebuild_tensor_v2) MARK MARK
  [0x68, 0x04, 0x68, 0x05, 0x68, 0x06, 0x68, 0x07], //   BINGET 'storage' FloatStorage '0' 'cpu'
  [0x4b, 10, 0x74, 0x71, 0x0f, 0x51], //                 10 TUPLE BINPUT 15 BINPERSID
  [0x4b, 4], //                                          storage_offset 4
  [0x4b, 3, 0x85, 0x71, 0x10], //                        (3,)
  [0x4b, 1, 0x85, 0x71, 0x11], //                        (1,)
  [0x89, 0x68, 0x00, 0x29, 0x52, 0x71, 0x12],
  [0x74, 0x71, 0x13, 0x52, 0x71, 0x14],
  // "t": the transpose of "a": offset 0, shape (2, 2), stride (1, 2): not contiguous
  [0x58, 1, 0, 0, 0], "t", [0x71, 0x15],
  [0x68, 0x03, 0x28, 0x28],
  [0x68, 0x04, 0x68, 0x05, 0x68, 0x06, 0x68, 0x07],
  [0x4b, 10, 0x74, 0x71, 0x16, 0x51],
  [0x4b, 0],
  [0x4b, 2, 0x4b, 2, 0x86, 0x71, 0x17],
  [0x4b, 1, 0x4b, 2, 0x86, 0x71, 0x18],
  [0x89, 0x68, 0x00, 0x29, 0x52, 0x71, 0x19],
  [0x74, 0x71, 0x1a, 0x52, 0x71, 0x1b],
  [0x75, 0x2e], //                                       SETITEMS STOP
]);

/** Writes the shared-storage case; storage "0" holds 0, 1, …, 9 as float32. */
export async function writeSharedStorageBin(path: string, opts: TorchArchiveOptions = {}): Promise<void> {
  const storage = f32Bytes(Array.from({ length: 10 }, (_, i) => i));
  await writeFile(path, buildTorchArchive(SHARED_STORAGE_PICKLE, [{ key: "0", data: storage }], opts));
}

/**
 * CPython's protocol 2 pickle of a torch-style state dict, written by `pickle.Pickler` with torch's
 * `persistent_id` and stand-in modules named `torch` / `torch._utils` (so no torch was needed), with
 * `_metadata` set on the OrderedDict as nn.Module.state_dict() does:
 *   encoder.layer.0.weight: FloatStorage "0" (6 elements), size (2, 3), stride (3, 1)
 *   encoder.layer.0.bias:   HalfStorage  "1" (3 elements), size (3,),   stride (1,)
 *   tied.weight:            the same storage and view as encoder.layer.0.weight (memo BINGETs)
 */
export const CPYTHON_STATE_DICT_PICKLE: Uint8Array = fromHex(
  "800263636f6c6c656374696f6e730a4f726465726564446963740a710029527101285816000000656e636f6465722e6c617965722e302e776569676874710263746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a71032828580700000073746f72616765710463746f7263680a466c6f617453746f726167650a71055801000000307106580300000063707571074b06747108514b004b024b038671094b034b0186710a8968002952710b74710c52710d5814000000656e636f6465722e6c617965722e302e62696173710e68032828680463746f7263680a48616c6653746f726167650a710f580100000031711068074b03747111514b004b038571124b0185711389680029527114747115527116580b000000746965642e77656967687471176803282868046805680668074b06747118514b006809680a8968002952711974711a52711b757d711c58090000005f6d65746164617461711d68002952711e285800000000711f7d7120580700000076657273696f6e71214b01735807000000656e636f64657271227d712368214b01737573622e",
);

// ---------------------------------------------------------------------------------------------
// bytes

export function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
}

export function f32Bytes(values: readonly number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

export function contiguousStride(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    stride[i] = s;
    s *= shape[i]!;
  }
  return stride;
}

function assemble(parts: readonly (string | readonly number[])[]): Uint8Array {
  return concat(parts.map((p) => (typeof p === "string" ? ascii(p) : Uint8Array.from(p))));
}

function ascii(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

class ByteSink {
  private readonly parts: Uint8Array[] = [];
  length = 0;
  push(...parts: Uint8Array[]): void {
    for (const p of parts) {
      this.parts.push(p);
      this.length += p.length;
    }
  }
  bytes(): Uint8Array {
    return concat(this.parts);
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function extraField(id: number, ...parts: Uint8Array[]): Uint8Array {
  const body = concat(parts);
  return concat([u16(id), u16(body.length), body]);
}

function u16(v: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, v, true);
  return b;
}
function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}
function i32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, v, true);
  return b;
}
function u64(v: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}
