import { existsSync } from "node:fs";
import { copyFile, cp, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readGolden, writeGolden, type GoldenFile } from "../src/artifacts/golden.js";
import { readManifest } from "../src/artifacts/manifest.js";
import { readModelSpec } from "../src/checkpoint/model-spec.js";
import { ModelProto } from "../src/onnx/proto.js";
import { ReferenceEmbedder } from "../src/runners/reference-embedder.js";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge, type BgeRun } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

const PASSAGES = join(REPO_ROOT, "golden", "texts", "verify-passages.txt");
const QUERIES = join(REPO_ROOT, "golden", "texts", "verify-queries.txt");

let root: string;
let model: string;
let golden: string;
let artifact: string;

async function bge(...args: string[]): Promise<BgeRun> {
  return runBge(args);
}

async function ok(...args: string[]): Promise<BgeRun> {
  const r = await runBge(args);
  if (r.code !== 0) throw new Error(`bge ${args.join(" ")} → ${r.code}\n${r.stderr}`);
  return r;
}

type ArtifactReport = { pass: boolean; failures: string[]; diagnoses: { code: string; message: string }[]; summary: Record<string, number> } & Record<string, unknown>;

/** `verify --json` output (bge-verify/1) as an object, whatever the exit code. */
function report(r: BgeRun): { format: string; pass: boolean; golden: Record<string, unknown>; artifacts: ArtifactReport[] } {
  return JSON.parse(r.stdout);
}

/** The one artifact entry of a single-candidate report. */
function only(r: BgeRun): ArtifactReport {
  const rep = report(r);
  expect(rep.artifacts).toHaveLength(1);
  return rep.artifacts[0]!;
}

beforeAll(async () => {
  root = await tempDir("bge-verify-");
  model = join(root, "tiny");
  golden = join(root, "golden.json");
  artifact = join(root, "tiny-onnx");
  await ok("fixture", model, "--seed", "31");
  await ok("golden", model, "--texts", PASSAGES, "--queries", QUERIES, "-o", golden, "-q");
  await ok("export", model, "-o", artifact, "-q");
}, 120_000);

