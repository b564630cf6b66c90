import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { EncoderConfig } from "../checkpoint/config.js";
import { GraphBuilder } from "../onnx/graph-builder.js";
import { OnnxType } from "../onnx/proto.js";
import { writeOnnxModel } from "../onnx/write-model.js";
import { executionProviders, ort } from "../runners/ort.js";
import { trackTempPath } from "../util/interrupt.js";
import type { GridPoint } from "./grid.js";
import { latencyStats } from "./timing.js";

/**
 * The floating-point work of one sequence of `seq` tokens through the encoder's layers (docs/PERFORMANCE.md):
 * per layer the Q, K, V and output projections (4 GEMMs of seq×H by H×H: 8·L·H²), the feed-forward
 * pair (seq×H by H×I and back: 4·L·H·I) and attention's two batched products (QKᵀ and AV: 4·L²·H),
 * a multiply-add counted as 2. With I = 4H this is layers·(24·L·H² + 4·L²·H). Embeddings, layer
 * norms, softmax and GELU are left out: they are O(L·H), not GEMMs.
 */
export function flopsPerSequence(config: Pick<EncoderConfig, "numLayers" | "hiddenSize" | "intermediateSize">, seq: number): number {
  const { numLayers: n, hiddenSize: H, intermediateSize: I } = config;
  return n * (8 * seq * H * H + 4 * seq * H * I + 4 * seq * seq * H);
}

export interface CeilingPoint {
  /** MatMul rate of M×H by H×H and of M×H by H×I (M = batch·seq rows), in FLOP/s. */
  hiddenFlops: number;
  intermediateFlops: number;
  /** What the model's GEMMs would sustain at those rates: its FLOP/s and sequences per second. */
  flops: number;
  sequencesPerSecond: number;
}

/**
 * The machine's own ceiling, measured in the same run on the same runtime and thread count: ONNX
 * graphs of MatMuls only (written with bge's ONNX writer) in the model's GEMM shapes, run in ONNX
 * Runtime at batch·seq rows, each run taking turns with one of the model's. One graph chains the layers' M×H by H×H products (4 per layer), the other
 * the feed-forward pairs (H×I then I×H, 2 per layer), so one session.run does as many GEMMs as the
 * model does and its fixed cost per run weighs the same. The weights are shared within a graph:
 * a best case for caches, as a ceiling should be. One session per graph, reused across the grid.
 */
export class MatMulCeiling {
  private constructor(
    private readonly config: Pick<EncoderConfig, "numLayers" | "hiddenSize" | "intermediateSize">,
    private readonly hidden: ort.InferenceSession,
    private readonly intermediate: ort.InferenceSession,
  ) {}

  static async create(config: Pick<EncoderConfig, "numLayers" | "hiddenSize" | "intermediateSize">, threads: number): Promise<MatMulCeiling> {
    const dir = await mkdtemp(join(tmpdir(), "bge-bench-ceiling-"));
    const untrack = trackTempPath(dir);
    try {
      const H = config.hiddenSize;
      const I = config.intermediateSize;
      const open = async (name: string, widths: number[]) => {
        const path = join(dir, `${name}.onnx`);
        await writeOnnxModel(path, matMulChain(name, H, widths), { opset: 17, producerName: "bge", producerVersion: "bench" });
        return ort.InferenceSession.create(path, { graphOptimizationLevel: "all", executionMode: "sequential", intraOpNumThreads: threads, interOpNumThreads: 1, executionProviders: executionProviders() });
      };
      const n = config.numLayers;
      const hidden = await open("matmul-hidden", Array.from({ length: 4 * n }, () => H));
      const intermediate = await open("matmul-intermediate", Array.from({ length: 2 * n }, (_, i) => (i % 2 === 0 ? I : H)));
      return new MatMulCeiling(config, hidden, intermediate);
    } finally {
      await rm(dir, { recursive: true, force: true });
      untrack();
    }
  }

  /**
   * The two runs that measure the ceiling at one grid point, and how their times become a CeilingPoint:
   * the caller times them (interleaved with the model's own runs, so both see the same load).
   */
  at(point: GridPoint): { runs: [() => Promise<unknown>, () => Promise<unknown>]; result: (hiddenMs: readonly number[], intermediateMs: readonly number[]) => CeilingPoint } {
    const M = point.batch * point.seq;
    const H = this.config.hiddenSize;
    const I = this.config.intermediateSize;
    const n = this.config.numLayers;
    const x = new ort.Tensor("float32", filled(M * H, 3, 1), [M, H]);
    return {
      runs: [() => this.hidden.run({ x }), () => this.intermediate.run({ x })],
      result: (hiddenMs, intermediateMs) => {
        const hiddenFlops = (4 * n * 2 * M * H * H) / (latencyStats(hiddenMs).p50Ms / 1000);
        const intermediateFlops = (2 * n * 2 * M * H * I) / (latencyStats(intermediateMs).p50Ms / 1000);
        const L = point.seq;
        // Seconds per sequence at the measured rates; attention's products run at the H×H rate.
        const secondsPerSequence = n * ((8 * L * H * H + 4 * L * L * H) / hiddenFlops + (4 * L * H * I) / intermediateFlops);
        const sequencesPerSecond = 1 / secondsPerSequence;
        return { hiddenFlops, intermediateFlops, sequencesPerSecond, flops: flopsPerSequence(this.config, L) * sequencesPerSecond };
      },
    };
  }

  async release(): Promise<void> {
    await this.hidden.release();
    await this.intermediate.release();
  }
}

/**
 * x [rows, k] (rows dynamic) through MatMuls of widths w₁, w₂, …: y₁ = x·W(k×w₁), y₂ = y₁·W(w₁×w₂), …
 * Each distinct weight shape is one float32 initializer, scaled so values neither grow nor vanish.
 */
export function matMulChain(name: string, k: number, widths: readonly number[]): GraphBuilder {
  const g = new GraphBuilder(name);
  let value = g.input("x", OnnxType.FLOAT, ["rows", k]);
  const weights = new Map<string, string>();
  let from = k;
  widths.forEach((to, i) => {
    const [rows, cols, seed] = [from, to, 7 + weights.size];
    const key = `w_${rows}x${cols}`;
    if (!weights.has(key)) weights.set(key, g.initializer(key, OnnxType.FLOAT, [rows, cols], () => new Uint8Array(filled(rows * cols, seed, Math.sqrt(12 / rows)).buffer)));
    value = g.op("MatMul", `/matmul.${i}`, [value, weights.get(key)!]);
    from = to;
  });
  g.node("Identity", "/output", [value], {}, ["y"]);
  g.output("y", OnnxType.FLOAT, ["rows", from]);
  return g;
}

/** Deterministic values uniform in [-scale/2, scale/2): ordinary numbers, no zeros or denormals to take a fast path. */
function filled(count: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * scale;
  }
  return a;
}
