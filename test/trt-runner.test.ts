import { spawnSync } from "node:child_process";
import { chmod, mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { ModelSpec } from "../src/checkpoint/model-spec.js";
import { ToolFailedError, UsageError } from "../src/errors.js";
import { loadEmbedder } from "../src/runners/load-embedder.js";
import type { OnnxEmbedder } from "../src/runners/onnx-embedder.js";
import { TrtEmbedder, type TrtEmbedderLoadOptions } from "../src/runners/trt-embedder.js";
import type { DiagnosableCandidate } from "../src/parity/diagnose.js";
import { discoverTrtexec, type TrtexecInfo } from "../src/trt/discover-trtexec.js";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";
import { cosineSimilarity as cosine } from "../src/parity/metrics.js";

/**
 * The TensorRT runner against the trtexec double (which runs the engine's ONNX on onnxruntime): its
 * vectors must be the ONNX runner's to float precision on every dialect, with one trtexec run per batch.
 */
const DOUBLE = join(REPO_ROOT, "test", "helpers", "trtexec-double.mjs");
const INPUTS = ["input_ids", "attention_mask", "token_type_ids"];
const PROFILE = { min: [1, 2], opt: [4, 64], max: [8, 128] } as const;
const shapeArg = (flag: string, [b, s]: readonly number[]) => `--${flag}=${INPUTS.map((n) => `${n}:${b}x${s}`).join(",")}`;

// 20 texts from 1 to ~50 tokens, Chinese and Latin, in no particular length order.
const WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "hello", "world"];
const TEXTS = Array.from({ length: 20 }, (_, i) => {
  const n = (i * 7) % 23;
  const zh = "一二三四五六七八九十你好世界中文句子".slice(0, (i * 5) % 17);
  return `${zh}${Array.from({ length: n }, (_, k) => WORDS[(i + k) % WORDS.length]).join(" ")}` || "a";
});

let dir: string;
let art: string;
let onnx: OnnxEmbedder;
let spec: ModelSpec;
const trtexec: Record<string, TrtexecInfo> = {};
const engines: Record<string, string> = {};

async function wrapper(version: string, fail = ""): Promise<string> {
  const path = join(dir, "bin", `trtexec-${version}${fail ? `-${fail}` : ""}`);
  await writeFile(path, `#!/bin/sh\nTRTEXEC_DOUBLE_VERSION=${version} TRTEXEC_DOUBLE_FAIL=${fail} exec "${process.execPath}" "${DOUBLE}" "$@"\n`);
  await chmod(path, 0o755);
  return path;
}

