import type { DType } from "./tensor.js";
import { UsageError } from "../errors.js";

/**
 * A restricted unpickler for torch.save's `data.pkl`, in the spirit of `torch.load(weights_only=True)`:
 * it understands every data opcode of pickle protocols 0–5, but a GLOBAL may only name a short list of
 * torch/collections constructors, and "calling" one of those only builds an inert description (a
 * tensor's storage key, offset, shape and stride). Nothing from the file is ever executed; any other
 * global is refused before its arguments are even read.
 */

export type PickleKey = string | number | bigint | boolean | null;

export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | PickleTuple
  | PickleDict
  | PickleSet
  | PickleGlobal
  | TorchStorage
  | TorchTensor;

export class PickleTuple {
  constructor(readonly items: readonly PickleValue[]) {}
}

/** A dict or OrderedDict; `state` is what BUILD set on it (torch puts `_metadata` there). */
export class PickleDict {
  readonly entries = new Map<PickleKey, PickleValue>();
  state: PickleValue | undefined;
  constructor(readonly ordered: boolean) {}
}

export class PickleSet {
  readonly items: PickleValue[] = [];
  constructor(readonly frozen: boolean) {}
}

/** An allowed global, as a name only: it becomes data when REDUCE applies it. */
export class PickleGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A persistent-id storage: the zip entry `<archive>/data/<key>` holding `numel` elements of `dtype`. */
export class TorchStorage {
  constructor(
    readonly dtype: DType,
    readonly key: string,
    readonly location: string,
    readonly numel: number,
  ) {}
}

/** A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage. */
export class TorchTensor {
  constructor(
    readonly storage: TorchStorage,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    readonly requiresGrad: boolean,
  ) {}
}

/** Storage classes named in persistent ids, and the element type each holds. */
export const TORCH_STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  "torch.DoubleStorage": "F64",
  "torch.FloatStorage": "F32",
  "torch.HalfStorage": "F16",
  "torch.BFloat16Storage": "BF16",
  "torch.LongStorage": "I64",
  "torch.IntStorage": "I32",
  "torch.ShortStorage": "I16",
  "torch.CharStorage": "I8",
  "torch.ByteStorage": "U8",
  "torch.BoolStorage": "BOOL",
  // Untyped storages count bytes.
  "torch.UntypedStorage": "U8",
  "torch.storage.UntypedStorage": "U8",
};

/** Globals that may appear only as values (types passed as arguments), never be called. */
const INERT_GLOBALS = new Set([
  "torch.Tensor",
  "torch._tensor.Tensor",
  "torch.nn.Parameter",
  "torch.nn.parameter.Parameter",
  ...Object.keys(TORCH_STORAGE_DTYPES),
]);

type Callable = (args: readonly PickleValue[], fail: (detail: string) => UsageError) => PickleValue;

