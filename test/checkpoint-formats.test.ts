import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { convertFixtureToBin, flipLateByte } from "./helpers/convert-to-bin.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";
import { hostileStateDictPickle, writeTorchBinWithPickle } from "./helpers/torch-bin-writer.js";

let root: string;
beforeAll(async () => {
  root = await tempDir("bge-formats-");
});

async function embedJson(model: string, texts: string[]): Promise<number[][]> {
  const r = await runBge(["embed", model, ...texts, "--json"]);
  expect(r.stderr).not.toMatch(/error/);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout).embeddings;
}

describe("checkpoint formats through the CLI", () => {
  it("reads pytorch_model.bin (bert. prefix) to the same vectors as safetensors", async () => {
    const st = join(root, "st");
    const bin = join(root, "bin");
    expect((await runBge(["fixture", st, "--seed", "4"])).code).toBe(0);
    expect((await runBge(["fixture", bin, "--seed", "4"])).code).toBe(0);
    await convertFixtureToBin(bin);
    expect(existsSync(join(bin, "model.safetensors"))).toBe(false);
    const texts = ["北京", "a longer English sentence"];
    expect(await embedJson(bin, texts)).toEqual(await embedJson(st, texts));
  });

  it("reads sharded and F16/BF16 checkpoints", async () => {
    const sharded = join(root, "sharded");
    expect((await runBge(["fixture", sharded, "--seed", "4", "--shards", "3"])).code).toBe(0);
    expect(await embedJson(sharded, ["北京"])).toEqual(await embedJson(join(root, "st"), ["北京"]));
    for (const dtype of ["F16", "BF16"]) {
      const dir = join(root, dtype);
      expect((await runBge(["fixture", dir, "--seed", "4", "--dtype", dtype])).code).toBe(0);
      const [v] = await embedJson(dir, ["北京"]);
      const [ref] = await embedJson(join(root, "st"), ["北京"]);
      const cos = v!.reduce((s, x, i) => s + x * ref![i]!, 0);
      expect(cos).toBeGreaterThan(dtype === "F16" ? 0.9999 : 0.999);
      expect(cos).toBeLessThan(1);
    }
  });

  it("refuses a pickle naming os.system with exit 2 and one line: no code runs, nothing is written", async () => {
    const dir = join(root, "hostile");
    expect((await runBge(["fixture", dir])).code).toBe(0);
    const marker = join(root, "pwned");
    await writeTorchBinWithPickle(join(dir, "pytorch_model.bin"), hostileStateDictPickle("os", "system", `touch ${marker}`));
    await import("node:fs/promises").then((fs) => fs.rm(join(dir, "model.safetensors")));
    await writeFile(join(root, "texts.txt"), "hello\n");
    const before = (await readdir(root)).sort();
    const out = join(root, "hostile-golden.json");
    for (const args of [["embed", dir, "hello"], ["golden", dir, "--texts", join(root, "texts.txt"), "-o", out], ["export", dir, "-o", join(root, "hostile-onnx")]]) {
      const r = await runBge(args);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(/refusing pickle global os\.system \(only tensors are loaded; this file may be malicious\)/);
    }
    expect(existsSync(marker)).toBe(false);
    expect(existsSync(out)).toBe(false);
    expect((await readdir(root)).filter((f) => !before.includes(f))).toEqual([]);
  });

  it("detects a corrupted weight storage in pytorch_model.bin (CRC) with exit 2", async () => {
    const dir = join(root, "crc");
    expect((await runBge(["fixture", dir])).code).toBe(0);
    await convertFixtureToBin(dir);
    await flipLateByte(join(dir, "pytorch_model.bin"));
    const r = await runBge(["embed", dir, "hello"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/crc|CRC/);
  });
});
