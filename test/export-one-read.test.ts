import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { tempDir } from "./helpers/tmp.js";

// hashWeights reads the whole checkpoint a second time: an export of a safetensors checkpoint must
// not need it (its hash comes from the reads that export it), whatever the precisions.
vi.mock("../src/checkpoint/weights.js", async (importOriginal) => {
  const original = await importOriginal<typeof import("../src/checkpoint/weights.js")>();
  return { ...original, hashWeights: vi.fn(original.hashWeights) };
});

const { hashWeights } = await import("../src/checkpoint/weights.js");
const { exportOnnx } = await import("../src/onnx/export.js");
const { writeFixture } = await import("../src/fixture/write-fixture.js");
const builtBy = { tool: "bge", version: "test", args: ["export"] };
const sha256 = async (path: string) => createHash("sha256").update(await readFile(path)).digest("hex");

describe("export reads the checkpoint once", () => {
  it("fp32 and fp16 from model.safetensors: the weights hash comes from the first graph's reads, no second read of the file", async () => {
    const root = await tempDir("bge-one-read-");
    const model = join(root, "m");
    await writeFixture({ dir: model, seed: 3 });
    vi.mocked(hashWeights).mockClear();
    const { manifest } = await exportOnnx({ modelDir: model, outDir: join(root, "onnx"), precisions: ["fp32", "fp16"], builtBy });
    expect(hashWeights).not.toHaveBeenCalled();
    expect(manifest.source.weights_sha256).toBe(await sha256(join(model, "model.safetensors")));
  });

  it("pytorch_model.bin cannot hash while it reads: the file is hashed on its own, to the same value", async () => {
    const root = await tempDir("bge-one-read-bin-");
    const model = join(root, "m");
    await writeFixture({ dir: model, seed: 3 });
    const { convertFixtureToBin } = await import("./helpers/convert-to-bin.js");
    await convertFixtureToBin(model);
    vi.mocked(hashWeights).mockClear();
    const { manifest } = await exportOnnx({ modelDir: model, outDir: join(root, "onnx"), precisions: ["fp32"], builtBy });
    expect(hashWeights).toHaveBeenCalledTimes(1);
    expect(manifest.source.weights_sha256).toBe(await sha256(join(model, "pytorch_model.bin")));
  });
});
