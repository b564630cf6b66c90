import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readManifest } from "../src/artifacts/manifest.js";
import { parseCalibrationCache } from "../src/quantize/calib-cache.js";
import { calibrate } from "../src/quantize/calibrate.js";
import { readOnnxModel } from "../src/quantize/onnx-model-io.js";
import { writeQdqModel } from "../src/quantize/qdq-graph.js";
import type { Int8QuantizationRecord } from "../src/quantize/quantize-artifact.js";
import { HAVE_SHARED, REPO_ROOT, ZH_TOKENIZER } from "./helpers/paths.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

// bge quantize end to end on the bge-small-zh-v1.5 shape (issue 10): calibrated on the project's
// calibration corpus, verified against the float64 reference on the 240 verification texts — other
// texts than the calibration ones, as a deployment would see.

const PASSAGES = join(REPO_ROOT, "golden", "texts", "verify-passages.txt");
const QUERIES = join(REPO_ROOT, "golden", "texts", "verify-queries.txt");
const CORPUS = join(REPO_ROOT, "pipelines", "corpus", "zh-passages.txt");
const CORPUS_QUERIES = join(REPO_ROOT, "pipelines", "corpus", "zh-queries.txt");

let root: string;
let calibration: string;
let shortOnly: string;

interface VerifyJson {
  format: string;
  pass: boolean;
  artifacts: { pass: boolean; candidate: { precision: string; role: string }; summary: { n: number; min_cosine: number; mean_cosine: number; topk_agreement: number | null; batch_drift: number }; diagnoses: { code: string; message: string }[] }[];
}

async function prepare(name: string, extra: string[]): Promise<{ artifact: string; golden: string }> {
  const model = join(root, name);
  const fixture = ["fixture", model, "--shape", "bge-small-zh-v1.5", "--seed", "11", ...extra];
  if (HAVE_SHARED) fixture.push("--tokenizer", ZH_TOKENIZER);
  expect((await runBge(fixture)).code).toBe(0);
  const golden = join(root, `${name}.golden.json`);
  expect((await runBge(["golden", model, "--texts", PASSAGES, "--queries", QUERIES, "-o", golden, "--quiet"])).code).toBe(0);
  const artifact = join(root, `${name}-onnx`);
  expect((await runBge(["export", model, "-o", artifact, "--precision", "fp32", "--quiet"])).code).toBe(0);
  return { artifact, golden };
}

async function verify(artifact: string, golden: string, precision: string): Promise<{ code: number; report: VerifyJson; stderr: string }> {
  const r = await runBge(["verify", artifact, "--golden", golden, "--precision", precision, "--json", "--quiet"]);
  return { code: r.code, report: JSON.parse(r.stdout) as VerifyJson, stderr: r.stderr };
}

beforeAll(async () => {
  root = await tempDir("bge-quantize-");
  // 300 passages and 200 queries of the project's corpus (what the model will embed: long and short
  // texts), none of them among the verification texts.
  calibration = join(root, "calibration.txt");
  const read = async (f: string, n: number) => (await readFile(f, "utf8")).split("\n").filter(Boolean).slice(0, n);
  const verifying = new Set([...(await readFile(PASSAGES, "utf8")).split("\n"), ...(await readFile(QUERIES, "utf8")).split("\n")]);
  const lines = [...(await read(CORPUS, 300)), ...(await read(CORPUS_QUERIES, 200))].filter((l) => !verifying.has(l));
  expect(lines.length).toBeGreaterThan(495);
  await writeFile(calibration, lines.join("\n") + "\n");
  shortOnly = join(root, "calibration-passages-only.txt");
  await writeFile(shortOnly, (await read(CORPUS, 300)).join("\n") + "\n");
}, 60_000);

