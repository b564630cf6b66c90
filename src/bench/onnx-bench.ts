import { stat } from "node:fs/promises";
import type { ModelSpec } from "../checkpoint/model-spec.js";
import { l2Normalize, poolHidden } from "../reference/pooling.js";
import { encoderFeeds } from "../runners/feeds.js";
import { loadEmbedder } from "../runners/load-embedder.js";
import { executionProviders, ort } from "../runners/ort.js";
import { applyInstruction, loadCheckedTokenizer, type FlagTokenizer } from "../tokenize/flag-tokenizer.js";
import { syntheticRows, type GridPoint } from "./grid.js";
import { latencyStats, timeRuns, type LatencyStats, type TimingPlan } from "./timing.js";

export interface TextsTiming {
  latency: LatencyStats;
  /** Medians over the timed passes, in ms per pass over all texts. */
  tokenizeMs: number;
  runMs: number;
  poolMs: number;
  texts: number;
  /** Tokens the texts hold after tokenisation (padding excluded). */
  tokens: number;
  /** Mean tokens per text. */
  meanSeq: number;
}

/**
 * One ONNX model of an artifact (or a bare .onnx) on ONNX Runtime CPU for the bench: the target is
 * resolved and its hashes checked as `bge embed` does, then one session with the bench's thread count
 * is opened and reused for every grid point.
 */
export class OnnxBench {
  private constructor(
    readonly path: string,
    readonly precision: string,
    readonly spec: ModelSpec,
    readonly weightsBytes: number,
    private readonly session: ort.InferenceSession,
    private readonly tokenizer: FlagTokenizer,
    private readonly output: string,
  ) {}

  static async open(target: string, precision: string | undefined, threads: number): Promise<OnnxBench> {
    const loaded = await loadEmbedder(target, { backend: "onnx", precision, threads: 1 });
    await loaded.embedder.deactivate();
    const path = loaded.target.path;
    const spec = loaded.spec;
    const session = await ort.InferenceSession.create(path, {
      graphOptimizationLevel: "all",
      executionMode: "sequential",
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionProviders: executionProviders(),
    });
    const tokenizer = await loadCheckedTokenizer(spec.dir, spec.config.vocabSize);
    const output = ["sentence_embedding", "last_hidden_state", "token_embeddings"].find((n) => session.outputNames.includes(n)) ?? session.outputNames[0]!;
    const data = await stat(`${path}.data`).catch(() => undefined);
    const weightsBytes = (await stat(path)).size + (data?.size ?? 0);
    const p = loaded.target.precision ?? ("precision" in loaded.embedder ? String(loaded.embedder.precision) : precision ?? "fp32");
    return new OnnxBench(path, p, spec, weightsBytes, session, tokenizer, output);
  }

  /** One session.run on `batch` synthetic sequences of exactly `seq` tokens (feeds made once). */
  syntheticRun(point: GridPoint): () => Promise<unknown> {
    const rows = syntheticRows(point, this.spec.config.vocabSize, this.tokenizer.padId, { first: this.tokenizer.clsId, last: this.tokenizer.sepId });
    const feeds = encoderFeeds(rows, this.tokenizer.padId, this.session.inputNames, point.seq);
    return () => this.session.run(feeds, [this.output]);
  }

  /**
   * Real texts end to end, batched `batchSize` at a time as bge embed batches them (sorted by length,
   * each batch padded to its own longest): one pass tokenises, runs and pools every text, and each
   * part is timed.
   */
  async timeTexts(texts: readonly string[], batchSize: number, plan: TimingPlan): Promise<TextsTiming> {
    const parts = { tokenize: [] as number[], run: [] as number[], pool: [] as number[] };
    let tokens = 0;
    const H = this.spec.config.hiddenSize;
    const pass = async () => {
      let t0 = performance.now();
      const ids = texts.map((t) => this.tokenizer.encode(applyInstruction(t, undefined, "passage"), this.spec.maxLength));
      parts.tokenize.push(performance.now() - t0);
      tokens = ids.reduce((s, r) => s + r.length, 0);
      const order = ids.map((_, i) => i).sort((a, b) => ids[b]!.length - ids[a]!.length || a - b);
      let run = 0;
      let pool = 0;
      for (let start = 0; start < order.length; start += batchSize) {
        const batch = order.slice(start, start + batchSize).map((i) => ids[i]!);
        const S = Math.max(...batch.map((r) => r.length));
        t0 = performance.now();
        const out = await this.session.run(encoderFeeds(batch, this.tokenizer.padId, this.session.inputNames, S), [this.output]);
        run += performance.now() - t0;
        t0 = performance.now();
        const data = out[this.output]!.data as Float32Array;
        batch.forEach((row, r) => {
          if (this.output === "sentence_embedding") Float64Array.from(data.subarray(r * H, (r + 1) * H));
          else {
            const pooled = poolHidden(data.subarray(r * S * H, (r + 1) * S * H), row.length, H, new Array<number>(row.length).fill(1), this.spec.pooling);
            if (this.spec.normalize) l2Normalize(pooled);
          }
        });
        pool += performance.now() - t0;
      }
      parts.run.push(run);
      parts.pool.push(pool);
    };
    const times = await timeRuns(pass, plan);
    const timed = (xs: number[]) => latencyStats(xs.slice(plan.warmup)).p50Ms;
    return {
      latency: latencyStats(times),
      tokenizeMs: timed(parts.tokenize),
      runMs: timed(parts.run),
      poolMs: timed(parts.pool),
      texts: texts.length,
      tokens,
      meanSeq: tokens / Math.max(1, texts.length),
    };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
