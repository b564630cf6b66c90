import { writeAtomic } from "../util/atomic.js";
import { DTYPE_BYTES, elementCount, type TensorInfo } from "./tensor.js";

/**
 * Writes a .safetensors file tensor by tensor: the header is computed from the tensor list, then
 * each tensor's bytes are produced and written in turn, so a 1.3 GB checkpoint never sits in memory.
 * The file appears under its final name only when complete.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorInfo[],
  produce: (info: TensorInfo) => Uint8Array | Promise<Uint8Array>,
  metadata: Record<string, string> = { format: "pt" },
): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const length = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + length] };
    offset += length;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so that the data section starts 8-byte aligned, as the reference writer does.
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  await writeAtomic(path, async (handle) => {
    await handle.write(prefix);
    await handle.write(headerBytes);
    for (const t of tensors) {
      const bytes = await produce(t);
      const expected = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
      if (bytes.byteLength !== expected) {
        throw new Error(`tensor ${t.name}: produced ${bytes.byteLength} bytes, expected ${expected}`);
      }
      await handle.write(bytes);
    }
  });
}
