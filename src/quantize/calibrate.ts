import { readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { dirname, join, resolve } from "node:path";
import { MANIFEST_NAME, readManifest } from "../artifacts/manifest.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { UsageError } from "../errors.js";
import { ModelProto, OnnxType } from "../onnx/proto.js";
import { ort } from "../runners/ort.js";
import { loadCheckedTokenizer } from "../tokenize/flag-tokenizer.js";
import { isFile } from "../util/fs.js";
import { entropyThreshold } from "./entropy.js";
import { AbsHistogram } from "./histogram.js";
import { calibrationTensors, findQuantTargets, type QuantTarget } from "./targets.js";
import { encoderFeeds } from "../runners/feeds.js";
import { forEachTokenRun, tokenLayout, type TokenLayout } from "./token-runs.js";

export type CalibrationMethod = "minmax" | "percentile" | "entropy";
export const CALIBRATION_METHODS: readonly CalibrationMethod[] = ["minmax", "percentile", "entropy"];

export interface CalibrateOptions {
  /** The artifact's fp32 graph (model.fp32.onnx). */
  modelPath: string;
  /** The artifact folder: tokenizer, config.json, and the manifest's max_length. */
  artifactDir: string;
  /** Calibration corpus, encoded as FlagModel encodes passages (no instruction). */
  texts: readonly string[];
  method: CalibrationMethod;
  /** For `percentile`: the share of |x| kept below amax. @default 99.99 */
  percentile?: number;
  /** Texts per ONNX Runtime run at most (fewer for long texts, see memoryBudget). @default 16 */
  batchSize?: number;
  /** @default the manifest's max_length, else the spec's (FlagModel's 512, within the position table) */
  maxLength?: number;
  /** @default os.availableParallelism() */
  threads?: number;
  /**
   * Bytes of exposed tensors one run may return: every quantised tensor of every layer comes back at
   * once, attention probabilities growing with seq², so long texts get smaller batches and, when one
   * text alone exceeds it, the tensors are fetched in groups over repeated runs. @default 512 MiB
   */
  memoryBudget?: number;
  /**
   * Tensors to calibrate besides the QDQBERT targets (the naive test graph's LayerNorm and Softmax
   * tensors), with where their token positions are.
   */
  extraTensors?: readonly { name: string; layout: TokenLayout }[];
  /** Histogram bins per tensor. @default 8192 */
  histogramBins?: number;
  /**
   * Also keep max|x| per input channel of every linear layer's input (one float per channel: what
   * SmoothQuant needs to find outlier channels, smooth.ts). @default false
   */
  channelAbsMax?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface TensorCalibration {
  /** The |x| that maps to int8 ±127 (scale = amax/127). */
  amax: number;
  /** Smallest and largest value seen (padding excluded). */
  min: number;
  max: number;
  method: CalibrationMethod;
  /** Values counted. */
  count: number;
}

/** What was collected for one tensor: enough to derive amax by any method without running again. */
export interface TensorStatistics {
  min: number;
  max: number;
  histogram: AbsHistogram;
  /** max|x| per channel (last axis) over real tokens: linear inputs, when channelAbsMax was asked for. */
  channelAbsMax?: Float32Array;
}

export interface CalibrationSummary {
  texts: number;
  /** Real tokens (padding excluded), summed over texts. */
  tokens: number;
  seconds: number;
  method: CalibrationMethod;
  percentile?: number;
  maxLength: number;
  /** ONNX Runtime runs (batches, times fetch groups). */
  runs: number;
}

export interface CalibrationResult {
  tensors: Map<string, TensorCalibration>;
  statistics: Map<string, TensorStatistics>;
  targets: QuantTarget[];
  summary: CalibrationSummary;
}

/** TensorRT's entropy calibration works on 2048 bins over [0, max|x|]. */
const ENTROPY_BINS = 2048;

/** amax of one tensor by `method` from its collected statistics. */
export function amaxFromStatistics(stats: TensorStatistics, method: CalibrationMethod, percentile = 99.99): number {
  const h = stats.histogram;
  if (method === "minmax") return Math.max(Math.abs(stats.min), Math.abs(stats.max));
  if (method === "percentile") return h.percentile(percentile);
  if (h.maxAbs === 0) return 0;
  const { bins } = entropyThreshold(h.resample(ENTROPY_BINS, h.maxAbs));
  return (bins * h.maxAbs) / ENTROPY_BINS;
}

interface Probe {
  name: string;
  layout: TokenLayout;
  /** Float32s per text: perToken·S + perTokenSq·S². */
  perToken: number;
  perTokenSq: number;
}

interface GraphLike {
  node?: { opType?: string; input?: string[]; output?: string[] }[];
  initializer?: { name?: string; dims?: (number | { toNumber(): number })[]; dataType?: number; dataLocation?: number; externalData?: { key?: string; value?: string }[] }[];
  output: { name?: string; type?: unknown }[];
}

/**
 * Runs the fp32 graph over the calibration texts with every tensor INT8 will quantise (QDQBERT
 * placement, targets.ts) exposed as an extra output, and keeps per tensor min, max and a histogram
 * of |x| over real tokens only; amax follows by `method`. Texts are sorted by length (longest first)
 * and batched, so batches pad little; what padding remains is skipped by shape (token-runs.ts),
 * which makes a batch calibrate exactly like its texts run one by one.
 */
export async function calibrate(options: CalibrateOptions): Promise<CalibrationResult> {
  const started = performance.now();
  const method = options.method;
  if (!CALIBRATION_METHODS.includes(method)) throw new UsageError(`--method ${String(method)}: choose one of ${CALIBRATION_METHODS.join(", ")}`);
  const percentile = options.percentile ?? 99.99;
  if (method === "percentile" && !(percentile > 0 && percentile <= 100)) throw new UsageError(`--percentile ${percentile}: expected a number in (0, 100]`);
  const batchSize = options.batchSize ?? 16;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new UsageError(`batch size must be a positive integer, got ${batchSize}`);
  if (options.texts.length === 0) throw new UsageError("the calibration corpus is empty: give at least one text");
  const budget = options.memoryBudget ?? 512 * 1024 * 1024;

  const dir = options.artifactDir;
  const manifest = (await isFile(join(dir, MANIFEST_NAME))) ? await readManifest(dir) : undefined;
  const spec = await readModelSpec(dir, { id: manifest?.source.model_id, maxLength: options.maxLength ?? manifest?.max_length });
  const tokenizer = await loadCheckedTokenizer(dir, spec.config.vocabSize);
  // FlagModel's encode/encode_corpus: passages get no instruction; truncation keeps [CLS] … [SEP].
  const ids = options.texts.map((t) => tokenizer.encode(t, spec.maxLength));

  const bytes = await readFile(options.modelPath);
  const model = ModelProto.decode(bytes) as unknown as { graph: GraphLike };
  const graph = model.graph;
  const targets = findQuantTargets(graph as never);
  if (!targets.length) throw new UsageError(`${options.modelPath}: no linear layers or attention MatMuls named as bge export names them: calibrate the model.fp32.onnx of a bge artifact`);
  const probes = probesOf(graph, targets, spec.config.hiddenSize, spec.config.numHeads, options.extraTensors ?? []);
  const weights = new Map((graph.initializer ?? []).map((t) => [t.name, t]));
  const notFloat = targets.find((t) => t.weight && weights.get(t.weight)?.dataType !== OnnxType.FLOAT);
  if (notFloat) throw new UsageError(`${options.modelPath}: ${notFloat.weight} is not float32: calibrate the fp32 graph (model.fp32.onnx)`);

  const existing = new Set(graph.output.map((o) => o.name));
  graph.output = [...graph.output, ...probes.filter((p) => !existing.has(p.name)).map((p) => ({ name: p.name, type: { tensorType: { elemType: OnnxType.FLOAT } } }))];
  const session = await openSession(ModelProto.encode(ModelProto.fromObject(model as never)).finish(), options.modelPath, graph, options.threads);

  const stats = new Map<string, TensorStatistics>(probes.map((p) => [p.name, { min: Infinity, max: -Infinity, histogram: new AbsHistogram(options.histogramBins) }]));
  if (options.channelAbsMax) {
    for (const p of probes) if (p.layout.kind === "rows" && p.perToken > 0 && p.perTokenSq === 0) stats.get(p.name)!.channelAbsMax = new Float32Array(p.perToken);
  }
  const order = ids.map((_, i) => i).sort((a, b) => ids[b]!.length - ids[a]!.length || a - b);
  const perText = (S: number, group: readonly Probe[]) => group.reduce((sum, p) => sum + 4 * S * (p.perToken + p.perTokenSq * S), 0);
  let runs = 0;
  let tokens = 0;
  try {
    for (let start = 0; start < order.length; ) {
      const S = ids[order[start]!]!.length; // longest of this batch: the order is by length, descending
      const B = Math.min(batchSize, order.length - start, Math.max(1, Math.floor(budget / perText(S, probes))));
      const batch = order.slice(start, start + B).map((i) => ids[i]!);
      const lengths = batch.map((row) => row.length);
      const feeds = encoderFeeds(batch, tokenizer.padId, session.inputNames, S);
      for (const group of fetchGroups(probes, (g) => B * perText(S, g), budget)) {
        const out = await session.run(feeds, group.map((p) => p.name));
        runs++;
        for (const p of group) collect(p, out[p.name]!, lengths, S, stats.get(p.name)!);
      }
      tokens += lengths.reduce((a, b) => a + b, 0);
      start += B;
      options.onProgress?.(start, order.length);
    }
  } finally {
    await session.release();
  }

  const tensors = new Map<string, TensorCalibration>();
  const probabilities = new Set((graph.node ?? []).filter((n) => n.opType === "Softmax").flatMap((n) => n.output ?? []));
  for (const [name, s] of stats) {
    // Attention probabilities live in [0, 1] by construction: their range is that bound, not what
    // the corpus showed. A clipped range flattens every confident attention row: entropy picks ~0.3
    // on them, and even the corpus maximum (0.87 on the bge-small-zh fixture) clipped the near-certain
    // rows of 2-token texts, which alone failed the int8 gate (Q/DQ graph on the bge-small-zh fixture,
    // seed 42: min cosine 0.979 with the corpus maximum, 0.999 with amax 1).
    const bound = probabilities.has(name);
    const m = bound ? "minmax" : method;
    tensors.set(name, { amax: bound ? 1 : amaxFromStatistics(s, m, percentile), min: s.min, max: s.max, method: m, count: s.histogram.total });
  }
  const summary: CalibrationSummary = {
    texts: options.texts.length,
    tokens,
    seconds: (performance.now() - started) / 1000,
    method,
    ...(method === "percentile" ? { percentile } : {}),
    maxLength: spec.maxLength,
    runs,
  };
  return { tensors, statistics: stats, targets, summary };
}

/** One probe per calibrated tensor, with its token layout and its size per text. */
function probesOf(graph: GraphLike, targets: readonly QuantTarget[], hidden: number, heads: number, extra: readonly { name: string; layout: TokenLayout }[]): Probe[] {
  const dims = new Map((graph.initializer ?? []).map((t) => [t.name, (t.dims ?? []).map(Number)]));
  const probes = new Map<string, Probe>();
  for (const t of targets) {
    t.activations.forEach((name, k) => {
      if (probes.has(name)) return;
      const layout = tokenLayout(t, k);
      // A linear input is [tokens, in] with the weight stored [out, in]; attention inputs are `hidden`
      // wide per token, except the probabilities: heads × S per token.
      const perToken = layout.kind === "rows" ? (dims.get(t.weight)?.[1] ?? hidden) : layout.axis2 && layout.axis3 ? 0 : hidden;
      probes.set(name, { name, layout, perToken, perTokenSq: layout.kind === "rank4" && layout.axis2 && layout.axis3 ? heads : 0 });
    });
  }
  for (const e of extra) {
    if (probes.has(e.name)) continue;
    const both = e.layout.kind === "rank4" && e.layout.axis2 && e.layout.axis3;
    probes.set(e.name, { name: e.name, layout: e.layout, perToken: both ? 0 : hidden, perTokenSq: both ? heads : 0 });
  }
  const order = [...new Set([...calibrationTensors(targets), ...extra.map((e) => e.name)])];
  return order.map((n) => probes.get(n)!);
}

/** Consecutive groups of probes whose outputs fit the budget together (a probe alone always runs). */
function fetchGroups(probes: readonly Probe[], bytes: (group: readonly Probe[]) => number, budget: number): Probe[][] {
  if (bytes(probes) <= budget) return [[...probes]];
  const groups: Probe[][] = [];
  let current: Probe[] = [];
  for (const p of probes) {
    if (current.length && bytes([...current, p]) > budget) {
      groups.push(current);
      current = [];
    }
    current.push(p);
  }
  if (current.length) groups.push(current);
  return groups;
}

/** Min, max and |x| histogram of one output over the real tokens of a batch. */
function collect(probe: Probe, tensor: ort.Tensor, lengths: readonly number[], seq: number, s: TensorStatistics): void {
  const data = tensor.data as Float32Array;
  const dims = tensor.dims.map(Number);
  const ranges: number[] = [];
  forEachTokenRun(probe.name, dims, probe.layout, lengths, seq, (from, to) => void ranges.push(from, to));
  // The scan runs here, not in the callback: variables a closure mutates live in its context object,
  // which made this loop several times slower.
  let min = Infinity;
  let max = -Infinity;
  let poison = 0;
  for (let r = 0; r < ranges.length; r += 2) {
    const to = ranges[r + 1]!;
    for (let i = ranges[r]!; i < to; i++) {
      const v = data[i]!;
      if (v < min) min = v;
      if (v > max) max = v;
      poison += v * 0; // NaN for a NaN or ±inf value, else 0
    }
  }
  if (Number.isNaN(poison)) throw new UsageError(`calibration: ${probe.name} holds NaN or infinite values in the fp32 graph; the model cannot be quantised from these texts`);
  if (min < s.min) s.min = min;
  if (max > s.max) s.max = max;
  const channels = s.channelAbsMax;
  if (channels) {
    // Token runs of a `rows` tensor are whole rows of `width` channels.
    const width = channels.length;
    if (dims.at(-1) !== width) throw new Error(`${probe.name}: last axis ${dims.at(-1)} is not its ${width} input channels`);
    for (let r = 0; r < ranges.length; r += 2) {
      const to = ranges[r + 1]!;
      for (let row = ranges[r]!; row < to; row += width) {
        for (let c = 0; c < width; c++) {
          const a = Math.abs(data[row + c]!);
          if (a > channels[c]!) channels[c] = a;
        }
      }
    }
  }
  s.histogram.cover(Math.max(Math.abs(min), Math.abs(max), 0));
  for (let r = 0; r < ranges.length; r += 2) s.histogram.add(data, ranges[r]!, ranges[r + 1]!);
}

/**
 * An ONNX Runtime session on the probed graph, loaded from bytes. Weights kept in external data are
 * looked up beside the original model file (ORT's session.model_external_initializers_file_folder_path:
 * a graph given as bytes has no folder of its own, and ORT refuses data paths that resolve outside it).
 */
async function openSession(model: Uint8Array, modelPath: string, graph: GraphLike, threads: number | undefined): Promise<ort.InferenceSession> {
  const external = (graph.initializer ?? []).some((t) => t.dataLocation === 1);
  try {
    return await ort.InferenceSession.create(model, {
      graphOptimizationLevel: "all",
      executionMode: "sequential",
      intraOpNumThreads: threads ?? availableParallelism(),
      interOpNumThreads: 1,
      ...(external ? { extra: { session: { model_external_initializers_file_folder_path: dirname(resolve(modelPath)) } } } : {}),
    });
  } catch (err) {
    throw new UsageError(`${modelPath}: ONNX Runtime cannot load the graph with its calibration outputs (${(err as Error).message.replace(/\s*\n\s*/g, " ")})`);
  }
}
