import { DTYPE_BYTES, type DType } from "./tensor.js";
import { UsageError } from "../errors.js";

/** IEEE half → float, exact (every half is representable in float32). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float → IEEE half bits, round to nearest even (as numpy/torch do). */
export function floatToHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rem > mid || (rem === mid && half & 1) ? 1 : 0));
  }
  const half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  return sign | (half + (rem > 0x1000 || (rem === 0x1000 && half & 1) ? 1 : 0));
}

/** float → bfloat16 bits, round to nearest even. */
export function floatToBf16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Decode a floating tensor's little-endian bytes into float64 (exact for every source type). */
export function bytesToFloat64(bytes: Uint8Array, dtype: DType, name = "tensor"): Float64Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F64": {
      const out = new Float64Array(bytes.byteLength / 8);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    case "F32": {
      const out = new Float64Array(bytes.byteLength / 4);
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    case "F16": {
      const out = new Float64Array(bytes.byteLength / 2);
      for (let i = 0; i < out.length; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
      return out;
    }
    case "BF16": {
      const out = new Float64Array(bytes.byteLength / 2);
      for (let i = 0; i < out.length; i++) {
        u32[0] = view.getUint16(i * 2, true) << 16;
        out[i] = f32[0]!;
      }
      return out;
    }
    case "I64": {
      const out = new Float64Array(bytes.byteLength / 8);
      for (let i = 0; i < out.length; i++) out[i] = Number(view.getBigInt64(i * 8, true));
      return out;
    }
    default:
      throw new UsageError(`${name}: dtype ${dtype} is not a floating type; BGE weights are F32, F16 or BF16`);
  }
}

/** Decode into float32 (what ONNX fp32 export writes). */
export function bytesToFloat32(bytes: Uint8Array, dtype: DType, name = "tensor"): Float32Array {
  if (dtype === "F32" && bytes.byteOffset % 4 === 0) {
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }
  return Float32Array.from(bytesToFloat64(bytes, dtype, name));
}

/**
 * Refuses a floating tensor holding NaN or ±Infinity, naming it and the first bad element. Works on
 * the stored bits (an all-ones exponent), so it costs one pass over the bytes and no decoding. `part`
 * places a chunk of a streamed tensor: its first element's index and the tensor's element count.
 */
export function assertFiniteTensor(bytes: Uint8Array, dtype: DType, what: string, part?: { first: number; count: number }): void {
  const bad = firstNonFinite(bytes, dtype);
  if (bad < 0) return;
  const size = DTYPE_BYTES[dtype];
  const value = bytesToFloat64(bytes.slice(bad * size, (bad + 1) * size), dtype)[0]!;
  const count = part?.count ?? bytes.byteLength / size;
  throw new UsageError(`${what} holds ${value} at element ${(part?.first ?? 0) + bad} of ${count}; the weights are corrupt: download or convert the checkpoint again`);
}

/** Index of the first NaN/±Inf element of a floating tensor, -1 when none (or not a floating type). */
function firstNonFinite(bytes: Uint8Array, dtype: DType): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F32": {
      const n = bytes.byteLength / 4;
      if (bytes.byteOffset % 4 === 0) {
        const words = new Uint32Array(bytes.buffer, bytes.byteOffset, n);
        // A branch-free scan first (every weight of every export passes here): an all-ones exponent
        // plus one carries into the sign bit, so the OR of (exponent + 2^23) goes negative exactly when
        // some element is NaN or ±Inf. 1.5× the speed of the compare-and-branch loop; that loop then
        // finds the element.
        let bad = 0;
        const m = n & ~3;
        for (let i = 0; i < m; i += 4) {
          bad |= ((words[i]! & 0x7f800000) + 0x00800000) | ((words[i + 1]! & 0x7f800000) + 0x00800000) | ((words[i + 2]! & 0x7f800000) + 0x00800000) | ((words[i + 3]! & 0x7f800000) + 0x00800000);
        }
        for (let i = m; i < n; i++) bad |= (words[i]! & 0x7f800000) + 0x00800000;
        if (bad >= 0) return -1;
        for (let i = 0; i < n; i++) if ((words[i]! & 0x7f800000) === 0x7f800000) return i;
        return -1;
      }
      for (let i = 0; i < n; i++) if ((view.getUint32(i * 4, true) & 0x7f800000) === 0x7f800000) return i;
      return -1;
    }
    case "F64": {
      const n = bytes.byteLength / 8;
      for (let i = 0; i < n; i++) if ((view.getUint32(i * 8 + 4, true) & 0x7ff00000) === 0x7ff00000) return i;
      return -1;
    }
    case "F16":
    case "BF16": {
      const mask = dtype === "F16" ? 0x7c00 : 0x7f80;
      const n = bytes.byteLength / 2;
      for (let i = 0; i < n; i++) if ((view.getUint16(i * 2, true) & mask) === mask) return i;
      return -1;
    }
    default:
      return -1;
  }
}
