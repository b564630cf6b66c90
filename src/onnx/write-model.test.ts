import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, type FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { GraphBuilder } from "./graph-builder.js";
import { ModelProto, OnnxType } from "./proto.js";
import { SyncingWriter, writeOnnxModel } from "./write-model.js";

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

describe("writeOnnxModel", () => {
  const readers = (name: string) => ({ name, opType: "Identity", inputs: [name], outputs: [`${name}_out`], attributes: {} });

  function graphOf(tensors: { name: string; bytes: Uint8Array; chunk?: number; claim?: number }[]): GraphBuilder {
    const g = new GraphBuilder("g");
    for (const t of tensors) {
      const floats = (t.claim ?? t.bytes.byteLength) / 4;
      g.initializer(t.name, OnnxType.FLOAT, [floats], () =>
        t.chunk === undefined
          ? t.bytes
          : (async function* () {
              for (let at = 0; at < t.bytes.byteLength; at += t.chunk!) yield t.bytes.slice(at, at + t.chunk!);
            })(),
      );
      g.nodes.push(readers(t.name));
      g.output(`${t.name}_out`, OnnxType.FLOAT, [floats]);
    }
    return g;
  }

  it("writes every initializer's bytes in place, chunked, whole or empty, and the file's sha256", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bge-write-model-"));
    try {
      const tensors = [
        { name: "small", bytes: pattern(16, 1) },
        { name: "chunked", bytes: pattern(3 << 20, 2), chunk: 1 << 20 },
        { name: "empty", bytes: new Uint8Array(0), chunk: 1024 },
        { name: "odd_chunks", bytes: pattern(200_004, 3), chunk: 50_000 + 1 },
        { name: "large_whole", bytes: pattern(2 << 20, 4) },
      ].map((t) => ({ ...t, chunk: t.chunk === undefined ? undefined : t.chunk - (t.chunk % 4) }));
      const path = join(dir, "m.onnx");
      const written = await writeOnnxModel(path, graphOf(tensors), { opset: 17, producerName: "bge", producerVersion: "test" });
      const file = await readFile(path);
      expect(written.bytes).toBe(file.length);
      expect(written.sha256).toBe(createHash("sha256").update(file).digest("hex"));
      const model = ModelProto.decode(file) as unknown as { graph: { initializer: { name: string; rawData: Uint8Array; dims: unknown[] }[] } };
      expect(model.graph.initializer.map((t) => t.name)).toEqual(tensors.map((t) => t.name));
      for (const [i, t] of tensors.entries()) expect(Buffer.from(model.graph.initializer[i]!.rawData ?? []).equals(Buffer.from(t.bytes)), t.name).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("an initializer that produces more or fewer bytes than its shape: an error naming it, no file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bge-write-model-"));
    try {
      for (const [claim, message] of [
        [1 << 20, /initializer short: produced 1048572 bytes, expected 1048576/],
        [(1 << 20) - 8, /initializer short: produced at least 1048572 bytes, expected 1048568/],
      ] as const) {
        const g = graphOf([
          { name: "first", bytes: pattern(1 << 20, 1), chunk: 1 << 18 },
          { name: "short", bytes: pattern((1 << 20) - 4, 2), chunk: 1 << 18, claim },
          { name: "after", bytes: pattern(64, 3) },
        ]);
        await expect(writeOnnxModel(join(dir, "m.onnx"), g, { opset: 17, producerName: "bge", producerVersion: "test" })).rejects.toThrow(message);
        expect(await readdir(dir)).toEqual([]);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