/** The only callables REDUCE may apply; each merely builds data. */
const CALLABLES: Readonly<Record<string, Callable>> = {
  "collections.OrderedDict": (args, fail) => {
    const dict = new PickleDict(true);
    if (args.length === 0) return dict;
    if (args.length !== 1) throw fail(`OrderedDict takes at most one argument, got ${args.length}`);
    const items = args[0];
    const pairs = Array.isArray(items) ? items : items instanceof PickleTuple ? items.items : undefined;
    if (!pairs) throw fail("OrderedDict argument is not a list of pairs");
    for (const pair of pairs) {
      const kv = Array.isArray(pair) ? pair : pair instanceof PickleTuple ? pair.items : undefined;
      if (!kv || kv.length !== 2) throw fail("OrderedDict argument is not a list of pairs");
      dict.entries.set(asKey(kv[0]!, fail), kv[1]!);
    }
    return dict;
  },
  "torch._utils._rebuild_tensor_v2": (args, fail) => {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (args.length !== 6 && args.length !== 7) throw fail(`_rebuild_tensor_v2 takes 6 or 7 arguments, got ${args.length}`);
    if (typeof args[4] !== "boolean") throw fail("_rebuild_tensor_v2 requires_grad is not a bool");
    return rebuildTensor(args, args[4], fail);
  },
  "torch._utils._rebuild_tensor": (args, fail) => {
    // (storage, storage_offset, size, stride)
    if (args.length !== 4) throw fail(`_rebuild_tensor takes 4 arguments, got ${args.length}`);
    return rebuildTensor(args, false, fail);
  },
  "torch._utils._rebuild_parameter": (args, fail) => {
    // (data, requires_grad, backward_hooks)
    if (args.length !== 3) throw fail(`_rebuild_parameter takes 3 arguments, got ${args.length}`);
    return asParameter(args, fail);
  },
  "torch._utils._rebuild_parameter_with_state": (args, fail) => {
    // (data, requires_grad, backward_hooks, state)
    if (args.length !== 4) throw fail(`_rebuild_parameter_with_state takes 4 arguments, got ${args.length}`);
    return asParameter(args, fail);
  },
  "torch._tensor._rebuild_from_type_v2": (args, fail) => {
    // (func, new_type, args, state): a tensor subclass; we keep the plain tensor `func(*args)` builds.
    if (args.length !== 4) throw fail(`_rebuild_from_type_v2 takes 4 arguments, got ${args.length}`);
    const [func, newType, inner] = args;
    // Not itself: that keeps the (JS) recursion one level deep whatever the file nests.
    if (!(func instanceof PickleGlobal) || func.qualifiedName === "torch._tensor._rebuild_from_type_v2") {
      throw fail("_rebuild_from_type_v2 func is not a tensor constructor");
    }
    if (!(newType instanceof PickleGlobal) || !INERT_GLOBALS.has(newType.qualifiedName)) {
      throw fail("_rebuild_from_type_v2 type is not a tensor type");
    }
    if (!(inner instanceof PickleTuple)) throw fail("_rebuild_from_type_v2 args is not a tuple");
    const result = call(func, inner.items, fail);
    if (!(result instanceof TorchTensor)) throw fail("_rebuild_from_type_v2 did not rebuild a tensor");
    return result;
  },
  "torch.Size": (args, fail) => {
    if (args.length === 0) return new PickleTuple([]);
    const dims = args[0];
    if (args.length !== 1 || !(dims instanceof PickleTuple || Array.isArray(dims))) throw fail("torch.Size takes one tuple");
    return new PickleTuple(dims instanceof PickleTuple ? dims.items : dims);
  },
  "torch.device": (args, fail) => {
    if (args.length < 1 || args.length > 2 || typeof args[0] !== "string") throw fail("torch.device takes a type string");
    return args.length === 2 ? `${args[0]}:${String(args[1])}` : args[0];
  },
  // What CPython's protocols 0–3 use for builtin data (bytes, sets): harmless constructors.
  "_codecs.encode": (args, fail) => {
    const [text, encoding] = args;
    if (args.length !== 2 || typeof text !== "string" || typeof encoding !== "string") throw fail("_codecs.encode takes (str, encoding)");
    if (/^(latin-?1|iso-?8859-?1)$/i.test(encoding)) {
      const out = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        if (c > 0xff) throw fail("_codecs.encode: text is not latin-1");
        out[i] = c;
      }
      return out;
    }
    if (/^utf-?8$/i.test(encoding)) return new TextEncoder().encode(text);
    throw fail(`_codecs.encode: unsupported encoding ${encoding}`);
  },
  "builtins.set": (args, fail) => makeSet(args, false, fail),
  "builtins.frozenset": (args, fail) => makeSet(args, true, fail),
  "__builtin__.set": (args, fail) => makeSet(args, false, fail),
  "__builtin__.frozenset": (args, fail) => makeSet(args, true, fail),
  "torch.serialization._get_layout": (args, fail) => {
    if (args.length !== 1 || typeof args[0] !== "string") throw fail("_get_layout takes a name string");
    return args[0];
  },
};

function makeSet(args: readonly PickleValue[], frozen: boolean, fail: (d: string) => UsageError): PickleSet {
  const set = new PickleSet(frozen);
  if (args.length === 0) return set;
  const items = args[0];
  if (args.length !== 1 || !(Array.isArray(items) || items instanceof PickleTuple)) throw fail("set takes one list");
  set.items.push(...(Array.isArray(items) ? items : items.items));
  return set;
}

