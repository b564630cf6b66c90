import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import type { Output } from "../cli/output.js";
import { maxModelLength } from "../checkpoint/config.js";
import { UsageError } from "../errors.js";
import { isEngineFile } from "../runners/load-embedder.js";
import { readTextsFile } from "../util/texts-file.js";
import { writeOutputFile } from "../util/atomic.js";
import { assertInputFile, checkOutputPaths } from "../util/io-paths.js";
import { isDir } from "../util/fs.js";
import { MatMulCeiling, flopsPerSequence } from "../bench/ceiling.js";
import { renderBenchChart } from "../bench/chart.js";
import { benchGrid } from "../bench/grid.js";
import { OnnxBench } from "../bench/onnx-bench.js";
import { BENCH_FORMAT, machineInfo, renderBenchTable, type BenchModel, type BenchReport, type BenchRow } from "../bench/report.js";
import { latencyStats, peakRssBytes, timeInterleaved, type TimingPlan } from "../bench/timing.js";
import { TrtBench } from "../bench/trt-bench.js";
import { versionString } from "../trt/discover-trtexec.js";

export interface BenchCommandOptions {
  target: string;
  /** Which models of an artifact folder (default: its fp32, else the first listed). */
  precision?: string[];
  batch: number[];
  seq: number[];
  backend?: "onnx" | "trt";
  trtexec?: string;
  /** @default os.availableParallelism() */
  threads?: number;
  warmup: number;
  runs: number;
  seconds?: number;
  texts?: string;
  report?: string;
  chart?: string;
}

/**
 * `bge bench`: latency and throughput of each precision over a batch × sequence grid, and — measured
 * in the same run, on the same runtime and threads — the MatMul ceiling those shapes allow, so that
 * every figure also reads as a fraction of what this machine can do.
 */
