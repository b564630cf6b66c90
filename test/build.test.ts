import { existsSync } from "node:fs";
import { chmod, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readManifest } from "../src/artifacts/manifest.js";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

// bge build against the trtexec test double of each TensorRT family (no TensorRT exists here): the
// argument lists each version accepts, the manifest records, and every way trtexec can fail.

const DOUBLE = join(REPO_ROOT, "test", "helpers", "trtexec-double.mjs");
const VERSIONS = ["8.6.1", "10.16.0", "11.0.0"] as const;

let root: string;
let tiny: string;
let golden: string;
/** One trtexec per version: a wrapper of the double at its own path, as separate installs would be. */
const trtexec: Record<string, string> = {};

async function freshArtifact(name: string, precisions = "fp32,fp16"): Promise<string> {
  const out = join(root, name);
  expect((await runBge(["export", tiny, "-o", out, "--precision", precisions, "--quiet"])).code).toBe(0);
  return out;
}

async function snapshot(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).sort();
}

beforeAll(async () => {
  root = await tempDir("bge-build-");
  tiny = join(root, "tiny");
  expect((await runBge(["fixture", tiny, "--shape", "tiny", "--seed", "4"])).code).toBe(0);
  golden = join(root, "golden.json");
  const texts = join(root, "texts.txt");
  await writeFile(texts, "hello world\n你好\n");
  expect((await runBge(["golden", tiny, "--texts", texts, "-o", golden, "--quiet"])).code).toBe(0);
  for (const v of VERSIONS) {
    const path = join(root, `trtexec-${v}`);
    await writeFile(path, `#!/bin/sh\nTRTEXEC_DOUBLE_VERSION=${v} exec "${process.execPath}" "${DOUBLE}" "$@"\n`);
    await chmod(path, 0o755);
    trtexec[v] = path;
  }
}, 120_000);

