import { chmod, cp, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readManifest } from "../src/artifacts/manifest.js";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge, type BgeRun } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

/**
 * `bge verify --backend trt` and `bge embed --backend trt` end to end: engines built by `bge build`
 * with each TensorRT family's trtexec double (which runs the engine's ONNX on onnxruntime), then
 * verified through the engine runner, and every gate that must say no.
 */
const DOUBLE = join(REPO_ROOT, "test", "helpers", "trtexec-double.mjs");
const VERSIONS = ["8.6.1", "10.16.0", "11.0.0"] as const;
const FIXTURES = { tiny: ["--shape", "tiny", "--seed", "4"], "bge-small-zh": ["--shape", "bge-small-zh-v1.5", "--seed", "1"] } as const;
type FixtureName = keyof typeof FIXTURES;

// A short golden keeps the trtexec runs few: verify embeds each kind batched, then unpadded (texts of
// one token length together: these three all differ in length, so each alone).
const PASSAGES = ["hello world", "你好，世界", "the quick brown fox jumps over the lazy dog"];
const QUERIES = ["什么是狐狸"];
/** trtexec runs for one engine: passages batched (1) and unpadded (3), the query batched (1) and unpadded (1). */
const RUNS_PER_ENGINE = 1 + PASSAGES.length + 1 + QUERIES.length;

let root: string;
const trtexec: Record<string, string> = {};
/** Per fixture: the golden, and an artifact with fp32, fp16 and both INT8 graphs (engines go into copies). */
const base: Record<string, { golden: string; artifact: string }> = {};

async function ok(args: string[], env?: NodeJS.ProcessEnv): Promise<BgeRun> {
  const r = await runBge(args, { env });
  if (r.code !== 0) throw new Error(`bge ${args.join(" ")} → ${r.code}\n${r.stderr}`);
  return r;
}

async function wrapper(name: string, body: string): Promise<string> {
  const path = join(root, "bin", name);
  await writeFile(path, body);
  await chmod(path, 0o755);
  return path;
}

/** An artifact of `fixture` with engines built by TensorRT `version` (a copy of the base artifact). */
async function builtArtifact(fixture: FixtureName, version: string, name: string, precisions = "fp16,int8"): Promise<string> {
  const dir = join(root, name);
  await cp(base[fixture]!.artifact, dir, { recursive: true });
  await ok(["build", dir, "--precision", precisions, "--trtexec", trtexec[version]!, "--quiet"]);
  return dir;
}

type Entry = { pass: boolean; candidate: { path: string; role: string; precision: string; backend: string }; trt: { tensorrt: string; trtexec: string; gpu: string | null; compute_capability: string | null; runs: number } | null; failures: string[]; diagnoses: { code: string }[]; summary: { min_cosine: number } };

function entries(r: BgeRun): Entry[] {
  return (JSON.parse(r.stdout) as { format: string; artifacts: Entry[] }).artifacts;
}

function vectors(r: BgeRun): number[][] {
  return (JSON.parse(r.stdout) as { embeddings: number[][] }).embeddings;
}

function cosine(a: number[], b: number[]): number {
  let ab = 0, aa = 0, bb = 0;
  a.forEach((x, i) => {
    ab += x * b[i]!;
    aa += x * x;
    bb += b[i]! * b[i]!;
  });
  return ab / Math.sqrt(aa * bb);
}

beforeAll(async () => {
  root = await tempDir("bge-trt-verify-");
  await mkdir(join(root, "bin"));
  for (const v of VERSIONS) trtexec[v] = await wrapper(`trtexec-${v}`, `#!/bin/sh\nTRTEXEC_DOUBLE_VERSION=${v} exec "${process.execPath}" "${DOUBLE}" "$@"\n`);
  const passages = join(root, "passages.txt");
  const queries = join(root, "queries.txt");
  await writeFile(passages, PASSAGES.join("\n") + "\n");
  await writeFile(queries, QUERIES.join("\n") + "\n");
  const calibration = join(root, "calibration.txt");
  await writeFile(calibration, [...PASSAGES, ...QUERIES, "一二三四五六七八九十", "lazy dogs sleep all day"].join("\n") + "\n");
  for (const [name, args] of Object.entries(FIXTURES)) {
    const model = join(root, name);
    const golden = join(root, `${name}.golden.json`);
    const artifact = join(root, `${name}-onnx`);
    await ok(["fixture", model, ...args, "--quiet"]);
    await ok(["golden", model, "--texts", passages, "--queries", queries, "-o", golden, "--quiet"]);
    await ok(["export", model, "-o", artifact, "--precision", "fp32,fp16", "--quiet"]);
    await ok(["quantize", artifact, "--calibration", calibration, "--quiet"]);
    base[name] = { golden, artifact };
  }
}, 300_000);

