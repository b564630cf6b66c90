import { open, type FileHandle } from "node:fs/promises";
import * as zlib from "node:zlib";
import { UsageError } from "../errors.js";
import { assertInputFile } from "../util/io-paths.js";
import type { ChunkScratch } from "./tensor.js";

/**
 * A minimal, read-only zip reader for torch.save archives: it parses the central directory (with
 * ZIP64 records) and reads entry bytes at their offsets through one file handle, so that a 2 GB
 * checkpoint is never held in memory. Every offset and length is checked against the file size
 * before it is used; anything inconsistent is a UsageError naming the file.
 */

export interface ZipEntry {
  name: string;
  /** 0 = STORED, 8 = DEFLATE; torch writes STORED. */
  method: number;
  /** General-purpose bit flags (bit 0 = encrypted). */
  flags: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;

const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_MIN_SIZE = 56;
const CENTRAL_HEADER_SIZE = 46;
const LOCAL_HEADER_SIZE = 30;
const MAX_COMMENT = 0xffff;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

/** A central directory larger than this is not a checkpoint's (bge-m3 has a few hundred entries). */
const MAX_CENTRAL_DIRECTORY_BYTES = 64 * 1024 * 1024;
/** Node reads at most 2 GiB per call; stay well under it. */
const READ_CHUNK = 1 << 30;

export const ZIP_STORED = 0;
export const ZIP_DEFLATED = 8;

export class ZipReader {
  private closed = false;
  private readonly dataOffsets = new Map<string, number>();

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    /** File size in bytes. */
    readonly size: number,
    readonly entries: readonly ZipEntry[],
    private readonly byName: ReadonlyMap<string, ZipEntry>,
    /** Where the central directory starts: no entry's data may run past it. */
    private readonly centralDirectoryOffset: number,
  ) {}

  static async open(path: string): Promise<ZipReader> {
    const fh = await openFile(path);
    try {
      const { size } = await fh.stat();
      const dir = await readCentralDirectory(path, fh, size);
      return new ZipReader(path, fh, size, dir.entries, dir.byName, dir.offset);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  get(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /**
   * Absolute file offset of a STORED entry's first data byte, read from its local header (whose
   * extra field may differ from the central one: torch pads it to align tensor data to 64 bytes).
   */
  async dataOffset(entry: ZipEntry): Promise<number> {
    const cached = this.dataOffsets.get(entry.name);
    if (cached !== undefined) return cached;
    if (entry.flags & 1) throw this.fail(`entry ${entry.name} is encrypted`);
    if (entry.method !== ZIP_STORED && entry.method !== ZIP_DEFLATED) {
      throw new UsageError(
        `${this.path}: zip entry ${entry.name} uses compression method ${entry.method}; ` +
          `only stored entries (as torch.save writes them) can be read — re-save the checkpoint with torch.save`,
      );
    }
    const lho = entry.localHeaderOffset;
    if (lho + LOCAL_HEADER_SIZE > this.centralDirectoryOffset) {
      throw this.fail(`local header of ${entry.name} lies past the central directory`);
    }
    const header = await this.readRaw(lho, LOCAL_HEADER_SIZE);
    const view = dataView(header);
    if (view.getUint32(0, true) !== SIG_LOCAL) throw this.fail(`bad local header signature for ${entry.name}`);
    const nameLength = view.getUint16(26, true);
    const extraLength = view.getUint16(28, true);
    const start = lho + LOCAL_HEADER_SIZE + nameLength + extraLength;
    if (start > this.centralDirectoryOffset || entry.compressedSize > this.centralDirectoryOffset - start) {
      throw this.fail(`data of ${entry.name} runs past the central directory`);
    }
    const localName = await this.readRaw(lho + LOCAL_HEADER_SIZE, nameLength);
    if (decodeName(localName) !== entry.name) {
      throw this.fail(`local header name does not match central directory entry ${entry.name}`);
    }
    this.dataOffsets.set(entry.name, start);
    return start;
  }

  /**
   * The whole (decompressed) contents of a small entry, CRC-checked. `maxBytes` guards against an
   * entry that claims to be huge (or a deflate bomb).
   */
  async readEntry(entry: ZipEntry, maxBytes: number): Promise<Uint8Array> {
    if (entry.uncompressedSize > maxBytes) {
      throw new UsageError(
        `${this.path}: zip entry ${entry.name} is ${entry.uncompressedSize} bytes, more than the ${maxBytes} expected; ` +
          `this is not a torch checkpoint`,
      );
    }
    const start = await this.dataOffset(entry);
    const raw = await this.readRaw(start, entry.compressedSize);
    let bytes = raw;
    if (entry.method === ZIP_DEFLATED) {
      try {
        const out = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.uncompressedSize) });
        bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      } catch {
        throw this.fail(`entry ${entry.name} does not inflate`);
      }
    } else if (entry.compressedSize !== entry.uncompressedSize) {
      throw this.fail(`stored entry ${entry.name} has different compressed and uncompressed sizes`);
    }
    if (bytes.byteLength !== entry.uncompressedSize) throw this.fail(`entry ${entry.name} has the wrong length`);
    this.verifyCrc(entry, bytes);
    return bytes;
  }

