import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BgeError, ToolFailedError, UsageError } from "../errors.js";
import { trackTempPath } from "../util/interrupt.js";
import { runTrtexec, trtexecFailure } from "./build-engine.js";
import type { TrtexecInfo } from "./discover-trtexec.js";
import { readExportOutput, type ExportedTensor } from "./export-output.js";
import { parseTrtexecLog } from "./trtexec-log.js";

/** The encoder inputs an engine may take, in the order bge writes them. */
export const ENGINE_INPUTS = ["input_ids", "attention_mask", "token_type_ids"] as const;

/**
 * Options that keep an inference run to one enqueue: trtexec otherwise warms up for 200 ms and
 * measures for 3 s, which is pure waste when all bge wants is the outputs. All four exist in 8.6,
 * 10.x and 11.x (FACTS.md; the double's option lists).
 */
export const SINGLE_RUN_ARGS = ["--iterations=1", "--warmUp=0", "--duration=0", "--avgRuns=1"] as const;

export interface RunEngineOptions {
  trtexec: TrtexecInfo;
  /** The serialized engine (`--loadEngine`). */
  engine: string;
  /** Token id lists, already truncated; one row per sequence. */
  batch: readonly (readonly number[])[];
  padId: number;
  /** The engine's inputs: input_ids, attention_mask and, where it has one, token_type_ids. */
  inputNames: readonly string[];
  /** Pad every row to at least this many tokens (a profile's minimum sequence). @default the longest row */
  seqLength?: number;
  /** Where the private temporary folder is made. @default os.tmpdir() */
  workDir?: string;
  /** How long the run may take before it is killed. @default 10 min */
  timeoutMs?: number;
}

export interface EngineRun {
  outputs: Map<string, ExportedTensor>;
  /** trtexec's argument list as run (temporary paths included). */
  args: string[];
  /** The whole console output. */
  log: string;
}

/**
 * One trtexec inference run: pads `batch` to its longest row (right padding with `padId`, mask 1/0,
 * token types 0), writes each input as raw little-endian C-order bytes in the dtype the engine's
 * bindings have (int32 on TensorRT 8.6, which turns INT64 inputs into INT32; int64 on 10.x and 11.x),
 * runs `trtexec --loadEngine --shapes --loadInputs --exportOutput` (argument array, never a shell) and
 * returns the outputs keyed on name. The temporary folder is removed whatever happens, and on SIGINT.
 *
 * @throws ToolFailedError (exit 4) with the command line and the log tail when trtexec exits non-zero,
 *   is killed (signal, timeout), prints `&&&& FAILED` (even under exit 0), or writes no or a malformed
 *   export file
 */
export async function runEngine(options: RunEngineOptions): Promise<Map<string, ExportedTensor>> {
  return (await runEngineWithLog(options)).outputs;
}

