import { readFile } from "node:fs/promises";
import { UsageError } from "../errors.js";
import { assertInputFile } from "../util/io-paths.js";
import type { Tolerance } from "../parity/tolerances.js";

/** A declarative recipe (pipelines/<model>.json); verify reads its tolerances. */
export interface Pipeline {
  model: string;
  revision?: string;
  max_length?: number;
  query_instruction?: string | null;
  precisions?: Record<string, Partial<Tolerance>>;
  shapes?: { min: string; opt: string; max: string };
  calibration?: string;
  verification?: { texts: string; queries?: string };
}

const TOLERANCE_KEYS = ["min_cosine", "mean_cosine", "batch_drift", "topk_agreement", "norm", "token_mismatches"];

export async function readPipeline(path: string): Promise<Pipeline> {
  let raw: unknown;
  await assertInputFile(path, "pipeline file");
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new UsageError(`${path}: cannot read pipeline (${(err as Error).message})`);
  }
  const p = raw as Pipeline;
  if (typeof p !== "object" || p === null || typeof p.model !== "string") throw new UsageError(`${path}: a pipeline needs a "model" (hub id)`);
  for (const [precision, tol] of Object.entries(p.precisions ?? {})) {
    for (const [k, v] of Object.entries(tol ?? {})) {
      if (!TOLERANCE_KEYS.includes(k)) throw new UsageError(`${path}: precisions.${precision}.${k} is not a tolerance (use ${TOLERANCE_KEYS.join(", ")})`);
      if (typeof v !== "number" || !Number.isFinite(v)) throw new UsageError(`${path}: precisions.${precision}.${k} must be a number`);
    }
  }
  return p;
}