  /**
   * `length` bytes at `offset` inside a STORED entry's data. When the read covers the whole entry the
   * CRC is checked too (one tensor per storage is the common case, so most reads are verified).
   */
  async readStored(entry: ZipEntry, offset: number, length: number): Promise<Uint8Array> {
    this.checkStoredRange(entry, offset, length);
    const start = await this.dataOffset(entry);
    const bytes = await this.readRaw(start + offset, length);
    if (offset === 0 && length === entry.uncompressedSize) this.verifyCrc(entry, bytes);
    return bytes;
  }

  /**
   * Like readStored, in chunks of `step` bytes read into `scratch`'s buffers in turn; the CRC of a
   * read covering the whole entry is checked before the last chunk is handed out.
   */
  async *readStoredChunks(entry: ZipEntry, offset: number, length: number, scratch: ChunkScratch, step: number): AsyncGenerator<Uint8Array> {
    this.checkStoredRange(entry, offset, length);
    const start = await this.dataOffset(entry);
    const whole = offset === 0 && length === entry.uncompressedSize;
    let crc = 0;
    for (let at = 0; at < length; at += step) {
      const chunk = scratch.next(Math.min(step, length - at));
      await this.readInto(chunk, start + offset + at);
      if (whole) {
        crc = crc32(chunk, crc);
        if (at + chunk.length === length && crc !== entry.crc32) throw this.crcMismatch(entry);
      }
      yield chunk;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  private checkStoredRange(entry: ZipEntry, offset: number, length: number): void {
    if (entry.method !== ZIP_STORED) {
      throw new UsageError(
        `${this.path}: zip entry ${entry.name} is compressed (method ${entry.method}); tensor data must be stored ` +
          `uncompressed as torch.save writes it — re-save the checkpoint with torch.save`,
      );
    }
    if (entry.compressedSize !== entry.uncompressedSize) {
      throw this.fail(`stored entry ${entry.name} has different compressed and uncompressed sizes`);
    }
    if (!isCount(offset) || !isCount(length) || offset > entry.uncompressedSize || length > entry.uncompressedSize - offset) {
      throw this.fail(`read of ${length} bytes at ${offset} runs past the end of entry ${entry.name}`);
    }
  }

  private verifyCrc(entry: ZipEntry, bytes: Uint8Array): void {
    if (crc32(bytes) !== entry.crc32) throw this.crcMismatch(entry);
  }

  private crcMismatch(entry: ZipEntry): UsageError {
    return new UsageError(`${this.path}: CRC mismatch in zip entry ${entry.name}; the file is corrupt — download it again`);
  }

  private async readRaw(position: number, length: number): Promise<Uint8Array> {
    if (this.closed) throw new UsageError(`${this.path}: the checkpoint was already closed`);
    return readExactly(this.path, this.fh, this.size, position, length);
  }

  private async readInto(out: Uint8Array, position: number): Promise<void> {
    if (this.closed) throw new UsageError(`${this.path}: the checkpoint was already closed`);
    checkRange(this.path, this.size, position, out.length);
    await fill(this.path, this.fh, out, position);
  }

  private fail(detail: string): UsageError {
    return corrupt(this.path, detail);
  }
}

/** Open a zip archive for reading; the caller must `close()` it. */
export function openZip(path: string): Promise<ZipReader> {
  return ZipReader.open(path);
}

function corrupt(path: string, detail: string): UsageError {
  return new UsageError(`${path}: corrupt or truncated zip (${detail}); download the file again`);
}

async function openFile(path: string): Promise<FileHandle> {
  // A FIFO or a device (weights linked to /dev/zero) would block or be read for ever.
  await assertInputFile(path, "checkpoint file");
  try {
    return await open(path, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UsageError(`${path}: no such file; check the path`);
    if (code === "EACCES" || code === "EPERM") throw new UsageError(`${path}: permission denied; check the file's permissions`);
    if (code === "EISDIR") throw new UsageError(`${path}: is a folder, not a checkpoint file`);
    throw err;
  }
}

async function readExactly(
  path: string,
  fh: FileHandle,
  fileSize: number,
  position: number,
  length: number,
): Promise<Uint8Array> {
  checkRange(path, fileSize, position, length);
  // A fresh, zeroed, 0-offset buffer so callers may view it as Float32Array etc. without copying.
  const out = new Uint8Array(length);
  await fill(path, fh, out, position);
  return out;
}

/** Every read is checked against the file's size first (before a buffer of `length` is allocated). */
function checkRange(path: string, fileSize: number, position: number, length: number): void {
  if (!isCount(position) || !isCount(length) || position > fileSize || length > fileSize - position) {
    throw corrupt(path, `read of ${length} bytes at offset ${position} runs past the end of the ${fileSize}-byte file`);
  }
}

async function fill(path: string, fh: FileHandle, out: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < out.length) {
    const want = Math.min(READ_CHUNK, out.length - done);
    const { bytesRead } = await fh.read(out, done, want, position + done);
    if (bytesRead === 0) throw corrupt(path, `file ended early at offset ${position + done}`);
    done += bytesRead;
  }
}

interface CentralDirectory {
  entries: ZipEntry[];
  byName: Map<string, ZipEntry>;
  offset: number;
}

async function readCentralDirectory(path: string, fh: FileHandle, size: number): Promise<CentralDirectory> {
  if (size < EOCD_SIZE) {
    throw new UsageError(`${path}: only ${size} bytes, too short to be a torch checkpoint; download the file again`);
  }
  const tailLength = Math.min(size, EOCD_SIZE + MAX_COMMENT);
  const tailStart = size - tailLength;
  const tail = await readExactly(path, fh, size, tailStart, tailLength);
  const tv = dataView(tail);

  let eocd = -1;
  // Prefer the record whose comment ends exactly at end of file; accept trailing bytes otherwise.
  for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
    if (tv.getUint32(i, true) !== SIG_EOCD) continue;
    const commentLength = tv.getUint16(i + 20, true);
    if (i + EOCD_SIZE + commentLength === tailLength) {
      eocd = i;
      break;
    }
    if (eocd < 0 && i + EOCD_SIZE + commentLength <= tailLength) eocd = i;
  }
  if (eocd < 0) throw await notAZip(path, fh, size);

  const eocdAbsolute = tailStart + eocd;
  let diskNumber = tv.getUint16(eocd + 4, true);
  let cdDisk = tv.getUint16(eocd + 6, true);
  let entriesOnDisk: number = tv.getUint16(eocd + 8, true);
  let totalEntries: number = tv.getUint16(eocd + 10, true);
  let cdSize: number = tv.getUint32(eocd + 12, true);
  let cdOffset: number = tv.getUint32(eocd + 16, true);
  /** Where the central directory must end: the ZIP64 record (if any) or the EOCD follows it. */
  let cdEndLimit = eocdAbsolute;

  const locatorAt = eocdAbsolute - ZIP64_LOCATOR_SIZE;
  let locator: DataView | undefined;
  if (locatorAt >= 0) {
    const bytes =
      locatorAt >= tailStart
        ? tail.subarray(locatorAt - tailStart, locatorAt - tailStart + ZIP64_LOCATOR_SIZE)
        : await readExactly(path, fh, size, locatorAt, ZIP64_LOCATOR_SIZE);
    const view = dataView(bytes);
    if (view.getUint32(0, true) === SIG_ZIP64_LOCATOR) locator = view;
  }

  if (locator) {
    const recordOffset = readU64(path, locator, 8, "ZIP64 end of central directory offset");
    if (locator.getUint32(16, true) > 1) throw corrupt(path, "multi-disk archives are not supported");
    if (recordOffset + ZIP64_EOCD_MIN_SIZE > locatorAt) {
      throw corrupt(path, `ZIP64 end of central directory at ${recordOffset} lies past its locator`);
    }
    const record = dataView(await readExactly(path, fh, size, recordOffset, ZIP64_EOCD_MIN_SIZE));
    if (record.getUint32(0, true) !== SIG_ZIP64_EOCD) throw corrupt(path, "bad ZIP64 end of central directory signature");
    diskNumber = record.getUint32(16, true);
    cdDisk = record.getUint32(20, true);
    entriesOnDisk = readU64(path, record, 24, "ZIP64 entry count");
    totalEntries = readU64(path, record, 32, "ZIP64 entry count");
    cdSize = readU64(path, record, 40, "ZIP64 central directory size");
    cdOffset = readU64(path, record, 48, "ZIP64 central directory offset");
    cdEndLimit = recordOffset;
  }

  if (diskNumber !== 0 || cdDisk !== 0 || entriesOnDisk !== totalEntries) {
    throw corrupt(path, "multi-disk archives are not supported");
  }
  if (cdOffset > cdEndLimit || cdSize > cdEndLimit - cdOffset) {
    throw corrupt(
      path,
      `central directory (${cdSize} bytes at offset ${cdOffset}) runs past the end of the ${size}-byte file`,
    );
  }
  if (cdSize > MAX_CENTRAL_DIRECTORY_BYTES) throw corrupt(path, `central directory of ${cdSize} bytes is implausibly large`);
  if (totalEntries * CENTRAL_HEADER_SIZE > cdSize) {
    throw corrupt(path, `${totalEntries} entries cannot fit in a ${cdSize}-byte central directory`);
  }

  const cd = await readExactly(path, fh, size, cdOffset, cdSize);
  const entries = parseCentralDirectory(path, cd, totalEntries, cdOffset);
  const byName = new Map<string, ZipEntry>();
  for (const entry of entries) {
    if (byName.has(entry.name)) throw corrupt(path, `entry ${entry.name} appears twice`);
    byName.set(entry.name, entry);
  }
  return { entries, byName, offset: cdOffset };
}

function parseCentralDirectory(path: string, cd: Uint8Array, count: number, cdOffset: number): ZipEntry[] {
  const view = dataView(cd);
  const entries: ZipEntry[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + CENTRAL_HEADER_SIZE > cd.byteLength) throw corrupt(path, `central directory ends inside entry ${i}`);
    if (view.getUint32(at, true) !== SIG_CENTRAL) throw corrupt(path, `bad central directory signature at entry ${i}`);
    const flags = view.getUint16(at + 8, true);
    const method = view.getUint16(at + 10, true);
    const crc = view.getUint32(at + 16, true);
    let compressedSize: number = view.getUint32(at + 20, true);
    let uncompressedSize: number = view.getUint32(at + 24, true);
    const nameLength = view.getUint16(at + 28, true);
    const extraLength = view.getUint16(at + 30, true);
    const commentLength = view.getUint16(at + 32, true);
    const diskStart = view.getUint16(at + 34, true);
    let localHeaderOffset: number = view.getUint32(at + 42, true);
    const nameAt = at + CENTRAL_HEADER_SIZE;
    const extraAt = nameAt + nameLength;
    const next = extraAt + extraLength + commentLength;
    if (next > cd.byteLength) throw corrupt(path, `central directory ends inside entry ${i}`);
    const name = decodeName(cd.subarray(nameAt, extraAt));

    const needs64 = uncompressedSize === U32_MAX || compressedSize === U32_MAX || localHeaderOffset === U32_MAX;
    if (needs64 || diskStart === U16_MAX) {
      const z = findExtra(cd.subarray(extraAt, extraAt + extraLength), 0x0001);
      if (!z) throw corrupt(path, `entry ${name} lacks its ZIP64 extra field`);
      const zv = dataView(z);
      let p = 0;
      const take = (what: string): number => {
        if (p + 8 > z.byteLength) throw corrupt(path, `ZIP64 extra field of ${name} is too short for its ${what}`);
        const v = readU64(path, zv, p, `${what} of ${name}`);
        p += 8;
        return v;
      };
      if (uncompressedSize === U32_MAX) uncompressedSize = take("size");
      if (compressedSize === U32_MAX) compressedSize = take("compressed size");
      if (localHeaderOffset === U32_MAX) localHeaderOffset = take("offset");
    } else if (diskStart !== 0) {
      throw corrupt(path, "multi-disk archives are not supported");
    }
    if (localHeaderOffset >= cdOffset) throw corrupt(path, `entry ${name} starts past the central directory`);
    if (compressedSize > cdOffset) throw corrupt(path, `entry ${name} claims ${compressedSize} bytes, more than the file holds`);
    entries.push({ name, method, flags, crc32: crc, compressedSize, uncompressedSize, localHeaderOffset });
    at = next;
  }
  return entries;
}