describe.each(Object.keys(FIXTURES) as FixtureName[])("%s fixture: engines through the engine runner", (fixture) => {
  it.each(VERSIONS)("TensorRT %s: bge build fp16,int8, then verify --backend trt passes both and reports TensorRT, GPU and runs; embed --backend trt equals the ONNX backend", async (v) => {
    const artifact = await builtArtifact(fixture, v, `${fixture}-${v}`);
    const { golden } = base[fixture]!;
    const junit = join(root, `${fixture}-${v}.xml`);
    const r = await runBge(["verify", artifact, "--golden", golden, "--backend", "trt", "--trtexec", trtexec[v]!, "--json", "--junit", junit]);
    expect(r.code, r.stderr).toBe(0);
    const got = entries(r);
    expect(got.map((e) => [e.candidate.role, e.candidate.precision, e.candidate.backend, e.pass])).toEqual([
      ["trt-fp16", "fp16", "trt", true],
      ["trt-int8", "int8", "trt", true],
    ]);
    for (const e of got) {
      expect(e.candidate.path).toBe(join(artifact, `model.${e.candidate.precision}.plan`));
      expect(e.trt).toEqual({ tensorrt: v, trtexec: trtexec[v], gpu: "NVIDIA A100-SXM4-80GB", compute_capability: "8.0", runs: RUNS_PER_ENGINE });
      expect(e.summary.min_cosine).toBeGreaterThan(e.candidate.precision === "fp16" ? 0.999 : 0.98);
    }
    // The JUnit file names the backend and the runs too.
    const xml = await readFile(junit, "utf8");
    expect(xml.match(/<testcase /g)).toHaveLength(2);
    expect(xml).toContain(`backend=trt tensorrt=${v} gpu=&quot;NVIDIA A100-SXM4-80GB&quot; compute_capability=8.0 trtexec_runs=${RUNS_PER_ENGINE}`);
    const manifest = await readManifest(artifact);
    expect(manifest.parity["model.fp16.plan"]).toMatchObject({ pass: true, tolerance: 0.999 });
    expect(manifest.parity["model.int8.plan"]).toMatchObject({ pass: true, tolerance: 0.98 });

    // embed: each engine's vectors against the ONNX backend's (fp16 engine vs the fp32 graph, int8 vs the Q/DQ graph it was built from).
    const texts = [...PASSAGES, "一二三"];
    for (const [engine, graph] of [["fp16", "fp32"], ["int8", "int8-qdq"]] as const) {
      const trt = await runBge(["embed", artifact, ...texts, "--backend", "trt", "--precision", engine, "--trtexec", trtexec[v]!, "--json"]);
      expect(trt.code, trt.stderr).toBe(0);
      const onnx = await runBge(["embed", artifact, ...texts, "--precision", graph, "--json"]);
      expect(onnx.code, onnx.stderr).toBe(0);
      const [a, b] = [vectors(trt), vectors(onnx)];
      expect(a).toHaveLength(texts.length);
      const min = Math.min(...a.map((x, i) => cosine(x, b[i]!)));
      console.log(`${fixture} TensorRT ${v} ${engine} engine vs ONNX ${graph}: 1 - min cosine ${(1 - min).toExponential(2)}`);
      expect(min).toBeGreaterThanOrEqual(0.999);
    }
  }, 300_000);
});

