import type { GoldenFile } from "../artifacts/golden.js";
import type { Head } from "../checkpoint/m3-heads.js";
import { colbertScore, lexicalScore, type M3Output, type SparseVector } from "../reference/m3.js";
import type { HeadsResult, TextKind } from "../runners/embedder.js";
import type { Diagnosis } from "./diagnose.js";
import type { HeadTolerance } from "./tolerances.js";
import { scoreAgreement, type RetrievalAgreement } from "./retrieval.js";
import { cosineSimilarity as cosine } from "./metrics.js";

/** bge-m3's hybrid score as the issue states it: dense + 0.3 · lexical + ColBERT. */
export const COMBINED_WEIGHTS = { dense: 1, sparse: 0.3, colbert: 1 } as const;

/** What verify needs from a candidate to check bge-m3's heads. */
export interface HeadsCandidate {
  readonly heads?: readonly Head[];
  embedHeads?(texts: readonly string[], kind: TextKind, want: readonly Head[], options?: { batchSize?: number }): Promise<HeadsResult>;
}

export interface SparseHeadReport {
  /** Texts whose id sets differ by an id weighing more than the tolerance's sparse_zero. */
  id_set_mismatches: number;
  max_weight_diff: number;
  /** Largest |Δ lexical score| / largest golden score on the query × passage matrix (all × all without queries). */
  lexical_score_diff: number;
  /** The largest weight the graph gave a special token (CLS, EOS, PAD, UNK); 0 when it keeps the contract. */
  special_weight: number;
}

export interface ColbertHeadReport {
  /** Texts whose number of ColBERT vectors differs from the golden's. */
  count_mismatches: number;
  min_token_cosine: number;
  max_norm_error: number;
  colbert_score_diff: number;
}

export interface HeadsReport {
  tolerance: HeadTolerance;
  sparse: SparseHeadReport | null;
  colbert: ColbertHeadReport | null;
  /** Query→passage rankings by the combined score (dense + 0.3·sparse + ColBERT), goldens with queries, passages and both heads. */
  combined: (RetrievalAgreement & { gate: number }) | null;
  /** Heads the golden holds that this candidate could not be asked for (a runner without heads), or that the golden lacks. */
  unverified: string[];
}

/** Which of the golden's heads are present (on every item, as validateGolden ensures). */
export function goldenHeads(golden: GoldenFile): ("sparse" | "colbert")[] {
  const first = golden.items[0]!;
  return [...(first.sparse ? ["sparse" as const] : []), ...(first.colbert ? ["colbert" as const] : [])];
}

const toMap = (r: Record<string, number>): SparseVector => new Map(Object.entries(r).map(([k, v]) => [Number(k), v]));


/** Query × passage pairs by golden index (every pair of items when the golden lacks one kind). */
function pairs(golden: GoldenFile): [number, number][] {
  const q = golden.items.flatMap((it, i) => (it.kind === "query" ? [i] : []));
  const p = golden.items.flatMap((it, i) => (it.kind === "passage" ? [i] : []));
  const [a, b] = q.length && p.length ? [q, p] : [golden.items.map((_, i) => i), golden.items.map((_, i) => i)];
  return a.flatMap((i) => b.map((j) => [i, j] as [number, number]));
}

/**
 * bge-m3's sparse and ColBERT heads against the golden's, per head: sparse — identical id sets
 * (up to weights within rounding of 0), the largest weight difference, lexical-score agreement on
 * the query × passage matrix, and zero weight at special tokens; ColBERT — one vector per token after
 * CLS, the smallest per-token cosine, unit length, and ColBERT-score agreement. Failures in words and
 * diagnoses for a missing head, special tokens kept and unnormalised vectors.
 */
