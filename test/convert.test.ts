import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, readdir, readFile, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readManifest } from "../src/artifacts/manifest.js";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge, startBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

// bge convert end to end through the CLI: stages, their keys, resuming after a kill, the summary,
// and the gate's exit codes. Small corpora keep each run to seconds; the kill tests use the
// bge-small-zh-v1.5 shape so that a stage lasts long enough to be interrupted inside it.

let root: string;
let tiny: string;
let zh: string;
let pipeline: string;
let calibration: string;

const corpus = (name: string, n: number) =>
  readFile(join(REPO_ROOT, "pipelines", "corpus", name), "utf8").then((t) => t.split("\n").filter(Boolean).slice(0, n).join("\n") + "\n");

interface ConvertJson {
  pass: boolean;
  stages: { stage: string; status: string }[];
  artifacts: { path: string; role: string; precision: string; backend: string; pass: boolean; reused: boolean; min_cosine: number; trt_runs?: number }[];
  engines: { built: string[]; skipped_reason: string | null; trtexec: { version: string } | null };
}

async function convertJson(args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; json: ConvertJson; stderr: string }> {
  const r = await runBge(["convert", ...args, "--pipeline", pipeline, "--json"], { env });
  let json: ConvertJson;
  try {
    json = JSON.parse(r.stdout) as ConvertJson;
  } catch {
    throw new Error(`convert ${args.join(" ")} exited ${r.code} without JSON:\n${r.stderr}`);
  }
  return { code: r.code, json, stderr: r.stderr };
}

const ran = (j: ConvertJson) => j.stages.filter((s) => s.status === "ran").map((s) => s.stage);
const reverified = (j: ConvertJson) => j.artifacts.filter((a) => !a.reused).map((a) => a.precision);

async function sha(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}

/** Every file of an artifact folder but the manifest (whose timestamps differ run to run), by hash. */
async function folderHashes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile())) {
    const rel = join(f.parentPath, f.name).slice(dir.length + 1);
    if (rel !== "manifest.json") out[rel] = await sha(join(dir, rel));
  }
  return out;
}

const MTIME = new Date("2026-01-01T00:00:00Z");

/** Rewrites a file with other bytes but the same size and modification time (a whole second, kept exactly). */
async function tamperKeepingMtime(path: string, change: (b: Buffer) => void): Promise<void> {
  await utimes(path, MTIME, MTIME);
  const bytes = await readFile(path);
  const size = bytes.length;
  change(bytes);
  await writeFile(path, bytes);
  await utimes(path, MTIME, MTIME);
  const after = await stat(path);
  expect([after.mtimeMs, after.size]).toEqual([MTIME.getTime(), size]);
}

beforeAll(async () => {
  root = await tempDir("bge-convert-");
  tiny = join(root, "tiny");
  zh = join(root, "zh");
  expect((await runBge(["fixture", tiny, "--shape", "tiny", "--seed", "11"])).code).toBe(0);
  const zhArgs = ["fixture", zh, "--shape", "bge-small-zh-v1.5", "--seed", "12"];
  const realTokenizer = join(REPO_ROOT, "..", "shared", "fixtures", "tokenizers", "bge-small-zh-v1.5");
  if (existsSync(join(realTokenizer, "tokenizer.json"))) zhArgs.push("--tokenizer", realTokenizer);
  expect((await runBge(zhArgs)).code).toBe(0);
  const texts = join(root, "passages.txt");
  const queries = join(root, "queries.txt");
  calibration = join(root, "calibration.txt");
  await writeFile(texts, (await corpus("zh-passages.txt", 24)) + (await corpus("en-passages.txt", 16)));
  await writeFile(queries, await corpus("zh-queries.txt", 8));
  await writeFile(calibration, (await corpus("zh-passages.txt", 60)) + (await corpus("en-passages.txt", 40)));
  pipeline = join(root, "pipeline.json");
  await writeFile(
    pipeline,
    JSON.stringify({
      model: "bge-fixture/test",
      precisions: { fp32: {}, fp16: {}, int8: {} },
      calibration: { texts: calibration },
      verification: { texts, queries },
    }),
  );
}, 120_000);

