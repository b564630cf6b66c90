import { UsageError } from "../errors.js";

/**
 * Byte offset of the first byte that does not start or continue a well-formed UTF-8 sequence
 * (overlongs, surrogates and code points past U+10FFFF included, as the WHATWG decoder sees them),
 * or -1 when all of `bytes` is valid.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  const n = bytes.length;
  while (i < n) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined) return i;
      if (k === 1 ? c < lo || c > hi : c < 0x80 || c > 0xbf) return i;
    }
    i += need + 1;
  }
  return -1;
}

/**
 * Decodes a text input strictly: UTF-8 only (a leading BOM is dropped). Anything else
 * — Latin-1, UTF-16, a binary file, a truncated sequence — is exit 2 naming file, line and byte
 * offset, instead of being read as U+FFFD replacement characters that silently change the vectors.
 */
export function decodeUtf8Strict(bytes: Uint8Array, path: string): string {
  const bom = bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  const body = bytes.subarray(bom);
  const at = firstInvalidUtf8(body);
  if (at >= 0) {
    let line = 1;
    for (let i = 0; i < at; i++) if (body[i] === 0x0a) line++;
    const offset = at + bom;
    const utf16 = bom === 0 && bytes.length >= 2 && ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff));
    const hint = utf16 ? " (the file looks UTF-16: convert it with iconv -f UTF-16 -t UTF-8)" : "";
    throw new UsageError(`${path}: line ${line}, byte offset ${offset}: byte 0x${body[at]!.toString(16).padStart(2, "0")} is not valid UTF-8${hint}; text inputs must be UTF-8`);
  }
  return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(body);
}