function call(fn: PickleGlobal, args: readonly PickleValue[], fail: (detail: string) => UsageError): PickleValue {
  const impl = CALLABLES[fn.qualifiedName];
  if (!impl) throw fail(`${fn.qualifiedName} cannot be called`);
  return impl(args, fail);
}

function rebuildTensor(args: readonly PickleValue[], requiresGrad: boolean, fail: (d: string) => UsageError): TorchTensor {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof TorchStorage)) throw fail("tensor storage is not a persistent storage");
  const storageOffset = asCount(offset!, "storage offset", fail);
  const shape = asCounts(size!, "size", fail);
  const strides = asCounts(stride!, "stride", fail);
  if (shape.length !== strides.length) throw fail(`tensor size has ${shape.length} dims but stride has ${strides.length}`);
  return new TorchTensor(storage, storageOffset, shape, strides, requiresGrad);
}

function asParameter(args: readonly PickleValue[], fail: (d: string) => UsageError): TorchTensor {
  const [data, requiresGrad] = args;
  if (!(data instanceof TorchTensor)) throw fail("parameter data is not a tensor");
  if (typeof requiresGrad !== "boolean") throw fail("parameter requires_grad is not a bool");
  return new TorchTensor(data.storage, data.storageOffset, data.shape, data.stride, requiresGrad);
}

function asCount(v: PickleValue, what: string, fail: (d: string) => UsageError): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw fail(`tensor ${what} is not a non-negative integer`);
  return v;
}

function asCounts(v: PickleValue, what: string, fail: (d: string) => UsageError): number[] {
  const items = v instanceof PickleTuple ? v.items : Array.isArray(v) ? v : undefined;
  if (!items) throw fail(`tensor ${what} is not a tuple`);
  return items.map((d) => asCount(d, what, fail));
}

function asKey(v: PickleValue, fail: (d: string) => UsageError): PickleKey {
  if (v === null || typeof v === "string" || typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") {
    return v;
  }
  throw fail("dict key is not a string or number");
}

export interface UnpickleOptions {
  /** Named in every message (the checkpoint file). */
  file: string;
  /** Stack depth and memo size limits, so a hostile pickle cannot exhaust memory cheaply. */
  maxStack?: number;
  maxMemo?: number;
}

// Opcodes (pickletools names).
const OP = {
  MARK: 0x28, STOP: 0x2e, POP: 0x30, POP_MARK: 0x31, DUP: 0x32, FLOAT: 0x46, INT: 0x49, BININT: 0x4a,
  BININT1: 0x4b, LONG: 0x4c, BININT2: 0x4d, NONE: 0x4e, PERSID: 0x50, BINPERSID: 0x51, REDUCE: 0x52,
  STRING: 0x53, BINSTRING: 0x54, SHORT_BINSTRING: 0x55, UNICODE: 0x56, BINUNICODE: 0x58, APPEND: 0x61,
  BUILD: 0x62, GLOBAL: 0x63, DICT: 0x64, EMPTY_DICT: 0x7d, APPENDS: 0x65, GET: 0x67, BINGET: 0x68,
  INST: 0x69, LONG_BINGET: 0x6a, LIST: 0x6c, EMPTY_LIST: 0x5d, OBJ: 0x6f, PUT: 0x70, BINPUT: 0x71,
  LONG_BINPUT: 0x72, SETITEM: 0x73, TUPLE: 0x74, EMPTY_TUPLE: 0x29, SETITEMS: 0x75, BINFLOAT: 0x47,
  PROTO: 0x80, NEWOBJ: 0x81, EXT1: 0x82, EXT2: 0x83, EXT4: 0x84, TUPLE1: 0x85, TUPLE2: 0x86, TUPLE3: 0x87,
  NEWTRUE: 0x88, NEWFALSE: 0x89, LONG1: 0x8a, LONG4: 0x8b, BINBYTES: 0x42, SHORT_BINBYTES: 0x43,
  SHORT_BINUNICODE: 0x8c, BINUNICODE8: 0x8d, BINBYTES8: 0x8e, EMPTY_SET: 0x8f, ADDITEMS: 0x90,
  FROZENSET: 0x91, NEWOBJ_EX: 0x92, STACK_GLOBAL: 0x93, MEMOIZE: 0x94, FRAME: 0x95, BYTEARRAY8: 0x96,
  NEXT_BUFFER: 0x97, READONLY_BUFFER: 0x98,
} as const;