describe("bge quantize on the bge-small-zh-v1.5 shape", () => {
  let artifact: string;
  let golden: string;
  beforeAll(async () => {
    ({ artifact, golden } = await prepare("zh", []));
  }, 300_000);

  it("writes both INT8 graphs and a calibration cache, recorded in the manifest; the folder holds exactly what it lists", async () => {
    const r = await runBge(["quantize", artifact, "--calibration", calibration, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const manifest = await readManifest(artifact);
    const roles = Object.fromEntries(manifest.files.map((f) => [f.role, f]));
    for (const role of ["onnx-fp32", "onnx-int8-qdq", "onnx-int8-dynamic", "calib-cache"]) expect(roles[role], role).toBeDefined();
    const q = roles["onnx-int8-dynamic"]!.quantization! as Int8QuantizationRecord;
    expect(q.method).toBe("minmax");
    // No outlier channels on this fixture: SmoothQuant (auto) has nothing to smooth; activations take their calibrated ranges.
    expect(q.smoothing).toEqual({ setting: "auto", inputs: [] });
    expect(q.activations).toBe("static");
    // Static: per layer one QuantizeLinear per linear input (Q/K/V share theirs) and one fused
    // MatMulIntegerToFloat with the bias per linear layer; Q, K, V and the probabilities quantised for
    // the two attention MatMuls, which run as MatMulIntegerToFloat too; no run-time reduction.
    const nodes = (await readOnnxModel(join(artifact, roles["onnx-int8-dynamic"]!.path))).graph.node;
    const count = (op: string) => nodes.filter((n) => n.opType === op).length;
    expect([count("MatMulIntegerToFloat"), count("QuantizeLinear"), count("ReduceMax"), count("Gemm"), count("MatMul")]).toEqual([8 * 4, 8 * 4, 0, 0, 0]);
    expect(q.texts).toBeGreaterThan(495);
    expect(q.auto_excluded).toEqual([]);
    expect(q.tensors).toBeGreaterThan(4 * 6);
    expect(q.amax.min).toBeGreaterThan(0);
    // INT8 linear weights (a quarter of their fp32 bytes); the word embeddings stay fp32.
    expect(roles["onnx-int8-dynamic"]!.size).toBeLessThan(0.65 * roles["onnx-fp32"]!.size);
    const cache = parseCalibrationCache(await readFile(join(artifact, "calibration.cache"), "utf8"));
    expect([cache.version, cache.algorithm]).toEqual([8601, "MinMaxCalibration"]);
    expect(cache.scales.size).toBe(q.tensors);
    const onDisk = (await readdir(artifact, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(artifact.length + 1));
    expect(onDisk.sort()).toEqual([...manifest.files.map((f) => f.path), "manifest.json"].sort());
  });

  it("both INT8 artifacts pass the int8 gate on 240 texts they were not calibrated on", async () => {
    for (const precision of ["int8", "int8-qdq"]) {
      const { code, report } = await verify(artifact, golden, precision);
      const a = report.artifacts[0]!;
      expect(code, JSON.stringify(a.diagnoses)).toBe(0);
      expect(a.summary.n).toBe(240);
      expect(a.summary.min_cosine).toBeGreaterThan(0.98);
      expect(a.summary.mean_cosine).toBeGreaterThan(0.99);
      // Not a gate that passes anything: int8 is measurably not fp32.
      expect(a.summary.mean_cosine).toBeLessThan(0.99999);
      // Calibrated scales: a text's vector does not depend on the texts batched with it.
      if (precision === "int8") expect(a.summary.batch_drift).toBeLessThan(1e-9);
    }
  });

  it("calibrated on long passages only, Q/DQ still passes on 2-token texts because attention probabilities take their bound; clipped to the corpus maximum they fail, and the diagnosis names the attention layers and says why", async () => {
    const other = join(root, "zh-passages-only-onnx");
    expect((await runBge(["export", join(root, "zh"), "-o", other, "--precision", "fp32", "--quiet"])).code).toBe(0);
    expect((await runBge(["quantize", other, "--calibration", shortOnly, "--precision", "int8-qdq", "--quiet"])).code).toBe(0);
    const { code, report } = await verify(other, golden, "int8-qdq");
    expect(code, JSON.stringify(report.artifacts[0]!.diagnoses)).toBe(0);
    const bound = report.artifacts[0]!.summary.min_cosine;
    expect(bound).toBeGreaterThan(0.99);

    // The same graph with the probabilities' range set as calibration saw it (below 1 on long
    // passages): the near-certain attention rows of 2-token texts are clipped.
    const cal = await calibrate({ modelPath: join(other, "model.fp32.onnx"), artifactDir: other, texts: (await readFile(shortOnly, "utf8")).split("\n").filter(Boolean), method: "minmax" });
    const amax = new Map([...cal.tensors].map(([name, t]) => [name, name.endsWith("/Softmax_output_0") ? t.max : t.amax]));
    const softmaxMax = [...cal.tensors].filter(([name]) => name.endsWith("/Softmax_output_0")).map(([, t]) => t.max);
    expect(softmaxMax.length).toBe(4);
    expect(Math.min(...softmaxMax)).toBeLessThan(0.99);
    // In a copy of the artifact, its manifest entry updated as a quantiser with that range would have written it.
    const clippedDir = join(root, "zh-clipped-probabilities");
    await cp(other, clippedDir, { recursive: true });
    const graph = join(clippedDir, "model.int8.qdq.onnx");
    await writeQdqModel(join(other, "model.fp32.onnx"), graph, { activationAmax: amax });
    const manifestPath = join(clippedDir, "manifest.json");
    const manifest = JSON.parse(await readFile(manifestPath, "utf8")) as { files: { path: string; sha256: string; size: number }[] };
    const entry = manifest.files.find((f) => f.path === "model.int8.qdq.onnx")!;
    const bytes = await readFile(graph);
    Object.assign(entry, { sha256: createHash("sha256").update(bytes).digest("hex"), size: bytes.length });
    await writeFile(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
    const clipped = await runBge(["verify", clippedDir, "--golden", golden, "--precision", "int8-qdq", "--json", "--quiet"]);
    expect(clipped.code, clipped.stderr).toBe(1);
    const a = (JSON.parse(clipped.stdout) as VerifyJson).artifacts[0]!;
    expect(a.summary.min_cosine).toBeLessThan(0.98);
    expect(a.summary.min_cosine).toBeLessThan(bound - 0.01);
    const d = a.diagnoses.find((x) => x.code === "int8-layers");
    expect(d?.message, JSON.stringify(a.diagnoses)).toMatch(/INT8 layers that move the vectors most on the failing texts: \/encoder\/layer\.\d\/attention\/self \(/);
    expect(d?.message).toMatch(/--exclude \/encoder\/layer\.\d/);
  });

  it("--activations per-token writes run-time row scales (reductions, MatMulIntegerToFloat, row scales, bias), records it, passes the gate, and keeps a text's vector independent of its batch", async () => {
    const fixed = join(root, "zh-per-token-onnx");
    expect((await runBge(["export", join(root, "zh"), "-o", fixed, "--precision", "fp32", "--quiet"])).code).toBe(0);
    const r = await runBge(["quantize", fixed, "--calibration", calibration, "--precision", "int8", "--activations", "per-token", "--quiet"]);
    expect(r.code, r.stderr).toBe(0);
    const file = (await readManifest(fixed)).files.find((f) => f.role === "onnx-int8-dynamic")!;
    expect((file.quantization as Int8QuantizationRecord).activations).toBe("per-token");
    const nodes = (await readOnnxModel(join(fixed, file.path))).graph.node;
    expect(nodes.filter((n) => n.opType === "MatMulIntegerToFloat")).toHaveLength(6 * 4);
    // One quantiser per linear input (Q/K/V share theirs), each a max and a min over the row.
    expect(nodes.filter((n) => n.opType === "ReduceMax")).toHaveLength(4 * 4);
    expect(nodes.filter((n) => n.opType === "QuantizeLinear")).toHaveLength(4 * 4);
    const { code, report } = await verify(fixed, golden, "int8");
    expect(code, JSON.stringify(report.artifacts[0]!.diagnoses)).toBe(0);
    expect(report.artifacts[0]!.summary.min_cosine).toBeGreaterThan(0.98);
    expect(report.artifacts[0]!.summary.batch_drift).toBeLessThan(1e-9);
  });

  it("--activations per-tensor writes DynamicQuantizeLinear instead of per-token scales, records it, and passes the gate too", async () => {
    const other = join(root, "zh-per-tensor-onnx");
    expect((await runBge(["export", join(root, "zh"), "-o", other, "--precision", "fp32", "--quiet"])).code).toBe(0);
    const r = await runBge(["quantize", other, "--calibration", calibration, "--precision", "int8", "--activations", "per-tensor", "--smooth", "off", "--quiet"]);
    expect(r.code, r.stderr).toBe(0);
    const file = (await readManifest(other)).files.find((f) => f.role === "onnx-int8-dynamic")!;
    const q = file.quantization as Int8QuantizationRecord;
    expect([q.activations, q.smoothing.setting]).toEqual(["per-tensor", "off"]);
    const ops = (await readOnnxModel(join(other, file.path))).graph.node.map((n) => n.opType);
    // One quantiser per activation tensor: Q/K/V share one, then attention output, FFN up and down.
    expect(ops.filter((o) => o === "DynamicQuantizeLinear")).toHaveLength(4 * 4);
    expect(ops).not.toContain("ReduceMax");
    const { code, report } = await verify(other, golden, "int8");
    expect(code, JSON.stringify(report.artifacts[0]!.diagnoses)).toBe(0);
    expect(report.artifacts[0]!.summary.min_cosine).toBeGreaterThan(0.98);
    for (const [flag, value] of [["--activations", "per-row"], ["--smooth", "1.5"], ["--smooth", "on"]] as const) {
      const bad = await runBge(["quantize", other, "--calibration", calibration, flag, value]);
      expect(bad.code, `${flag} ${value}`).toBe(2);
      expect(bad.stderr).toContain(flag);
    }
  });

  it("refuses what it cannot calibrate: an empty corpus, an unknown --exclude, an artifact without fp32", async () => {
    const empty = join(root, "empty.txt");
    await writeFile(empty, "");
    expect((await runBge(["quantize", artifact, "--calibration", empty])).stderr).toMatch(/calibration corpus is empty/);
    const exclude = await runBge(["quantize", artifact, "--calibration", calibration, "--exclude", "9"]);
    expect(exclude.code).toBe(2);
    expect(exclude.stderr).toMatch(/--exclude 9: matches no quantised layer \(give an encoder layer index 0–3/);
    const bad = await runBge(["quantize", artifact, "--calibration", calibration, "--method", "kl"]);
    expect(bad.code).toBe(2);
    const fp16Only = join(root, "zh-fp16-onnx");
    expect((await runBge(["export", join(root, "zh"), "-o", fp16Only, "--precision", "fp16", "--quiet"])).code).toBe(0);
    const noFp32 = await runBge(["quantize", fp16Only, "--calibration", calibration]);
    expect(noFp32.code).toBe(2);
    expect(noFp32.stderr).toMatch(/has no fp32 model to calibrate \(it has: model\.fp16\.onnx\); export with --precision fp32/);
    // Nothing was written by the refused runs.
    expect((await readdir(artifact)).filter((f) => f.startsWith("."))).toEqual([]);
  });
});

describe("INT8 on the --outliers fixture: careless INT8 is refused with the layers named", () => {
  let artifact: string;
  let golden: string;
  beforeAll(async () => {
    ({ artifact, golden } = await prepare("zh-outliers", ["--outliers"]));
  }, 300_000);

  it("quantize smooths the FFN down-projections that the outlier units dominate (SmoothQuant), keeps every linear layer in INT8, and both INT8 artifacts pass the int8 gate on the 240 texts", async () => {
    const r = await runBge(["quantize", artifact, "--calibration", calibration]);
    expect(r.code, r.stderr).toBe(0);
    const q = (await readManifest(artifact)).files.find((f) => f.role === "onnx-int8-qdq")!.quantization! as Int8QuantizationRecord;
    // GELU of the 4 outlier units reaches ~1e5 against ~1 for the rest: every FFN down-projection's
    // input is smoothed (alpha 0.5), its channel spread brought from >5e4 to a few.
    expect(q.smoothing.inputs.map((i) => i.place)).toEqual([0, 1, 2, 3].map((l) => `/encoder/layer.${l}/output/dense`));
    for (const i of q.smoothing.inputs) {
      expect(i.alpha).toBe(0.5);
      expect(i.spread).toBeGreaterThan(5e4);
      expect(i.smoothed_spread).toBeLessThan(10);
    }
    expect(r.stderr).not.toMatch(/stays in float/);
    expect(q.excluded).toEqual([]);
    for (const precision of ["int8", "int8-qdq"]) {
      const { code, report } = await verify(artifact, golden, precision);
      const a = report.artifacts[0]!;
      console.log(`--outliers fixture ${precision}: ${JSON.stringify(a.summary)}`);
      expect(code, precision).toBe(0);
      expect(a.summary.n).toBe(240);
      expect(a.summary.min_cosine, precision).toBeGreaterThanOrEqual(0.98);
      expect(a.summary.topk_agreement!, precision).toBeGreaterThanOrEqual(0.8);
    }
  }, 300_000);

  it("without smoothing, the auto-exclude rule keeps the FFN down-projections in float, says why, and records it", async () => {
    const plain = join(root, "zh-outliers-unsmoothed-onnx");
    expect((await runBge(["export", join(root, "zh-outliers"), "-o", plain, "--precision", "fp32", "--quiet"])).code).toBe(0);
    const r = await runBge(["quantize", plain, "--calibration", calibration, "--smooth", "off"]);
    expect(r.code, r.stderr).toBe(0);
    for (let l = 0; l < 4; l++) {
      expect(r.stderr).toMatch(new RegExp(`/encoder/layer\\.${l}/output/dense stays in float: INT8 would round 9\\d\\.\\d% of its input to zero \\(a few outlier units set the range; --no-auto-exclude to quantise it anyway\\)`));
    }
    const q = (await readManifest(plain)).files.find((f) => f.role === "onnx-int8-qdq")!.quantization! as Int8QuantizationRecord;
    expect(q.auto_excluded!.map((a) => a.node)).toEqual([0, 1, 2, 3].map((l) => `/encoder/layer.${l}/output/dense/Gemm`));
    expect(q.excluded).toEqual(q.auto_excluded!.map((a) => a.node));
  }, 300_000);

  it("smoothing is what lets every linear layer run in INT8: without it the outlier channels wipe the vectors out", async () => {
    const all = join(root, "zh-outliers-all-int8-onnx");
    expect((await runBge(["export", join(root, "zh-outliers"), "-o", all, "--precision", "fp32", "--quiet"])).code).toBe(0);
    const mean = async (smooth: string) => {
      expect((await runBge(["quantize", all, "--calibration", calibration, "--precision", "int8", "--no-auto-exclude", "--smooth", smooth, "--quiet"])).code).toBe(0);
      const q = (await readManifest(all)).files.find((f) => f.role === "onnx-int8-dynamic")!.quantization!;
      expect(q.excluded).toEqual([]);
      return (await verify(all, golden, "int8")).report.artifacts[0]!.summary.mean_cosine;
    };
    expect(await mean("off")).toBeLessThan(0.7);
    expect(await mean("auto")).toBeGreaterThan(0.98);
  }, 300_000);

  it("a naive Q/DQ graph (per-tensor minmax on everything, LayerNorm and Softmax included) fails far below the careful one, and the diagnosis names the layers", async () => {
    const careful = await verify(artifact, golden, "int8-qdq");
    const naive = join(root, "zh-outliers-naive-onnx");
    expect((await runBge(["export", join(root, "zh-outliers"), "-o", naive, "--precision", "fp32", "--quiet"])).code).toBe(0);
    expect((await runBge(["quantize", naive, "--calibration", calibration, "--precision", "int8-qdq", "--naive", "--quiet"])).code).toBe(0);
    const { code, report } = await verify(naive, golden, "int8-qdq");
    expect(code).toBe(1);
    const a = report.artifacts[0]!;
    expect(a.pass).toBe(false);
    expect(a.summary.mean_cosine).toBeLessThan(careful.report.artifacts[0]!.summary.mean_cosine - 0.05);
    const d = a.diagnoses.find((x) => x.code === "int8-layers");
    expect(d?.message, JSON.stringify(a.diagnoses)).toMatch(/INT8 layers that move the vectors most on the failing texts: \/encoder\/layer\.\d+\//);
    expect(d?.message).toMatch(/--exclude \/encoder\/layer\.\d+\//);
    expect(existsSync(join(naive, "model.int8.qdq.onnx"))).toBe(true);
  });
});
