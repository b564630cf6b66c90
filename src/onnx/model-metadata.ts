import { open } from "node:fs/promises";
import { ModelProto } from "./proto.js";

const METADATA_PROPS_FIELD = 14;
/** Enough bytes for a field key and a length varint. */
const HEAD = 24;

/** Reads an unsigned protobuf varint (< 2^53) at `at`; returns the value and the bytes it took, or undefined past `end`. */
function readVarint(buf: Uint8Array, at: number, end: number): [number, number] | undefined {
  let value = 0;
  let scale = 1;
  for (let i = at; i < end && i - at < 10; i++) {
    const b = buf[i]!;
    value += (b & 0x7f) * scale;
    scale *= 128;
    if (b < 0x80) return [value, i - at + 1];
  }
  return undefined;
}

/**
 * The `metadata_props` of an ONNX file (bge export writes model_id, pooling, normalize, precision).
 * Walks the ModelProto's top-level fields and seeks past the graph instead of decoding it, so a
 * multi-gigabyte model costs a few small reads. Returns undefined when the file cannot be walked
 * (ONNX Runtime, which loaded it first, is the judge of a malformed model).
 */
export async function readOnnxMetadata(path: string): Promise<Record<string, string> | undefined> {
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    const head = new Uint8Array(HEAD);
    const entries: Uint8Array[] = [];
    let pos = 0;
    while (pos < size) {
      const { bytesRead } = await fh.read(head, 0, HEAD, pos);
      const key = readVarint(head, 0, bytesRead);
      if (!key) return undefined;
      const [tag, keyLen] = key;
      const wire = tag % 8;
      if (wire === 0) {
        const v = readVarint(head, keyLen, bytesRead);
        if (!v) return undefined;
        pos += keyLen + v[1];
      } else if (wire === 1 || wire === 5) {
        pos += keyLen + (wire === 1 ? 8 : 4);
      } else if (wire === 2) {
        const len = readVarint(head, keyLen, bytesRead);
        if (!len) return undefined;
        const total = keyLen + len[1] + len[0];
        if (pos + total > size) return undefined;
        if (Math.floor(tag / 8) === METADATA_PROPS_FIELD) {
          const entry = new Uint8Array(total);
          await fh.read(entry, 0, total, pos);
          entries.push(entry);
        }
        pos += total;
      } else {
        return undefined;
      }
    }
    // The collected entries alone are a valid ModelProto holding only metadata_props.
    const bytes = Buffer.concat(entries);
    const decoded = ModelProto.decode(bytes) as unknown as { metadataProps?: { key: string; value: string }[] };
    return Object.fromEntries((decoded.metadataProps ?? []).map((p) => [p.key, p.value]));
  } finally {
    await fh.close();
  }
}
