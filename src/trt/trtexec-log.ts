/**
 * Reads a trtexec console log (8.5 … 11.x) into the facts bge needs: which TensorRT ran, on which GPU,
 * whether it passed, the performance summary, and the error lines for an exit-4 message.
 *
 * The parser is line-based and forgiving on purpose: logs arrive truncated (a pasted tail), with a
 * shell prompt in front, without a trailing newline, or with several runs concatenated, and a
 * missing section must read as "absent", never as a crash or a made-up value.
 */

export interface TrtVersion {
  major: number;
  minor: number;
  patch: number;
  /** The `[TensorRT vNNNN]` banner value: major*1000+minor*100+patch for 8.x/9.x, major*10000+… from 10.x. */
  code: number;
}

export interface TimingStats {
  min: number;
  max: number;
  mean: number;
  median: number;
  /** Absent where that trtexec version does not print the percentile. */
  p90?: number;
  p95?: number;
  p99?: number;
  /** Every percentile the line printed, keyed by its percentage (90, 95, 99, 99.9 …). */
  percentiles: Record<string, number>;
}

export interface TrtexecSummary {
  /** Enqueues per second (one enqueue = one batch), not sequences per second. */
  throughputQps: number;
  latencyMs: TimingStats;
  gpuComputeMs: TimingStats;
  enqueueMs?: TimingStats;
  h2dMs?: TimingStats;
  d2hMs?: TimingStats;
  totalHostWalltimeS?: number;
  totalGpuComputeS?: number;
}

export interface TrtexecLog {
  version?: TrtVersion;
  /** The trtexec argv as the run printed it after `#` on its `&&&& RUNNING` (or final) line. */
  command?: string;
  status: "passed" | "failed" | "incomplete";
  gpu?: { name: string; computeCapability?: string };
  summary?: TrtexecSummary;
  /** The `[E]` lines, without timestamp and severity tag, in order. */
  errors: string[];
  /** Options trtexec rejected (`[E] Unknown option: --fp16` → `--fp16`). */
  unknownOptions: string[];
  warnings: number;
  /** The last `n` non-empty lines of the log, for an error message. */
  tail(n?: number): string;
}

// `[05/24/2023-23:13:27] [I] ` — the timestamp is missing on some lines (a pasted tail starts with `[E] Error[4]: …`).
const LINE_PREFIX = /^(?:\[[^\]]*\d{2}:\d{2}:\d{2}[^\]]*\]\s*)?\[([IWEVF])\]\s?(.*)$/;
const MARKER = /^&&&& (RUNNING|PASSED|FAILED|WAIVED) TensorRT\.trtexec\b(.*)$/;
const BANNER_CODE = /\[TensorRT v(\d+)\]/;
const VERSION_LINE = /^TensorRT version:\s*(\d+)\.(\d+)\.(\d+)/;
// A number as C++ iostreams print it, scientific notation included.
const NUM = String.raw`[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)`;

