import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ModelSpec } from "../checkpoint/model-spec.js";
import { BgeError, ToolFailedError } from "../errors.js";
import { loadEmbedder } from "../runners/load-embedder.js";
import type { ProfileCorner, TrtEmbedder } from "../runners/trt-embedder.js";
import { runTrtexec, trtexecFailure } from "../trt/build-engine.js";
import type { TrtexecInfo } from "../trt/discover-trtexec.js";
import { writeEngineInputs } from "../trt/run-engine.js";
import { parseExportTimes, type Percentiles } from "../trt/export-timing.js";
import { parseTrtexecLog } from "../trt/trtexec-log.js";
import { loadCheckedTokenizer, type FlagTokenizer } from "../tokenize/flag-tokenizer.js";
import { trackTempPath } from "../util/interrupt.js";
import { syntheticRows, type GridPoint } from "./grid.js";
import type { TimingPlan } from "./timing.js";

export interface TrtPointTiming {
  /** trtexec's throughput: enqueues (batches) per second. */
  qps: number;
  sequencesPerSecond: number;
  latencyMs: { mean: number; p50: number; p95: number; p99: number };
  gpuComputeMs: { mean: number; p50: number; p95: number; p99: number };
  /** How many timed inferences the percentiles are over (trtexec --exportTimes). */
  inferences: number;
  /** The trtexec argument list as run (temporary input paths included). */
  args: string[];
}

/**
 * One TensorRT engine of an artifact, timed by trtexec itself: for each grid point, one trtexec run
 * with the point's shapes and synthetic inputs of exact length; its performance summary gives
 * throughput (qps × batch → sequences/s), its --exportTimes file the latency and GPU compute
 * percentiles over every timed inference.
 */
export class TrtBench {
  private constructor(
    readonly path: string,
    readonly precision: string,
    readonly spec: ModelSpec,
    readonly weightsBytes: number,
    readonly trtexec: TrtexecInfo,
    readonly profile: { min: ProfileCorner; opt: ProfileCorner; max: ProfileCorner },
    private readonly inputNames: readonly string[],
    private readonly tokenizer: FlagTokenizer,
  ) {}

  /** `longestSeq`: the grid's longest sequence, so that an artifact's named profile (bge-m3's 8192) is timed where the default engine cannot take it. */
  static async open(target: string, precision: string | undefined, trtexec: string | undefined, longestSeq?: number): Promise<TrtBench> {
    const loaded = await loadEmbedder(target, { backend: "trt", precision, trtexec, ...(longestSeq !== undefined ? { engineSequence: longestSeq } : {}) });
    const e = loaded.embedder as TrtEmbedder;
    const tokenizer = await loadCheckedTokenizer(loaded.spec.dir, loaded.spec.config.vocabSize);
    const weightsBytes = (await stat(e.enginePath)).size;
    return new TrtBench(e.enginePath, e.precision, loaded.spec, weightsBytes, e.trtexec, e.profile, e.inputNames, tokenizer);
  }

  async timePoint(point: GridPoint, plan: TimingPlan): Promise<TrtPointTiming> {
    const rows = syntheticRows(point, this.spec.config.vocabSize, this.tokenizer.padId, { first: this.tokenizer.clsId, last: this.tokenizer.sepId });
    const dir = await mkdtemp(join(tmpdir(), "bge-bench-trt-"));
    const untrack = trackTempPath(dir);
    try {
      const args = [
        `--loadEngine=${this.path}`,
        ...(await writeEngineInputs(dir, this.trtexec, this.inputNames, rows, this.tokenizer.padId, point.seq)),
        // trtexec warms up by time (ms), not by runs; a run count becomes --iterations with no minimum duration.
        `--warmUp=${plan.warmup > 0 ? 200 : 0}`,
        ...(plan.seconds !== undefined ? [`--duration=${plan.seconds}`] : [`--iterations=${plan.runs}`, "--duration=0"]),
        "--avgRuns=1",
        // Every timed inference, for percentiles over all of them (the summary's are of averaged groups).
        `--exportTimes=${join(dir, "times.json")}`,
      ];
      const run = await runTrtexec(this.trtexec, args, 600_000);
      if (run.signal) throw trtexecFailure(this.trtexec, args, run, `was killed by ${run.signal}`);
      if (run.code !== 0) throw trtexecFailure(this.trtexec, args, run, `exited with ${run.code}`);
      const log = parseTrtexecLog(run.log);
      if (log.status === "failed") throw trtexecFailure(this.trtexec, args, run, "reported FAILED");
      const s = log.summary;
      if (!s || !(s.throughputQps > 0)) throw trtexecFailure(this.trtexec, args, run, "printed no performance summary");
      const times = parseExportTimes(await readFile(join(dir, "times.json"), "utf8").catch(() => {
        throw trtexecFailure(this.trtexec, args, run, "wrote no --exportTimes file");
      }), `trtexec --exportTimes of ${this.path}`);
      return {
        qps: s.throughputQps,
        sequencesPerSecond: s.throughputQps * point.batch,
        latencyMs: fromTimes(times.latency),
        gpuComputeMs: fromTimes(times.compute),
        inferences: times.inferences.length,
        args,
      };
    } catch (err) {
      if (err instanceof BgeError) throw err;
      throw new ToolFailedError(`trtexec timing run on ${this.path} failed: ${(err as Error).message}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
      untrack();
    }
  }
}

function fromTimes(p: Percentiles): TrtPointTiming["latencyMs"] {
  return { mean: p.mean, p50: p.p50, p95: p.p95, p99: p.p99 };
}
