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
  close(): Promise<void>;
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