function findExtra(extra: Uint8Array, id: number): Uint8Array | undefined {
  const view = dataView(extra);
  let at = 0;
  while (at + 4 <= extra.byteLength) {
    const headerId = view.getUint16(at, true);
    const length = view.getUint16(at + 2, true);
    const body = at + 4;
    if (body + length > extra.byteLength) return undefined;
    if (headerId === id) return extra.subarray(body, body + length);
    at = body + length;
  }
  return undefined;
}

/** No EOCD found: say what the file is, where that is knowable. */
async function notAZip(path: string, fh: FileHandle, size: number): Promise<UsageError> {
  const head = await readExactly(path, fh, size, 0, Math.min(size, 16));
  if (head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a) {
    // Legacy (torch < 1.6) serialization starts with a pickled magic number.
    return new UsageError(
      `${path}: legacy torch serialization (torch < 1.6) is not supported; re-save it with a newer torch.save or convert it to safetensors`,
    );
  }
  if (head[0] === 0x50 && head[1] === 0x4b) return corrupt(path, "no end of central directory record");
  return new UsageError(`${path}: not a zip archive, so not a torch.save checkpoint; check that the file is pytorch_model.bin`);
}

function readU64(path: string, view: DataView, at: number, what: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(path, `${what} ${v} is out of range`);
  return Number(v);
}

function isCount(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const nameDecoder = new TextDecoder("utf-8");

function decodeName(bytes: Uint8Array): string {
  return nameDecoder.decode(bytes);
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (zip's); node's native one where this Node has it (20.15+), else a table. `value` continues a running CRC. */
export function crc32(bytes: Uint8Array, value = 0): number {
  const native = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
  if (typeof native === "function") return native(bytes, value) >>> 0;
  return crc32Portable(bytes, value);
}

/** The table-driven CRC-32, for Node versions without zlib.crc32. */
export function crc32Portable(bytes: Uint8Array, value = 0): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = (value ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
