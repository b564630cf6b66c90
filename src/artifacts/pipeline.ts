import { readFile } from "node:fs/promises";
import { UsageError } from "../errors.js";
import { assertInputFile } from "../util/io-paths.js";

/** The gates a pipeline may set per precision (the parity gate's Tolerance fields, by name). */
export const TOLERANCE_KEYS = ["min_cosine", "mean_cosine", "batch_drift", "topk_agreement", "norm", "token_mismatches"] as const;
/** Open-closed ranges: a cosine gate of 0 or a negative drift would pass anything or nothing. */
const TOLERANCE_RANGES = {
  min_cosine: [0, 1],
  mean_cosine: [0, 1],
  batch_drift: [0, 1],
  topk_agreement: [0, 1],
  norm: [0, 1],
  token_mismatches: [-1, Number.MAX_SAFE_INTEGER],
} as const satisfies Record<(typeof TOLERANCE_KEYS)[number], readonly [number, number]>;
export type PipelineTolerance = Partial<Record<(typeof TOLERANCE_KEYS)[number], number>>;

/** A declarative recipe (pipelines/<model>.json); verify reads its tolerances. */
export interface Pipeline {
  model: string;
  revision?: string;
  max_length?: number;
  query_instruction?: string | null;
  precisions?: Record<string, PipelineTolerance>;
  shapes?: { min: string; opt: string; max: string };
  calibration?: string;
  verification?: { texts: string; queries?: string };
}


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
      if (!(TOLERANCE_KEYS as readonly string[]).includes(k)) throw new UsageError(`${path}: precisions.${precision}.${k} is not a tolerance (use ${TOLERANCE_KEYS.join(", ")})`);
      if (typeof v !== "number" || !Number.isFinite(v)) throw new UsageError(`${path}: precisions.${precision}.${k} must be a number, got ${JSON.stringify(v)}`);
      const [lo, hi] = TOLERANCE_RANGES[k as keyof typeof TOLERANCE_RANGES];
      if (!(v > lo && v <= hi)) throw new UsageError(`${path}: precisions.${precision}.${k} is ${v}; it must be greater than ${lo} and at most ${hi}`);
    }
  }
  return p;
}
