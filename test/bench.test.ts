import { appendFile, chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

// bge bench end to end on the tiny fixture: the table, the bge-bench/1 report, the SVG chart, the
// trtexec path (through the test double) and the refusals of grids the model or engine cannot take.
// No timing is asserted beyond sanity: these runs share the machine with everything else.

let root: string;
let artifact: string;
let trtexec: string;

beforeAll(async () => {
  root = await tempDir("bge-bench-");
  const tiny = join(root, "tiny");
  expect((await runBge(["fixture", tiny, "--shape", "tiny", "--seed", "3"])).code).toBe(0);
  artifact = join(root, "art");
  expect((await runBge(["export", tiny, "-o", artifact, "--quiet"])).code).toBe(0);
  const corpus = join(root, "corpus.txt");
  await writeFile(corpus, "hello world\n你好，世界\nthe quick brown fox jumps\n一二三四五六七八\nbenchmarks measure what things cost\n");
  expect((await runBge(["quantize", artifact, "--calibration", corpus, "--precision", "int8", "--quiet"])).code).toBe(0);
  trtexec = join(root, "trtexec");
  await writeFile(trtexec, `#!/bin/sh\nTRTEXEC_DOUBLE_VERSION=10.16.0 exec "${process.execPath}" "${join(REPO_ROOT, "test", "helpers", "trtexec-double.mjs")}" "$@"\n`);
  await chmod(trtexec, 0o755);
}, 180_000);

interface Row {
  artifact: string;
  precision: string;
  mode: string;
  batch: number;
  seq: number;
  latencyMs: { runs?: number; p50: number; p95: number; p99: number };
  gpuComputeMs?: { p50: number; p95: number; p99: number };
  sequencesPerSecond: number;
  tokensPerSecond: number;
  modelFlops: number;
  ceiling?: { sequencesPerSecond: number; flops: number };
  pctOfCeiling?: number;
  split?: { texts: number; tokenizeMs: number; runMs: number; poolMs: number };
  peakRssBytes: number;
}

describe("bge bench on ONNX Runtime", () => {
  it("measures every grid point of every precision, with the same-run ceiling, and writes the table, the JSON and the SVG", async () => {
    const report = join(root, "bench.json");
    const chart = join(root, "bench.svg");
    const r = await runBge(["bench", artifact, "--precision", "fp32,fp16,int8", "--batch", "1,4", "--seq", "8,32", "--runs", "3", "--warmup", "1", "--threads", "1", "--report", report, "--chart", chart]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/p50 ms\s+p95 ms\s+p99 ms\s+seq\/s\s+tok\/s\s+ceiling seq\/s\s+% ceil/);
    expect(r.stdout).toMatch(/peak RSS \d+ MiB \([\d.]+× the weights\)/);
    // The tiny fixture's weights are a fraction of a MiB: shown with a decimal, never as "0 MiB".
    expect(r.stdout).toMatch(/fp32: weights 0\.[1-9] MiB/);
    // Each result is printed as it completes.
    expect(r.stderr).toMatch(/batch 4 × seq 32: p50 [\d.]+ ms/);

    const json = JSON.parse(await readFile(report, "utf8"));
    expect(json.format).toBe("bge-bench/1");
    expect(json.machine).toMatchObject({ node: process.version, onnxruntime: expect.stringMatching(/^\d+\.\d+\.\d+$/) });
    expect(json.machine.cores).toBeGreaterThan(0);
    expect(Array.isArray(json.machine.isa)).toBe(true);
    expect(json.settings).toMatchObject({ backend: "onnx", threads: 1, warmup: 1, runs: 3, batches: [1, 4], seqs: [8, 32] });
    const rows = json.rows as Row[];
    expect(rows).toHaveLength(3 * 2 * 2);
    for (const precision of ["fp32", "fp16", "int8"]) {
      const mine = rows.filter((x) => x.precision === precision);
      expect(mine.map((x) => `${x.batch}x${x.seq}`)).toEqual(["1x8", "1x32", "4x8", "4x32"]);
    }
    for (const row of rows) {
      expect(row.mode).toBe("synthetic");
      expect(row.latencyMs.p50).toBeGreaterThan(0);
      expect(row.latencyMs.p50).toBeLessThanOrEqual(row.latencyMs.p95);
      expect(row.latencyMs.p95).toBeLessThanOrEqual(row.latencyMs.p99);
      expect(row.sequencesPerSecond).toBeGreaterThan(0);
      expect(row.tokensPerSecond).toBeCloseTo(row.sequencesPerSecond * row.seq, 6);
      expect(row.ceiling!.sequencesPerSecond).toBeGreaterThan(0);
      expect(row.ceiling!.flops).toBeGreaterThan(0);
      expect(row.pctOfCeiling).toBeGreaterThan(0);
      expect(row.pctOfCeiling).toBeCloseTo((100 * row.sequencesPerSecond) / row.ceiling!.sequencesPerSecond, 6);
      expect(row.peakRssBytes).toBeGreaterThan(0);
    }
    // The ceiling grows with the rows it multiplies (batch·seq) only through the measured rate: its
    // FLOP/s is the model's FLOPs per second at the ceiling's sequences/s.
    for (const row of rows) expect(row.ceiling!.flops / row.ceiling!.sequencesPerSecond).toBeCloseTo(row.modelFlops / row.sequencesPerSecond, 0);
    expect(json.models.map((m: { precision: string }) => m.precision)).toEqual(["fp32", "fp16", "int8"]);
    for (const m of json.models) expect(m.rssOverWeights).toBeCloseTo(m.peakRssBytes / m.weightsBytes, 6);

    const svg = await readFile(chart, "utf8");
    expect(XMLValidator.validate(svg)).toBe(true);
    expect(svg.split("\n").length).toBeLessThanOrEqual(150);
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "" }).parse(svg).svg;
    const groups = [doc.g].flat().filter((g: { class?: string }) => g.class === "series");
    expect(groups.map((g: { "data-series": string }) => g["data-series"])).toEqual(["art fp32", "art fp16", "art int8"]);
    const dashed = [doc.path].flat().filter((p: { class?: string }) => p.class === "ceiling");
    expect(dashed.every((p: { "stroke-dasharray"?: string }) => p["stroke-dasharray"])).toBe(true);
    expect(dashed.length).toBe(3);
    const labels = [doc.text].flat().filter((t: { class?: string }) => t.class === "axis-label").map((t: { "#text": string }) => t["#text"]);
    expect(labels).toEqual(["batch size (sequences per run)", "sequences per second"]);
  }, 120_000);

  it("--texts times real texts end to end and splits the time into tokenise, run and pool", async () => {
    const texts = join(root, "texts.txt");
    await writeFile(texts, "hello world\n你好\nthe quick brown fox jumps over the lazy dog\n");
    const report = join(root, "texts.json");
    const r = await runBge(["bench", artifact, "--batch", "2", "--seq", "16", "--runs", "3", "--texts", texts, "--report", report, "--quiet"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/tokenise \/ run \/ pool/);
    const rows = JSON.parse(await readFile(report, "utf8")).rows as Row[];
    const t = rows.find((x) => x.mode === "texts")!;
    expect(t.split!.texts).toBe(3);
    expect(t.split!.runMs).toBeGreaterThan(0);
    expect(t.split!.tokenizeMs).toBeGreaterThanOrEqual(0);
    expect(t.split!.tokenizeMs + t.split!.runMs + t.split!.poolMs).toBeLessThanOrEqual(t.latencyMs.p99 * 1.001 + 1);
    expect(t.sequencesPerSecond).toBeGreaterThan(0);
  }, 60_000);
});

