import type { GoldenFile } from "../artifacts/golden.js";
import type { ModelSpec } from "../checkpoint/model-spec.js";
import { UsageError } from "../errors.js";
import type { TextKind } from "../runners/embedder.js";
import { diagnose, type DiagnosableCandidate, type Diagnosis } from "./diagnose.js";
import { compareEmbeddings, cosineSimilarity, relativeNormDiff, sameIds, type ComparisonSummary } from "./metrics.js";
import { retrievalAgreement, type RetrievalAgreement } from "./retrieval.js";
import { headTolerance, type HeadTolerance, type Tolerance } from "./tolerances.js";
import { goldenHeads, verifyHeads, type HeadsCandidate, type HeadsReport } from "./heads.js";
import type { Fp16RangeResult } from "./fp16-range.js";

export interface VerifyItem {
  index: number;
  kind: TextKind;
  text: string;
  cosine: number;
  max_abs_diff: number;
  tokens_match: boolean;
  batch_drift: number;
  /** |‖candidate‖ − ‖golden‖| / ‖golden‖ */
  norm_diff: number;
}

export interface VerifyReport {
  pass: boolean;
  tolerance: Tolerance;
  tolerance_notes: string[];
  candidate: { path: string; role: string | null; precision: string; backend: string };
  golden: { path: string; model_id: string; items: number; producer: string };
  /** The runtime settings the candidate ran with. */
  settings: { pooling: string; normalize: boolean; max_length: number; query_instruction: string | null; batch_size: number };
  summary: ComparisonSummary & { token_mismatches: number; topk_agreement: number | null; batch_drift: number; max_norm_diff: number };
  retrieval: RetrievalAgreement | null;
  /** FP16 candidates: tensors that cannot be held in FP16 (see probeFp16Range). */
  fp16_range: Fp16RangeResult | null;
  /** bge-m3's sparse and ColBERT heads, where the golden or the candidate has them. */
  heads: HeadsReport | null;
  /** Which gates said no, in words. */
  failures: string[];
  items: VerifyItem[];
  diagnoses: Diagnosis[];
  seconds: number;
}

/** Failing texts the INT8 layer probe runs (one at a time, through two graphs). */
const INT8_PROBE_TEXTS = 16;

export interface VerifyOptions {
  goldenPath: string;
  candidatePath: string;
  /** The candidate's role in its artifact's manifest (onnx-fp32, …); null for a bare file. */
  candidateRole?: string | null;
  /** Run even when the candidate's settings differ from the golden producer's (a settings diagnosis says how). */
  allowSettingsMismatch?: boolean;
  tolerance: Tolerance;
  toleranceNotes: string[];
  batchSize?: number;
  backend: string;
  onProgress?: (done: number, total: number) => void;
  /** Runs the FP16 range probe over token id batches (FP16 candidates only). */
  probeFp16?: (batches: number[][][]) => Promise<Fp16RangeResult>;
  /** INT8 candidates that fail: which quantised layers lose the most on the failing texts' ids. */
  probeInt8?: (failingIds: number[][]) => Promise<Diagnosis | undefined>;
  /** The gates of bge-m3's sparse and ColBERT heads. @default the candidate precision's */
  headTolerance?: HeadTolerance;
}

/** One runtime setting in which the candidate differs from the golden's producer. */
export interface SettingsDifference {
  setting: "pooling" | "normalize" | "max_length" | "query_instruction";
  golden: string | number | boolean | null;
  candidate: string | number | boolean | null;
  /** "golden was made with pooling mean but the candidate pools cls" */
  message: string;
}

/**
 * Compares the golden's producer settings with the candidate's runtime ones (after verify's
 * --max-length/--instruction). Any difference changes vectors or may do so, so each is reported,
 * max_length too even when every golden text is shorter than both limits: the rule stays simple and
 * predictable. The instruction is compared only when the golden holds queries, the only texts it touches.
 */
export function settingsDifferences(golden: GoldenFile, spec: Pick<ModelSpec, "pooling" | "normalize" | "maxLength" | "queryInstruction">): SettingsDifference[] {
  const p = golden.producer;
  const out: SettingsDifference[] = [];
  const add = (setting: SettingsDifference["setting"], g: SettingsDifference["golden"], c: SettingsDifference["candidate"], message: string) => out.push({ setting, golden: g, candidate: c, message });
  if (p.pooling !== spec.pooling) add("pooling", p.pooling, spec.pooling, `golden was made with pooling ${p.pooling} but the candidate pools ${spec.pooling}`);
  if (p.normalize !== spec.normalize) add("normalize", p.normalize, spec.normalize, `golden was made with normalize ${p.normalize} but the candidate runs with normalize ${spec.normalize}`);
  if (p.max_length !== spec.maxLength) add("max_length", p.max_length, spec.maxLength, `golden was made with max_length ${p.max_length} but the candidate truncates at ${spec.maxLength}`);
  const gi = p.query_instruction ?? null;
  const ci = spec.queryInstruction ?? null;
  if (gi !== ci && golden.items.some((it) => it.kind === "query")) {
    const show = (i: string | null) => (i === null ? "none" : JSON.stringify(i));
    add("query_instruction", gi, ci, `golden was made with query instruction ${show(gi)} but the candidate uses ${show(ci)}`);
  }
  return out;
}

