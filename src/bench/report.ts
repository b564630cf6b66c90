import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { availableParallelism, cpus, loadavg, totalmem } from "node:os";

export const BENCH_FORMAT = "bge-bench/1";

/** One measured grid point of one model. */
export interface BenchRow {
  /** Which model: the artifact (or file) given, and its precision. */
  artifact: string;
  precision: string;
  backend: "onnx" | "trt";
  /** synthetic: exact-length inputs; texts: a corpus tokenised, run and pooled end to end. */
  mode: "synthetic" | "texts";
  batch: number;
  /** Tokens per sequence (texts: the mean after tokenisation). */
  seq: number;
  latencyMs: { runs?: number; mean: number; p50: number; p95: number; p99: number };
  /** --backend trt: trtexec's GPU compute time per enqueue. */
  gpuComputeMs?: { mean: number; p50: number; p95: number; p99: number };
  sequencesPerSecond: number;
  tokensPerSecond: number;
  /** The model's GEMM work per second at this throughput (FLOPs from the config). */
  modelFlops: number;
  /** The same-run MatMul ceiling at batch·seq rows; absent where none was measured on this runtime. */
  ceiling?: { sequencesPerSecond: number; flops: number; hiddenFlops: number; intermediateFlops: number };
  /** sequencesPerSecond as a percentage of the ceiling's. */
  pctOfCeiling?: number;
  /** --texts: where one pass's time goes (medians, ms per pass). */
  split?: { texts: number; tokenizeMs: number; runMs: number; poolMs: number };
  /** This process's peak RSS when the row was done. */
  peakRssBytes: number;
}

export interface BenchModel {
  artifact: string;
  precision: string;
  backend: "onnx" | "trt";
  path: string;
  /** The ONNX file (with external data) or the engine. */
  weightsBytes: number;
  config: { layers: number; hidden: number; intermediate: number; maxSeq: number };
  /** Peak RSS after the model's last row, and its ratio to the weights' size. */
  peakRssBytes: number;
  rssOverWeights: number;
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  logicalCpus: number;
  isa: string[];
  memoryBytes: number;
  loadAverage: number[];
  node: string;
  onnxruntime: string;
  platform: string;
  trtexec?: { path: string; version: string };
}

export interface BenchReport {
  format: typeof BENCH_FORMAT;
  created: string;
  machine: MachineInfo;
  settings: { backend: "onnx" | "trt"; threads: number; warmup: number; runs?: number; seconds?: number; batches: number[]; seqs: number[]; texts?: string };
  models: BenchModel[];
  rows: BenchRow[];
}

/** The ISA extensions that decide a GEMM's speed on x86 and Arm (the rest of /proc/cpuinfo's flags are noise here). */
const ISA_FLAGS = /^(sse4_1|sse4_2|avx|avx2|fma|f16c|avx512\w*|avx_vnni|amx\w*|neon|asimd\w*|sve\w*|fphp|i8mm|bf16)$/;

export async function machineInfo(): Promise<MachineInfo> {
  const info = await readFile("/proc/cpuinfo", "utf8").catch(() => "");
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, "m").exec(info)?.[1]?.trim();
  const flags = (field("flags") ?? field("Features") ?? "").split(/\s+/).filter((f) => ISA_FLAGS.test(f));
  const physical = new Set([...info.matchAll(/^physical id\s*:\s*(\d+)[\s\S]*?^core id\s*:\s*(\d+)/gm)].map((m) => `${m[1]}:${m[2]}`)).size;
  const require = createRequire(import.meta.url);
  const ortVersion = (require("onnxruntime-node/package.json") as { version: string }).version;
  return {
    cpu: field("model name") ?? cpus()[0]?.model ?? "unknown",
    cores: physical || availableParallelism(),
    logicalCpus: availableParallelism(),
    isa: [...new Set(flags)],
    memoryBytes: totalmem(),
    loadAverage: loadavg().map((x) => Math.round(x * 100) / 100),
    node: process.version,
    onnxruntime: ortVersion,
    platform: `${process.platform}-${process.arch}`,
  };
}

const fmt = (x: number, digits = 1) => (x >= 100 ? x.toFixed(0) : x.toFixed(digits));
/** MiB, with a decimal below 10 (a tiny fixture's 0.3 MiB is not "0 MiB"). */
const mib = (b: number) => `${fmt(b / 2 ** 20, b < 10 * 2 ** 20 ? 1 : 0)} MiB`;

/** The terminal table: one line per row, then memory per model. */
export function renderBenchTable(report: BenchReport): string {
  const head = ["model", "prec", "batch", "seq", "p50 ms", "p95 ms", "p99 ms", "seq/s", "tok/s", "ceiling seq/s", "% ceil"];
  const lines = report.rows.map((r) => [
    r.artifact,
    r.precision,
    String(r.batch),
    r.mode === "texts" ? `~${fmt(r.seq)}` : String(r.seq),
    fmt(r.latencyMs.p50, 2),
    fmt(r.latencyMs.p95, 2),
    fmt(r.latencyMs.p99, 2),
    fmt(r.sequencesPerSecond),
    fmt(r.tokensPerSecond),
    r.ceiling ? fmt(r.ceiling.sequencesPerSecond) : "-",
    r.pctOfCeiling !== undefined ? `${fmt(r.pctOfCeiling)}%` : "-",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const row = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  const out = [row(head), widths.map((w) => "-".repeat(w)).join("  "), ...lines.map(row)];
  const splits = report.rows.filter((r) => r.split);
  if (splits.length) {
    out.push("", "texts end to end (ms per pass: tokenise / run / pool):");
    for (const r of splits) out.push(`  ${r.artifact} ${r.precision} batch ${r.batch}: ${r.split!.texts} texts, ${fmt(r.split!.tokenizeMs, 2)} / ${fmt(r.split!.runMs, 2)} / ${fmt(r.split!.poolMs, 2)}`);
  }
  out.push("");
  for (const m of report.models) {
    out.push(`${m.artifact} ${m.precision}: weights ${mib(m.weightsBytes)}, peak RSS ${mib(m.peakRssBytes)} (${m.rssOverWeights.toFixed(2)}× the weights)`);
  }
  const mc = report.machine;
  out.push(`${mc.cpu}, ${mc.cores} cores, ${report.settings.threads} thread${report.settings.threads === 1 ? "" : "s"}; ${report.settings.backend === "trt" ? "TensorRT through trtexec" : `onnxruntime ${mc.onnxruntime}`}; load average ${mc.loadAverage.join(" ")}`);
  return out.join("\n");
}