const utf8 = new TextDecoder("utf-8");

/** Unpickle torch's `data.pkl` under the allow-list above. Throws UsageError (exit 2) for anything else. */
export function unpickleTorch(bytes: Uint8Array, options: UnpickleOptions): PickleValue {
  return new Unpickler(bytes, options).load();
}

class Unpickler {
  private pos = 0;
  private readonly view: DataView;
  private readonly stack: PickleValue[] = [];
  /** Stack lengths at each open MARK. */
  private readonly marks: number[] = [];
  private readonly memo = new Map<number, PickleValue>();
  private readonly file: string;
  private readonly maxStack: number;
  private readonly maxMemo: number;
  private opAt = 0;

  constructor(
    private readonly bytes: Uint8Array,
    options: UnpickleOptions,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.file = options.file;
    this.maxStack = options.maxStack ?? 1 << 20;
    this.maxMemo = options.maxMemo ?? 1 << 20;
  }

  readonly fail = (detail: string): UsageError =>
    new UsageError(
      `${this.file}: unreadable pickle in data.pkl at byte ${this.opAt} (${oneLine(detail)}); the checkpoint is corrupt or not a torch state dict`,
    );

  load(): PickleValue {
    for (;;) {
      this.opAt = this.pos;
      const op = this.u8();
      switch (op) {
        case OP.PROTO: {
          const proto = this.u8();
          if (proto > 5) throw this.fail(`unsupported pickle protocol ${proto}`);
          break;
        }
        case OP.FRAME: {
          const length = this.u64();
          if (length > this.bytes.byteLength - this.pos) throw this.fail("frame runs past the end");
          break;
        }
        case OP.STOP:
          return this.pop();

        case OP.NONE: this.push(null); break;
        case OP.NEWTRUE: this.push(true); break;
        case OP.NEWFALSE: this.push(false); break;
        case OP.BININT: this.push(this.view.getInt32(this.need(4), true)); break;
        case OP.BININT1: this.push(this.u8()); break;
        case OP.BININT2: this.push(this.view.getUint16(this.need(2), true)); break;
        case OP.LONG1: this.push(this.long(this.u8())); break;
        case OP.LONG4: {
          const n = this.view.getInt32(this.need(4), true);
          if (n < 0) throw this.fail("negative LONG4 length");
          this.push(this.long(n));
          break;
        }
        case OP.BINFLOAT: this.push(this.view.getFloat64(this.need(8), false)); break;
        case OP.INT: this.push(this.textInt(this.line(), true)); break;
        case OP.LONG: this.push(this.textInt(this.line().replace(/L$/, ""), false)); break;
        case OP.FLOAT: {
          const text = this.line();
          if (!/^[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|inf|nan)$/i.test(text)) throw this.fail("bad FLOAT");
          this.push(/inf/i.test(text) ? (text.startsWith("-") ? -Infinity : Infinity) : /nan/i.test(text) ? NaN : Number(text));
          break;
        }

        case OP.BINUNICODE: this.push(this.utf8(this.view.getUint32(this.need(4), true))); break;
        case OP.SHORT_BINUNICODE: this.push(this.utf8(this.u8())); break;
        case OP.BINUNICODE8: this.push(this.utf8(this.u64())); break;
        case OP.UNICODE: this.push(rawUnicodeEscape(this.line(), this.fail)); break;
        case OP.STRING: this.push(pythonStringLiteral(this.line(), this.fail)); break;
        case OP.BINSTRING: {
          const n = this.view.getInt32(this.need(4), true);
          if (n < 0) throw this.fail("negative BINSTRING length");
          this.push(latin1(this.take(n)));
          break;
        }
        case OP.SHORT_BINSTRING: this.push(latin1(this.take(this.u8()))); break;
        case OP.BINBYTES: this.push(this.take(this.view.getUint32(this.need(4), true)).slice()); break;
        case OP.SHORT_BINBYTES: this.push(this.take(this.u8()).slice()); break;
        case OP.BINBYTES8:
        case OP.BYTEARRAY8: this.push(this.take(this.u64()).slice()); break;

        case OP.EMPTY_LIST: this.push([]); break;
        case OP.EMPTY_TUPLE: this.push(new PickleTuple([])); break;
        case OP.EMPTY_DICT: this.push(new PickleDict(false)); break;
        case OP.EMPTY_SET: this.push(new PickleSet(false)); break;
        case OP.MARK:
          this.marks.push(this.stack.length);
          break;
        case OP.TUPLE: this.push(new PickleTuple(this.popMark())); break;
        case OP.TUPLE1: this.push(new PickleTuple(this.popN(1))); break;
        case OP.TUPLE2: this.push(new PickleTuple(this.popN(2))); break;
        case OP.TUPLE3: this.push(new PickleTuple(this.popN(3))); break;
        case OP.LIST: this.push(this.popMark()); break;
        case OP.DICT: {
          const items = this.popMark();
          const dict = new PickleDict(false);
          this.setItems(dict, items);
          this.push(dict);
          break;
        }
        case OP.FROZENSET: {
          const set = new PickleSet(true);
          set.items.push(...this.popMark());
          this.push(set);
          break;
        }
        case OP.APPEND: {
          const value = this.pop();
          this.listTop().push(value);
          break;
        }
        case OP.APPENDS: {
          const items = this.popMark();
          const list = this.listTop();
          for (const item of items) list.push(item);
          break;
        }
        case OP.SETITEM: {
          const [key, value] = this.popN(2);
          this.setItems(this.dictTop(), [key!, value!]);
          break;
        }
        case OP.SETITEMS: {
          const items = this.popMark();
          this.setItems(this.dictTop(), items);
          break;
        }
        case OP.ADDITEMS: {
          const items = this.popMark();
          const set = this.top();
          if (!(set instanceof PickleSet) || set.frozen) throw this.fail("ADDITEMS on something that is not a set");
          set.items.push(...items);
          break;
        }

        case OP.POP:
          if (this.marks.length > 0 && this.stack.length === this.marks[this.marks.length - 1]) this.popMark();
          else this.pop();
          break;
        case OP.POP_MARK: this.popMark(); break;
        case OP.DUP: this.push(this.top()); break;

        case OP.BINPUT: this.put(this.u8()); break;
        case OP.LONG_BINPUT: this.put(this.view.getUint32(this.need(4), true)); break;
        case OP.PUT: this.put(this.decimal(this.line())); break;
        case OP.MEMOIZE: this.put(this.memo.size); break;
        case OP.BINGET: this.get(this.u8()); break;
        case OP.LONG_BINGET: this.get(this.view.getUint32(this.need(4), true)); break;
        case OP.GET: this.get(this.decimal(this.line())); break;

        case OP.GLOBAL: {
          const module = this.line();
          const name = this.line();
          this.push(this.global(module, name));
          break;
        }
        case OP.STACK_GLOBAL: {
          const [module, name] = this.popN(2);
          if (typeof module !== "string" || typeof name !== "string") throw this.fail("STACK_GLOBAL needs two strings");
          this.push(this.global(module, name));
          break;
        }
        case OP.INST: {
          const fn = this.global(this.line(), this.line());
          this.push(this.apply(fn, this.popMark()));
          break;
        }
        case OP.OBJ: {
          const [fn, ...args] = this.popMark();
          this.push(this.apply(fn, args));
          break;
        }
        case OP.REDUCE: {
          const [fn, args] = this.popN(2);
          if (!(args instanceof PickleTuple)) throw this.fail("REDUCE arguments are not a tuple");
          this.push(this.apply(fn, args.items));
          break;
        }
        case OP.NEWOBJ: {
          const [cls, args] = this.popN(2);
          if (!(args instanceof PickleTuple)) throw this.fail("NEWOBJ arguments are not a tuple");
          this.push(this.apply(cls, args.items));
          break;
        }
        case OP.NEWOBJ_EX: {
          const [cls, args, kwargs] = this.popN(3);
          if (!(args instanceof PickleTuple)) throw this.fail("NEWOBJ_EX arguments are not a tuple");
          if (!(kwargs instanceof PickleDict) || kwargs.entries.size > 0) throw this.fail("NEWOBJ_EX keyword arguments are not supported");
          this.push(this.apply(cls, args.items));
          break;
        }
        case OP.BUILD: {
          const state = this.pop();
          const target = this.top();
          if (target instanceof PickleDict) target.state = state;
          else if (!(target instanceof TorchTensor)) throw this.fail("BUILD on something other than a dict or tensor");
          // A tensor's state (Parameter attributes) carries no weights.
          break;
        }
        case OP.BINPERSID: this.push(this.persistentLoad(this.pop())); break;
        case OP.PERSID: this.push(this.persistentLoad(this.line())); break;

        case OP.EXT1:
        case OP.EXT2:
        case OP.EXT4:
          throw this.fail("extension-registry globals (EXT opcodes) are not allowed");
        case OP.NEXT_BUFFER:
        case OP.READONLY_BUFFER:
          throw this.fail("out-of-band buffers are not supported");
        default:
          throw this.fail(`unknown opcode 0x${op.toString(16).padStart(2, "0")}`);
      }
    }
  }

