import { ToolFailedError } from "../errors.js";

/** One layer's row of `trtexec --exportProfile`: where the engine's time goes. */
export interface LayerTime {
  /** TensorRT's fused layer name ("/encoder/layer.0/attention/… + …", "Reformatting CopyNode …"). */
  name: string;
  /** Summed over every profiled run. */
  timeMs: number;
  averageMs: number;
  medianMs: number;
  /** Share of the engine's total time, 0–100. */
  percentage: number;
}

export interface ExportedProfile {
  /** How many inferences the profile covers (trtexec's `{"count": N}` head). */
  runs: number;
  layers: LayerTime[];
  /** Sum of the layers' average times: one inference, as profiled. */
  averageMs: number;
}

/** One inference of `trtexec --exportTimes`, in ms since trtexec started. */
export interface InferenceTiming {
  startEnqMs: number;
  endEnqMs: number;
  startH2dMs: number;
  endH2dMs: number;
  startComputeMs: number;
  endComputeMs: number;
  startD2hMs: number;
  endD2hMs: number;
  h2dMs: number;
  computeMs: number;
  d2hMs: number;
  latencyMs: number;
}

export interface Percentiles {
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

export interface ExportedTimes {
  inferences: InferenceTiming[];
  latency: Percentiles;
  compute: Percentiles;
  h2d: Percentiles;
  d2h: Percentiles;
  /** Inferences per second over the timed span (first enqueue to last D2H end). */
  qps: number;
}

const TIMING_FIELDS = ["startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs", "startD2hMs", "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs"] as const;

function parseArray(text: string, source: string, what: string): unknown[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ToolFailedError(`${source}: malformed trtexec ${what} JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(raw)) throw new ToolFailedError(`${source}: malformed trtexec ${what} JSON: expected an array`);
  return raw;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const finite = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/**
 * Parses `trtexec --exportProfile=F` (TensorRT 8.5–10): `[{"count": N}, {"name", "timeMs",
 * "averageMs", "medianMs", "percentage"}, …]`, layers in execution order.
 *
 * @throws ToolFailedError (exit 4) naming `source` and the first thing that is not such a file
 */
export function parseExportProfile(text: string, source = "trtexec --exportProfile file"): ExportedProfile {
  const rows = parseArray(text, source, "--exportProfile");
  const fail = (i: number, problem: string): never => {
    throw new ToolFailedError(`${source}: malformed trtexec --exportProfile JSON: entry ${i} ${problem}`);
  };
  const head = rows[0];
  if (!isObject(head) || !Number.isSafeInteger(head.count) || (head.count as number) < 1) fail(0, `should be {"count": N}, got ${JSON.stringify(head)}`);
  const layers = rows.slice(1).map((row, k): LayerTime => {
    const i = k + 1;
    if (!isObject(row) || typeof row.name !== "string") return fail(i, "has no layer name");
    for (const f of ["timeMs", "averageMs", "medianMs", "percentage"] as const) if (!finite(row[f]) || (row[f] as number) < 0) fail(i, `(${row.name}) has ${f} ${JSON.stringify(row[f])}`);
    return { name: row.name, timeMs: row.timeMs as number, averageMs: row.averageMs as number, medianMs: row.medianMs as number, percentage: row.percentage as number };
  });
  if (!layers.length) fail(1, "is missing: the profile lists no layer");
  return { runs: (head as { count: number }).count, layers, averageMs: layers.reduce((s, l) => s + l.averageMs, 0) };
}

/**
 * Parses `trtexec --exportTimes=F`: one object per timed inference with its enqueue, H2D, compute
 * and D2H spans, and summarises latency, GPU compute and transfers as trtexec's own performance
 * summary does (percentiles by nearest rank over the inferences).
 *
 * @throws ToolFailedError (exit 4) naming `source` and the first thing that is not such a file
 */
export function parseExportTimes(text: string, source = "trtexec --exportTimes file"): ExportedTimes {
  const rows = parseArray(text, source, "--exportTimes");
  const inferences = rows.map((row, i): InferenceTiming => {
    if (!isObject(row)) throw new ToolFailedError(`${source}: malformed trtexec --exportTimes JSON: entry ${i} is not an object`);
    for (const f of TIMING_FIELDS) {
      if (!finite(row[f])) throw new ToolFailedError(`${source}: malformed trtexec --exportTimes JSON: entry ${i} has ${f} ${JSON.stringify(row[f])}`);
    }
    return Object.fromEntries(TIMING_FIELDS.map((f) => [f, row[f] as number])) as unknown as InferenceTiming;
  });
  if (!inferences.length) throw new ToolFailedError(`${source}: malformed trtexec --exportTimes JSON: no inference was timed`);
  const span = Math.max(...inferences.map((t) => t.endD2hMs)) - Math.min(...inferences.map((t) => t.startEnqMs));
  return {
    inferences,
    latency: percentiles(inferences.map((t) => t.latencyMs)),
    compute: percentiles(inferences.map((t) => t.computeMs)),
    h2d: percentiles(inferences.map((t) => t.h2dMs)),
    d2h: percentiles(inferences.map((t) => t.d2hMs)),
    qps: span > 0 ? (inferences.length / span) * 1000 : Number.NaN,
  };
}

/** Nearest-rank percentiles (the rank ⌈p·n⌉), as trtexec reports them. */
export function percentiles(values: readonly number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
  return {
    min: sorted[0]!,
    mean: sorted.reduce((s, v) => s + v, 0) / sorted.length,
    p50: at(50),
    p90: at(90),
    p95: at(95),
    p99: at(99),
    max: sorted[sorted.length - 1]!,
  };
}
