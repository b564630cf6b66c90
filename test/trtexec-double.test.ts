import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import "../src/runners/ort-telemetry.js";
import * as ort from "onnxruntime-node";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

/** The double is what bge's trtexec driver is tested against: it must fail and answer as each version does. */
const DOUBLE = join(REPO_ROOT, "test", "helpers", "trtexec-double.mjs");
const VERSIONS = [
  { version: "8.6.1", banner: "[TensorRT v8601]", bytes: 4, removed: "--stronglyTyped" },
  { version: "10.16.0", banner: "[TensorRT v101600] [b72]", bytes: 8, removed: "--workspace=1024" },
  { version: "11.0.0", banner: "[TensorRT v110000] [b114]", bytes: 8, removed: "--fp16" },
] as const;
const INPUTS = ["input_ids", "attention_mask", "token_type_ids"];
const profile = (flag: string, bs: string) => `--${flag}=${INPUTS.map((n) => `${n}:${bs}`).join(",")}`;
const PROFILE = [profile("minShapes", "1x1"), profile("optShapes", "2x6"), profile("maxShapes", "4x16")];

function trtexec(version: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(DOUBLE, args, { env: { ...process.env, TRTEXEC_DOUBLE_VERSION: version, ...env }, encoding: "utf8" });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, log: r.stdout + r.stderr };
}

let dir: string;
let onnx: string;
const ids = [[101, 12, 40, 7, 102, 0], [101, 300, 55, 9, 88, 102]];
const mask = [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]];
const types = [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]];
let reference: Record<string, Float32Array>;

beforeAll(async () => {
  dir = await tempDir("bge-trtexec-double-");
  expect((await runBge(["fixture", join(dir, "fx"), "--shape", "tiny"])).code).toBe(0);
  expect((await runBge(["export", join(dir, "fx"), "-o", join(dir, "art"), "--precision", "fp32"])).code).toBe(0);
  onnx = join(dir, "art", "model.fp32.onnx");
  const session = await ort.InferenceSession.create(onnx);
  const t = (rows: number[][]) => new ort.Tensor("int64", BigInt64Array.from(rows.flat().map(BigInt)), [2, 6]);
  const out = await session.run({ input_ids: t(ids), attention_mask: t(mask), token_type_ids: t(types) });
  reference = Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
});

/** trtexec's --exportOutput text: JSON except for bare nan/inf. */
function readExport(path: string): { name: string; dimensions: string; values: number[] }[] {
  return JSON.parse(readFileSync(path, "utf8").replace(/-?\b(nan|inf)\b/g, "null"));
}

function writeInputs(at: string, bytes: number): string {
  const files: string[] = [];
  for (const [name, rows] of [["input_ids", ids], ["attention_mask", mask], ["token_type_ids", types]] as const) {
    const flat = rows.flat();
    const buf = Buffer.alloc(flat.length * bytes);
    flat.forEach((v, i) => (bytes === 4 ? buf.writeInt32LE(v, i * 4) : buf.writeBigInt64LE(BigInt(v), i * 8)));
    const file = join(at, `${name}.${bytes === 4 ? "i32" : "i64"}.bin`);
    writeFileSync(file, buf);
    files.push(`${name}:${file}`);
  }
  return `--loadInputs=${files.join(",")}`;
}