  /** The allow-list gate: everything not named here is refused before it can be used. */
  private global(module: string, name: string): PickleGlobal {
    const qualified = `${module}.${name}`;
    if (CALLABLES[qualified] || INERT_GLOBALS.has(qualified)) return new PickleGlobal(module, name);
    throw new UsageError(
      `${this.file}: refusing pickle global ${oneLine(qualified)} (only tensors are loaded; this file may be malicious)`,
    );
  }

  private apply(fn: PickleValue, args: readonly PickleValue[]): PickleValue {
    if (!(fn instanceof PickleGlobal)) throw this.fail("call of a value that is not an allowed global");
    if (!CALLABLES[fn.qualifiedName]) {
      throw new UsageError(
        `${this.file}: refusing to call pickle global ${fn.qualifiedName} (only tensors are loaded; this file may be malicious)`,
      );
    }
    return call(fn, args, this.fail);
  }

  /** torch's persistent id: ('storage', storage_type, key, location, numel). */
  private persistentLoad(pid: PickleValue): TorchStorage {
    if (!(pid instanceof PickleTuple) || pid.items.length !== 5 || pid.items[0] !== "storage") {
      throw this.fail("persistent id is not a torch storage reference");
    }
    const [, type, key, location, numel] = pid.items;
    if (!(type instanceof PickleGlobal)) throw this.fail("storage type is not a storage class");
    const dtype = TORCH_STORAGE_DTYPES[type.qualifiedName];
    if (!dtype) throw this.fail(`${type.qualifiedName} is not a storage class`);
    // Keys name zip entries: torch writes decimal strings; allow nothing that could walk the archive.
    if (typeof key !== "string" || !/^[A-Za-z0-9_]{1,64}$/.test(key)) throw this.fail("storage key is not a simple name");
    if (typeof location !== "string") throw this.fail("storage location is not a string");
    if (typeof numel !== "number" || !Number.isSafeInteger(numel) || numel < 0) throw this.fail("storage size is not a count");
    return new TorchStorage(dtype, key, location, numel);
  }

