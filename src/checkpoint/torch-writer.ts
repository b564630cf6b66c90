import { crc32 } from "./zip.js";
import { DTYPE_BYTES, elementCount, type DType } from "./tensor.js";
import { writeFileAtomic } from "../util/atomic.js";

/** torch's storage class per element type (the persistent id of each storage names it). */
const STORAGE_CLASS: Partial<Record<DType, string>> = { F64: "DoubleStorage", F32: "FloatStorage", F16: "HalfStorage", BF16: "BFloat16Storage" };

export interface TorchWriteTensor {
  name: string;
  dtype: "F64" | "F32" | "F16" | "BF16";
  shape: number[];
  /** Little-endian element bytes, row-major. */
  data: Uint8Array;
}

/**
 * A torch.save (zip format, torch ≥ 1.6) file holding an OrderedDict state dict, as
 * `torch.save(module.state_dict(), "<archive>.pt")` writes it: `<archive>/data.pkl` (pickle protocol
 * 2: OrderedDict of `_rebuild_tensor_v2` calls on persistent-id storages), one `<archive>/data/<k>`
 * per tensor with its data 64-byte aligned, `<archive>/byteorder` and `<archive>/version`, all
 * stored uncompressed. What bge fixture writes for bge-m3's `sparse_linear.pt`/`colbert_linear.pt`.
 */
export function torchStateDictBytes(archive: string, tensors: readonly TorchWriteTensor[]): Uint8Array {
  const entries: { name: string; data: Uint8Array }[] = [{ name: `${archive}/data.pkl`, data: stateDictPickle(tensors) }];
  entries.push({ name: `${archive}/byteorder`, data: ascii("little") });
  tensors.forEach((t, i) => {
    if (t.data.length !== elementCount(t.shape) * DTYPE_BYTES[t.dtype]) throw new Error(`${t.name}: ${t.data.length} bytes do not hold shape [${t.shape.join(", ")}] of ${t.dtype}`);
    entries.push({ name: `${archive}/data/${i}`, data: t.data });
  });
  entries.push({ name: `${archive}/version`, data: ascii("3\n") });
  return storedZip(entries);
}

export async function writeTorchStateDict(path: string, archive: string, tensors: readonly TorchWriteTensor[]): Promise<void> {
  await writeFileAtomic(path, torchStateDictBytes(archive, tensors));
}

function stateDictPickle(tensors: readonly TorchWriteTensor[]): Uint8Array {
  const p = new Bytes();
  const str = (s: string) => {
    const b = new TextEncoder().encode(s);
    p.push(0x58, u32(b.length), b); // BINUNICODE
  };
  const int = (v: number) => {
    if (v < 256) p.push(0x4b, v); // BININT1
    else if (v < 65536) p.push(0x4d, u16(v)); // BININT2
    else p.push(0x4a, u32(v)); // BININT
  };
  const global = (module: string, name: string) => p.push(0x63, ascii(`${module}\n${name}\n`));
  const tuple = (items: number[]) => {
    p.push(0x28); // MARK
    items.forEach(int);
    p.push(0x74); // TUPLE
  };
  const orderedDict = () => {
    global("collections", "OrderedDict");
    p.push(0x29, 0x52); // EMPTY_TUPLE REDUCE
  };
  p.push(0x80, 2); // PROTO 2
  orderedDict();
  p.push(0x28); // MARK (SETITEMS)
  tensors.forEach((t, i) => {
    str(t.name);
    global("torch._utils", "_rebuild_tensor_v2");
    p.push(0x28); // MARK (arguments)
    p.push(0x28); // MARK (persistent id)
    str("storage");
    global("torch", STORAGE_CLASS[t.dtype]!);
    str(String(i));
    str("cpu");
    int(elementCount(t.shape));
    p.push(0x74, 0x51); // TUPLE BINPERSID
    int(0);
    tuple(t.shape);
    const stride: number[] = [];
    let s = 1;
    for (let d = t.shape.length - 1; d >= 0; d--) {
      stride.unshift(s);
      s *= t.shape[d]!;
    }
    tuple(stride);
    p.push(0x89); // NEWFALSE (requires_grad)
    orderedDict(); // backward hooks
    p.push(0x74, 0x52); // TUPLE REDUCE
  });
  p.push(0x75, 0x2e); // SETITEMS STOP
  return p.bytes();
}

/** A zip with every entry stored, each entry's data 64-byte aligned by an "FB" extra field as torch pads it. */
function storedZip(entries: readonly { name: string; data: Uint8Array }[]): Uint8Array {
  const out = new Bytes();
  const central = new Bytes();
  for (const e of entries) {
    const name = ascii(e.name);
    const offset = out.length;
    const pad = (64 - ((offset + 30 + name.length + 4) % 64)) % 64;
    const extra = new Uint8Array(4 + pad).fill(0x5a);
    extra.set([0x46, 0x42, pad & 0xff, pad >> 8]);
    const crc = crc32(e.data);
    out.push(u32(0x04034b50), u16(20), u16(0), u16(0), u16(0), u16(0x21), u32(crc), u32(e.data.length), u32(e.data.length), u16(name.length), u16(extra.length), name, extra, e.data);
    central.push(u32(0x02014b50), u16(20), u16(20), u16(0), u16(0), u16(0), u16(0x21), u32(crc), u32(e.data.length), u32(e.data.length));
    central.push(u16(name.length), u16(0), u16(0), u16(0), u16(0), u32(0), u32(offset), name);
  }
  const cdOffset = out.length;
  const cd = central.bytes();
  out.push(cd, u32(0x06054b50), u16(0), u16(0), u16(entries.length), u16(entries.length), u32(cd.length), u32(cdOffset), u16(0));
  return out.bytes();
}

class Bytes {
  private readonly parts: Uint8Array[] = [];
  length = 0;
  push(...items: (number | Uint8Array)[]): void {
    for (const item of items) {
      const b = typeof item === "number" ? Uint8Array.of(item) : item;
      this.parts.push(b);
      this.length += b.length;
    }
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

const ascii = (s: string) => new TextEncoder().encode(s);
const u16 = (v: number) => Uint8Array.of(v & 0xff, (v >>> 8) & 0xff);
const u32 = (v: number) => Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