describe.each(VERSIONS)("trtexec double $version", ({ version, banner, bytes, removed }) => {
  it("builds: banner, version, GPU lines, an engine naming version, GPU, precision and the ONNX's sha256", () => {
    const engine = join(dir, `fp32-${version}.plan`);
    const r = trtexec(version, [`--onnx=${onnx}`, `--saveEngine=${engine}`, ...PROFILE, "--noTF32", "--skipInference"]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe(`&&&& RUNNING TensorRT.trtexec ${banner} # trtexec --onnx=${onnx} --saveEngine=${engine} ${PROFILE.join(" ")} --noTF32 --skipInference`);
    expect(r.stdout).toMatch(new RegExp(`\\[I\\] TensorRT version: ${version.replace(/\./g, "\\.")}\\n`));
    expect(r.stdout).toMatch(/\[I\] Selected Device: NVIDIA A100-SXM4-80GB\n/);
    expect(r.stdout).toMatch(/\[I\] Compute Capability: 8\.0\n/);
    expect(r.stdout).toContain("Skipped inference phase since --skipInference is added.");
    expect(r.stdout.trimEnd().split("\n").at(-1)).toBe(`&&&& PASSED TensorRT.trtexec ${banner} # trtexec ${r.stdout.split(" # trtexec ")[1]!.split("\n")[0]}`);
    const text = readFileSync(engine).toString("latin1");
    expect(text).toContain(`"version":"${version}"`);
    expect(text).toContain('"gpu":"NVIDIA A100-SXM4-80GB"');
    expect(text).toContain('"precision":"fp32"');
    expect(text).toMatch(/"onnxSha256":"[0-9a-f]{64}"/);
  });

  it(`fails on an option ${version} does not have (${removed}), as the 11.0 fixture shows`, () => {
    const r = trtexec(version, [`--onnx=${onnx}`, "--skipInference", removed]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`\\[E\\] Unknown option: ${removed.replace("=", " ")}\\n`));
    expect(r.stdout).toMatch(new RegExp(`&&&& FAILED TensorRT\\.trtexec ${banner.replace(/[[\]]/g, "\\$&")} # trtexec`));
  });

  it(`runs: ${bytes === 4 ? "int32" : "int64"} --loadInputs, --exportOutput within 1e-5 of ONNX Runtime, a performance summary`, () => {
    const engine = join(dir, `run-${version}.plan`);
    expect(trtexec(version, [`--onnx=${onnx}`, `--saveEngine=${engine}`, ...PROFILE, "--noTF32", "--skipInference"]).code).toBe(0);
    const out = join(dir, `out-${version}.json`);
    const shapes = `--shapes=${INPUTS.map((n) => `${n}:2x6`).join(",")}`;
    const r = trtexec(version, [`--loadEngine=${engine}`, shapes, writeInputs(dir, bytes), `--exportOutput=${out}`]);
    expect(r.code, r.log).toBe(0);
    expect(r.stdout).toMatch(/\[I\] Throughput: [\d.]+ qps\n/);
    expect(r.stdout).toMatch(/\[I\] GPU Compute Time: min = [\d.e+-]+ ms, max = /);
    const exported = readExport(out);
    expect(exported.map((o) => o.name).sort()).toEqual(["last_hidden_state", "sentence_embedding"]);
    for (const o of exported) {
      const ref = reference[o.name]!;
      expect(o.values.length).toBe(ref.length);
      o.values.forEach((v, i) => expect(Math.abs(v - ref[i]!)).toBeLessThan(1e-5));
    }
    expect(exported.find((o) => o.name === "sentence_embedding")!.dimensions).toBe("2x32");
    // the other width is refused: a file of the wrong dtype does not silently run
    const wrong = trtexec(version, [`--loadEngine=${engine}`, shapes, writeInputs(dir, bytes === 4 ? 8 : 4), `--exportOutput=${out}`]);
    expect(wrong.code).toBe(1);
  });
});