beforeAll(async () => {
  dir = await tempDir("bge-trt-runner-");
  await mkdir(join(dir, "bin"));
  expect((await runBge(["fixture", join(dir, "fx"), "--shape", "tiny", "--seed", "3"])).code).toBe(0);
  art = join(dir, "art");
  expect((await runBge(["export", join(dir, "fx"), "-o", art, "--precision", "fp32"])).code).toBe(0);
  const loaded = await loadEmbedder(art, { backend: "onnx", precision: "fp32", threads: 1 });
  onnx = loaded.embedder as OnnxEmbedder;
  spec = loaded.spec;
  for (const v of ["8.6.1", "10.16.0", "11.0.0"]) {
    trtexec[v] = await discoverTrtexec({ explicit: await wrapper(v), cacheFile: false });
    engines[v] = join(dir, `model.fp32.${v}.plan`);
    const args = [`--onnx=${join(art, "model.fp32.onnx")}`, `--saveEngine=${engines[v]}`, shapeArg("minShapes", PROFILE.min), shapeArg("optShapes", PROFILE.opt), shapeArg("maxShapes", PROFILE.max), "--noTF32", "--skipInference"];
    const r = spawnSync(trtexec[v]!.path, args, { encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  }
});

function load(version: string, extra: Partial<TrtEmbedderLoadOptions> = {}): Promise<TrtEmbedder> {
  return TrtEmbedder.load({
    enginePath: engines[version]!,
    spec,
    tokenizerDir: art,
    trtexec: trtexec[version]!,
    profile: PROFILE,
    precision: "fp32",
    inputs: INPUTS,
    outputs: ["last_hidden_state", "sentence_embedding"],
    graphPooling: { pooling: "cls", normalize: true },
    ...extra,
  });
}


function minCosine(a: Float64Array[], b: Float64Array[]): number {
  expect(a.length).toBe(b.length);
  return Math.min(...a.map((v, i) => cosine(v, b[i]!)));
}

describe.each(["10.16.0", "8.6.1", "11.0.0"])("TrtEmbedder on the trtexec %s double (fp32 engine)", (version) => {
  it.each(["query", "passage"] as const)("%s vectors equal the ONNX runner's (cosine ≥ 0.999999), ids identical, one trtexec run per batch", async (kind) => {
    const trt = await load(version);
    const candidate: DiagnosableCandidate = trt; // verify's diagnoses take it as it is
    expect(candidate.hasHiddenStates && candidate.hasTokenTypeInput).toBe(true);
    expect(trt.dimension).toBe(32);
    const lengths = (await onnx.embed(TEXTS, kind)).inputIds.map((ids) => ids.length);
    expect(Math.max(...lengths)).toBeGreaterThan(40);
    expect(Math.min(...lengths)).toBeLessThan(kind === "passage" ? 5 : 30); // queries carry the instruction

    const progress: number[] = [];
    const got = await trt.embed(TEXTS, kind, { batchSize: 6, onProgress: (done) => progress.push(done) });
    const want = await onnx.embed(TEXTS, kind, { batchSize: 6 });
    expect(got.inputIds).toEqual(want.inputIds);
    const min = minCosine(got.embeddings, want.embeddings);
    console.log(`trt ${version} ${kind}: 1 - min cosine vs ONNX ${(1 - min).toExponential(2)} over ${TEXTS.length} texts, ${trt.runs} trtexec runs`);
    expect(min).toBeGreaterThanOrEqual(0.999999);
    expect(trt.runs).toBe(Math.ceil(TEXTS.length / 6));
    expect(progress).toEqual([6, 12, 18, 20]);
    for (const v of got.embeddings) expect(v).toBeInstanceOf(Float64Array);

    // The caller's batch size is capped at the profile's max batch (8): 3 runs for 20 texts.
    const capped = await trt.embed(TEXTS, kind, { batchSize: 32 });
    expect(trt.runs).toBe(Math.ceil(TEXTS.length / 6) + Math.ceil(TEXTS.length / 8));
    expect(minCosine(capped.embeddings, want.embeddings)).toBeGreaterThanOrEqual(0.999999);
  });
});

describe("TrtEmbedder pooling", () => {
  it("without a matching sentence_embedding it pools last_hidden_state itself (CLS + L2)", async () => {
    const trt = await load("10.16.0", { outputs: ["last_hidden_state"], graphPooling: undefined });
    const got = await trt.embed(TEXTS, "passage", { batchSize: 8 });
    const want = await onnx.embed(TEXTS, "passage", { batchSize: 8 });
    expect(minCosine(got.embeddings, want.embeddings)).toBeGreaterThanOrEqual(0.999999);
    for (const v of got.embeddings) expect(Math.hypot(...v)).toBeCloseTo(1, 6);
  });

  it("embedWith: another pooling, no normalisation, no instruction — as the ONNX runner computes them", async () => {
    const trt = await load("10.16.0");
    for (const overrides of [{ pooling: "mean" as const }, { normalize: false }, { instruction: null }, { maxLength: 16 }]) {
      const got = await trt.embedWith(TEXTS, "query", { ...overrides, batchSize: 8 });
      const want = await onnx.embedWith(TEXTS, "query", { ...overrides, batchSize: 8 });
      expect(got.inputIds).toEqual(want.inputIds);
      expect(minCosine(got.embeddings, want.embeddings), JSON.stringify(overrides)).toBeGreaterThanOrEqual(0.999999);
      if (overrides.normalize === false) {
        got.embeddings.forEach((v, i) => expect(Math.hypot(...v)).toBeCloseTo(Math.hypot(...want.embeddings[i]!), 4));
      }
    }
  });

  it("a profile whose minimum is above 1×2 gets filled batches and padded sequences, with the same vectors", async () => {
    const profile = { min: [3, 8], opt: [4, 64], max: [8, 128] } as const;
    const engine = join(dir, "model.fp32.min3x8.plan");
    const args = [`--onnx=${join(art, "model.fp32.onnx")}`, `--saveEngine=${engine}`, shapeArg("minShapes", profile.min), shapeArg("optShapes", profile.opt), shapeArg("maxShapes", profile.max), "--skipInference"];
    expect(spawnSync(trtexec["10.16.0"]!.path, args).status).toBe(0);
    const trt = await load("10.16.0", { enginePath: engine, profile });
    const texts = ["a", "hello world", "你好"]; // 3 short texts, batch size 2 → a batch of 1 filled up to 3
    const got = await trt.embed(texts, "passage", { batchSize: 2 });
    const want = await onnx.embed(texts, "passage", { batchSize: 2 });
    expect(trt.runs).toBe(2);
    expect(minCosine(got.embeddings, want.embeddings)).toBeGreaterThanOrEqual(0.999999);
  });

  it("unpadded (verify's batch-invariance pass): one run per token length, at most the profile's max batch each, the same vectors as one text at a time", async () => {
    // Lengths with repeats: 12 texts of 3 lengths, 5 of one of them (beyond nothing, max batch 8).
    const texts = [...Array.from({ length: 5 }, (_, i) => `hello ${["a", "b", "c", "d", "e"][i]}`), ...Array.from({ length: 4 }, (_, i) => `你好世界${i}`), "x", "y", "z"];
    const lengths = (await onnx.embed(texts, "passage")).inputIds.map((ids) => ids.length);
    const distinct = new Set(lengths);
    expect(distinct.size).toBeLessThan(texts.length);
    const grouped = await load("10.16.0");
    const got = await grouped.embedWith(texts, "passage", { batchSize: 1, unpadded: true });
    expect(grouped.runs).toBe([...distinct].reduce((n, len) => n + Math.ceil(lengths.filter((l) => l === len).length / PROFILE.max[0]), 0));
    const single = await load("10.16.0");
    const alone = await single.embedWith(texts, "passage", { batchSize: 1 });
    expect(single.runs).toBe(texts.length);
    expect(minCosine(got.embeddings, alone.embeddings)).toBeGreaterThanOrEqual(0.999999);
  });

  it("an engine with neither hidden states nor a matching sentence_embedding is refused at load", async () => {
    await expect(load("10.16.0", { outputs: ["sentence_embedding"], graphPooling: { pooling: "mean", normalize: true } })).rejects.toThrow(/no hidden states/);
  });
});

describe("TrtEmbedder failures", () => {
  it("a text beyond the profile's max sequence → UsageError naming it, before any trtexec run", async () => {
    const trt = await load("10.16.0", { profile: { min: [1, 2], opt: [4, 16], max: [8, 16] } });
    const err = await trt.embed(TEXTS, "passage").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/^text \d+ \(".*"\) is \d+ tokens, beyond the engine's max sequence 16 \(profile max 8x16\); the engine cannot take it/);
    expect(trt.runs).toBe(0);
  });

  it.each(["exit", "signal", "failed-line", "bad-export"])("TRTEXEC_DOUBLE_FAIL=%s → ToolFailedError (exit 4) with the command line, no temporary folder left", async (fail) => {
    const work = join(dir, `work-${fail}`);
    await mkdir(work);
    const failing = { ...trtexec["10.16.0"]!, path: await wrapper("10.16.0", fail) };
    const trt = await load("10.16.0", { trtexec: failing, workDir: work });
    const err = await trt.embed(TEXTS, "passage", { batchSize: 8 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolFailedError);
    expect((err as ToolFailedError).exitCode).toBe(4);
    expect((err as Error).message).toMatch(new RegExp(`${failing.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} --loadEngine=\\S+ --shapes=input_ids:8x\\d+,attention_mask:8x\\d+,token_type_ids:8x\\d+ --loadInputs=`));
    expect(await readdir(work)).toEqual([]);
  });
});