describe("bge build through each TensorRT family's trtexec", () => {
  it.each(VERSIONS)("TensorRT %s: fp16 and int8 engines, each recorded with its exact arguments, version and GPU", async (v) => {
    const artifact = await freshArtifact(`art-${v}`);
    const calibration = join(root, "cal.txt");
    await writeFile(calibration, "hello world\n你好\nthe quick brown fox\n一二三四五六\n");
    expect((await runBge(["quantize", artifact, "--calibration", calibration, "--quiet"])).code).toBe(0);
    const r = await runBge(["build", artifact, "--precision", "fp16,int8", "--trtexec", trtexec[v]!, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const manifest = await readManifest(artifact);
    for (const [precision, role] of [["fp16", "trt-fp16"], ["int8", "trt-int8"]] as const) {
      const engine = manifest.files.find((f) => f.role === role)!;
      expect(engine.path).toBe(`model.${precision}.plan`);
      expect(engine.trt).toMatchObject({ version: v, family: v === "8.6.1" ? "8.6" : v.split(".")[0], gpu: "NVIDIA A100-SXM4-80GB", compute_capability: "8.0", log: `model.${precision}.log` });
      const args = engine.built_by!.args;
      expect(args[0]).toBe(trtexec[v]);
      expect(args).toContain(`--saveEngine=${join(artifact, engine.path)}`);
      // Precision flags exist only where the builder chooses precision: never on 11.
      if (v === "11.0.0") expect(args.some((a) => /^--(fp16|int8|calib|best)/.test(a))).toBe(false);
      else expect(args).toContain(precision === "fp16" ? "--fp16" : "--int8");
      expect(engine.trt!.source).toBe(precision === "int8" ? "model.int8.qdq.onnx" : v === "11.0.0" ? "model.fp16.onnx" : "model.fp32.onnx");
      expect(await readFile(join(artifact, engine.trt!.log), "utf8")).toMatch(/&&&& PASSED/);
    }
    const listed = [...manifest.files.map((f) => f.path), "manifest.json"];
    expect((await snapshot(artifact)).filter((f) => !f.includes("/") || f.startsWith("1_Pooling/"))).toEqual(expect.arrayContaining(listed));
    expect((await readdir(artifact)).filter((f) => f.startsWith("."))).toEqual([]);
  });

  it("refuses what a family cannot do: INT8 by calibration on TensorRT 11", async () => {
    const artifact = await freshArtifact("art-11-calib", "fp32");
    const r = await runBge(["build", artifact, "--precision", "int8", "--int8-source", "calib", "--trtexec", trtexec["11.0.0"]!]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^bge: .*11/);
  });

  it("without trtexec: exit 3 saying where it looked and how to get it; nothing written", async () => {
    const artifact = await freshArtifact("art-none", "fp32");
    const before = await snapshot(artifact);
    const r = await runBge(["build", artifact], { env: { PATH: "/usr/bin:/bin", TRTEXEC: undefined } });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/trtexec not found .*nvcr\.io\/nvidia\/tensorrt/);
    expect(await snapshot(artifact)).toEqual(before);
  });

  it.each([
    ["exit", /trtexec exited with \d+: /],
    ["signal", /trtexec was killed by SIG[A-Z]+: /],
    ["failed-line", /trtexec reported FAILED: /],
    ["no-engine", /trtexec reported success but wrote no engine model\.fp16\.plan: /],
  ])("a failing trtexec (%s): exit 4 with the command line and the log's tail, nothing under a final name", async (mode, why) => {
    const artifact = await freshArtifact(`art-fail-${mode}`, "fp32");
    const before = await snapshot(artifact);
    const manifestBefore = await readFile(join(artifact, "manifest.json"), "utf8");
    const r = await runBge(["build", artifact, "--trtexec", trtexec["10.16.0"]!], { env: { TRTEXEC_DOUBLE_FAIL: mode } });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(why);
    expect(r.stderr).toContain("--onnx=");
    expect(r.stderr.split("\n").length).toBeGreaterThan(3);
    expect(await snapshot(artifact)).toEqual(before);
    expect(await readFile(join(artifact, "manifest.json"), "utf8")).toBe(manifestBefore);
    expect(existsSync(join(artifact, "model.fp16.plan"))).toBe(false);
  });

  it("bad shapes are exit 2 naming the flag", async () => {
    const artifact = await freshArtifact("art-shapes", "fp32");
    const r = await runBge(["build", artifact, "--max-shape", "32x0", "--trtexec", trtexec["10.16.0"]!]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--max-shape <BxS>' argument '32x0' is invalid/);
    const long = await runBge(["build", artifact, "--max-shape", "32x1024", "--trtexec", trtexec["10.16.0"]!]);
    expect(long.code).toBe(2);
    expect(long.stderr).toMatch(/max_length 512/);
    const order = await runBge(["build", artifact, "--min-shape", "16x2", "--opt-shape", "8x64", "--trtexec", trtexec["10.16.0"]!]);
    expect(order.code).toBe(2);
    expect(order.stderr).toMatch(/min <= opt <= max/);
  });

  it("a named profile beside the default engine: model.fp16.<name>.plan for longer inputs, taken by embed when --max-length asks for more; refused beyond the model's positions or with a bad name", async () => {
    // An artifact with max_length 64: the default engine takes 64 tokens, a "long" one up to the tiny model's 512 positions.
    const artifact = join(root, "art-profile");
    expect((await runBge(["export", tiny, "-o", artifact, "--precision", "fp32", "--max-length", "64", "--quiet"])).code).toBe(0);
    const v = trtexec["10.16.0"]!;
    expect((await runBge(["build", artifact, "--precision", "fp16", "--trtexec", v, "--quiet"])).code).toBe(0);
    const r = await runBge(["build", artifact, "--precision", "fp16", "--profile", "long", "--opt-shape", "1x256", "--max-shape", "2x512", "--trtexec", v, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const manifest = await readManifest(artifact);
    const engines = manifest.files.filter((f) => f.role === "trt-fp16");
    expect(engines.map((f) => [f.path, f.trt!.profile, f.trt!.shapes.max, f.trt!.log])).toEqual([
      ["model.fp16.plan", undefined, [32, 64], "model.fp16.log"],
      ["model.fp16.long.plan", "long", [2, 512], "model.fp16.long.log"],
    ]);
    expect(existsSync(join(artifact, "model.fp16.long.log"))).toBe(true);

    // 300 tokens: the default engine cannot take them; --max-length 512 picks the long engine, whose
    // vectors match the ONNX graph's at the same length.
    const text = Array.from({ length: 300 }, (_, i) => ["hello", "world", "你好"][i % 3]).join(" ");
    const viaTrt = await runBge(["embed", artifact, text, "--backend", "trt", "--precision", "fp16", "--max-length", "512", "--trtexec", v, "--json"]);
    expect(viaTrt.code, viaTrt.stderr).toBe(0);
    const viaOnnx = await runBge(["embed", artifact, text, "--max-length", "512", "--json"]);
    expect(viaOnnx.code, viaOnnx.stderr).toBe(0);
    const [a, b] = [viaTrt, viaOnnx].map((x) => (JSON.parse(x.stdout) as { embeddings: number[][] }).embeddings[0]!);
    const dot = a!.reduce((sum, x, i) => sum + x * b![i]!, 0);
    expect(dot).toBeGreaterThan(0.999);
    // The default engine, named, refuses that length: the pick above was the long engine.
    const viaDefault = await runBge(["embed", join(artifact, "model.fp16.plan"), text, "--max-length", "512", "--trtexec", v]);
    expect(viaDefault.code).toBe(2);
    expect(viaDefault.stderr).toMatch(/beyond the engine's max sequence 64/);
    // At the artifact's max_length the default engine runs (and truncates as FlagModel does).
    const short = await runBge(["embed", artifact, text, "--backend", "trt", "--precision", "fp16", "--trtexec", v, "--json"]);
    expect(short.code, short.stderr).toBe(0);

    // verify --backend trt verifies both engines of the precision.
    const ver = await runBge(["verify", artifact, "--golden", golden, "--backend", "trt", "--trtexec", v, "--json", "--allow-settings-mismatch"]);
    expect(ver.code, ver.stderr).toBe(0);
    const paths = (JSON.parse(ver.stdout) as { artifacts: { candidate: { path: string } }[] }).artifacts.map((x) => x.candidate.path);
    expect(paths).toEqual([join(artifact, "model.fp16.plan"), join(artifact, "model.fp16.long.plan")]);

    // bench times the engine whose profile takes its longest --seq.
    const bench = await runBge(["bench", artifact, "--backend", "trt", "--precision", "fp16", "--batch", "1", "--seq", "300", "--runs", "1", "--warmup", "0", "--trtexec", v, "--json"]);
    expect(bench.code, bench.stderr).toBe(0);
    expect(bench.stdout).toContain(join(artifact, "model.fp16.long.plan"));
    const benchDefault = await runBge(["bench", artifact, "--backend", "trt", "--precision", "fp16", "--batch", "1", "--seq", "32", "--runs", "1", "--warmup", "0", "--trtexec", v, "--json"]);
    expect(benchDefault.code, benchDefault.stderr).toBe(0);
    expect(benchDefault.stdout).toContain(join(artifact, "model.fp16.plan"));
    expect(benchDefault.stdout).not.toContain("model.fp16.long.plan");

    const beyond = await runBge(["build", artifact, "--precision", "fp16", "--profile", "huge", "--max-shape", "1x1024", "--trtexec", v]);
    expect(beyond.code).toBe(2);
    expect(beyond.stderr).toMatch(/position table takes at most 512 tokens/);
    const badName = await runBge(["build", artifact, "--precision", "fp16", "--profile", "../x", "--trtexec", v]);
    expect(badName.code).toBe(2);
    expect(badName.stderr).toMatch(/--profile "\.\.\/x": a profile name is/);
    const defaultTooLong = await runBge(["build", artifact, "--precision", "fp16", "--max-shape", "2x512", "--trtexec", v]);
    expect(defaultTooLong.code).toBe(2);
    expect(defaultTooLong.stderr).toMatch(/never reach the default engine.*--profile NAME/);
  }, 180_000);
});