describe("trtexec double: version binding, FP16 rounding and failure knobs", () => {
  it("an engine built by 8.6 does not load on 10.16", () => {
    const engine = join(dir, "bound.plan");
    expect(trtexec("8.6.1", [`--onnx=${onnx}`, `--saveEngine=${engine}`, ...PROFILE, "--skipInference"]).code).toBe(0);
    const r = trtexec("10.16.0", [`--loadEngine=${engine}`, `--shapes=${INPUTS.map((n) => `${n}:1x4`).join(",")}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/expecting library version 10\.16\.0 got 8\.6\.1/);
  });

  it("an --fp16 engine's outputs are FP16 values, close to but not equal to FP32", () => {
    const engine = join(dir, "fp16.plan");
    expect(trtexec("10.16.0", [`--onnx=${onnx}`, `--saveEngine=${engine}`, ...PROFILE, "--fp16", "--skipInference"]).code).toBe(0);
    const out = join(dir, "fp16.json");
    expect(trtexec("10.16.0", [`--loadEngine=${engine}`, `--shapes=${INPUTS.map((n) => `${n}:2x6`).join(",")}`, writeInputs(dir, 8), `--exportOutput=${out}`]).code).toBe(0);
    const emb = readExport(out).find((o) => o.name === "sentence_embedding")!.values;
    const ref = reference.sentence_embedding!;
    let differs = 0;
    emb.forEach((v, i) => {
      expect(Math.abs(v - ref[i]!)).toBeLessThanOrEqual(Math.abs(ref[i]!) * 2 ** -11 + 1e-6);
      // on the FP16 grid (11 significant bits), up to the export's 6-digit printing
      const ulp = 2 ** (Math.max(Math.floor(Math.log2(Math.abs(v) || 1)), -14) - 10);
      expect(Math.abs(v / ulp - Math.round(v / ulp))).toBeLessThan(0.01);
      if (Math.abs(v - ref[i]!) > 1e-6) differs++;
    });
    expect(differs).toBeGreaterThan(0);
  });

  it.each([
    ["exit", 3, null],
    ["signal", null, "SIGKILL"],
  ] as const)("TRTEXEC_DOUBLE_FAIL=%s: dies with no FAILED line, a half-written engine left behind", (knob, code, signal) => {
    const engine = join(dir, `dead-${knob}.plan`);
    const r = trtexec("10.16.0", [`--onnx=${onnx}`, `--saveEngine=${engine}`, ...PROFILE, "--skipInference"], { TRTEXEC_DOUBLE_FAIL: knob });
    expect(r.code).toBe(code);
    expect(r.signal).toBe(signal);
    expect(r.stdout).not.toContain("&&&& FAILED");
    expect(r.stdout).not.toContain("&&&& PASSED");
    expect(readFileSync(engine).length).toBe(20);
  });

  it("TRTEXEC_DOUBLE_FAIL=failed-line: exit 0 but a FAILED line; no-engine: PASSED with no engine file", () => {
    const a = trtexec("11.0.0", [`--onnx=${onnx}`, `--saveEngine=${join(dir, "fl.plan")}`, "--skipInference"], { TRTEXEC_DOUBLE_FAIL: "failed-line" });
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(/&&&& FAILED TensorRT\.trtexec/);
    const b = trtexec("11.0.0", [`--onnx=${onnx}`, `--saveEngine=${join(dir, "ne.plan")}`, "--skipInference"], { TRTEXEC_DOUBLE_FAIL: "no-engine" });
    expect(b.code).toBe(0);
    expect(b.stdout).toMatch(/&&&& PASSED/);
    expect(existsSync(join(dir, "ne.plan"))).toBe(false);
  });

  it("TRTEXEC_DOUBLE_FAIL=bad-export: PASSED, but the --exportOutput file is not parseable", () => {
    const engine = join(dir, "be.plan");
    expect(trtexec("8.6.1", [`--onnx=${onnx}`, `--saveEngine=${engine}`, ...PROFILE, "--skipInference"]).code).toBe(0);
    const out = join(dir, "be.json");
    const r = trtexec("8.6.1", [`--loadEngine=${engine}`, `--shapes=${INPUTS.map((n) => `${n}:2x6`).join(",")}`, writeInputs(dir, 4), `--exportOutput=${out}`], { TRTEXEC_DOUBLE_FAIL: "bad-export" });
    expect(r.code).toBe(0);
    expect(() => readExport(out)).toThrow();
  });

  it("a missing ONNX fails the parse as trtexec does", () => {
    const r = trtexec("10.16.0", [`--onnx=${join(dir, "nope.onnx")}`, "--skipInference"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\[E\] Failed to parse onnx file\n[\s\S]*\[E\] Engine set up failed/);
  });
});