/** runEngine, also returning the argument list and the log (for reports and bench). */
export async function runEngineWithLog(options: RunEngineOptions): Promise<EngineRun> {
  const { trtexec, batch, inputNames } = options;
  if (batch.length === 0) throw new UsageError("runEngine: an empty batch has nothing to run");
  const unknown = inputNames.filter((n) => !(ENGINE_INPUTS as readonly string[]).includes(n));
  if (unknown.length || !inputNames.includes("input_ids") || !inputNames.includes("attention_mask")) {
    throw new UsageError(`engine inputs ${inputNames.join(", ")} are not a BERT/XLM-R encoder's (need input_ids, attention_mask, optional token_type_ids)`);
  }
  const B = batch.length;
  const S = Math.max(options.seqLength ?? 0, ...batch.map((row) => row.length));

  const base = options.workDir ?? tmpdir();
  let dir: string;
  try {
    dir = await mkdtemp(join(base, "bge-trt-run-"));
  } catch (err) {
    throw new UsageError(`${base}: cannot make a temporary folder for trtexec's inputs and outputs (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const untrack = trackTempPath(dir);
  try {
    const exportFile = join(dir, "outputs.json");
    const args = [
      `--loadEngine=${options.engine}`,
      ...(await writeEngineInputs(dir, trtexec, inputNames, batch, options.padId, S)),
      `--exportOutput=${exportFile}`,
      ...SINGLE_RUN_ARGS,
    ];
    const run = await runTrtexec(trtexec, args, options.timeoutMs ?? 600_000);
    if (run.signal) throw trtexecFailure(trtexec, args, run, `was killed by ${run.signal}`);
    if (run.code !== 0) throw trtexecFailure(trtexec, args, run, `exited with ${run.code}`);
    if (parseTrtexecLog(run.log).status === "failed") throw trtexecFailure(trtexec, args, run, "reported FAILED");
    let outputs: Map<string, ExportedTensor>;
    try {
      outputs = await readExportOutput(exportFile);
    } catch (err) {
      if (!(err instanceof ToolFailedError)) throw err;
      throw trtexecFailure(trtexec, args, run, `reported success but its outputs are unusable (${err.message})`);
    }
    for (const [name, t] of outputs) {
      if (t.dims[0] !== B) throw trtexecFailure(trtexec, args, run, `returned ${name} with dimensions ${t.dims.join("x")} for a batch of ${B}`);
    }
    return { outputs, args, log: run.log };
  } catch (err) {
    if (err instanceof BgeError) throw err;
    throw new ToolFailedError(`trtexec inference run on ${options.engine} failed: ${(err as Error).message}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
    untrack();
  }
}

/**
 * Writes a batch, right-padded to `seq`, as raw files in `dir` in the dtype the engine takes (int32 on
 * TensorRT 8.6, int64 on 10 and 11), and returns the trtexec arguments that feed them to the engine
 * (`--shapes`, `--loadInputs`).
 */
export async function writeEngineInputs(
  dir: string,
  trtexec: Pick<TrtexecInfo, "family">,
  inputNames: readonly string[],
  batch: readonly (readonly number[])[],
  padId: number,
  seq: number,
): Promise<string[]> {
  const tensors = padBatch(batch, padId, seq);
  const bytes = trtexec.family === "8.6" ? 4 : 8;
  const files: string[] = [];
  for (const name of inputNames) {
    const file = join(dir, `${name}.${bytes === 4 ? "i32" : "i64"}.bin`);
    await writeFile(file, encodeInts(tensors[name as keyof typeof tensors], bytes));
    files.push(`${name}:${file}`);
  }
  const shape = `${batch.length}x${seq}`;
  return [`--shapes=${inputNames.map((n) => `${n}:${shape}`).join(",")}`, `--loadInputs=${files.join(",")}`];
}

/** Right-padded [B, S] inputs as FlagModel's tokenizer pads them. */
export function padBatch(batch: readonly (readonly number[])[], padId: number, seq: number): Record<(typeof ENGINE_INPUTS)[number], number[]> {
  const B = batch.length;
  const ids = new Array<number>(B * seq).fill(padId);
  const mask = new Array<number>(B * seq).fill(0);
  batch.forEach((row, r) => {
    if (row.length > seq) throw new UsageError(`row ${r} has ${row.length} tokens, more than the ${seq} it is padded to`);
    row.forEach((id, c) => {
      ids[r * seq + c] = id;
      mask[r * seq + c] = 1;
    });
  });
  return { input_ids: ids, attention_mask: mask, token_type_ids: new Array<number>(B * seq).fill(0) };
}

/** Raw little-endian bytes of integer values: int32 (TensorRT 8.6 bindings) or int64 (10.x, 11.x). */
export function encodeInts(values: ArrayLike<number>, bytes: 4 | 8): Buffer {
  const buf = Buffer.alloc(values.length * bytes);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (bytes === 4) buf.writeInt32LE(v, i * 4);
    else buf.writeBigInt64LE(BigInt(v), i * 8);
  }
  return buf;
}