describe("bge convert", () => {
  it("converts, verifies every precision and prints the table; a rerun runs no stage and changes no file", async () => {
    const out = join(root, "tiny-a");
    const r = await runBge(["convert", tiny, "-o", out, "--pipeline", pipeline]);
    expect(r.code, r.stderr).toBe(0);
    for (const f of ["model.fp32.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.qdq.onnx"]) expect(r.stdout).toMatch(new RegExp(`${f.replace(/\./g, "\\.")} .* PASS`));
    expect(r.stdout).toMatch(/TensorRT engines: skipped — trtexec not found/);
    expect(r.stdout).toMatch(/PASS: 4 of 4 artifacts within tolerance/);
    const manifest = await readManifest(out);
    expect(Object.keys(manifest.convert!.stages).sort()).toEqual(["export-fp16", "export-fp32", "golden", "quantize", "verify-fp16", "verify-fp32", "verify-int8", "verify-int8-qdq"]);
    expect(manifest.files.map((f) => f.path)).toContain("golden.json");
    const hashes = await folderHashes(out);

    const again = await convertJson([tiny, "-o", out]);
    expect(again.code).toBe(0);
    expect(ran(again.json)).toEqual(["checkpoint"]);
    expect(reverified(again.json)).toEqual([]);
    expect(again.json.artifacts.every((a) => a.pass)).toBe(true);
    expect(await folderHashes(out)).toEqual(hashes);

    // --force runs every stage again, to the same bytes.
    const forced = await convertJson([tiny, "-o", out, "--force"]);
    expect(ran(forced.json)).toEqual(["checkpoint", "export", "quantize", "golden", "verify"]);
    expect(await folderHashes(out)).toEqual(hashes);

    // The pipeline's calibration.activations reaches bge quantize and is part of the stage's key:
    // per-token activations remake the INT8 graphs (and verify them) and nothing else.
    const activation = async () => ((await readManifest(out)).files.find((f) => f.role === "onnx-int8-dynamic")!.quantization as { activations?: string } | undefined)?.activations;
    expect(await activation()).toBe("static");
    const perToken = join(root, "pipeline-per-token.json");
    await writeFile(perToken, JSON.stringify({ ...JSON.parse(await readFile(pipeline, "utf8")), calibration: { texts: calibration, activations: "per-token" } }));
    const switched = await runBge(["convert", tiny, "-o", out, "--pipeline", perToken, "--json"]);
    expect(switched.code, switched.stderr).toBe(0);
    expect(ran(JSON.parse(switched.stdout) as ConvertJson)).toEqual(["checkpoint", "quantize", "verify"]);
    expect(await activation()).toBe("per-token");
  }, 180_000);

  it("reruns exactly what a change affects: corpus → INT8 only, tolerance → verify only, tokenizer or weights → everything, detected by content with the same mtime", async () => {
    const out = join(root, "tiny-b");
    for (const f of [calibration, join(tiny, "tokenizer_config.json"), join(tiny, "model.safetensors")]) await utimes(f, MTIME, MTIME);
    expect((await convertJson([tiny, "-o", out])).code).toBe(0);
    const before = await readManifest(out);
    const fp32 = before.files.find((f) => f.role === "onnx-fp32")!.sha256;

    const int8Graphs = (m: typeof before) => Object.fromEntries(m.files.filter((f) => f.role === "onnx-int8-dynamic" || f.role === "onnx-int8-qdq").map((f) => [f.role === "onnx-int8-qdq" ? "int8-qdq" : "int8", f.sha256]));
    const int8Before = int8Graphs(before);
    // Other texts in a file of the same size: short English queries instead of passages, cut at a line and padded.
    const others = Buffer.from(await corpus("en-queries.txt", 400));
    await tamperKeepingMtime(calibration, (b) => {
      const cut = others.subarray(0, others.lastIndexOf(0x0a, b.length - 8) + 1);
      b.fill(0x78);
      cut.copy(b);
      b[b.length - 1] = 0x0a;
    });
    const corpusChanged = await convertJson([tiny, "-o", out]);
    expect(ran(corpusChanged.json)).toEqual(["checkpoint", "quantize", "verify"]);
    const int8After = int8Graphs(await readManifest(out));
    // Calibration reran; the INT8 graphs may still come out byte-identical (a corpus with the same
    // extremes gives the same scales): exactly the graphs whose bytes changed are verified again.
    expect(reverified(corpusChanged.json).sort()).toEqual(Object.keys(int8After).filter((p) => int8After[p] !== int8Before[p]).sort());

    const stricter = await convertJson([tiny, "-o", out, "--tolerance", "0.98"]);
    expect(ran(stricter.json)).toEqual(["checkpoint", "verify"]);
    expect(reverified(stricter.json).sort()).toEqual(["fp16", "fp32", "int8", "int8-qdq"]);

    const fewer = await convertJson([tiny, "-o", out, "--tolerance", "0.98", "--precision", "fp32,int8"]);
    expect(ran(fewer.json)).toEqual(["checkpoint"]);
    expect(fewer.json.artifacts.map((a) => a.precision)).toEqual(["fp32", "int8", "int8-qdq"]);

    // The same tokenizer in other bytes (a reformatted tokenizer.json) is another input.
    await tamperKeepingMtime(join(tiny, "tokenizer_config.json"), (b) => {
      expect(b[b.length - 1]).toBe(0x0a); // the final newline becomes a space: same JSON, other bytes
      b[b.length - 1] = 0x20;
    });
    const tokenizerChanged = await convertJson([tiny, "-o", out, "--tolerance", "0.98"]);
    expect(tokenizerChanged.code, tokenizerChanged.stderr).toBe(0);
    expect(ran(tokenizerChanged.json)).toEqual(["checkpoint", "export", "quantize", "golden", "verify"]);

    // One weight byte differs, same size and mtime: every stage reruns, and the vectors still pass.
    await tamperKeepingMtime(join(tiny, "model.safetensors"), (b) => {
      // A mantissa byte of the first word embedding (the pooler at the end of the file is not in the graph).
      const headerLength = Number(b.readBigUInt64LE(0));
      const header = JSON.parse(b.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, { data_offsets: [number, number] }>;
      b[8 + headerLength + header["embeddings.word_embeddings.weight"]!.data_offsets[0] + 1] ^= 0x01;
    });
    const weightsChanged = await convertJson([tiny, "-o", out, "--tolerance", "0.98"]);
    expect(weightsChanged.code, weightsChanged.stderr).toBe(0);
    expect(ran(weightsChanged.json)).toEqual(["checkpoint", "export", "quantize", "golden", "verify"]);
    const after = await readManifest(out);
    expect(after.source.weights_sha256).not.toBe(before.source.weights_sha256);
    expect(after.files.find((f) => f.role === "onnx-fp32")!.sha256).not.toBe(fp32);
  }, 240_000);

  it("killed mid-export and mid-quantize (SIGINT, SIGKILL), a rerun completes to the same bytes and repeats no finished stage", async () => {
    const reference = join(root, "zh-ref");
    const writer = startBge(["convert", zh, "-o", reference, "--precision", "fp32,int8", "--pipeline", pipeline]);
    await writer.waitForStderr(/\[5\/6\] golden/);
    // While it holds the folder (golden and verify still to come), a second writer and a verify are refused.
    const rival = await runBge(["convert", zh, "-o", reference, "--precision", "fp32,int8", "--pipeline", pipeline]);
    expect(rival.code).toBe(2);
    expect(rival.stderr).toMatch(new RegExp(`being written by bge convert \\(pid ${writer.pid}`));
    const golden = join(root, "any-golden.json");
    expect((await runBge(["golden", zh, "--texts", join(root, "queries.txt"), "-o", golden, "--quiet"])).code).toBe(0);
    const reader = await runBge(["verify", reference, "--golden", golden]);
    expect(reader.code).toBe(2);
    expect(reader.stderr).toMatch(/is being written by bge convert/);
    expect((await writer.done).code).toBe(0);
    const expected = await folderHashes(reference);

    for (const [exportSignal, quantizeSignal] of [["SIGINT", "SIGKILL"], ["SIGKILL", "SIGINT"]] as const) {
      const out = join(root, `zh-${exportSignal}`);
      const first = startBge(["convert", zh, "-o", out, "--precision", "fp32,int8", "--pipeline", pipeline]);
      await first.waitForStderr(/writing model\.fp32\.onnx/);
      first.kill(exportSignal);
      expect((await first.done).code).toBe(exportSignal === "SIGINT" ? 130 : 137);
      // Nothing under a final name: no manifest, no model.
      expect(existsSync(join(out, "manifest.json"))).toBe(false);
      expect(existsSync(join(out, "model.fp32.onnx"))).toBe(false);

      const second = startBge(["convert", zh, "-o", out, "--precision", "fp32,int8", "--pipeline", pipeline]);
      await second.waitForStderr(/calibrating model\.fp32\.onnx/);
      second.kill(quantizeSignal);
      const secondRun = await second.done;
      expect(secondRun.code).toBe(quantizeSignal === "SIGINT" ? 130 : 137);
      expect(existsSync(join(out, "model.int8.onnx"))).toBe(false);

      const third = await convertJson([zh, "-o", out, "--precision", "fp32,int8"]);
      expect(third.code, third.stderr).toBe(0);
      expect(ran(third.json)).toEqual(["checkpoint", "quantize", "golden", "verify"]);
      if (quantizeSignal === "SIGKILL") expect(third.stderr).toMatch(/taking over the lock of an interrupted bge convert/);
      expect(await folderHashes(out)).toEqual(expected);
      expect((await readdir(out)).filter((f) => f.startsWith(".")).sort()).toEqual([]);
    }
  }, 420_000);

  it("says no: a tolerance INT8 cannot meet is exit 1 after every artifact is verified, with the table, report and JUnit", async () => {
    const out = join(root, "tiny-strict");
    const report = join(root, "strict.json");
    const junit = join(root, "strict.xml");
    const r = await runBge(["convert", tiny, "-o", out, "--pipeline", pipeline, "--tolerance", "0.9999999", "--report", report, "--junit", junit]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/model\.fp32\.onnx .* PASS/);
    expect(r.stdout).toMatch(/model\.int8\.onnx .* FAIL/);
    expect(r.stderr).toMatch(/parity failed for .*int8/);
    const json = JSON.parse(await readFile(report, "utf8")) as ConvertJson & { format: string };
    expect(json.format).toBe("bge-convert/1");
    expect(json.pass).toBe(false);
    expect(json.artifacts.find((a) => a.precision === "int8")!.pass).toBe(false);
    expect(json.artifacts.find((a) => a.precision === "fp32")!.pass).toBe(true);
    const xml = await readFile(junit, "utf8");
    expect(xml.match(/<testcase /g)).toHaveLength(json.artifacts.length);
    expect(xml).toMatch(/<failure message="min cosine/);
    // A failed verdict is not a finished stage to skip past silently: the rerun reports it again.
    const again = await runBge(["convert", tiny, "-o", out, "--pipeline", pipeline, "--tolerance", "0.9999999"]);
    expect(again.code).toBe(1);
  }, 180_000);

  it("refuses bad input with exit 2 or 3 before writing anything", async () => {
    const out = join(root, "never");
    const cases: [string[], number, RegExp][] = [
      [[tiny, "-o", tiny], 2, /checkpoint/],
      [[tiny, "-o", out, "--report", join(out, "r.json")], 2, /inside the artifact folder/],
      [[tiny, "-o", out, "--precision", "fp32,int4"], 2, /--precision/],
      [[tiny, "-o", out, "--tolerance", "1.5"], 2, /--tolerance/],
      [[tiny, "-o", out, "--trtexec", join(root, "no-such-trtexec")], 3, /trtexec/],
    ];
    for (const [args, code, message] of cases) {
      const r = await runBge(["convert", ...args, "--pipeline", pipeline]);
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(code);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split("\n").filter((l) => /^(bge|error):/.test(l))).toHaveLength(1);
    }
    expect(existsSync(out)).toBe(false);
    const badPipeline = join(root, "bad-pipeline.json");
    await writeFile(badPipeline, JSON.stringify({ model: "x", precisions: { int8: { min_cosine: 2 } } }));
    const r = await runBge(["convert", tiny, "-o", out, "--pipeline", badPipeline]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/min_cosine/);
    expect(existsSync(out)).toBe(false);
  }, 120_000);

  it("with a trtexec (the TensorRT 10 double) builds fp16 and int8 engines, verifies them through it, and skips both on a rerun", async () => {
    const trtexec = join(root, "trtexec-10");
    await writeFile(trtexec, `#!/bin/sh\nTRTEXEC_DOUBLE_VERSION=10.16.0 exec "${process.execPath}" "${join(REPO_ROOT, "test", "helpers", "trtexec-double.mjs")}" "$@"\n`);
    await chmod(trtexec, 0o755);
    // Each engine run is one trtexec process: a short golden keeps this to seconds.
    const few = join(root, "few.txt");
    await writeFile(few, "hello world\n你好，世界\nthe quick brown fox jumps over the lazy dog\n向量检索\n");
    const small = join(root, "pipeline-trt.json");
    // max_length 64 with a named "long" profile beside the default one: two engines per precision.
    await writeFile(
      small,
      JSON.stringify({
        model: "bge-fixture/test",
        max_length: 64,
        shapes: { min: "1x2", opt: "4x32", max: "8x64" },
        profiles: { long: { min: "1x2", opt: "1x256", max: "2x512" } },
        calibration: { texts: calibration },
        verification: { texts: few },
      }),
    );
    const out = join(root, "tiny-trt");
    const run = async () => {
      const r = await runBge(["convert", tiny, "-o", out, "--pipeline", small, "--precision", "fp16,int8", "--trtexec", trtexec, "--json"]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as ConvertJson;
    };
    const first = await run();
    expect(first.engines.trtexec?.version).toBe("10.16.0");
    expect(first.engines.built.sort()).toEqual(["model.fp16.long.plan", "model.fp16.plan", "model.int8.long.plan", "model.int8.plan"]);
    expect(ran(first)).toEqual(["checkpoint", "export", "quantize", "build", "golden", "verify"]);
    const engines = first.artifacts.filter((a) => a.backend === "trt");
    expect(engines.map((a) => a.role).sort()).toEqual(["trt-fp16", "trt-fp16", "trt-int8", "trt-int8"]);
    for (const e of engines) {
      expect(e.pass).toBe(true);
      expect(e.trt_runs).toBeGreaterThan(0);
    }
    const manifest = await readManifest(out);
    expect(Object.keys(manifest.parity)).toEqual(expect.arrayContaining(["model.fp16.plan", "model.int8.plan", "model.fp16.long.plan", "model.int8.long.plan"]));
    expect(manifest.files.filter((f) => f.trt).map((f) => [f.path, f.trt!.profile ?? null, f.trt!.shapes.max]).sort()).toEqual([
      ["model.fp16.long.plan", "long", [2, 512]],
      ["model.fp16.plan", null, [8, 64]],
      ["model.int8.long.plan", "long", [2, 512]],
      ["model.int8.plan", null, [8, 64]],
    ]);
    expect(Object.keys(manifest.convert!.stages).filter((k) => k.startsWith("build-") || k.startsWith("verify-trt-")).sort()).toEqual([
      "build-fp16",
      "build-fp16-long",
      "build-int8",
      "build-int8-long",
      "verify-trt-fp16",
      "verify-trt-fp16-long",
      "verify-trt-int8",
      "verify-trt-int8-long",
    ]);
    const again = await run();
    expect(ran(again)).toEqual(["checkpoint"]);
    expect(again.artifacts.every((a) => a.reused)).toBe(true);
  }, 240_000);
});

describe("bge convert with no model: the default, from the hub", () => {
  it("downloads BAAI/bge-small-zh-v1.5 at its bundled pipeline's pinned revision and converts it with that pipeline", async () => {
    const { HubServer } = await import("./helpers/hub-server.js");
    const pinned = JSON.parse(await readFile(join(REPO_ROOT, "pipelines", "bge-small-zh-v1.5.json"), "utf8")) as { revision: string };
    // A tiny-shaped checkpoint served under the default id; the pinned revision names its commit.
    const served = join(root, "served-tiny");
    expect((await runBge(["fixture", served, "--shape", "tiny", "--seed", "13"])).code).toBe(0);
    const server = await HubServer.start();
    try {
      await server.addRepoFromDir("BAAI/bge-small-zh-v1.5", served, { refs: [pinned.revision] });
      const env = { HF_ENDPOINT: server.url, HF_HOME: join(root, "hf-home"), HF_HUB_CACHE: "", HUGGINGFACE_HUB_CACHE: "", HF_TOKEN: "", HF_HUB_OFFLINE: "" };
      const out = join(root, "default");
      const r = await runBge(["convert", "-o", out, "--precision", "fp32,int8", "--json"], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/pipeline .*pipelines\/bge-small-zh-v1\.5\.json \(bundled for BAAI\/bge-small-zh-v1\.5\)/);
      expect(server.requests.map((q) => decodeURIComponent(q.url)).join(" ")).toContain(pinned.revision);
      const json = JSON.parse(r.stdout) as ConvertJson & { model: string };
      expect(json.model).toBe("BAAI/bge-small-zh-v1.5");
      expect(json.artifacts.map((a) => [a.precision, a.pass])).toEqual([["fp32", true], ["int8", true], ["int8-qdq", true]]);
      const manifest = await readManifest(out);
      // A full commit sha is taken as the commit (as huggingface_hub does): the snapshot and the manifest name it.
      expect(manifest.source.revision).toBe(pinned.revision);
      // The bundled pipeline's corpora: every zh passage and query verified, 500 passages calibrated.
      const golden = JSON.parse(await readFile(join(out, "golden.json"), "utf8")) as { items: unknown[] };
      const lines = async (f: string) => (await readFile(join(REPO_ROOT, "pipelines", "corpus", f), "utf8")).split("\n").filter((l) => l !== "").length;
      expect(golden.items).toHaveLength((await lines("zh-passages.txt")) + (await lines("zh-queries.txt")));
      expect(manifest.files.find((f) => f.role === "onnx-int8-qdq")!.quantization!.texts).toBe(500);
    } finally {
      await server.close();
    }
  }, 240_000);
});