describe("bge verify: passing", () => {
  it("passes fp32 and fp16 of a tiny BERT against a 240-item golden, with reports", async () => {
    const junit = join(root, "pass.xml");
    const json = join(root, "pass.json");
    const r = await bge("verify", artifact, "--golden", golden, "--junit", junit, "--report", json);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^PASS .*model\.fp32\.onnx \(fp32/m);
    expect(r.stdout).toMatch(/^PASS .*model\.fp16\.onnx \(fp16/m);
    expect(r.stdout).toMatch(/top-10 agreement\s+1\.0000/);
    const rep = JSON.parse(await readFile(json, "utf8"));
    expect(rep.pass).toBe(true);
    const [fp32, fp16] = rep.artifacts;
    expect(fp32.summary.n).toBe(240);
    expect(fp32.summary.min_cosine).toBeGreaterThanOrEqual(0.99999);
    expect(fp32.summary.token_mismatches).toBe(0);
    expect(fp32.summary.topk_agreement).toBe(1);
    expect(fp32.items[0]).toEqual(expect.objectContaining({ index: 0, tokens_match: true }));
    expect(Object.keys(fp32.summary).sort()).toEqual(["batch_drift", "max_abs_diff", "max_norm_diff", "mean_cosine", "min_cosine", "n", "non_finite", "p01_cosine", "token_mismatches", "topk_agreement"]);
    expect(fp16.fp16_range.overflowing).toEqual([]);
    expect(fp16.fp16_range.probed).toBeGreaterThan(30);
    const xml = await readFile(junit, "utf8");
    expect(xml.match(/<testcase /g)).toHaveLength(2);
    expect(xml).not.toContain("<failure");
    const m = await readManifest(artifact);
    expect(m.parity["model.fp32.onnx"]).toMatchObject({ pass: true, tolerance: 0.99999 });
    expect(m.parity["model.fp16.onnx"]).toMatchObject({ pass: true, tolerance: 0.999 });
  });

  it("passes an XLM-R fixture too", async () => {
    const m3 = join(root, "m3");
    await ok("fixture", m3, "--arch", "xlm-roberta", "--seed", "32");
    const g = join(root, "m3-golden.json");
    await ok("golden", m3, "--texts", PASSAGES, "--queries", QUERIES, "-o", g, "-q");
    await ok("export", m3, "-o", join(root, "m3-onnx"), "-q");
    const r = await bge("verify", join(root, "m3-onnx"), "--golden", g, "--json", "-q");
    expect(r.code).toBe(0);
    expect(report(r).pass).toBe(true);
  });
});

describe("bge verify: failing with the right diagnosis (exit 1)", () => {
  async function failing(candidate: string, g: string, ...extra: string[]) {
    const r = await bge("verify", candidate, "--golden", g, "--json", "-q", ...extra);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^bge: parity failed/m);
    expect(report(r).pass).toBe(false);
    const rep = only(r);
    expect(rep.pass).toBe(false);
    return rep;
  }
  // These candidates differ from the golden's settings on purpose: verify refuses that unless told.
  const ALLOW = "--allow-settings-mismatch";

  it("an export with --pooling mean", async () => {
    const out = join(root, "mean-onnx");
    await ok("export", model, "-o", out, "--pooling", "mean", "--precision", "fp32", "-q");
    const rep = await failing(out, golden, ALLOW);
    expect(rep.diagnoses.map((d) => d.code)).toEqual(["pooling", "settings"]);
    expect(rep.diagnoses[0]!.message).toMatch(/pools mean but the golden was pooled cls/);
    expect(rep.diagnoses[1]!.message).toMatch(/golden was made with pooling cls but the candidate pools mean/);
  });

  it("an export without normalisation", async () => {
    const out = join(root, "nonorm-onnx");
    await ok("export", model, "-o", out, "--no-normalize", "--precision", "fp32", "-q");
    const rep = await failing(out, golden, ALLOW);
    expect(rep.diagnoses.map((d) => d.code)).toEqual(["normalization", "settings"]);
    expect(rep.diagnoses[0]!.message).toMatch(/not L2-normalised/);
  });

  it("a golden made with the instruction, verified without it", async () => {
    const rep = await failing(artifact, golden, "--no-instruction", "--precision", "fp32", ALLOW);
    expect(rep.diagnoses.map((d) => d.code)).toEqual(["instruction", "settings"]);
    expect(rep.diagnoses[0]!.message).toMatch(/carry the instruction "为这个句子生成表示以用于检索相关文章：" but the candidate run had none/);
  });

  it("a golden truncated at 128 against a candidate at 512", async () => {
    const longTexts = join(root, "long.txt");
    const long = ["北京是中国的首都。".repeat(30), "Hello world, this is long. ".repeat(40), "短文本"];
    await writeFile(longTexts, long.join("\n") + "\n");
    const g128 = join(root, "golden-128.json");
    await ok("golden", model, "--texts", longTexts, "--max-length", "128", "-o", g128, "-q");
    const rep = await failing(artifact, g128, "--precision", "fp32", ALLOW);
    expect(rep.diagnoses.map((d) => d.code)).toEqual(["truncation", "settings"]);
    expect(rep.diagnoses[0]!.message).toMatch(/golden truncates at 128 tokens but the candidate at 512/);
  });

  it("a golden made from lowercased text (sentence-transformers) against FlagModel's cased tokenisation", async () => {
    const texts = ["Hello World", "BGE Models Are Great", "北京 Beijing", "TensorRT ENGINE"];
    const spec = await readModelSpec(model);
    const ref = await (await ReferenceEmbedder.load(spec)).embed(texts.map((t) => t.toLowerCase()), "passage");
    const base = await readGolden(golden);
    const lower: GoldenFile = { ...base, items: texts.map((text, i) => ({ text, kind: "passage", input_ids: ref.inputIds[i]!, embedding: Array.from(ref.embeddings[i]!) })) };
    const g = join(root, "golden-lower.json");
    await writeGolden(g, lower);
    const rep = await failing(artifact, g, "--precision", "fp32");
    expect(rep.diagnoses.map((d) => d.code)).toEqual(["lowercasing"]);
    expect(rep.summary.token_mismatches).toBe(4);
  });

  it("the fp16 graph of an --outliers fixture, which overflows", async () => {
    const out = join(root, "outliers");
    await ok("fixture", out, "--outliers", "--seed", "31");
    const g = join(root, "golden-outliers.json");
    await ok("golden", out, "--texts", PASSAGES, "-o", g, "-q");
    await ok("export", out, "-o", join(root, "outliers-onnx"), "-q");
    const r = await bge("verify", join(root, "outliers-onnx"), "--golden", g, "--json", "-q");
    expect(r.code).toBe(1);
    const [fp32, fp16] = report(r).artifacts;
    expect(fp32!.pass).toBe(true); // the float32 graph of the same model is faithful
    expect(fp16!.pass).toBe(false);
    expect(fp16!.diagnoses.map((d) => d.code)).toEqual(["fp16-overflow"]);
    expect(fp16!.diagnoses[0]!.message).toMatch(/\/encoder\/layer\.0\/intermediate\/dense\/Gemm_output_0 on \d+ of 200 texts/);
  });

  it("a candidate with one corrupted weight tensor: no diagnosis fits, and it still fails", async () => {
    // A hand-converted model: the exported fp32 graph with one weight scaled, as a bare .onnx beside the tokenizer.
    const dir = join(root, "corrupt");
    await mkdir(dir);
    for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json", "modules.json"]) await copyFile(join(artifact, f), join(dir, f));
    await mkdir(join(dir, "1_Pooling"));
    await copyFile(join(artifact, "1_Pooling", "config.json"), join(dir, "1_Pooling", "config.json"));
    const m = ModelProto.decode(await readFile(join(artifact, "model.fp32.onnx"))) as unknown as { graph: { initializer: { name: string; rawData: Uint8Array }[] } };
    const t = m.graph.initializer.find((i) => i.name === "encoder.layer.1.attention.output.dense.weight")!;
    const w = new Float32Array(t.rawData.buffer.slice(t.rawData.byteOffset, t.rawData.byteOffset + t.rawData.byteLength));
    for (let i = 0; i < w.length; i += 3) w[i] = -w[i]! * 4;
    t.rawData = new Uint8Array(w.buffer);
    await writeFile(join(dir, "model.onnx"), ModelProto.encode(m as never).finish());
    const rep = await failing(join(dir, "model.onnx"), golden, "--model-id", "bge-fixture/bge-tiny-zh");
    expect(rep.diagnoses.map((d) => d.code)).toEqual(["unexplained"]);
    expect(rep.diagnoses[0]!.message).toMatch(/no known cause explains the failure/);
  });

  it("a candidate that lets padding into attention: the batch-invariance gate says no", async () => {
    const dir = join(root, "leaky");
    const m = ModelProto.decode(await readFile(join(artifact, "model.fp32.onnx"))) as unknown as { graph: { initializer: { name: string; rawData: Uint8Array }[] } };
    m.graph.initializer.find((i) => i.name === "/attention_mask/min")!.rawData = new Uint8Array(new Float32Array([0]).buffer);
    await mkdir(dir);
    for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json"]) await copyFile(join(artifact, f), join(dir, f));
    await writeFile(join(dir, "model.onnx"), ModelProto.encode(m as never).finish());
    const rep = await failing(join(dir, "model.onnx"), golden, "--model-id", "bge-fixture/bge-tiny-zh");
    expect(rep.failures.some((f) => /batch drift/.test(f))).toBe(true);
    expect(rep.diagnoses.map((d) => d.code)).toContain("batch-dependence");
  });

  it("a graph without token_type_ids (and so without token type embeddings)", async () => {
    const dir = join(root, "no-types");
    await mkdir(dir);
    for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json"]) await copyFile(join(artifact, f), join(dir, f));
    type Node = { name: string; opType: string; input: string[] };
    const m = ModelProto.decode(await readFile(join(artifact, "model.fp32.onnx"))) as unknown as { graph: { input: { name: string }[]; node: Node[] } };
    m.graph.input = m.graph.input.filter((i) => i.name !== "token_type_ids");
    m.graph.node = m.graph.node.filter((n) => n.name !== "/embeddings/token_type_embeddings/Gather");
    const add = m.graph.node.find((n) => n.name === "/embeddings/Add_1")!;
    add.opType = "Identity";
    add.input = [add.input[0]!];
    await writeFile(join(dir, "model.onnx"), ModelProto.encode(m as never).finish());
    const rep = await failing(join(dir, "model.onnx"), golden, "--model-id", "bge-fixture/bge-tiny-zh");
    expect(rep.diagnoses.map((d) => d.code)).toEqual(["token-type-ids"]);
    expect(rep.diagnoses[0]!.message).toMatch(/no token_type_ids input though the model has token type embeddings/);
  });

  it("writes JUnit failures with the gate and the diagnosis", async () => {
    const junit = join(root, "fail.xml");
    const r = await bge("verify", artifact, "--golden", golden, "--no-instruction", "--junit", junit, "-q", ALLOW);
    expect(r.code).toBe(1);
    const xml = await readFile(junit, "utf8");
    expect(xml).toMatch(/<testsuites name="bge verify" tests="2" failures="2"/);
    expect(xml).toMatch(/<failure message="min cosine [0-9.]+ &lt; 0\.99999/);
    expect(xml).toContain("[instruction]");
  });
});

describe("bge verify: bad goldens and mismatches (exit 2, one line)", () => {
  async function refused(g: string, pattern: RegExp, candidate = artifact) {
    const r = await bge("verify", candidate, "--golden", g);
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(pattern);
  }
  const write = async (name: string, content: string) => {
    const p = join(root, name);
    await writeFile(p, content);
    return p;
  };

  it("invalid JSON, a wrong format tag, NaN inside, no items", async () => {
    const base = JSON.parse(await readFile(golden, "utf8"));
    await refused(await write("bad1.json", "{ not json"), /golden file is not valid JSON/);
    await refused(await write("bad2.json", JSON.stringify({ ...base, format: "bge-golden/0" })), /format is "bge-golden\/0", expected "bge-golden\/1"/);
    const nan = JSON.stringify(base).replace(/"embedding":\[([-0-9.e]+),/, '"embedding":[NaN,');
    await refused(await write("bad3.json", nan), /not valid JSON/);
    const nul = structuredClone(base);
    nul.items[3].embedding[5] = null;
    await refused(await write("bad4.json", JSON.stringify(nul)), /item 3 embedding\[5\] is not a finite number/);
    await refused(await write("bad5.json", JSON.stringify({ ...base, items: [] })), /items must be a non-empty array/);
  });

  it("a golden of another dimension, model or checkpoint, naming both values", async () => {
    const base = JSON.parse(await readFile(golden, "utf8"));
    const dim = structuredClone(base);
    for (const it of dim.items) it.embedding = it.embedding.slice(0, 16);
    await refused(await write("dim.json", JSON.stringify(dim)), /has dimension 16 but .* produces 32/);
    await refused(await write("id.json", JSON.stringify({ ...base, model: { ...base.model, id: "BAAI/bge-small-en-v1.5" } })), /is for model BAAI\/bge-small-en-v1\.5 but .* is bge-fixture\/bge-tiny-zh/);
    const other = "0".repeat(64);
    await refused(await write("sha.json", JSON.stringify({ ...base, model: { ...base.model, weights_sha256: other } })), new RegExp(`made from weights ${other} but .* exported from weights [0-9a-f]{64}`));
    expect(existsSync(join(root, "nothing"))).toBe(false);
  });

  it("a folder that is a checkpoint, not an artifact", async () => {
    const r = await bge("verify", model, "--golden", golden);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/without manifest\.json: verify takes an artifact folder/);
  });
});

describe("bge verify: one report shape (bge-verify/1)", () => {
  const TOP = ["artifacts", "format", "golden", "pass"];
  const ENTRY = ["candidate", "diagnoses", "items", "pass", "summary", "tolerance"];

  function pinned(rep: ReturnType<typeof report>, n: number) {
    expect(Object.keys(rep).sort()).toEqual(TOP);
    expect(rep.format).toBe("bge-verify/1");
    expect(rep.golden).toMatchObject({ path: golden, model_id: "bge-fixture/bge-tiny-zh", items: 240 });
    expect(rep.artifacts).toHaveLength(n);
    for (const a of rep.artifacts) {
      expect(Object.keys(a)).toEqual(expect.arrayContaining(ENTRY));
      expect(Object.keys(a.candidate as object).sort()).toEqual(["backend", "path", "precision", "role"]);
      expect(a.candidate).toMatchObject({ role: `onnx-${(a.candidate as { precision: string }).precision}`, backend: expect.stringMatching(/^onnxruntime/) });
      expect(Object.keys(a.summary)).toEqual(expect.arrayContaining(["n", "min_cosine", "mean_cosine", "p01_cosine", "max_abs_diff", "token_mismatches", "non_finite", "topk_agreement"]));
      expect(Object.keys((a.items as object[])[0]!)).toEqual(expect.arrayContaining(["index", "cosine", "max_abs_diff", "tokens_match"]));
      expect(a.diagnoses).toEqual([]);
    }
  }

  it("is the same for one artifact and for two, on stdout (--json) and in --report", async () => {
    const one = join(root, "shape-1.json");
    const r1 = await bge("verify", artifact, "--golden", golden, "--precision", "fp32", "--json", "-q", "--report", one);
    expect(r1.code, r1.stderr).toBe(0);
    pinned(report(r1), 1);
    expect(JSON.parse(await readFile(one, "utf8"))).toEqual(expect.objectContaining({ format: "bge-verify/1", pass: true }));
    const r2 = await bge("verify", artifact, "--golden", golden, "--json", "-q");
    expect(r2.code, r2.stderr).toBe(0);
    pinned(report(r2), 2);
    expect(report(r2).artifacts.map((a) => (a.candidate as { precision: string }).precision)).toEqual(["fp32", "fp16"]);
  });

  it("gives a bare .onnx a null role", async () => {
    const dir = join(root, "bare");
    await mkdir(dir);
    for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json", "modules.json"]) await copyFile(join(artifact, f), join(dir, f));
    await copyFile(join(artifact, "model.fp32.onnx"), join(dir, "model.onnx"));
    const r = await bge("verify", join(dir, "model.onnx"), "--golden", golden, "--json", "-q");
    expect(r.code, r.stderr).toBe(0);
    expect(Object.keys(report(r)).sort()).toEqual(TOP);
    expect(only(r).candidate).toMatchObject({ role: null, precision: "fp32" });
  });
});

describe("bge verify: a manifest that does not describe its files (exit 2, one line)", () => {
  /** A copy of the artifact with its manifest.json edited (the manifest is not itself hashed). */
  async function edited(name: string, edit: (m: Record<string, any>) => void): Promise<string> {
    const dir = join(root, name);
    await cp(artifact, dir, { recursive: true });
    const m = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8"));
    edit(m);
    await writeFile(join(dir, "manifest.json"), JSON.stringify(m, null, 2));
    return dir;
  }
  async function refused(dir: string, pattern: RegExp, command = ["verify", dir, "--golden", golden, "--precision", "fp32"]) {
    const r = await bge(...command);
    expect(r.code, r.stderr).toBe(2);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(pattern);
  }

  it("hidden_size other than the graph's output", async () => {
    const dir = await edited("m-hidden", (m) => (m.source.hidden_size = 48));
    await refused(dir, /source\.hidden_size is 48 but model\.fp32\.onnx outputs 32-dimensional vectors/);
  });

  it("an unknown pooling value", async () => {
    const dir = await edited("m-avg", (m) => (m.pooling = "avg"));
    await refused(dir, /manifest\.json: field pooling is "avg", expected "cls", "mean" or "none"/);
  });

  it("pooling or normalize edited away from the graph's ONNX metadata, for verify and embed", async () => {
    const mean = await edited("m-mean", (m) => (m.pooling = "mean"));
    await refused(mean, /manifest\.json: pooling is mean but model\.fp32\.onnx was exported with pooling cls \(its ONNX metadata\)/);
    await refused(mean, /pooling is mean but model\.fp32\.onnx was exported with pooling cls/, ["embed", mean, "hello"]);
    const plain = await edited("m-nonorm", (m) => (m.normalize = false));
    await refused(plain, /normalize is false but model\.fp32\.onnx was exported with normalize true/);
  });

  it("fields of the wrong type or out of range, each named with its value", async () => {
    const cases: [string, (m: Record<string, any>) => void, RegExp][] = [
      ["m-t1", (m) => (m.source.hidden_size = "32"), /field source\.hidden_size is "32", expected a positive integer/],
      ["m-t2", (m) => (m.source.weights_sha256 = "abc"), /field source\.weights_sha256 is "abc", expected 64 lowercase hex digits/],
      ["m-t3", (m) => (m.source.arch = "gpt2"), /field source\.arch is "gpt2", expected "bert" or "xlm-roberta"/],
      ["m-t4", (m) => (m.normalize = "yes"), /field normalize is "yes", expected true or false/],
      ["m-t5", (m) => (m.max_length = 1), /field max_length is 1, expected an integer ≥ 2/],
      ["m-t6", (m) => (m.query_instruction = 5), /field query_instruction is 5, expected a string or null/],
      ["m-t7", (m) => (m.files[0].role = "onnx-fp64"), /field files\[0\]\.role is "onnx-fp64", expected one of onnx-fp32, /],
      ["m-t8", (m) => (m.files[1].size = -1), /field files\[1\]\.size is -1, expected a byte count/],
      ["m-t9", (m) => delete m.source.model_id, /field source\.model_id is missing, expected a non-empty string/],
      ["m-t10", (m) => (m.parity = []), /field parity is \[\], expected an object/],
    ];
    for (const [name, edit, pattern] of cases) await refused(await edited(name, edit), pattern);
  });
});

describe("bge verify: the golden's settings against the candidate's", () => {
  const ALLOW = "--allow-settings-mismatch";
  const short = async () => {
    const p = join(root, "short-queries.txt");
    await writeFile(p, "北京\n上海的天气\n");
    return p;
  };
  async function refused(args: string[], ...patterns: RegExp[]) {
    const r = await bge("verify", ...args);
    expect(r.code, r.stderr).toBe(2);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    for (const p of patterns) expect(lines[0]).toMatch(p);
    expect(lines[0]).toMatch(/--allow-settings-mismatch/);
  }

  it("pooling and normalisation of the artifact", async () => {
    const mean = join(root, "s-mean-onnx");
    await ok("export", model, "-o", mean, "--pooling", "mean", "--precision", "fp32", "-q");
    await refused([mean, "--golden", golden], /golden was made with pooling cls but the candidate pools mean/);
    const plain = join(root, "s-nonorm-onnx");
    await ok("export", model, "-o", plain, "--no-normalize", "--precision", "fp32", "-q");
    await refused([plain, "--golden", golden], /golden was made with normalize true but the candidate runs with normalize false/);
  });

  it("max_length: refused even when every text is short; allowed, it passes and says so; verify --max-length matches it", async () => {
    const g = join(root, "golden-64.json");
    await ok("golden", model, "--texts", await short(), "--max-length", "64", "-o", g, "-q");
    await refused([artifact, "--golden", g, "--precision", "fp32"], /golden was made with max_length 64 but the candidate truncates at 512/);
    const r = await bge("verify", artifact, "--golden", g, "--precision", "fp32", "--json", "-q", ALLOW);
    expect(r.code, r.stderr).toBe(0);
    const rep = only(r);
    expect(rep.diagnoses.map((d) => d.code)).toEqual(["settings"]);
    expect(rep.diagnoses[0]!.message).toMatch(/max_length 64 but the candidate truncates at 512/);
    const text = await bge("verify", artifact, "--golden", g, "--precision", "fp32", "-q", ALLOW);
    expect(text.stdout).toMatch(/^PASS .*\n[^]*^ {2}note \[settings\]: .*max_length 64 but the candidate truncates at 512/m);
    const matched = await bge("verify", artifact, "--golden", g, "--precision", "fp32", "--max-length", "64", "--json", "-q");
    expect(matched.code, matched.stderr).toBe(0);
    expect(only(matched).diagnoses).toEqual([]);
  });

  it("the query instruction: refused naming both; allowed, it fails with the instruction diagnosis too", async () => {
    const g = join(root, "golden-instr.json");
    await ok("golden", model, "--texts", await short(), "--queries", await short(), "--instruction", "Query: ", "-o", g, "-q");
    await refused([artifact, "--golden", g], /golden was made with query instruction "Query: " but the candidate uses "为这个句子生成表示以用于检索相关文章："/);
    const r = await bge("verify", artifact, "--golden", g, "--precision", "fp32", "--json", "-q", ALLOW);
    expect(r.code, r.stderr).toBe(1);
    expect(only(r).diagnoses.map((d) => d.code)).toEqual(["instruction", "settings"]);
    // The runtime instruction is what counts: verify --instruction makes it match.
    const matched = await bge("verify", artifact, "--golden", g, "--precision", "fp32", "--instruction", "Query: ", "-q");
    expect(matched.code, matched.stderr).toBe(0);
    // A golden without queries never applied its instruction: nothing to compare.
    const passages = join(root, "golden-instr-passages.json");
    await ok("golden", model, "--texts", await short(), "--no-instruction", "-o", passages, "-q");
    expect((await bge("verify", artifact, "--golden", passages, "--precision", "fp32", "-q")).code).toBe(0);
  });

  it("several differences in one line", async () => {
    const g = join(root, "golden-multi.json");
    await ok("golden", model, "--texts", await short(), "--queries", await short(), "--no-instruction", "--max-length", "32", "-o", g, "-q");
    await refused([artifact, "--golden", g], /max_length 32 but the candidate truncates at 512; golden was made with query instruction none but the candidate uses "为/);
  });
});

describe("pipeline files", () => {
  it("every bundled pipeline parses and names existing corpora (pins and the schema: src/artifacts/pipeline.test.ts)", async () => {
    const { bundledPipelines, readPipeline } = await import("../src/artifacts/pipeline.js");
    const files = await bundledPipelines();
    expect(files.length).toBeGreaterThanOrEqual(7);
    for (const f of files) {
      const p = await readPipeline(f);
      expect(p.model).toBe(`BAAI/${f.split("/").pop()!.replace(/\.json$/, "")}`);
      expect(existsSync(p.verification!.texts)).toBe(true);
    }
  });

  it("tolerances from a pipeline file gate verify: a stricter fp16 minimum says no", async () => {
    const strict = join(root, "strict.json");
    await writeFile(strict, JSON.stringify({ model: "bge-fixture/bge-tiny-zh", precisions: { fp16: { min_cosine: 0.99999999 } } }));
    const r = await bge("verify", artifact, "--golden", golden, "--pipeline", strict, "--json", "-q");
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout) as { artifacts: { pass: boolean; tolerance: { min_cosine: number }; tolerance_notes: string[] }[] };
    expect(rep.artifacts[0]!.pass).toBe(true);
    expect(rep.artifacts[1]!.pass).toBe(false);
    expect(rep.artifacts[1]!.tolerance.min_cosine).toBe(0.99999999);
    expect(rep.artifacts[1]!.tolerance_notes).toContain("pipeline overrides");
    await writeFile(strict, JSON.stringify({ model: "x", precisions: { fp16: { min_cosin: 0.9 } } }));
    const bad = await bge("verify", artifact, "--golden", golden, "--pipeline", strict);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/precisions\.fp16\.min_cosin is not a tolerance/);
  });
});
