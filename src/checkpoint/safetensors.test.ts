import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { UsageError } from "../errors.js";
import { bytesToFloat64, floatToBf16, floatToHalf, halfToFloat } from "./dtype.js";
import { readSafetensors } from "./safetensors.js";
import { writeSafetensors } from "./safetensors-writer.js";

function f32(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** A safetensors file assembled by hand from a header object and a data section. */
function rawFile(header: unknown, data: Uint8Array, lengthOverride?: bigint): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

describe("safetensors", () => {
  it("round-trips F32, F16 and BF16 tensors with exact values", async () => {
    const dir = await tempDir();
    const path = join(dir, "m.safetensors");
    const a = [1.5, -2.25, 3e-5, 65504];
    const half = new Uint16Array(a.map(floatToHalf));
    const bf = new Uint16Array(a.map(floatToBf16));
    await writeSafetensors(
      path,
      [
        { name: "a", dtype: "F32", shape: [2, 2] },
        { name: "b", dtype: "F16", shape: [4] },
        { name: "c", dtype: "BF16", shape: [4] },
      ],
      (t) => (t.name === "a" ? f32(a) : new Uint8Array((t.name === "b" ? half : bf).buffer)),
    );
    const src = await readSafetensors(path);
    expect(src.list()).toEqual([
      { name: "a", dtype: "F32", shape: [2, 2] },
      { name: "b", dtype: "F16", shape: [4] },
      { name: "c", dtype: "BF16", shape: [4] },
    ]);
    expect(Array.from(bytesToFloat64(await src.readBytes("a"), "F32"))).toEqual([1.5, -2.25, Math.fround(3e-5), 65504]);
    expect(Array.from(bytesToFloat64(await src.readBytes("b"), "F16"))).toEqual([1.5, -2.25, halfToFloat(floatToHalf(3e-5)), 65504]);
    expect(Array.from(bytesToFloat64(await src.readBytes("c"), "BF16"))).toEqual([1.5, -2.25, bytesToFloat64(new Uint8Array(new Uint16Array([floatToBf16(3e-5)]).buffer), "BF16")[0], 65536]);
    await src.close();
    // The data section starts 8-byte aligned, like the reference writer's.
    const bytes = await readFile(path);
    expect((8 + Number(bytes.readBigUInt64LE(0))) % 8).toBe(0);
  });

  it("rounds to FP16 and BF16 to nearest even", () => {
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // halfway between 1 and next half: ties to even (1.0)
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(floatToHalf(70000)).toBe(0x7c00); // overflow → inf
    expect(halfToFloat(0x0001)).toBe(2 ** -24);
    expect(floatToBf16(1)).toBe(0x3f80);
  });

  it.each([
    ["a data offset past the end of the file", { t: { dtype: "F32", shape: [2], data_offsets: [0, 8000] } }, 8, undefined, /fall outside/],
    ["a header length beyond the file", { t: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, 4, 10n ** 12n, /header length/],
    ["a span that contradicts dtype × shape", { t: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8, undefined, /needs 12/],
    ["overlapping tensors", { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, 12, undefined, /overlap/],
    ["an unknown dtype", { t: { dtype: "F8_E9", shape: [1], data_offsets: [0, 1] } }, 1, undefined, /unsupported dtype/],
    ["a negative offset", { t: { dtype: "F32", shape: [1], data_offsets: [-4, 0] } }, 4, undefined, /invalid data_offsets/],
  ])("refuses %s with a UsageError naming the file", async (_what, header, dataLen, lenOverride, message) => {
    const dir = await tempDir();
    const path = join(dir, "bad.safetensors");
    await writeFile(path, rawFile(header, new Uint8Array(dataLen), lenOverride));
    const err = await readSafetensors(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(2);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toContain(path);
    expect((err as Error).message).not.toContain("\n");
  });

  it("refuses a file shorter than its length prefix and a header that is not JSON", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "short.safetensors"), Buffer.from([1, 2, 3]));
    await expect(readSafetensors(join(dir, "short.safetensors"))).rejects.toThrow(/shorter than the 8-byte/);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(5n);
    await writeFile(join(dir, "nojson.safetensors"), Buffer.concat([len, Buffer.from("{oops")]));
    await expect(readSafetensors(join(dir, "nojson.safetensors"))).rejects.toThrow(/not valid JSON/);
  });

  it("leaves no file under the final name when writing fails midway", async () => {
    const dir = await tempDir();
    const path = join(dir, "partial.safetensors");
    const write = writeSafetensors(path, [{ name: "a", dtype: "F32", shape: [1] }, { name: "b", dtype: "F32", shape: [1] }], (t) => {
      if (t.name === "b") throw new Error("disk full (injected)");
      return f32([1]);
    });
    await expect(write).rejects.toThrow(/injected/);
    const { readdir } = await import("node:fs/promises");
    expect(await readdir(dir)).toEqual([]);
  });
});
