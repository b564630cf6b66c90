import { mkdtemp, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crc32, crc32Portable, openZip, ZIP_DEFLATED, ZIP_STORED } from "./zip.js";
import { buildZip, writeSparse, type ZipEntrySpec } from "../../test/helpers/torch-bin-writer.js";
import { usageError } from "../../test/helpers/usage-error.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bge-zip-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const decode = (b: Uint8Array): string => new TextDecoder().decode(b);

const ENTRIES: ZipEntrySpec[] = [
  { name: "archive/data.pkl", data: text("pickle bytes") },
  { name: "archive/data/0", data: Uint8Array.from({ length: 100 }, (_, i) => i) },
  { name: "archive/version", data: text("3\n") },
];

async function writeZip(name: string, bytes: Uint8Array): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

describe("crc32", () => {
  it("matches the standard check value", () => {
    expect(crc32(text("123456789"))).toBe(0xcbf43926);
    expect(crc32Portable(text("123456789"))).toBe(0xcbf43926);
    const big = Uint8Array.from({ length: 5000 }, (_, i) => (i * 31) & 0xff);
    expect(crc32Portable(big)).toBe(crc32(big));
  });
});

describe("openZip", () => {
  it("lists entries and reads stored data at 64-byte-aligned offsets", async () => {
    const path = await writeZip("plain.zip", buildZip(ENTRIES));
    const zip = await openZip(path);
    try {
      expect(zip.entries.map((e) => e.name)).toEqual(ENTRIES.map((e) => e.name));
      const data = zip.get("archive/data/0")!;
      expect(data.method).toBe(ZIP_STORED);
      expect(data.uncompressedSize).toBe(100);
      expect(data.compressedSize).toBe(100);
      expect((await zip.dataOffset(data)) % 64).toBe(0);
      expect(Array.from(await zip.readStored(data, 10, 5))).toEqual([10, 11, 12, 13, 14]);
      expect(Array.from(await zip.readStored(data, 0, 100))).toEqual(Array.from(ENTRIES[1]!.data));
      expect(decode(await zip.readEntry(zip.get("archive/data.pkl")!, 1024))).toBe("pickle bytes");
      expect(zip.get("archive/missing")).toBeUndefined();
    } finally {
      await zip.close();
    }
  });

  it("reads ZIP64 records (sizes and offsets in the extra field, ZIP64 end record)", async () => {
    const bytes = buildZip(ENTRIES, { zip64: true });
    const view = new DataView(bytes.buffer);
    // The fixture really is ZIP64: the plain EOCD holds only sentinels, and a locator precedes it.
    expect(view.getUint32(bytes.length - 22 + 16, true)).toBe(0xffffffff);
    expect(view.getUint32(bytes.length - 22 - 20, true)).toBe(0x07064b50);
    const path = await writeZip("zip64.zip", bytes);
    const zip = await openZip(path);
    try {
      const data = zip.get("archive/data/0")!;
      expect(data.uncompressedSize).toBe(100);
      expect(data.localHeaderOffset).toBeGreaterThan(0);
      expect(Array.from(await zip.readStored(data, 98, 2))).toEqual([98, 99]);
      expect(decode(await zip.readEntry(zip.get("archive/version")!, 16))).toBe("3\n");
    } finally {
      await zip.close();
    }
  });

  it("reads entries whose offsets lie past 4 GiB (sparse file)", async () => {
    const base = 2 ** 32 + 4096;
    const path = join(dir, "past-4gib.zip");
    await writeSparse(path, base, buildZip(ENTRIES, { zip64: true, baseOffset: base }));
    try {
      const zip = await openZip(path);
      try {
        const data = zip.get("archive/data/0")!;
        expect(data.localHeaderOffset).toBeGreaterThan(2 ** 32);
        expect(await zip.dataOffset(data)).toBeGreaterThan(2 ** 32);
        expect(Array.from(await zip.readStored(data, 0, 100))).toEqual(Array.from(ENTRIES[1]!.data));
      } finally {
        await zip.close();
      }
    } finally {
      await rm(path);
    }
  });

  it("inflates a deflated small entry but refuses it as tensor data", async () => {
    const entries: ZipEntrySpec[] = [{ name: "archive/data.pkl", data: text("x".repeat(500)), method: 8 }];
    const path = await writeZip("deflate.zip", buildZip(entries));
    const zip = await openZip(path);
    try {
      const entry = zip.get("archive/data.pkl")!;
      expect(entry.method).toBe(ZIP_DEFLATED);
      expect(entry.compressedSize).toBeLessThan(500);
      expect(decode(await zip.readEntry(entry, 1000))).toBe("x".repeat(500));
      const e = await usageError(() => zip.readStored(entry, 0, 10));
      expect(e.message).toContain("compressed (method 8)");
      // The size cap is enforced before anything is inflated.
      expect((await usageError(() => zip.readEntry(entry, 100))).message).toContain("500 bytes");
    } finally {
      await zip.close();
    }
  });

  it("refuses a read past the end of an entry", async () => {
    const path = await writeZip("bounds.zip", buildZip(ENTRIES));
    const zip = await openZip(path);
    try {
      const data = zip.get("archive/data/0")!;
      const e = await usageError(() => zip.readStored(data, 90, 11));
      expect(e.message).toContain("runs past the end of entry archive/data/0");
    } finally {
      await zip.close();
    }
  });

  it("detects a CRC mismatch when an entry is read whole", async () => {
    const bytes = buildZip(ENTRIES);
    const path = await writeZip("crc.zip", bytes);
    const probe = await openZip(path);
    const at = (await probe.dataOffset(probe.get("archive/data/0")!)) + 50;
    await probe.close();
    bytes[at] ^= 0xff;
    await writeFile(path, bytes);
    const zip = await openZip(path);
    try {
      const data = zip.get("archive/data/0")!;
      expect((await usageError(() => zip.readStored(data, 0, 100))).message).toContain("CRC mismatch in zip entry archive/data/0");
      // A partial read is not verified (it cannot be without reading the whole entry).
      expect((await zip.readStored(data, 50, 1))[0]).toBe(50 ^ 0xff);
    } finally {
      await zip.close();
    }
  });
});