/** Exit 2 naming every difference, for a candidate whose settings differ from the golden's without --allow-settings-mismatch. */
export function refuseSettingsMismatch(golden: GoldenFile, goldenPath: string, candidatePath: string, spec: Parameters<typeof settingsDifferences>[1]): void {
  const differences = settingsDifferences(golden, spec);
  if (!differences.length) return;
  throw new UsageError(
    `${goldenPath} does not match ${candidatePath}: ${differences.map((d) => d.message).join("; ")}. Make the golden with the candidate's settings (verify's --max-length and --instruction set the runtime ones), or pass --allow-settings-mismatch if the difference is intended`,
  );
}

/** Golden item indices by kind, in golden order. */
function split(golden: GoldenFile): Record<TextKind, number[]> {
  const out: Record<TextKind, number[]> = { passage: [], query: [] };
  golden.items.forEach((it, i) => out[it.kind].push(i));
  return out;
}

/**
 * Runs the golden's texts through the candidate with its runtime settings, compares every vector in
 * float64, checks that batching does not move vectors (each text again alone) and that rankings
 * survive, gates on the tolerance, and on failure asks `diagnose` why.
 */
export async function verifyAgainstGolden(candidate: DiagnosableCandidate & HeadsCandidate, golden: GoldenFile, options: VerifyOptions): Promise<VerifyReport> {
  const started = performance.now();
  if (!options.allowSettingsMismatch) refuseSettingsMismatch(golden, options.goldenPath, options.candidatePath, candidate.spec);
  const differences = settingsDifferences(golden, candidate.spec);
  const batchSize = options.batchSize ?? 32;
  const n = golden.items.length;
  const groups = split(golden);
  const embeddings = new Array<Float64Array>(n);
  const inputIds = new Array<number[]>(n);
  const single = new Array<Float64Array>(n);
  let done = 0;
  for (const kind of ["passage", "query"] as const) {
    const idx = groups[kind];
    if (!idx.length) continue;
    const texts = idx.map((i) => golden.items[i]!.text);
    const batched = await candidate.embedWith(texts, kind, { batchSize });
    idx.forEach((gi, k) => {
      embeddings[gi] = batched.embeddings[k]!;
      inputIds[gi] = batched.inputIds[k]!;
    });
    done += idx.length;
    options.onProgress?.(done, 2 * n);
    // Batch invariance: the same texts without padding (one at a time, or batches of one token length).
    const alone = await candidate.embedWith(texts, kind, { batchSize: 1, unpadded: true });
    idx.forEach((gi, k) => (single[gi] = alone.embeddings[k]!));
    done += idx.length;
    options.onProgress?.(done, 2 * n);
  }

  const { items: cmp, summary } = compareEmbeddings(
    golden.items.map((it) => it.embedding),
    embeddings,
  );
  const items: VerifyItem[] = cmp.map((c) => {
    const it = golden.items[c.index]!;
    const ids = inputIds[c.index]!;
    const drift = 1 - cosineSimilarity(embeddings[c.index]!, single[c.index]!);
    return {
      index: c.index,
      kind: it.kind,
      text: it.text,
      cosine: c.cosine,
      max_abs_diff: c.max_abs_diff,
      tokens_match: sameIds(ids, it.input_ids),
      batch_drift: Number.isNaN(drift) ? Infinity : drift,
      norm_diff: relativeNormDiff(it.embedding, embeddings[c.index]!),
    };
  });
  const retrieval =
    retrievalAgreement(
      { queries: groups.query.map((i) => golden.items[i]!.embedding), passages: groups.passage.map((i) => golden.items[i]!.embedding) },
      { queries: groups.query.map((i) => embeddings[i]!), passages: groups.passage.map((i) => embeddings[i]!) },
    ) ?? null;
  let fp16Range: Fp16RangeResult | null = null;
  if (options.probeFp16) {
    const order = golden.items.map((_, i) => i);
    const batches: number[][][] = [];
    for (let i = 0; i < order.length; i += 8) batches.push(order.slice(i, i + 8).map((k) => inputIds[k]!));
    fp16Range = await options.probeFp16(batches);
  }
  const tol = options.tolerance;
  const batchDrift = items.reduce((m, i) => Math.max(m, i.batch_drift), 0);
  const failures: string[] = [];
  if (summary.non_finite) failures.push(`${summary.non_finite} items have NaN/Inf values`);
  if (!(summary.min_cosine >= tol.min_cosine)) failures.push(`min cosine ${fmt(summary.min_cosine)} < ${tol.min_cosine}`);
  if (!(summary.mean_cosine >= tol.mean_cosine)) failures.push(`mean cosine ${fmt(summary.mean_cosine)} < ${tol.mean_cosine}`);
  const tokenMismatches = items.filter((i) => !i.tokens_match).length;
  if (tokenMismatches > tol.token_mismatches) failures.push(`${tokenMismatches} texts tokenise differently from the golden's input_ids`);
  const maxNormDiff = items.reduce((m, i) => Math.max(m, i.norm_diff), 0);
  if (!(maxNormDiff <= tol.norm)) failures.push(`vector lengths differ by up to ${(maxNormDiff * 100).toPrecision(3)}% > ${tol.norm * 100}%`);
  if (!(batchDrift <= tol.batch_drift)) failures.push(`batch drift ${batchDrift.toExponential(2)} > ${tol.batch_drift} (a vector changes with its batch)`);
  if (fp16Range?.overflowing.length) {
    failures.push(`${fp16Range.overflowing.length} of ${fp16Range.probed} FP16 tensors exceed 65504 (they overflow wherever FP16 is computed, e.g. TensorRT or CUDA)`);
  }
  if (retrieval && !(retrieval.topk_agreement >= tol.topk_agreement)) {
    failures.push(`top-${retrieval.k} agreement ${retrieval.topk_agreement.toFixed(3)} < ${tol.topk_agreement}`);
  }
  const denseFailed = failures.length > 0;
  let heads: HeadsReport | null = null;
  let headDiagnoses: Diagnosis[] = [];
  if (goldenHeads(golden).length || (candidate.heads?.length ?? 0) > 1) {
    const checked = await verifyHeads(candidate, options.candidatePath, golden, options.headTolerance ?? headTolerance(candidate.precision), batchSize, tol.topk_agreement);
    heads = checked.report;
    failures.push(...checked.failures);
    headDiagnoses = checked.diagnoses;
  }
  const pass = failures.length === 0;

  let diagnoses: Diagnosis[] = [...headDiagnoses];
  if (denseFailed) {
    const failing = items.filter((i) => !(i.cosine >= tol.min_cosine) || !(i.norm_diff <= tol.norm) || !i.tokens_match).map((i) => i.index);
    diagnoses = [...(await diagnose({
      golden,
      candidate,
      embeddings,
      inputIds,
      failing,
      minCosine: tol.min_cosine,
      maxNormDiff: tol.norm,
      maxLength: candidate.spec.maxLength,
      instruction: candidate.spec.queryInstruction,
      fp16Range,
    })), ...headDiagnoses];
    if (options.probeInt8 && failing.length) {
      // The worst texts first: they show the layers that matter in the fewest runs.
      const worstFirst = [...failing].sort((a, b) => items[a]!.cosine - items[b]!.cosine).slice(0, INT8_PROBE_TEXTS);
      const d = await options.probeInt8(worstFirst.map((i) => inputIds[i]!));
      if (d) diagnoses.unshift({ ...d, items: worstFirst });
    }
    if (!(batchDrift <= tol.batch_drift)) {
      const moved = items.filter((i) => !(i.batch_drift <= tol.batch_drift)).map((i) => i.index);
      diagnoses.push({
        code: "batch-dependence",
        items: moved,
        message: `${moved.length} vectors change when the text is embedded alone instead of in a padded batch (largest drift ${batchDrift.toExponential(2)}): padded tokens leak into attention or pooling — check the attention mask and mean pooling's mask`,
      });
    }
  }
  if (!pass) {
    if (!diagnoses.length) {
      diagnoses.push({
        code: "unexplained",
        message: `every vector passes on its own but ${failures.join("; ")}: no known cause explains it`,
      });
    }
  }
  // Allowed differences are reported whatever the verdict: a pass under other settings says less.
  if (differences.length) {
    diagnoses.push({
      code: "settings",
      message: `the candidate runs with other settings than the golden (allowed by --allow-settings-mismatch): ${differences.map((d) => d.message).join("; ")}`,
    });
  }

  return {
    pass,
    tolerance: tol,
    tolerance_notes: options.toleranceNotes,
    candidate: { path: options.candidatePath, role: options.candidateRole ?? null, precision: candidate.precision, backend: options.backend },
    golden: { path: options.goldenPath, model_id: golden.model.id, items: n, producer: `${golden.producer.name} ${golden.producer.version}` },
    settings: {
      pooling: candidate.spec.pooling,
      normalize: candidate.spec.normalize,
      max_length: candidate.spec.maxLength,
      query_instruction: candidate.spec.queryInstruction ?? null,
      batch_size: batchSize,
    },
    summary: {
      ...summary,
      token_mismatches: tokenMismatches,
      topk_agreement: retrieval?.topk_agreement ?? null,
      batch_drift: batchDrift,
      max_norm_diff: maxNormDiff,
    },
    retrieval,
    fp16_range: fp16Range,
    heads,
    failures,
    items,
    diagnoses,
    seconds: (performance.now() - started) / 1000,
  };
}

export function fmt(x: number): string {
  return Number.isFinite(x) ? x.toFixed(9) : String(x);
}