describe("bge bench --backend trt (the trtexec double)", () => {
  it("times an engine through trtexec: qps × batch → sequences/s from its summary, latency and GPU compute percentiles over every inference of its --exportTimes", async () => {
    const art = join(root, "art-trt");
    expect((await runBge(["export", join(root, "tiny"), "-o", art, "--precision", "fp32,fp16", "--quiet"])).code).toBe(0);
    expect((await runBge(["build", art, "--precision", "fp16", "--trtexec", trtexec, "--opt-shape", "4x32", "--max-shape", "8x64", "--quiet"])).code).toBe(0);
    const report = join(root, "trt.json");
    const r = await runBge(["bench", art, "--backend", "trt", "--trtexec", trtexec, "--precision", "fp16", "--batch", "1,8", "--seq", "16", "--runs", "2", "--report", report]);
    expect(r.code, r.stderr).toBe(0);
    const json = JSON.parse(await readFile(report, "utf8"));
    expect(json.machine.trtexec.version).toBe("10.16.0");
    const rows = json.rows as Row[];
    expect(rows.map((x) => x.batch)).toEqual([1, 8]);
    for (const row of rows) {
      // The double's summary: Throughput 1523.41 qps. Its --exportTimes for --iterations=2: GPU
      // compute 0.6 and 0.76 ms, plus 0.003 ms H2D and 0.004 ms D2H each (nearest-rank percentiles).
      expect(row.sequencesPerSecond).toBeCloseTo(1523.41 * row.batch, 2);
      expect(row.latencyMs.runs).toBe(2);
      expect(row.latencyMs.p50).toBeCloseTo(0.607, 6);
      expect(row.latencyMs.p99).toBeCloseTo(0.767, 6);
      expect(row.gpuComputeMs!.p50).toBeCloseTo(0.6, 6);
      expect(row.gpuComputeMs!.p99).toBeCloseTo(0.76, 6);
      expect(row.latencyMs.p50).toBeLessThanOrEqual(row.latencyMs.p95);
      expect(row.latencyMs.p95).toBeLessThanOrEqual(row.latencyMs.p99);
      expect(row.ceiling).toBeUndefined();
    }
    // A batch beyond the engine's profile is refused before trtexec runs, naming the flag and the limit.
    const big = await runBge(["bench", art, "--backend", "trt", "--trtexec", trtexec, "--precision", "fp16", "--batch", "16", "--seq", "16", "--runs", "1"]);
    expect(big.code).toBe(2);
    expect(big.stderr).toMatch(/^bge: --batch 16: outside the engine's profile \(batch 1 to 8/);
  }, 120_000);
});

describe("bge bench refuses grids it cannot measure (exit 2, naming the flag and the limit)", () => {
  it.each([
    [["--batch", "0"], /--batch <list>.*'0' is invalid.*from 1 to 4096/],
    [["--batch", "-1"], /--batch <list>.*'-1' is invalid/],
    [["--batch", "1.5"], /--batch <list>.*'1\.5' is invalid/],
    [["--seq", "8,,16"], /--seq <list>.*is invalid/],
    [["--runs", "0"], /--runs <n>.*'0' is invalid/],
    [["--threads", "0"], /--threads <n>.*'0' is invalid/],
  ])("%j", async (args, message) => {
    const r = await runBge(["bench", artifact, ...(args as string[])]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message as RegExp);
  });

  it("a sequence longer than the model's positions", async () => {
    const config = JSON.parse(await readFile(join(artifact, "config.json"), "utf8"));
    const tooLong = config.max_position_embeddings + 1;
    const r = await runBge(["bench", artifact, "--seq", `16,${tooLong}`, "--runs", "1"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^bge: --seq ${tooLong}: longer than the model allows \\(${config.max_position_embeddings}, max_position_embeddings`));
  });

  it("an artifact whose files no longer match its manifest", async () => {
    const art = join(root, "art-tampered");
    expect((await runBge(["export", join(root, "tiny"), "-o", art, "--precision", "fp32", "--quiet"])).code).toBe(0);
    await appendFile(join(art, "model.fp32.onnx"), "x");
    const r = await runBge(["bench", art, "--batch", "1", "--seq", "8", "--runs", "1"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/model\.fp32\.onnx is \d+ bytes, the manifest says \d+: the artifact was modified/);
  });

  it("--runs with --seconds, and a report written over the model", async () => {
    const both = await runBge(["bench", artifact, "--runs", "2", "--seconds", "1"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--runs.*cannot be used with.*--seconds/);
    const over = await runBge(["bench", join(artifact, "model.fp32.onnx"), "--batch", "1", "--seq", "8", "--report", join(artifact, "model.fp32.onnx")]);
    expect(over.code).toBe(2);
    expect(over.stderr).toMatch(/--report .* refusing to write over an input/);
  });
});