describe("openZip on damaged files", () => {
  it("refuses a truncated zip, naming the file", async () => {
    const bytes = buildZip(ENTRIES);
    const path = await writeZip("truncated.zip", bytes.subarray(0, bytes.length - 30));
    const e = await usageError(() => openZip(path));
    expect(e.message).toContain(path);
    expect(e.message).toContain("corrupt or truncated zip");
  });

  it("refuses an archive cut off inside the data (EOCD gone)", async () => {
    const path = await writeZip("half.zip", buildZip(ENTRIES));
    await truncate(path, 100);
    expect((await usageError(() => openZip(path))).message).toContain("no end of central directory record");
  });

  it("refuses an EOCD whose central directory offset points past the end", async () => {
    const bytes = buildZip(ENTRIES);
    new DataView(bytes.buffer).setUint32(bytes.length - 22 + 16, bytes.length + 1000, true);
    const path = await writeZip("eocd-past-end.zip", bytes);
    expect((await usageError(() => openZip(path))).message).toMatch(/central directory .* runs past the end/);
  });

  it("refuses an EOCD whose central directory size runs past the end", async () => {
    const bytes = buildZip(ENTRIES);
    new DataView(bytes.buffer).setUint32(bytes.length - 22 + 12, 0x7fffffff, true);
    const path = await writeZip("cd-size.zip", bytes);
    expect((await usageError(() => openZip(path))).message).toContain("runs past the end");
  });

  it("refuses a ZIP64 locator that points past the end", async () => {
    const bytes = buildZip(ENTRIES, { zip64: true });
    new DataView(bytes.buffer).setBigUint64(bytes.length - 22 - 20 + 8, BigInt(bytes.length) * 4n, true);
    const path = await writeZip("zip64-locator.zip", bytes);
    expect((await usageError(() => openZip(path))).message).toContain("ZIP64 end of central directory");
  });

  it("refuses a ZIP64 offset beyond 2^53", async () => {
    const bytes = buildZip(ENTRIES, { zip64: true });
    new DataView(bytes.buffer).setBigUint64(bytes.length - 22 - 20 + 8, 1n << 60n, true);
    const path = await writeZip("zip64-huge.zip", bytes);
    expect((await usageError(() => openZip(path))).message).toContain("out of range");
  });

  it("refuses an entry whose local header offset lies past the central directory", async () => {
    const bytes = buildZip(ENTRIES);
    const view = new DataView(bytes.buffer);
    const cdOffset = view.getUint32(bytes.length - 22 + 16, true);
    view.setUint32(cdOffset + 42, cdOffset + 10, true); // first entry's local header offset
    const path = await writeZip("lho.zip", bytes);
    expect((await usageError(() => openZip(path))).message).toContain("starts past the central directory");
  });

  it("refuses an entry whose data would run past the central directory", async () => {
    const bytes = buildZip(ENTRIES);
    const view = new DataView(bytes.buffer);
    const cdOffset = view.getUint32(bytes.length - 22 + 16, true);
    // Second entry (archive/data/0): claim more bytes than lie between its data and the directory.
    const second = cdOffset + 46 + "archive/data.pkl".length;
    view.setUint32(second + 20, cdOffset - 10, true);
    view.setUint32(second + 24, cdOffset - 10, true);
    const path = await writeZip("overrun.zip", bytes);
    const zip = await openZip(path);
    try {
      const e = await usageError(() => zip.dataOffset(zip.get("archive/data/0")!));
      expect(e.message).toContain("runs past the central directory");
    } finally {
      await zip.close();
    }
  });

  it("refuses a damaged local header", async () => {
    const bytes = buildZip(ENTRIES);
    bytes[0] = 0; // first local header signature
    const path = await writeZip("local-sig.zip", bytes);
    const zip = await openZip(path);
    try {
      const e = await usageError(() => zip.dataOffset(zip.get("archive/data.pkl")!));
      expect(e.message).toContain("bad local header signature");
    } finally {
      await zip.close();
    }
  });

  it("refuses duplicate entry names", async () => {
    const path = await writeZip("dup.zip", buildZip([ENTRIES[0]!, ENTRIES[0]!]));
    expect((await usageError(() => openZip(path))).message).toContain("appears twice");
  });

  it("says what a non-zip file is", async () => {
    const legacy = await writeZip("legacy.bin", Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, ...new Array(40).fill(1)]));
    expect((await usageError(() => openZip(legacy))).message).toContain("legacy torch serialization");
    const textFile = await writeZip("text.bin", text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n"));
    expect((await usageError(() => openZip(textFile))).message).toContain("not a zip archive");
    const tiny = await writeZip("tiny.bin", text("PK"));
    expect((await usageError(() => openZip(tiny))).message).toContain("too short");
    expect((await usageError(() => openZip(join(dir, "absent.bin")))).message).toContain("no such file");
  });

  it("leaves the file untouched", async () => {
    const bytes = buildZip(ENTRIES);
    const path = await writeZip("untouched.zip", bytes);
    const zip = await openZip(path);
    await zip.readStored(zip.get("archive/data/0")!, 0, 100);
    await zip.close();
    await zip.close(); // idempotent
    expect(new Uint8Array(await readFile(path))).toEqual(bytes);
    expect((await stat(path)).size).toBe(bytes.length);
  });
});