/** Parses a whole trtexec log; never throws. */
export function parseTrtexecLog(text: string): TrtexecLog {
  const lines = text.split(/\r?\n/);
  let bannerCode: number | undefined;
  let versionLine: [number, number, number] | undefined;
  let command: string | undefined;
  let finalCommand: string | undefined;
  let lastMarker: { kind: string; index: number } | undefined;
  let sawFailed = false;
  let lastErrorIndex = -1;
  const errors: string[] = [];
  const unknownOptions: string[] = [];
  let warnings = 0;
  let selectedName: string | undefined;
  let computeCapability: string | undefined;
  let deviceOption: string | undefined;
  const deviceTable = new Map<string, string>();
  const stats = new Map<string, TimingStats>();
  let throughputQps: number | undefined;
  let totalHostWalltimeS: number | undefined;
  let totalGpuComputeS: number | undefined;

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trimEnd();
    // A shell prompt may precede the marker on the same line in a pasted log, so search, not anchor.
    const markerAt = line.indexOf("&&&& ");
    if (markerAt >= 0) {
      const marker = MARKER.exec(line.slice(markerAt));
      if (marker) {
        const [, kind, rest] = marker;
        const code = BANNER_CODE.exec(rest);
        if (code && bannerCode === undefined) bannerCode = Number(code[1]);
        const hash = rest.indexOf(" # ");
        const argv = hash >= 0 ? rest.slice(hash + 3).trim() : undefined;
        if (kind === "RUNNING") {
          command ??= argv;
        } else {
          finalCommand ??= argv;
          lastMarker = { kind, index: i };
          if (kind === "FAILED") sawFailed = true;
        }
        continue;
      }
    }
    const tagged = LINE_PREFIX.exec(line);
    if (!tagged) continue;
    const [, severity, body] = tagged;
    if (severity === "E" || severity === "F") {
      errors.push(body);
      lastErrorIndex = i;
      const unknown = /^Unknown option:\s*(\S+)/.exec(body);
      if (unknown) unknownOptions.push(unknown[1]);
      continue;
    }
    if (severity === "W") {
      warnings++;
      continue;
    }
    // The explanations block repeats metric names in [V] lines; only [I] lines carry values.
    if (severity !== "I") continue;
    let m: RegExpExecArray | null;
    if ((m = VERSION_LINE.exec(body))) {
      versionLine ??= [Number(m[1]), Number(m[2]), Number(m[3])];
    } else if ((m = /^Selected Device:\s*(.+)$/.exec(body))) {
      selectedName ??= m[1].trim();
    } else if ((m = /^Compute Capability:\s*(\d+\.\d+)/.exec(body))) {
      computeCapability ??= m[1];
    } else if ((m = /^Device:\s*(\d+)\s*$/.exec(body))) {
      // The `--device` option echo, used to pick a row of the device table when no "Selected Device" line exists.
      deviceOption ??= m[1];
    } else if ((m = /^\s*Device (\d+):\s*"([^"]*)"/.exec(body))) {
      if (!deviceTable.has(m[1])) deviceTable.set(m[1], m[2]);
    } else if ((m = new RegExp(`^Throughput:\\s*(${NUM})\\s*qps`, "i").exec(body))) {
      throughputQps = toNumber(m[1]);
    } else if ((m = new RegExp(`^Total Host Walltime:\\s*(${NUM})\\s*(ms|s)\\b`).exec(body))) {
      totalHostWalltimeS = toNumber(m[1]) / (m[2] === "ms" ? 1000 : 1);
    } else if ((m = new RegExp(`^Total GPU Compute Time:\\s*(${NUM})\\s*(ms|s)\\b`).exec(body))) {
      totalGpuComputeS = toNumber(m[1]) / (m[2] === "ms" ? 1000 : 1);
    } else if ((m = /^(Latency|Host Latency|GPU Compute Time|GPU Compute|Enqueue Time|H2D Latency|D2H Latency):\s*(.*)$/.exec(body))) {
      const parsed = parseTimingStats(m[2]);
      if (parsed && !stats.has(m[1])) stats.set(m[1], parsed);
    }
  }

  const version = resolveVersion(bannerCode, versionLine);
  const latency = stats.get("Latency") ?? stats.get("Host Latency");
  const gpuCompute = stats.get("GPU Compute Time") ?? stats.get("GPU Compute");
  const summary: TrtexecSummary | undefined =
    throughputQps !== undefined && latency && gpuCompute
      ? {
          throughputQps,
          latencyMs: latency,
          gpuComputeMs: gpuCompute,
          ...(stats.has("Enqueue Time") && { enqueueMs: stats.get("Enqueue Time") }),
          ...(stats.has("H2D Latency") && { h2dMs: stats.get("H2D Latency") }),
          ...(stats.has("D2H Latency") && { d2hMs: stats.get("D2H Latency") }),
          ...(totalHostWalltimeS !== undefined && { totalHostWalltimeS }),
          ...(totalGpuComputeS !== undefined && { totalGpuComputeS }),
        }
      : undefined;

  const gpuName = selectedName ?? (deviceTable.get(deviceOption ?? "0") ?? deviceTable.values().next().value);
  const gpu =
    gpuName !== undefined
      ? { name: gpuName, ...(computeCapability !== undefined && { computeCapability }) }
      : undefined;

  // trtexec prints nothing after its closing marker, so an error line after a PASSED line means the
  // file holds a later run that failed (the 11.0 fixture: a PASSED build, then rejected options).
  let status: TrtexecLog["status"];
  if (sawFailed || (lastMarker && lastErrorIndex > lastMarker.index)) status = "failed";
  else if (lastMarker?.kind === "PASSED") status = "passed";
  else status = "incomplete";

  return {
    ...(version && { version }),
    ...((command ?? finalCommand) !== undefined && { command: command ?? finalCommand }),
    status,
    ...(gpu && { gpu }),
    ...(summary && { summary }),
    errors,
    unknownOptions,
    warnings,
    tail: (n = 20) => tailLines(text, n),
  };
}

