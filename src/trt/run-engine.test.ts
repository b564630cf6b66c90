import { spawnSync } from "node:child_process";
import { chmod, mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import "../runners/ort-telemetry.js";
import * as ort from "onnxruntime-node";
import { REPO_ROOT } from "../../test/helpers/paths.js";
import { runBge } from "../../test/helpers/run-bge.js";
import { tempDir } from "../../test/helpers/tmp.js";
import { ToolFailedError, UsageError } from "../errors.js";
import { discoverTrtexec, type TrtexecInfo } from "./discover-trtexec.js";
import { encodeInts, padBatch, runEngine, runEngineWithLog, SINGLE_RUN_ARGS } from "./run-engine.js";

const DOUBLE = join(REPO_ROOT, "test", "helpers", "trtexec-double.mjs");
const VERSIONS = ["8.6.1", "10.16.0", "11.0.0"] as const;
const INPUTS = ["input_ids", "attention_mask", "token_type_ids"];
const profile = (flag: string, bs: string) => `--${flag}=${INPUTS.map((n) => `${n}:${bs}`).join(",")}`;

describe("padBatch / encodeInts", () => {
  it("right-pads with the pad id, mask 1/0, token types 0", () => {
    const t = padBatch([[5, 6, 7], [8]], 1, 4);
    expect(t.input_ids).toEqual([5, 6, 7, 1, 8, 1, 1, 1]);
    expect(t.attention_mask).toEqual([1, 1, 1, 0, 1, 0, 0, 0]);
    expect(t.token_type_ids).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(() => padBatch([[1, 2, 3]], 0, 2)).toThrow(UsageError);
  });

  it("writes little-endian int32 (8.6) and int64 (10+)", () => {
    expect([...encodeInts([1, 258, -1], 4)]).toEqual([1, 0, 0, 0, 2, 1, 0, 0, 255, 255, 255, 255]);
    expect([...encodeInts([258], 8)]).toEqual([2, 1, 0, 0, 0, 0, 0, 0]);
  });
});

let dir: string;
let onnx: string;
const trtexec: Record<string, TrtexecInfo> = {};
const engines: Record<string, string> = {};
const batch = [[101, 12, 40, 7, 102], [101, 300, 55, 9, 88, 102], [101, 102]];

/** A wrapper binary per version (and failure mode), as a user's trtexec would be. */
async function wrapper(version: string, fail = ""): Promise<string> {
  const path = join(dir, "bin", `trtexec-${version}${fail ? `-${fail}` : ""}`);
  await writeFile(path, `#!/bin/sh\nTRTEXEC_DOUBLE_VERSION=${version} TRTEXEC_DOUBLE_FAIL=${fail} exec "${process.execPath}" "${DOUBLE}" "$@"\n`);
  await chmod(path, 0o755);
  return path;
}

beforeAll(async () => {
  dir = await tempDir("bge-run-engine-");
  await mkdir(join(dir, "bin"));
  await mkdir(join(dir, "work"));
  expect((await runBge(["fixture", join(dir, "fx"), "--shape", "tiny", "--seed", "3"])).code).toBe(0);
  expect((await runBge(["export", join(dir, "fx"), "-o", join(dir, "art"), "--precision", "fp32"])).code).toBe(0);
  onnx = join(dir, "art", "model.fp32.onnx");
  for (const v of VERSIONS) {
    trtexec[v] = await discoverTrtexec({ explicit: await wrapper(v), cacheFile: false });
    engines[v] = join(dir, `fp32-${v}.plan`);
    const r = spawnSync(trtexec[v]!.path, [`--onnx=${onnx}`, `--saveEngine=${engines[v]}`, profile("minShapes", "1x1"), profile("optShapes", "2x8"), profile("maxShapes", "4x16"), "--skipInference"], { encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  }
});

async function onnxOutputs(rows: number[][], padId: number): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(onnx);
  const S = Math.max(...rows.map((r) => r.length));
  const t = padBatch(rows, padId, S);
  const tensor = (v: number[]) => new ort.Tensor("int64", BigInt64Array.from(v.map(BigInt)), [rows.length, S]);
  const out = await session.run({ input_ids: tensor(t.input_ids), attention_mask: tensor(t.attention_mask), token_type_ids: tensor(t.token_type_ids) });
  await session.release();
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
}

describe.each(VERSIONS)("runEngine on the trtexec %s double", (version) => {
  it("runs once with --shapes, --loadInputs in the engine's dtype, --exportOutput and the single-run options; outputs keyed on name", async () => {
    const work = join(dir, "work");
    const { outputs, args, log } = await runEngineWithLog({ trtexec: trtexec[version]!, engine: engines[version]!, batch, padId: 0, inputNames: INPUTS, workDir: work });
    expect(args[0]).toBe(`--loadEngine=${engines[version]}`);
    expect(args[1]).toBe("--shapes=input_ids:3x6,attention_mask:3x6,token_type_ids:3x6");
    expect(args[2]).toMatch(new RegExp(`^--loadInputs=input_ids:.*input_ids\\.${version === "8.6.1" ? "i32" : "i64"}\\.bin,attention_mask:.*,token_type_ids:.*$`));
    expect(args[3]).toMatch(/^--exportOutput=.*outputs\.json$/);
    expect(args.slice(4)).toEqual([...SINGLE_RUN_ARGS]);
    expect(log).toContain(`type ${version === "8.6.1" ? "int32" : "int64"} is created`);
    expect(log).not.toContain("Using random values");
    expect(await readdir(work)).toEqual([]);

    expect([...outputs.keys()].sort()).toEqual(["last_hidden_state", "sentence_embedding"]);
    const ref = await onnxOutputs(batch, 0);
    for (const [name, t] of outputs) {
      expect(t.dims[0]).toBe(3);
      const r = ref[name]!;
      expect(t.values.length).toBe(r.length);
      // the export prints 6 significant digits
      for (let i = 0; i < r.length; i++) expect(Math.abs(t.values[i]! - r[i]!)).toBeLessThanOrEqual(Math.abs(r[i]!) * 1e-5 + 1e-6);
    }
  });

  it("pads to seqLength when asked (a profile's minimum sequence)", async () => {
    const outputs = await runEngine({ trtexec: trtexec[version]!, engine: engines[version]!, batch: [[101, 102]], padId: 0, inputNames: INPUTS, seqLength: 4 });
    expect(outputs.get("last_hidden_state")!.dims.slice(0, 2)).toEqual([1, 4]);
  });
});

describe("runEngine failures → ToolFailedError (exit 4) with the command line and log tail, no temporary folder left", () => {
  it.each(["exit", "signal", "failed-line", "bad-export"])("TRTEXEC_DOUBLE_FAIL=%s", async (fail) => {
    const work = join(dir, `work-${fail}`);
    await mkdir(work);
    const failing = { ...trtexec["10.16.0"]!, path: await wrapper("10.16.0", fail) };
    const err = await runEngine({ trtexec: failing, engine: engines["10.16.0"]!, batch, padId: 0, inputNames: INPUTS, workDir: work }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolFailedError);
    const message = (err as ToolFailedError).message;
    expect((err as ToolFailedError).exitCode).toBe(4);
    expect(message).toContain(`${failing.path} --loadEngine=${engines["10.16.0"]} --shapes=input_ids:3x6`);
    expect(message).toMatch({ exit: /exited with 3/, signal: /killed by SIGKILL/, "failed-line": /reported FAILED[\s\S]*&&&& FAILED/, "bad-export": /outputs are unusable.*malformed/ }[fail]!);
    expect(message).toContain("Output binding for"); // the log tail
    expect(await readdir(work)).toEqual([]);
  });

  it("an engine from another TensorRT version fails with trtexec's own message", async () => {
    const err = await runEngine({ trtexec: trtexec["10.16.0"]!, engine: engines["8.6.1"]!, batch, padId: 0, inputNames: INPUTS }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolFailedError);
    expect((err as Error).message).toMatch(/expecting library version 10\.16\.0 got 8\.6\.1/);
  });

  it("a batch beyond the profile fails as trtexec does", async () => {
    const long = [Array.from({ length: 20 }, (_, i) => 100 + i)];
    const err = await runEngine({ trtexec: trtexec["10.16.0"]!, engine: engines["10.16.0"]!, batch: long, padId: 0, inputNames: INPUTS }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolFailedError);
    expect((err as Error).message).toMatch(/Static dimension mismatch/);
  });

  it("refuses inputs that are not an encoder's, and an empty batch", async () => {
    await expect(runEngine({ trtexec: trtexec["10.16.0"]!, engine: engines["10.16.0"]!, batch, padId: 0, inputNames: ["input_ids", "pixel_values"] })).rejects.toThrow(UsageError);
    await expect(runEngine({ trtexec: trtexec["10.16.0"]!, engine: engines["10.16.0"]!, batch: [], padId: 0, inputNames: INPUTS })).rejects.toThrow(UsageError);
  });
});