describe("gates that must say no (tiny fixture, TensorRT 10.16.0 engines)", () => {
  let artifact: string;
  let golden: string;
  const verify = (dir: string, ...extra: string[]) => runBge(["verify", dir, "--golden", golden, "--backend", "trt", ...extra]);

  beforeAll(async () => {
    artifact = await builtArtifact("tiny", "10.16.0", "gates", "fp16");
    golden = base.tiny!.golden;
  }, 120_000);

  async function copyOf(name: string): Promise<string> {
    const dir = join(root, name);
    await cp(artifact, dir, { recursive: true });
    return dir;
  }

  it("an engine file given alone runs from its artifact folder's record (backend trt implied); the text report names TensorRT, GPU and runs", async () => {
    const report = join(root, "plan.json");
    const r = await runBge(["verify", join(artifact, "model.fp16.plan"), "--golden", golden, "--trtexec", trtexec["10.16.0"]!, "--report", report]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^PASS .*model\.fp16\.plan \(fp16, trt\) vs /m);
    expect(r.stdout).toContain(`TensorRT 10.16.0 on NVIDIA A100-SXM4-80GB (compute capability 8.0) through ${trtexec["10.16.0"]}: ${RUNS_PER_ENGINE} trtexec runs`);
    const [e] = (JSON.parse(await readFile(report, "utf8")) as { artifacts: Entry[] }).artifacts;
    expect(e!.trt!.runs).toBe(RUNS_PER_ENGINE);
  });

  it("another TensorRT than the one that built the engine: exit 2 naming both versions and the remedy, before any run", async () => {
    const r = await verify(artifact, "--trtexec", trtexec["11.0.0"]!);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/model\.fp16\.plan was built with TensorRT 10\.16\.0 but .*trtexec-11\.0\.0 \(from --trtexec\) is TensorRT 11\.0\.0: .*exact TensorRT version \(major\.minor\.patch\).*rebuild it on this machine with bge build .* --precision fp16/);
    expect(r.stderr).not.toMatch(/verifying/);
    // A patch release is another TensorRT too: the manifest's record says 10.16.1, trtexec is 10.16.0.
    const patched = await copyOf("gates-patch");
    const manifest = JSON.parse(await readFile(join(patched, "manifest.json"), "utf8"));
    manifest.files.find((f: { role: string }) => f.role === "trt-fp16").trt.version = "10.16.1";
    await writeFile(join(patched, "manifest.json"), JSON.stringify(manifest));
    const p = await verify(patched, "--trtexec", trtexec["10.16.0"]!);
    expect(p.code).toBe(2);
    expect(p.stderr).toMatch(/built with TensorRT 10\.16\.1 but .* is TensorRT 10\.16\.0/);
    const e = await runBge(["embed", patched, "hello", "--backend", "trt", "--trtexec", trtexec["10.16.0"]!]);
    expect(e.code).toBe(2);
    expect(e.stderr).toMatch(/built with TensorRT 10\.16\.1 but .* is TensorRT 10\.16\.0/);
  });

  it("another GPU than the one that built the engine (named by the run's log): exit 2 naming both GPUs and the remedy", async () => {
    const env = { TRTEXEC_DOUBLE_GPU: "NVIDIA H100 PCIe", TRTEXEC_DOUBLE_CC: "9.0" };
    const r = await runBge(["verify", artifact, "--golden", golden, "--backend", "trt", "--trtexec", trtexec["10.16.0"]!], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/model\.fp16\.plan was built on NVIDIA A100-SXM4-80GB \(compute capability 8\.0\) but trtexec runs it on NVIDIA H100 PCIe \(compute capability 9\.0\): .*rebuild it on this machine with bge build/);
    const e = await runBge(["embed", artifact, "hello", "--backend", "trt", "--trtexec", trtexec["10.16.0"]!], { env });
    expect(e.code).toBe(2);
    expect(e.stdout).toBe("");
  });

  it.each([
    ["model.fp16.plan", /model\.fp16\.plan has sha256 [0-9a-f]{64}, the manifest says [0-9a-f]{64}: the artifact was modified/],
    ["tokenizer.json", /tokenizer\.json has sha256 .*the artifact was modified/],
    ["config.json", /config\.json has sha256 .*the artifact was modified/],
  ])("a tampered %s: exit 2 (the manifest's hash)", async (file, message) => {
    const dir = await copyOf(`gates-tampered-${file}`);
    const bytes = await readFile(join(dir, file));
    const at = bytes.length - 2; // past the JSON of config/tokenizer and into the engine's body: same size, other bytes
    bytes[at] = bytes[at] === 0x20 ? 0x0a : 0x20;
    await writeFile(join(dir, file), bytes);
    const r = await verify(dir, "--trtexec", trtexec["10.16.0"]!);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it("no trtexec anywhere: exit 3 with discovery's message, for verify and embed", async () => {
    const env = { PATH: "/usr/bin:/bin", TRTEXEC: undefined };
    for (const args of [["verify", artifact, "--golden", golden, "--backend", "trt"], ["embed", artifact, "hello", "--backend", "trt"]]) {
      const r = await runBge(args, { env });
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toMatch(/trtexec not found \(looked at --trtexec: not given, \$TRTEXEC: unset, PATH: \/usr\/bin:\/bin.*nvcr\.io\/nvidia\/tensorrt/);
    }
  });

  it.each(["exit", "failed-line"])("an inference run that fails (TRTEXEC_DOUBLE_FAIL=%s): exit 4 with trtexec's command line and log tail", async (mode) => {
    const r = await runBge(["verify", artifact, "--golden", golden, "--backend", "trt", "--trtexec", trtexec["10.16.0"]!], { env: { TRTEXEC_DOUBLE_FAIL: mode } });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(new RegExp(`trtexec (exited with 3|reported FAILED): ${trtexec["10.16.0"]!.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} --loadEngine=${join(artifact, "model.fp16.plan").replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} --shapes=input_ids:\\d+x\\d+`));
    expect(r.stderr.split("\n").length).toBeGreaterThan(10); // the log's tail
  });

  it("an engine whose vectors are wrong: exit 1, the report says which gate and how many runs it took", async () => {
    // The double, with every other value of each exported output negated: an engine that computes garbage.
    const corrupt = await wrapper(
      "trtexec-corrupt.mjs",
      `#!${process.execPath}
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
const args = process.argv.slice(2);
const r = spawnSync(process.execPath, [${JSON.stringify(DOUBLE)}, ...args], { stdio: "inherit", env: { ...process.env, TRTEXEC_DOUBLE_VERSION: "10.16.0" } });
const out = args.find((a) => a.startsWith("--exportOutput="))?.slice("--exportOutput=".length);
if (r.status === 0 && out && existsSync(out)) {
  const flip = (v, i) => (i % 2 ? v : v.startsWith("-") ? v.slice(1) : "-" + v);
  writeFileSync(out, readFileSync(out, "utf8").replace(/("values" : \\[ )([^\\]]*)( \\])/g, (_, a, values, b) => a + values.split(", ").map(flip).join(", ") + b));
}
process.exit(r.status ?? 1);
`,
    );
    const dir = await copyOf("gates-corrupt");
    const report = join(root, "corrupt.json");
    const r = await verify(dir, "--trtexec", corrupt, "--report", report);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^bge: parity failed for fp16: .*min cosine/m);
    expect(r.stdout).toMatch(/^FAIL .*model\.fp16\.plan \(fp16, trt\)/m);
    const [e] = (JSON.parse(await readFile(report, "utf8")) as { artifacts: Entry[] }).artifacts;
    expect(e!.pass).toBe(false);
    expect(e!.summary.min_cosine).toBeLessThan(0.5);
    expect(e!.diagnoses.length).toBeGreaterThan(0);
    // The diagnoses re-run texts with other settings: more runs than the pass alone.
    expect(e!.trt!.runs).toBeGreaterThan(RUNS_PER_ENGINE);
    expect(e!.trt!.trtexec).toBe(corrupt);
    expect((await readManifest(dir)).parity["model.fp16.plan"]).toMatchObject({ pass: false });
  });

  it("usage: an ONNX precision that no engine has, --trtexec without --backend trt, a checkpoint with --backend trt", async () => {
    const qdq = await verify(artifact, "--precision", "int8-qdq", "--trtexec", trtexec["10.16.0"]!);
    expect(qdq.code).toBe(2);
    expect(qdq.stderr).toMatch(/has no int8-qdq engine \(it has: fp16\); engines are fp32, fp16, int8/);
    const int8 = await verify(artifact, "--precision", "int8", "--trtexec", trtexec["10.16.0"]!);
    expect(int8.code).toBe(2);
    expect(int8.stderr).toMatch(/has no int8 engine \(it has: fp16\); build it with bge build .* --precision int8/);
    const stray = await runBge(["verify", artifact, "--golden", golden, "--trtexec", trtexec["10.16.0"]!]);
    expect(stray.code).toBe(2);
    expect(stray.stderr).toMatch(/--trtexec .* applies to --backend trt only/);
    const checkpoint = await runBge(["embed", join(root, "tiny"), "hello", "--backend", "trt"]);
    expect(checkpoint.code).toBe(2);
    expect(checkpoint.stderr).toMatch(/is a checkpoint; --backend trt runs the TensorRT engines of an artifact folder/);
  });
});