/** The last `n` non-empty lines of `text`, for the message of a failed tool run. */
export function tailLines(text: string, n = 20): string {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
  return lines.slice(Math.max(0, lines.length - n)).join("\n");
}

/** Decodes a `[TensorRT vNNNN]` banner value; the encoding changed at 10.0 (v8601 vs v101600). */
export function decodeTrtVersionCode(code: number): TrtVersion {
  const base = code >= 100000 ? 10000 : 1000;
  return { major: Math.floor(code / base), minor: Math.floor((code % base) / 100), patch: code % 100, code };
}

/** Encodes a version the way that version's banner does. */
export function encodeTrtVersionCode(major: number, minor: number, patch: number): number {
  return major * (major >= 10 ? 10000 : 1000) + minor * 100 + patch;
}

/**
 * The version from the banner and/or the `TensorRT version: X.Y.Z` line. The explicit line wins where
 * both exist (it is unambiguous); the banner alone covers truncated logs and `--help` output.
 */
function resolveVersion(code: number | undefined, line: [number, number, number] | undefined): TrtVersion | undefined {
  if (line) {
    const [major, minor, patch] = line;
    return { major, minor, patch, code: code ?? encodeTrtVersionCode(major, minor, patch) };
  }
  return code !== undefined ? decodeTrtVersionCode(code) : undefined;
}

/**
 * Parses `min = 0.03 ms, max = …, percentile(90%) = … ms` (8.x–11.x) and the 7.x/8.0 form
 * `percentile: 1.3 ms at 99%`. Values are converted to milliseconds.
 */
function parseTimingStats(body: string): TimingStats | undefined {
  const named = new Map<string, number>();
  const percentiles: Record<string, number> = {};
  const pair = new RegExp(`(min|max|mean|median|percentile\\((\\d+(?:\\.\\d+)?)%\\))\\s*=\\s*(${NUM})\\s*(ms|us|s)?`, "g");
  for (const m of body.matchAll(pair)) {
    const value = toMs(toNumber(m[3]), m[4]);
    if (m[2] !== undefined) percentiles[trimPercent(m[2])] = value;
    else named.set(m[1], value);
  }
  const oldForm = new RegExp(`percentile:\\s*(${NUM})\\s*(ms|us|s)?\\s*at\\s*(\\d+(?:\\.\\d+)?)%`, "g");
  for (const m of body.matchAll(oldForm)) percentiles[trimPercent(m[3])] = toMs(toNumber(m[1]), m[2]);
  const min = named.get("min");
  const max = named.get("max");
  const mean = named.get("mean");
  const median = named.get("median");
  if (min === undefined || max === undefined || mean === undefined || median === undefined) return undefined;
  return {
    min,
    max,
    mean,
    median,
    ...(percentiles["90"] !== undefined && { p90: percentiles["90"] }),
    ...(percentiles["95"] !== undefined && { p95: percentiles["95"] }),
    ...(percentiles["99"] !== undefined && { p99: percentiles["99"] }),
    percentiles,
  };
}

function trimPercent(p: string): string {
  return String(Number(p));
}

function toMs(value: number, unit: string | undefined): number {
  if (unit === "s") return value * 1000;
  if (unit === "us") return value / 1000;
  return value;
}

// iostreams print non-finite values as nan/inf, which Number() does not read.
function toNumber(token: string): number {
  const t = token.toLowerCase();
  if (t.endsWith("nan")) return NaN;
  if (t.endsWith("inf")) return t.startsWith("-") ? -Infinity : Infinity;
  return Number(token);
}