  private setItems(dict: PickleDict, items: readonly PickleValue[]): void {
    if (items.length % 2 !== 0) throw this.fail("odd number of dict items");
    for (let i = 0; i < items.length; i += 2) dict.entries.set(asKey(items[i]!, this.fail), items[i + 1]!);
  }

  private listTop(): PickleValue[] {
    const list = this.top();
    if (!Array.isArray(list)) throw this.fail("APPEND to something that is not a list");
    return list;
  }

  private dictTop(): PickleDict {
    const dict = this.top();
    if (!(dict instanceof PickleDict)) throw this.fail("SETITEM on something that is not a dict");
    return dict;
  }

  private put(index: number): void {
    if (!this.memo.has(index) && this.memo.size >= this.maxMemo) throw this.fail("memo too large");
    this.memo.set(index, this.top());
  }

  private get(index: number): void {
    if (!this.memo.has(index)) throw this.fail(`memo slot ${index} is empty`);
    this.push(this.memo.get(index)!);
  }

  private push(value: PickleValue): void {
    if (this.stack.length >= this.maxStack) throw this.fail("stack too deep");
    this.stack.push(value);
  }

  private floor(): number {
    return this.marks.length > 0 ? this.marks[this.marks.length - 1]! : 0;
  }

  private top(): PickleValue {
    if (this.stack.length <= this.floor()) throw this.fail("stack underflow");
    return this.stack[this.stack.length - 1]!;
  }

