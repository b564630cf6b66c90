import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { readSafetensors } from "./safetensors.js";
import { writeSafetensors } from "./safetensors-writer.js";
import { ChunkScratch, tensorChunks, type TensorSource } from "./tensor.js";
import { openTorchBin } from "./torch-bin.js";
import { writeTorchStateDict } from "./torch-writer.js";
import { hashWeights, openWeights } from "./weights.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Deterministic float32 values, `n` of them, distinct per seed. */
function values(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 1000 + i) * 3);
}

async function collect(source: TensorSource, name: string, scratch: ChunkScratch): Promise<{ bytes: Uint8Array; chunks: number }> {
  const parts: Uint8Array[] = [];
  for await (const c of tensorChunks(source, name, scratch, 4)) parts.push(c.slice());
  return { bytes: new Uint8Array(Buffer.concat(parts)), chunks: parts.length };
}

/** A safetensors file of three float32 tensors (sizes chosen so that 64-byte chunks split them unevenly). */
async function threeTensors(dir: string): Promise<string> {
  const path = join(dir, "model.safetensors");
  const sizes: Record<string, number> = { "a.weight": 37, "b.weight": 5, "c.weight": 100 };
  await writeSafetensors(
    path,
    Object.entries(sizes).map(([name, n]) => ({ name, dtype: "F32" as const, shape: [n] })),
    (t) => new Uint8Array(values(sizes[t.name]!, t.name.charCodeAt(0)).buffer),
  );
  return path;
}

describe("streamed tensor reads", () => {
  it("safetensors and torch .bin give, chunk by chunk, exactly the bytes read whole (chunks split into whole elements)", async () => {
    const dir = await tempDir();
    const st = await readSafetensors(await threeTensors(dir));
    const binPath = join(dir, "pytorch_model.bin");
    await writeTorchStateDict(binPath, "archive", [
      { name: "x", dtype: "F32", shape: [3, 31], data: new Uint8Array(values(93, 7).buffer) },
      { name: "y", dtype: "F16", shape: [9], data: new Uint8Array(18).fill(0x3c) },
    ]);
    const bin = await openTorchBin(binPath);
    try {
      for (const [source, name] of [[st, "a.weight"], [st, "c.weight"], [bin, "x"], [bin, "y"]] as const) {
        const whole = await source.readBytes(name);
        const { bytes, chunks } = await collect(source, name, new ChunkScratch(64));
        expect(bytes).toEqual(whole);
        expect(chunks).toBe(Math.ceil(whole.byteLength / 64));
      }
    } finally {
      await st.close();
      await bin.close();
    }
  });

  it("a chunk stays valid until the iterator has moved on twice: the two scratch buffers alternate", async () => {
    const dir = await tempDir();
    const st = await readSafetensors(await threeTensors(dir));
    const scratch = new ChunkScratch(64);
    const it = st.readChunks!("c.weight", scratch)[Symbol.asyncIterator]();
    const first = (await it.next()).value as Uint8Array;
    const copy = first.slice();
    const second = (await it.next()).value as Uint8Array;
    expect(second.buffer).not.toBe(first.buffer);
    expect(first).toEqual(copy);
    const third = (await it.next()).value as Uint8Array;
    expect(third.buffer).toBe(first.buffer);
    await it.return?.(undefined);
    await st.close();
  });

  it("a corrupt storage in a torch .bin streamed in chunks fails its CRC before the last chunk is handed out", async () => {
    const dir = await tempDir();
    const path = join(dir, "pytorch_model.bin");
    const data = new Uint8Array(values(200, 3).buffer);
    await writeTorchStateDict(path, "archive", [{ name: "w", dtype: "F32", shape: [200], data }]);
    const file = await readFile(path);
    const at = file.indexOf(Buffer.from(data.subarray(700, 716)));
    expect(at).toBeGreaterThan(0);
    file[at + 3]! ^= 0x01; // a mantissa bit: still finite, only the CRC can tell
    await writeFile(path, file);
    const bin = await openTorchBin(path);
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const c of bin.readChunks!("w", new ChunkScratch(64))) seen.push(c.byteLength);
      })(),
    ).rejects.toThrow(/CRC mismatch in zip entry archive\/data\/0/);
    expect(seen.reduce((a, b) => a + b, 0)).toBeLessThan(800);
    await bin.close();
  });

  it("a NaN in a later chunk is refused naming its index in the whole tensor", async () => {
    const dir = await tempDir();
    const v = values(100, 1);
    v[77] = Number.NaN;
    await writeSafetensors(join(dir, "model.safetensors"), [{ name: "bert.pooler.dense.weight", dtype: "F32", shape: [100] }], () => new Uint8Array(v.buffer));
    const source = await openWeights(dir);
    await expect(collect(source, "pooler.dense.weight", new ChunkScratch(64))).rejects.toThrow(/tensor bert\.pooler\.dense\.weight holds NaN at element 77 of 100/);
    await source.close();
  });
});

describe("hashing the checkpoint in the read that exports it", () => {
  it("reading tensors in file order, some skipped, gives the file's sha256 (header, gaps and tail hashed as passed)", async () => {
    const dir = await tempDir();
    const path = await threeTensors(dir);
    const source = await openWeights(dir);
    expect(source.startDigest!()).toBe(true);
    const inOrder = source.list().map((t) => t.name).sort((a, b) => source.position!(a)! - source.position!(b)!);
    const scratch = new ChunkScratch(64);
    for (const name of inOrder.filter((n) => n !== "b.weight")) await collect(source, name, scratch);
    expect(await source.finishDigest!()).toBe(sha256(await readFile(path)));
    expect(await hashWeights(dir)).toBe(sha256(await readFile(path)));
    await source.close();
  });

  it("reading out of file order gives no digest (the caller hashes the file instead), never a wrong one", async () => {
    const dir = await tempDir();
    await threeTensors(dir);
    const source = await openWeights(dir);
    source.startDigest!();
    const inOrder = source.list().map((t) => t.name).sort((a, b) => source.position!(a)! - source.position!(b)!);
    const scratch = new ChunkScratch(64);
    for (const name of [...inOrder].reverse()) await collect(source, name, scratch);
    expect(await source.finishDigest!()).toBeUndefined();
    await source.close();
  });

  it("a torch .bin cannot hash while it reads: startDigest says so", async () => {
    const dir = await tempDir();
    await writeTorchStateDict(join(dir, "pytorch_model.bin"), "archive", [{ name: "w", dtype: "F32", shape: [4], data: new Uint8Array(16) }]);
    const source = await openWeights(dir);
    expect(source.startDigest!()).toBe(false);
    await source.close();
  });
});
