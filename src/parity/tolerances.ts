import type { TOLERANCE_KEYS } from "../artifacts/pipeline.js";
import { UsageError } from "../errors.js";

export interface Tolerance {
  /** Minimum cosine over every text. */
  min_cosine: number;
  /** Minimum mean cosine. */
  mean_cosine: number;
  /** Largest allowed 1 − cos(batched, batch-of-one) for any text: padding must not move a vector. */
  batch_drift: number;
  /** Minimum mean top-k overlap of query→passage rankings (goldens with queries and passages). */
  topk_agreement: number;
  /**
   * Largest relative difference of vector lengths, |‖c‖ − ‖g‖| / ‖g‖. Cosine cannot see a missing
   * normalisation; dot-product search can.
   */
  norm: number;
  /** Texts whose token ids may differ from the golden's: a deployment must tokenise as FlagModel did. */
  token_mismatches: number;
}

/** SPEC.md's defaults, with the batch-drift and ranking gates bge adds. */
export const DEFAULT_TOLERANCES: Record<string, Tolerance> = {
  fp32: { min_cosine: 0.99999, mean_cosine: 0.999999, batch_drift: 1e-6, topk_agreement: 0.99, norm: 1e-5, token_mismatches: 0 },
  fp16: { min_cosine: 0.999, mean_cosine: 0.9999, batch_drift: 1e-4, topk_agreement: 0.9, norm: 1e-3, token_mismatches: 0 },
  int8: { min_cosine: 0.98, mean_cosine: 0.99, batch_drift: 1e-3, topk_agreement: 0.8, norm: 1e-2, token_mismatches: 0 },
};

export function precisionClass(precision: string): "fp32" | "fp16" | "int8" {
  if (precision.startsWith("int8")) return "int8";
  if (precision === "fp16" || precision === "bf16") return "fp16";
  return "fp32";
}

export interface ResolvedTolerance {
  tolerance: Tolerance;
  /** Why the numbers are what they are (defaults, an option, a pipeline, an fp16 golden). */
  notes: string[];
}

/**
 * The gate for one artifact: SPEC defaults for its precision, then a pipeline file's numbers, then
 * `--tolerance` (the minimum cosine). A golden computed in FP16 cannot certify beyond FP16
 * agreement: stricter gates are capped at the fp16 ones, and the report says so.
 */
export function resolveTolerance(
  precision: string,
  options: { cli?: number; pipeline?: Partial<Tolerance>; goldenUsesFp16?: boolean } = {},
): ResolvedTolerance {
  const cls = precisionClass(precision);
  const tolerance = { ...DEFAULT_TOLERANCES[cls]! };
  const notes = [`${cls} defaults`];
  if (options.pipeline) {
    Object.assign(tolerance, Object.fromEntries(Object.entries(options.pipeline).filter(([, v]) => v !== undefined)));
    notes.push("pipeline overrides");
  }
  if (options.cli !== undefined) {
    if (!(options.cli > 0 && options.cli < 1)) throw new UsageError(`--tolerance ${options.cli} must be a minimum cosine between 0 and 1`);
    tolerance.min_cosine = options.cli;
    notes.push(`--tolerance ${options.cli}`);
  }
  if (options.goldenUsesFp16 && cls === "fp32") {
    const cap = DEFAULT_TOLERANCES.fp16!;
    if (tolerance.min_cosine > cap.min_cosine || tolerance.mean_cosine > cap.mean_cosine) {
      tolerance.min_cosine = Math.min(tolerance.min_cosine, cap.min_cosine);
      tolerance.mean_cosine = Math.min(tolerance.mean_cosine, cap.mean_cosine);
      notes.push(
        `the golden was computed in FP16 (producer.use_fp16), which caps what it can certify: gating at fp16 agreement (min ${cap.min_cosine}, mean ${cap.mean_cosine}); make an fp32 golden to check fp32 parity`,
      );
    }
  }
  return { tolerance, notes };
}

/** A pipeline file names each gate by these keys: the two lists must stay one. */
type PipelineKey = (typeof TOLERANCE_KEYS)[number];
export const TOLERANCE_KEYS_MATCH: [Exclude<keyof Tolerance, PipelineKey> | Exclude<PipelineKey, keyof Tolerance>] extends [never] ? true : never = true;

/**
 * bge-m3's sparse and ColBERT heads, gated per precision like the dense vector (SPEC's style: fp32
 * tight, fp16 and int8 looser). Kept apart from {@link Tolerance}, whose keys are a pipeline file's.
 */
export interface HeadTolerance {
  /** Weights at or below this may appear in one id set and not the other (rounding around relu's 0); every larger one must be in both. */
  sparse_zero: number;
  /** Largest |w_candidate − w_golden| over the ids of a text (a missing id counts as 0). */
  sparse_weight_diff: number;
  /** Largest |Δ lexical score| on the query × passage matrix, relative to the largest golden score. */
  lexical_score_diff: number;
  /** Minimum cosine of any ColBERT token vector with the golden's. */
  colbert_min_cosine: number;
  /** Largest | ‖v‖ − 1 | of a ColBERT vector: FlagEmbedding normalises each. */
  colbert_norm: number;
  /** Largest |Δ ColBERT score| on the query × passage matrix (scores of unit vectors lie in [−1, 1]). */
  colbert_score_diff: number;
}

export const DEFAULT_HEAD_TOLERANCES: Record<"fp32" | "fp16" | "int8", HeadTolerance> = {
  fp32: { sparse_zero: 0, sparse_weight_diff: 1e-4, lexical_score_diff: 1e-4, colbert_min_cosine: 0.99999, colbert_norm: 1e-5, colbert_score_diff: 1e-5 },
  fp16: { sparse_zero: 2e-3, sparse_weight_diff: 1e-2, lexical_score_diff: 1e-2, colbert_min_cosine: 0.999, colbert_norm: 1e-3, colbert_score_diff: 2e-3 },
  int8: { sparse_zero: 2e-2, sparse_weight_diff: 5e-2, lexical_score_diff: 5e-2, colbert_min_cosine: 0.98, colbert_norm: 1e-2, colbert_score_diff: 2e-2 },
};

export function headTolerance(precision: string): HeadTolerance {
  return { ...DEFAULT_HEAD_TOLERANCES[precisionClass(precision)] };
}
