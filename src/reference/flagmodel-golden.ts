import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { onInterrupt, trackTempPath } from "../util/interrupt.js";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { GoldenFile, GoldenItem } from "../artifacts/golden.js";
import type { ModelSpec } from "../checkpoint/model-spec.js";
import { ToolFailedError, ToolMissingError } from "../errors.js";

export const FLAGMODEL_SCRIPT = fileURLToPath(new URL("../../pipelines/flagmodel_golden.py", import.meta.url));

export interface FlagModelGoldenOptions {
  spec: ModelSpec;
  passages: string[];
  queries: string[];
  /** FlagModel's use_fp16 (its own default is true; exact goldens want false). */
  useFp16: boolean;
  batchSize: number;
  /** bge-m3: BGEM3FlagModel with dense, sparse and ColBERT outputs (flagmodel_golden.py --m3). */
  m3?: boolean;
  /** @default $BGE_PYTHON or python3 */
  python?: string;
}

const LOG_TAIL_LINES = 20;

/** Checks that the interpreter exists and imports FlagEmbedding; exit 3 with how to mend it otherwise. */
export function checkFlagEmbedding(python: string): void {
  const probe = spawnSync(python, ["-c", "import FlagEmbedding"], { encoding: "utf8", timeout: 120_000 });
  if (probe.error && (probe.error as NodeJS.ErrnoException).code === "ENOENT") {
    throw new ToolMissingError(`${python} not found: --reference flagmodel needs Python with FlagEmbedding (set BGE_PYTHON to its interpreter)`);
  }
  if (probe.status !== 0) {
    throw new ToolMissingError(`FlagEmbedding is not installed for ${python} (pip install FlagEmbedding), or it fails to import: ${lastLine(probe.stderr)}`);
  }
}

/**
 * Runs pipelines/flagmodel_golden.py — the real FlagModel, every setting passed explicitly — and
 * returns its producer record and items; the caller adds the model's identity and validates.
 */
export async function runFlagModelGolden(options: FlagModelGoldenOptions): Promise<Pick<GoldenFile, "producer" | "items">> {
  const python = options.python ?? process.env.BGE_PYTHON ?? "python3";
  checkFlagEmbedding(python);
  const { spec } = options;
  const request = {
    model: spec.dir,
    passages: options.passages,
    queries: options.queries,
    pooling: spec.pooling,
    normalize: spec.normalize,
    use_fp16: options.useFp16,
    max_length: spec.maxLength,
    instruction: spec.queryInstruction ?? null,
    batch_size: options.batchSize,
  };
  const dir = await mkdtemp(join(tmpdir(), "bge-flagmodel-"));
  const outPath = join(dir, "golden.json");
  // Interrupted, the scratch folder goes and so does the Python run (it would outlive bge otherwise).
  const untrack = trackTempPath(dir);
  let childToStop: ChildProcess | undefined;
  const dropKill = onInterrupt(() => childToStop?.kill("SIGTERM"));
  try {
    const args = [FLAGMODEL_SCRIPT, ...(options.m3 ? ["--m3"] : []), outPath];
    const { code, log } = await new Promise<{ code: number | null; log: string }>((resolve, reject) => {
      const child = spawn(python, args, { stdio: ["pipe", "pipe", "pipe"] });
      childToStop = child;
      let log = "";
      child.stdout.on("data", (d) => (log += d));
      child.stderr.on("data", (d) => (log += d));
      child.on("error", reject);
      child.on("close", (c) => resolve({ code: c, log }));
      child.stdin.end(JSON.stringify(request));
    });
    if (code !== 0) {
      const tail = log.trimEnd().split("\n").slice(-LOG_TAIL_LINES).join("\n");
      throw new ToolFailedError(`FlagModel golden failed (exit ${code}): ${python} ${args.join(" ")}\n${tail}`);
    }
    const produced = JSON.parse(await readFile(outPath, "utf8")) as { producer: GoldenFile["producer"]; items: GoldenItem[] };
    return produced;
  } finally {
    dropKill();
    await rm(dir, { recursive: true, force: true });
    untrack();
  }
}

function lastLine(text: string): string {
  return text.trim().split("\n").pop() ?? "";
}
