import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { SyncingWriter } from "./write-model.js";

/** A file in memory whose writes land at their position, at most `perCall` bytes a call, after a turn. */
function memoryFile(perCall: number, failAtCall?: number) {
  let bytes = new Uint8Array(0);
  let calls = 0;
  let syncs = 0;
  const handle = {
    async write(b: Uint8Array, offset: number, length: number, position: number) {
      await new Promise((r) => setImmediate(r));
      if (++calls === failAtCall) throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
      const n = Math.min(length, perCall);
      if (position + n > bytes.length) {
        const grown = new Uint8Array(position + n);
        grown.set(bytes);
        bytes = grown;
      }
      bytes.set(b.subarray(offset, offset + n), position);
      return { bytesWritten: n, buffer: b };
    },
    async datasync() {
      syncs++;
    },
  };
  return { handle: handle as unknown as FileHandle, content: () => bytes, calls: () => calls, syncs: () => syncs };
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

describe("SyncingWriter", () => {
  it("lays out small (gathered) and large buffers in order, continues short writes, and hashes the file's bytes", async () => {
    const file = memoryFile(100_000);
    const sha = createHash("sha256");
    const w = new SyncingWriter(file.handle, sha);
    const parts = [pattern(7, 1), pattern(70_000, 2), pattern(3, 3), pattern(1 << 20, 4), pattern(65_535, 5), pattern(300_000, 6), pattern(1, 7)];
    for (const [i, p] of parts.entries()) {
      if (i === 3) {
        // The caller's path for a large chunk: start its write, hash it, then wait.
        const written = w.start(p);
        w.hash(p);
        await written;
      } else await w.write(p);
    }
    await w.drain();
    const expected = Buffer.concat(parts);
    expect(Buffer.from(file.content()).equals(expected)).toBe(true);
    expect(sha.digest("hex")).toBe(createHash("sha256").update(expected).digest("hex"));
    // Each gathered run goes out as one write before the large buffer after it (7 B; 3 B; 65,535 B;
    // 1 B at drain): 4 calls; the large ones 100 kB a call: 1 + 11 + 3.
    expect(file.calls()).toBe(4 + 1 + 11 + 3);
  });

  it("gathers thousands of small buffers into a few writes", async () => {
    const file = memoryFile(Number.MAX_SAFE_INTEGER);
    const w = new SyncingWriter(file.handle, createHash("sha256"));
    const parts = Array.from({ length: 3000 }, (_, i) => pattern(1 + (i % 500), i));
    for (const p of parts) await w.write(p);
    await w.drain();
    expect(Buffer.from(file.content()).equals(Buffer.concat(parts))).toBe(true);
    const total = parts.reduce((s, p) => s + p.length, 0);
    expect(file.calls()).toBe(Math.ceil(total / (1 << 20)));
  });

  it("a failed write is reported by the next write or by drain, never dropped", async () => {
    const file = memoryFile(Number.MAX_SAFE_INTEGER, 1);
    const w = new SyncingWriter(file.handle, createHash("sha256"));
    await w.write(pattern(10, 1)); // gathered: nothing written yet
    const large = w.start(pattern(1 << 20, 2)); // flushes the gathered bytes (call 1 fails), then writes
    await large;
    await expect(w.write(pattern(10, 3))).rejects.toThrow(/ENOSPC/);
    await expect(w.drain()).rejects.toThrow(/ENOSPC/);
  });

  it("a write that makes no progress is an error, not a loop", async () => {
    const file = memoryFile(0);
    const w = new SyncingWriter(file.handle, createHash("sha256"));
    await expect(w.write(pattern(1 << 20, 1))).rejects.toThrow(/wrote 0 of 1048576 bytes at offset 0/);
  });
});