export async function benchCommand(options: BenchCommandOptions, out: Output): Promise<void> {
  const backend = options.backend ?? ((await isEngineFile(options.target)) ? "trt" : "onnx");
  if (options.trtexec !== undefined && backend !== "trt") throw new UsageError(`--trtexec ${options.trtexec} applies to --backend trt only`);
  if (options.texts !== undefined && backend === "trt") throw new UsageError(`--texts times tokenisation, inference and pooling in this process; with --backend trt trtexec times the engine alone: drop --texts or use --backend onnx`);
  const outputs = [
    ...(options.report !== undefined ? [{ path: options.report, flag: "--report", kind: "file" as const }] : []),
    ...(options.chart !== undefined ? [{ path: options.chart, flag: "--chart", kind: "file" as const }] : []),
  ];
  const full = resolve(options.target);
  await checkOutputPaths(outputs, [
    { path: full, what: (await isDir(full)) ? "artifact folder" : "model file", kind: (await isDir(full)) ? "dir" : "file" },
    ...(options.texts !== undefined ? [{ path: options.texts, what: "texts file", kind: "file" as const }] : []),
  ]);
  if (options.texts !== undefined) await assertInputFile(options.texts, "texts file");
  const texts = options.texts !== undefined ? await readTextsFile(options.texts) : undefined;
  if (texts && texts.length === 0) throw new UsageError(`--texts ${options.texts}: no texts in it`);

  const threads = options.threads ?? availableParallelism();
  const plan: TimingPlan = { warmup: options.warmup, runs: options.runs, ...(options.seconds !== undefined && { seconds: options.seconds }) };
  const precisions: (string | undefined)[] = options.precision ?? [undefined];
  const machine = await machineInfo();
  const rows: BenchRow[] = [];
  const models: BenchModel[] = [];
  let ceiling: MatMulCeiling | undefined;
  let ceilingFor: string | undefined;
  const label = options.target.replace(/\/+$/, "").split("/").pop() || options.target;
  try {
    for (const precision of precisions) {
      const model = backend === "trt" ? await TrtBench.open(options.target, precision, options.trtexec, Math.max(...options.seq)) : await OnnxBench.open(options.target, precision, threads);
      const cfg = model.spec.config;
      const grid = benchGrid(options.batch, options.seq, {
        maxSeq: maxModelLength(cfg),
        maxSeqWhy: `max_position_embeddings ${cfg.maxPositionEmbeddings}${cfg.positionOffset ? ` - offset ${cfg.positionOffset}` : ""}`,
        ...(model instanceof TrtBench && { profile: { ...model.profile, engine: model.path } }),
      });
      if (model instanceof TrtBench) machine.trtexec = { path: model.trtexec.path, version: versionString(model.trtexec) };
      // One pair of ceiling graphs per model shape, shared by its precisions (ONNX Runtime only: its own MatMul).
      const shapeKey = `${cfg.numLayers}/${cfg.hiddenSize}/${cfg.intermediateSize}`;
      if (model instanceof OnnxBench && ceilingFor !== shapeKey) {
        await ceiling?.release();
        ceiling = await MatMulCeiling.create(cfg, threads);
        ceilingFor = shapeKey;
      }
      out.info(`${label} ${model.precision} (${backend}): ${grid.length} grid point${grid.length === 1 ? "" : "s"}, ${threads} thread${threads === 1 ? "" : "s"}`);
      for (const point of grid) {
        let row: BenchRow;
        if (model instanceof OnnxBench) {
          // The model's runs take turns with the ceiling's, so both see the same load.
          const probe = ceiling!.at(point);
          const [modelMs, hiddenMs, intermediateMs] = await timeInterleaved([model.syntheticRun(point), ...probe.runs], plan);
          const t = latencyStats(modelMs!);
          const c = probe.result(hiddenMs!, intermediateMs!);
          const sps = (point.batch * 1000) / t.p50Ms;
          row = {
            artifact: label, precision: model.precision, backend, mode: "synthetic", batch: point.batch, seq: point.seq,
            latencyMs: { runs: t.runs, mean: t.meanMs, p50: t.p50Ms, p95: t.p95Ms, p99: t.p99Ms },
            sequencesPerSecond: sps, tokensPerSecond: sps * point.seq, modelFlops: sps * flopsPerSequence(cfg, point.seq),
            ceiling: { sequencesPerSecond: c.sequencesPerSecond, flops: c.flops, hiddenFlops: c.hiddenFlops, intermediateFlops: c.intermediateFlops },
            pctOfCeiling: (100 * sps) / c.sequencesPerSecond,
            peakRssBytes: peakRssBytes(),
          };
        } else {
          const t = await model.timePoint(point, plan);
          row = {
            artifact: label, precision: model.precision, backend, mode: "synthetic", batch: point.batch, seq: point.seq,
            latencyMs: { runs: t.inferences, ...t.latencyMs }, gpuComputeMs: t.gpuComputeMs,
            sequencesPerSecond: t.sequencesPerSecond, tokensPerSecond: t.sequencesPerSecond * point.seq, modelFlops: t.sequencesPerSecond * flopsPerSequence(cfg, point.seq),
            peakRssBytes: peakRssBytes(),
          };
        }
        rows.push(row);
        out.info(`  batch ${point.batch} × seq ${point.seq}: p50 ${row.latencyMs.p50.toFixed(2)} ms, ${row.sequencesPerSecond.toFixed(1)} seq/s${row.pctOfCeiling !== undefined ? `, ${row.pctOfCeiling.toFixed(1)}% of ceiling` : ""}`);
      }
      if (texts && model instanceof OnnxBench) {
        for (const batch of options.batch) {
          const t = await model.timeTexts(texts, batch, plan);
          const sps = (t.texts * 1000) / t.latency.p50Ms;
          rows.push({
            artifact: label, precision: model.precision, backend, mode: "texts", batch, seq: t.meanSeq,
            latencyMs: { runs: t.latency.runs, mean: t.latency.meanMs, p50: t.latency.p50Ms, p95: t.latency.p95Ms, p99: t.latency.p99Ms },
            sequencesPerSecond: sps, tokensPerSecond: (t.tokens * 1000) / t.latency.p50Ms, modelFlops: sps * flopsPerSequence(cfg, t.meanSeq),
            split: { texts: t.texts, tokenizeMs: t.tokenizeMs, runMs: t.runMs, poolMs: t.poolMs },
            peakRssBytes: peakRssBytes(),
          });
          out.info(`  texts, batch ${batch}: ${t.texts} texts in ${t.latency.p50Ms.toFixed(1)} ms (tokenise ${t.tokenizeMs.toFixed(1)}, run ${t.runMs.toFixed(1)}, pool ${t.poolMs.toFixed(1)})`);
        }
      }
      const rss = peakRssBytes();
      models.push({
        artifact: label, precision: model.precision, backend, path: model.path, weightsBytes: model.weightsBytes,
        config: { layers: cfg.numLayers, hidden: cfg.hiddenSize, intermediate: cfg.intermediateSize, maxSeq: maxModelLength(cfg) },
        peakRssBytes: rss, rssOverWeights: rss / model.weightsBytes,
      });
      if (model instanceof OnnxBench) await model.release();
    }
  } finally {
    await ceiling?.release();
  }

  const report: BenchReport = {
    format: BENCH_FORMAT,
    created: new Date().toISOString(),
    machine,
    settings: {
      backend, threads, warmup: plan.warmup,
      ...(plan.seconds !== undefined ? { seconds: plan.seconds } : { runs: plan.runs }),
      batches: options.batch, seqs: options.seq,
      ...(options.texts !== undefined && { texts: options.texts }),
    },
    models,
    rows,
  };
  if (options.report !== undefined) await writeOutputFile(options.report, JSON.stringify(report, null, 2) + "\n");
  if (options.chart !== undefined) await writeOutputFile(options.chart, renderBenchChart(report));
  out.result(renderBenchTable(report), report);
}
