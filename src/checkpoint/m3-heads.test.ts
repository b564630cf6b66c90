import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { hostileStateDictPickle, writeTorchBin, writeTorchBinWithPickle } from "../../test/helpers/torch-bin-writer.js";
import { tempDir } from "../../test/helpers/tmp.js";
import { usageError } from "../../test/helpers/usage-error.js";
import { writeFixture } from "../fixture/write-fixture.js";
import { floatToHalf, halfToFloat } from "./dtype.js";
import { availableHeads, loadM3Heads, M3_HEAD_FILES } from "./m3-heads.js";
import { openTorchBin } from "./torch-bin.js";
import { torchStateDictBytes } from "./torch-writer.js";

const f16 = (values: number[]) => new Uint8Array(Uint16Array.from(values, floatToHalf).buffer);

describe("bge-m3 heads: sparse_linear.pt and colbert_linear.pt", () => {
  it("round-trips an fp16 Linear state dict through the torch zip writer and the restricted reader", async () => {
    const dir = await tempDir();
    const w = [0.5, -0.25, 1, 2];
    await writeFile(join(dir, "sparse_linear.pt"), torchStateDictBytes("sparse_linear", [
      { name: "weight", dtype: "F16", shape: [1, 4], data: f16(w) },
      { name: "bias", dtype: "F16", shape: [1], data: f16([0.125]) },
    ]));
    const src = await openTorchBin(join(dir, "sparse_linear.pt"));
    expect(src.list().map((t) => [t.name, t.dtype, t.shape])).toEqual([["weight", "F16", [1, 4]], ["bias", "F16", [1]]]);
    await src.close();
    const heads = await loadM3Heads(dir, 4);
    expect(Object.keys(heads)).toEqual(["sparse"]);
    expect(Array.from(heads.sparse!.weight)).toEqual(w);
    expect(Array.from(heads.sparse!.bias)).toEqual([0.125]);
    expect(heads.sparse).toMatchObject({ inDim: 4, outDim: 1 });
  });

  it("bge fixture writes both heads for xlm-roberta shapes (fp16, seeded), none for BERT", async () => {
    const root = await tempDir();
    const a = join(root, "a");
    const b = join(root, "b");
    const res = await writeFixture({ dir: a, arch: "xlm-roberta", seed: 5 });
    await writeFixture({ dir: b, arch: "xlm-roberta", seed: 5 });
    expect(res.files).toEqual(expect.arrayContaining(["sparse_linear.pt", "colbert_linear.pt"]));
    expect(await availableHeads(a)).toEqual(["sparse", "colbert"]);
    for (const f of Object.values(M3_HEAD_FILES)) expect(await readFile(join(a, f))).toEqual(await readFile(join(b, f)));
    const heads = await loadM3Heads(a, 32);
    expect(heads.sparse).toMatchObject({ inDim: 32, outDim: 1 });
    expect(heads.colbert).toMatchObject({ inDim: 32, outDim: 32 });
    expect(heads.colbert!.weight.length).toBe(32 * 32);
    // fp16 values: each one survives a round trip through half precision.
    for (const v of heads.colbert!.weight) expect(halfToFloat(floatToHalf(v))).toBe(v);
    const src = await openTorchBin(join(a, "colbert_linear.pt"));
    expect(src.list().every((t) => t.dtype === "F16")).toBe(true);
    await src.close();
    const zip = await readFile(join(a, "colbert_linear.pt"));
    expect(zip.includes(Buffer.from("colbert_linear/data.pkl"))).toBe(true);

    const bert = join(root, "bert");
    await writeFixture({ dir: bert, seed: 5 });
    expect(await availableHeads(bert)).toEqual([]);
    // Rewriting an m3 folder as BERT removes the old heads.
    await writeFixture({ dir: b, seed: 5, force: true });
    expect(await availableHeads(b)).toEqual([]);
  });

  it("refuses hostile, corrupt and mis-shaped head files with exit 2", async () => {
    const root = await tempDir();
    const dir = join(root, "m3");
    await writeFixture({ dir, arch: "xlm-roberta", seed: 1 });
    const sparse = join(dir, "sparse_linear.pt");
    const good = await readFile(sparse);

    await writeTorchBinWithPickle(sparse, hostileStateDictPickle("os", "system", "touch /tmp/pwned"));
    expect((await usageError(() => loadM3Heads(dir, 32))).message).toMatch(/os\.system/);

    await writeFile(sparse, good.subarray(0, good.length - 40));
    expect((await usageError(() => loadM3Heads(dir, 32))).message).toMatch(/sparse_linear\.pt/);

    await writeTorchBin(sparse, [
      { name: "weight", dtype: "F16", shape: [2, 32], data: new Uint8Array(128) },
      { name: "bias", dtype: "F16", shape: [2], data: new Uint8Array(4) },
    ]);
    expect((await usageError(() => loadM3Heads(dir, 32))).message).toMatch(/weight has shape \[2, 32\]; expected \[1, 32\]/);

    await writeTorchBin(sparse, [
      { name: "weight", dtype: "F16", shape: [1, 32], data: new Uint8Array(64) },
      { name: "bias", dtype: "F16", shape: [1], data: new Uint8Array(2) },
      { name: "extra", dtype: "F16", shape: [1], data: new Uint8Array(2) },
    ]);
    expect((await usageError(() => loadM3Heads(dir, 32))).message).toMatch(/exactly weight and bias/);

    const nan = new Uint8Array(64);
    nan.set([0x00, 0x7e], 6); // fp16 NaN at element 3
    await writeTorchBin(sparse, [
      { name: "weight", dtype: "F16", shape: [1, 32], data: nan },
      { name: "bias", dtype: "F16", shape: [1], data: new Uint8Array(2) },
    ]);
    expect((await usageError(() => loadM3Heads(dir, 32))).message).toMatch(/sparse_linear\.pt: tensor weight/);

    await rm(sparse);
    expect((await usageError(() => loadM3Heads(dir, 32, ["sparse"]))).message).toMatch(/no sparse_linear\.pt/);
    expect(Object.keys(await loadM3Heads(dir, 32))).toEqual(["colbert"]);
  });
});