export async function verifyHeads(
  candidate: HeadsCandidate,
  candidatePath: string,
  golden: GoldenFile,
  tol: HeadTolerance,
  batchSize: number,
  /** The top-k agreement the combined ranking must reach (the dense gate's). */
  topkGate = 0.99,
): Promise<{ report: HeadsReport; failures: string[]; diagnoses: Diagnosis[] }> {
  const wanted = goldenHeads(golden);
  const has = candidate.heads ?? ["dense"];
  const report: HeadsReport = { tolerance: tol, sparse: null, colbert: null, combined: null, unverified: [] };
  const failures: string[] = [];
  const diagnoses: Diagnosis[] = [];
  for (const h of ["sparse", "colbert"] as const) {
    if (has.includes(h) && !wanted.includes(h)) report.unverified.push(`${h}: the golden holds no ${h} head (make it with bge golden from a checkpoint with ${h === "sparse" ? "sparse_linear.pt" : "colbert_linear.pt"})`);
  }
  if (!wanted.length) return { report, failures, diagnoses };
  if (!candidate.embedHeads) {
    report.unverified.push(...wanted.map((h) => `${h}: this backend does not read bge-m3's heads (only the dense vector was verified)`));
    return { report, failures, diagnoses };
  }
  const missing = wanted.filter((h) => !has.includes(h));
  for (const h of missing) {
    const output = h === "sparse" ? "sparse_weights" : "colbert_vectors";
    failures.push(`${h} head missing`);
    diagnoses.push({
      code: "head-missing",
      message: `the golden holds ${h} ${h === "sparse" ? "weights" : "vectors"} for every text but ${candidatePath} has no ${output} output: export it with bge export --heads dense,sparse,colbert from a checkpoint with ${h === "sparse" ? "sparse_linear.pt" : "colbert_linear.pt"}`,
    });
  }
  const check = wanted.filter((h) => has.includes(h));
  if (!check.length) return { report, failures, diagnoses };

  const outputs = new Array<M3Output>(golden.items.length);
  for (const kind of ["passage", "query"] as const) {
    const idx = golden.items.flatMap((it, i) => (it.kind === kind ? [i] : []));
    if (!idx.length) continue;
    const res = await candidate.embedHeads(idx.map((i) => golden.items[i]!.text), kind, ["dense", ...check], { batchSize });
    idx.forEach((gi, k) => (outputs[gi] = res.outputs[k]!));
  }
  const matrix = pairs(golden);

  if (check.includes("sparse")) {
    const g = golden.items.map((it) => toMap(it.sparse!));
    const c = outputs.map((o) => o.sparse!);
    let mismatches = 0;
    let maxDiff = 0;
    let special = 0;
    let specialItem = -1;
    const mismatchItems: number[] = [];
    g.forEach((gm, i) => {
      const cm = c[i]!;
      let differs = false;
      for (const id of new Set([...gm.keys(), ...cm.keys()])) {
        const a = gm.get(id);
        const b = cm.get(id);
        if ((a === undefined) !== (b === undefined) && Math.max(a ?? 0, b ?? 0) > tol.sparse_zero) differs = true;
        const d = Math.abs((a ?? 0) - (b ?? 0));
        if (!(d <= maxDiff)) maxDiff = d;
      }
      if (differs) {
        mismatches++;
        mismatchItems.push(i);
      }
      const sw = outputs[i]!.specialWeight ?? 0;
      if (sw > special) {
        special = sw;
        specialItem = i;
      }
    });
    let worst = 0;
    let top = 0;
    for (const [i, j] of matrix) {
      const gs = lexicalScore(g[i]!, g[j]!);
      top = Math.max(top, Math.abs(gs));
      worst = Math.max(worst, Math.abs(gs - lexicalScore(c[i]!, c[j]!)));
    }
    const rel = worst / Math.max(top, 1e-12);
    report.sparse = { id_set_mismatches: mismatches, max_weight_diff: maxDiff, lexical_score_diff: rel, special_weight: special };
    if (mismatches > 0) failures.push(`sparse: ${mismatches} texts have other token ids than the golden's`);
    if (!(maxDiff <= tol.sparse_weight_diff)) failures.push(`sparse: max weight difference ${maxDiff.toExponential(2)} > ${tol.sparse_weight_diff}`);
    if (!(rel <= tol.lexical_score_diff)) failures.push(`sparse: lexical scores differ by up to ${rel.toExponential(2)} of the largest > ${tol.lexical_score_diff}`);
    if (special > 0) {
      failures.push(`sparse: special tokens weigh up to ${special.toPrecision(4)} (must be 0)`);
      diagnoses.push({
        code: "sparse-specials",
        items: [specialItem],
        message: `the graph's sparse_weights keep special tokens (up to ${special.toPrecision(4)}, e.g. in text ${specialItem}): FlagEmbedding drops CLS, EOS, PAD and UNK from the lexical weights, so a graph must zero them — re-export with bge export, which masks them in the graph`,
      });
    } else if (mismatches > 0 || !(maxDiff <= tol.sparse_weight_diff)) {
      diagnoses.push({ code: "heads", items: mismatchItems.slice(0, 20), message: `sparse weights differ from the golden's (largest difference ${maxDiff.toExponential(2)}): check sparse_linear.pt against the golden's checkpoint and the relu` });
    }
  }

  if (check.includes("colbert")) {
    let counts = 0;
    let minCos = 1;
    let normErr = 0;
    let worstItem = -1;
    golden.items.forEach((it, i) => {
      const gv = it.colbert!;
      const cv = outputs[i]!.colbert!;
      if (gv.length !== cv.length) counts++;
      for (let t = 0; t < Math.min(gv.length, cv.length); t++) {
        const cs = cosine(gv[t]!, cv[t]!);
        if (!(cs >= minCos)) {
          minCos = cs;
          worstItem = i;
        }
      }
      for (const v of cv) normErr = Math.max(normErr, Math.abs(Math.hypot(...v) - 1));
    });
    let worst = 0;
    for (const [i, j] of matrix) {
      const gs = colbertScore(golden.items[i]!.colbert!, golden.items[j]!.colbert!);
      worst = Math.max(worst, Math.abs(gs - colbertScore(outputs[i]!.colbert!, outputs[j]!.colbert!)));
    }
    report.colbert = { count_mismatches: counts, min_token_cosine: minCos, max_norm_error: normErr, colbert_score_diff: worst };
    if (counts > 0) failures.push(`colbert: ${counts} texts have another number of vectors than the golden's (one per token after CLS)`);
    if (!(minCos >= tol.colbert_min_cosine)) failures.push(`colbert: min token cosine ${minCos.toFixed(9)} < ${tol.colbert_min_cosine}`);
    if (!(normErr <= tol.colbert_norm)) {
      failures.push(`colbert: vector lengths differ from 1 by up to ${normErr.toExponential(2)} > ${tol.colbert_norm}`);
      diagnoses.push({
        code: "colbert-unnormalized",
        message: `ColBERT vectors are not unit length (off by up to ${normErr.toExponential(2)}): FlagEmbedding L2-normalises every colbert_linear output, so scores and rankings from these vectors are wrong — re-export with bge export, which normalises in the graph`,
      });
    }
    if (!(worst <= tol.colbert_score_diff)) failures.push(`colbert: ColBERT scores differ by up to ${worst.toExponential(2)} > ${tol.colbert_score_diff}`);
    if (!(minCos >= tol.colbert_min_cosine) && normErr <= tol.colbert_norm) {
      diagnoses.push({ code: "heads", items: [worstItem], message: `ColBERT vectors point elsewhere than the golden's (min token cosine ${minCos.toFixed(6)} in text ${worstItem}): check colbert_linear.pt against the golden's checkpoint, and that the vectors start after CLS` });
    }
  }
  const q = golden.items.flatMap((it, i) => (it.kind === "query" ? [i] : []));
  const p = golden.items.flatMap((it, i) => (it.kind === "passage" ? [i] : []));
  if (check.length === 2 && q.length && p.length >= 2) {
    const combined = (dense: (i: number) => ArrayLike<number>, sparse: (i: number) => SparseVector, colbert: (i: number) => readonly ArrayLike<number>[]) =>
      q.map((a) =>
        p.map((b) => {
          let d = 0;
          const x = dense(a);
          const y = dense(b);
          for (let k = 0; k < x.length; k++) d += x[k]! * y[k]!;
          return COMBINED_WEIGHTS.dense * d + COMBINED_WEIGHTS.sparse * lexicalScore(sparse(a), sparse(b)) + COMBINED_WEIGHTS.colbert * colbertScore(colbert(a), colbert(b));
        }),
      );
    const gSparse = golden.items.map((it) => toMap(it.sparse!));
    const agreement = scoreAgreement(
      combined((i) => golden.items[i]!.embedding, (i) => gSparse[i]!, (i) => golden.items[i]!.colbert!),
      combined((i) => outputs[i]!.dense, (i) => outputs[i]!.sparse!, (i) => outputs[i]!.colbert!),
    );
    report.combined = { ...agreement, gate: topkGate };
    if (!(agreement.topk_agreement >= topkGate)) failures.push(`combined (dense + 0.3·sparse + ColBERT) top-${agreement.k} agreement ${agreement.topk_agreement.toFixed(3)} < ${topkGate}`);
  }
  return { report, failures, diagnoses };
}
