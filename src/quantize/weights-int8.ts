/**
 * Symmetric int8 weight quantisation (zero point 0). Our linear weights are stored [out, in] (Gemm
 * transB=1), so a row is an output channel: one scale per row, scale = max|row| / qmax, values
 * round(w / scale) clamped to [-qmax, qmax]. Every element then dequantises to within scale/2 of its
 * float32 value. qmax is 127 (full int8, what TensorRT and VNNI CPUs take) or 64 (7-bit weights,
 * ONNX Runtime's `reduce_range`, for x86 CPUs without VNNI — see dynamic-graph.ts).
 */

export const INT8_MAX = 127;
/** ONNX Runtime's reduced range for s8 weights: pairs of u8 × s8 products then fit int16 (255·64·2 < 32767). */
export const INT7_MAX = 64;

/** Round half to even, as ONNX QuantizeLinear (and DynamicQuantizeLinear) round. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; step back to the even neighbour on exact ties.
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The float32 scale for a symmetric range ±amax. An all-zero channel gets scale 1 (its values are 0
 * whatever the scale; TensorRT and ORT refuse non-positive scales).
 */
export function symmetricScale(amax: number, qmax: number = INT8_MAX): number {
  if (!Number.isFinite(amax) || amax < 0) throw new Error(`cannot quantise a range of ±${amax}`);
  const s = Math.fround(amax / qmax);
  return s > 0 ? s : 1;
}

function quantizeInto(out: Int8Array, w: Float32Array, from: number, to: number, scale: number, qmax: number): void {
  for (let i = from; i < to; i++) {
    const q = roundHalfEven(w[i]! / scale);
    out[i] = q > qmax ? qmax : q < -qmax ? -qmax : q;
  }
}

export interface PerChannelInt8 {
  /** Quantised values, same layout as the input ([rows, cols]). */
  values: Int8Array;
  /** One float32 scale per row (output channel). */
  scales: Float32Array;
}

/** Per-row (axis 0) symmetric quantisation of a row-major [rows, cols] float32 matrix. */
export function quantizePerChannel(w: Float32Array, rows: number, cols: number, qmax: number = INT8_MAX): PerChannelInt8 {
  if (w.length !== rows * cols) throw new Error(`weight of ${w.length} values is not ${rows}×${cols}`);
  const values = new Int8Array(w.length);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let amax = 0;
    for (let i = r * cols; i < (r + 1) * cols; i++) amax = Math.max(amax, Math.abs(w[i]!));
    const s = symmetricScale(amax, qmax);
    scales[r] = s;
    quantizeInto(values, w, r * cols, (r + 1) * cols, s, qmax);
  }
  return { values, scales };
}

/** One scale for the whole tensor (the naive placement; per-channel is the right one for weights). */
export function quantizePerTensor(w: Float32Array, qmax: number = INT8_MAX): { values: Int8Array; scale: number } {
  let amax = 0;
  for (let i = 0; i < w.length; i++) amax = Math.max(amax, Math.abs(w[i]!));
  const scale = symmetricScale(amax, qmax);
  const values = new Int8Array(w.length);
  quantizeInto(values, w, 0, w.length, scale, qmax);
  return { values, scale };
}

/** What DequantizeLinear(axis=0) computes: values[r, c] · scales[r], in float32. */
export function dequantizePerChannel(values: Int8Array, scales: Float32Array, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i]! * scales[Math.floor(i / cols)]!;
  return out;
}

/** [rows, cols] → [cols, rows]: MatMulInteger takes B as [K, N] = [in, out]. */
export function transposeInt8(values: Int8Array, rows: number, cols: number): Int8Array {
  const out = new Int8Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