  private pop(): PickleValue {
    if (this.stack.length <= this.floor()) throw this.fail("stack underflow");
    return this.stack.pop()!;
  }

  private popN(n: number): PickleValue[] {
    if (this.stack.length - n < this.floor()) throw this.fail("stack underflow");
    return this.stack.splice(this.stack.length - n, n);
  }

  private popMark(): PickleValue[] {
    const mark = this.marks.pop();
    if (mark === undefined) throw this.fail("MARK expected");
    return this.stack.splice(mark);
  }

  private u8(): number {
    return this.bytes[this.need(1)]!;
  }

  private u64(): number {
    const v = this.view.getBigUint64(this.need(8), true);
    if (v > BigInt(this.bytes.byteLength)) throw this.fail("length runs past the end");
    return Number(v);
  }

  /** Reserve n bytes and return where they start. */
  private need(n: number): number {
    if (n > this.bytes.byteLength - this.pos) throw this.fail("pickle ends early (truncated)");
    const at = this.pos;
    this.pos += n;
    return at;
  }

  private take(n: number): Uint8Array {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }

  private utf8(n: number): string {
    return utf8.decode(this.take(n));
  }

  private line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw this.fail("pickle ends early (missing newline)");
    const text = latin1(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return text;
  }

  private long(n: number): number | bigint {
    const b = this.take(n);
    if (n === 0) return 0;
    let hex = "";
    for (let i = n - 1; i >= 0; i--) hex += b[i]!.toString(16).padStart(2, "0");
    let v = BigInt(`0x${hex}`);
    if (b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
    return normalizeInt(v);
  }

  private textInt(text: string, boolForm: boolean): number | bigint | boolean {
    if (boolForm && text === "00") return false;
    if (boolForm && text === "01") return true;
    if (!/^[+-]?\d+$/.test(text)) throw this.fail("bad INT");
    return normalizeInt(BigInt(text));
  }

  private decimal(text: string): number {
    if (!/^\d{1,10}$/.test(text)) throw this.fail("bad memo index");
    return Number(text);
  }
}

function normalizeInt(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return s;
}

/** Protocol 0 STRING: a quoted Python bytes literal (decoded as latin-1). */
function pythonStringLiteral(text: string, fail: (d: string) => UsageError): string {
  const q = text[0];
  if (text.length < 2 || (q !== "'" && q !== '"') || text[text.length - 1] !== q) throw fail("STRING is not quoted");
  const body = text.slice(1, -1);
  let out = "";
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c !== "\\") {
      out += c;
      continue;
    }
    const e = body[++i];
    if (e === undefined) throw fail("STRING ends in a backslash");
    const simple: Record<string, string> = { n: "\n", t: "\t", r: "\r", "\\": "\\", "'": "'", '"': '"', a: "\x07", b: "\b", f: "\f", v: "\v", "\n": "" };
    if (e in simple) out += simple[e];
    else if (e === "x") {
      const hex = body.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw fail("bad \\x escape in STRING");
      out += String.fromCharCode(parseInt(hex, 16));
      i += 2;
    } else if (/[0-7]/.test(e)) {
      const oct = /^[0-7]{1,3}/.exec(body.slice(i))![0];
      out += String.fromCharCode(parseInt(oct, 8) & 0xff);
      i += oct.length - 1;
    } else out += `\\${e}`;
  }
  return out;
}

/** Protocol 0 UNICODE: raw-unicode-escape (only \uXXXX and \UXXXXXXXX are escapes). */
function rawUnicodeEscape(text: string, fail: (d: string) => UsageError): string {
  return text.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_m, u4: string | undefined, u8: string | undefined) => {
    const cp = parseInt((u4 ?? u8)!, 16);
    if (cp > 0x10ffff) throw fail("bad \\U escape in UNICODE");
    return String.fromCodePoint(cp);
  });
}

/** Keep a message on one line and short, whatever bytes a hostile file put in a name. */
function oneLine(text: string): string {
  const clean = text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  return clean.length > 200 ? `${clean.slice(0, 200)}…` : clean;
}
