import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readGolden } from "../src/artifacts/golden.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

let root: string;
let tiny: string;

beforeAll(async () => {
  root = await tempDir("bge-cli-");
  tiny = join(root, "tiny");
  const r = await runBge(["fixture", tiny, "--shape", "tiny", "--seed", "2"]);
  expect(r.code).toBe(0);
});

describe("bge CLI", () => {
  it("lists its commands in --help and exits 2 without one", async () => {
    const help = await runBge(["--help"]);
    expect(help.code).toBe(0);
    for (const c of ["fixture", "tokenize", "embed", "golden"]) expect(help.stdout).toMatch(new RegExp(`^  ${c} `, "m"));
    const none = await runBge([]);
    expect(none.code).toBe(2);
    const embedHelp = await runBge(["embed", "--help"]);
    expect(embedHelp.stdout).toContain("Example:");
  });

  it("embeds two texts into unit-norm vectors of the hidden size, in input order", async () => {
    const both = await runBge(["embed", tiny, "你好", "hello", "--backend", "reference", "--json"]);
    expect(both.code).toBe(0);
    const { embeddings } = JSON.parse(both.stdout) as { embeddings: number[][] };
    expect(embeddings.length).toBe(2);
    for (const v of embeddings) {
      expect(v.length).toBe(32);
      expect(Math.hypot(...v)).toBeCloseTo(1, 12);
    }
    const hello = JSON.parse((await runBge(["embed", tiny, "hello", "--json"])).stdout).embeddings[0];
    expect(embeddings[1]).toEqual(hello);
    expect(embeddings[0]).not.toEqual(hello);
  });

  it("tokenises with FlagModel's special tokens, queries with the instruction", async () => {
    const p = await runBge(["tokenize", tiny, "你好"]);
    expect(p.code).toBe(0);
    const enc = JSON.parse(p.stdout.trim());
    expect(enc.input_ids[0]).toBe(101);
    expect(enc.input_ids.at(-1)).toBe(102);
    expect(enc.attention_mask.every((m: number) => m === 1)).toBe(true);
    expect(enc.token_type_ids.every((t: number) => t === 0)).toBe(true);
    const q = JSON.parse((await runBge(["tokenize", tiny, "你好", "--query"])).stdout.trim());
    expect(q.input_ids.length).toBeGreaterThan(enc.input_ids.length + 10);
    expect(q.input_ids.slice(-3)).toEqual(enc.input_ids.slice(-3));
    const none = JSON.parse((await runBge(["tokenize", tiny, "你好", "--query", "--no-instruction"])).stdout.trim());
    expect(none.input_ids).toEqual(enc.input_ids);
    const cut = JSON.parse((await runBge(["tokenize", tiny, "一二三四五六七八九十", "--max-length", "5"])).stdout.trim());
    expect(cut.input_ids.length).toBe(5);
    expect(cut.input_ids.at(-1)).toBe(102);
  });

  it("writes a valid bge-golden/1 file with passages and queries", async () => {
    const texts = join(root, "passages.txt");
    const queries = join(root, "queries.json");
    await writeFile(texts, "北京是中国的首都。\nThe fox.\n\n");
    await writeFile(queries, JSON.stringify(["首都是哪里"]));
    const out = join(root, "golden.json");
    const r = await runBge(["golden", tiny, "--texts", texts, "--queries", queries, "-o", out, "--quiet"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    const g = await readGolden(out);
    expect(g.items.map((i) => [i.kind, i.text])).toEqual([["passage", "北京是中国的首都。"], ["passage", "The fox."], ["passage", ""], ["query", "首都是哪里"]]);
    expect(g.model.id).toBe("bge-fixture/bge-tiny-zh");
    expect(g.model.weights_sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(g.producer).toMatchObject({ name: "bge-reference", pooling: "cls", normalize: true, use_fp16: false, max_length: 512, query_instruction: "为这个句子生成表示以用于检索相关文章：" });
    expect(g.items[2]!.input_ids).toEqual([101, 102]);
    const embed = JSON.parse((await runBge(["embed", tiny, "The fox.", "--json"])).stdout).embeddings[0];
    expect(g.items[1]!.embedding).toEqual(embed);
  });

  it("fails with exit 2 and one line for a missing model, bad options and corrupt weights, writing nothing", async () => {
    const missing = await runBge(["embed", join(root, "nope"), "x"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim().split("\n")).toHaveLength(1);
    expect(missing.stderr).toMatch(/no such checkpoint folder/);

    const badOpt = await runBge(["embed", tiny, "x", "--max-length", "zero"]);
    expect(badOpt.code).toBe(2);
    const noTexts = await runBge(["embed", tiny]);
    expect(noTexts.code).toBe(2);
    expect(noTexts.stderr).toMatch(/no texts given/);

    // A safetensors file whose tensor offset points past the end of the file.
    const bad = join(root, "bad");
    expect((await runBge(["fixture", bad])).code).toBe(0);
    const st = await readFile(join(bad, "model.safetensors"));
    const headerLen = Number(st.readBigUInt64LE(0));
    const header = JSON.parse(st.subarray(8, 8 + headerLen).toString());
    header["embeddings.LayerNorm.bias"].data_offsets = [10 ** 9, 10 ** 9 + 128];
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    await writeFile(join(bad, "model.safetensors"), Buffer.concat([len, json, st.subarray(8 + headerLen)]));
    const before = (await readdir(bad)).sort();
    const out = join(root, "bad-golden.json");
    await writeFile(join(root, "t.txt"), "hello\n");
    const r = await runBge(["golden", bad, "--texts", join(root, "t.txt"), "-o", out]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/corrupt safetensors file: tensor embeddings\.LayerNorm\.bias data_offsets \[1000000000, 1000000128\] fall outside/);
    expect(existsSync(out)).toBe(false);
    expect((await readdir(bad)).sort()).toEqual(before);
    expect((await readdir(root)).filter((f) => f.includes("bad-golden"))).toEqual([]);
  });

  it("refuses an unsupported architecture naming the supported ones", async () => {
    const dir = join(root, "gpt");
    expect((await runBge(["fixture", dir])).code).toBe(0);
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, architectures: ["LlamaModel"], model_type: "llama" }));
    const r = await runBge(["embed", dir, "x"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unsupported architecture LlamaModel; supported: BertModel, XLMRobertaModel/);
  });

  it("refuses tensors whose shapes contradict config.json", async () => {
    const dir = join(root, "shape");
    expect((await runBge(["fixture", dir])).code).toBe(0);
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, intermediate_size: 128 }));
    const r = await runBge(["embed", dir, "x"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/tensor encoder\.layer\.0\.intermediate\.dense\.weight has shape \[64, 32\] but config\.json implies \[128, 32\]/);
  });
});
