/** Cosine similarity in float64; NaN when either vector has a non-finite value or zero norm. */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`cosine of vectors of length ${a.length} and ${b.length}`);
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  const denom = Math.sqrt(aa) * Math.sqrt(bb);
  return denom > 0 && Number.isFinite(denom) ? ab / denom : NaN;
}

/** |‖candidate‖ − ‖golden‖| / ‖golden‖; Infinity when undefined. */
export function relativeNormDiff(golden: ArrayLike<number>, candidate: ArrayLike<number>): number {
  let g = 0;
  let c = 0;
  for (let i = 0; i < golden.length; i++) {
    g += golden[i]! * golden[i]!;
    c += candidate[i]! * candidate[i]!;
  }
  const d = Math.abs(Math.sqrt(c) - Math.sqrt(g)) / Math.sqrt(g);
  return Number.isNaN(d) ? Infinity : d;
}

/** Whether two token id lists are the same. */
export function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN propagates
  }
  return m;
}

export interface ItemComparison {
  index: number;
  cosine: number;
  max_abs_diff: number;
  non_finite: boolean;
}

export interface ComparisonSummary {
  n: number;
  min_cosine: number;
  mean_cosine: number;
  /** 1st-percentile cosine (nearest rank). */
  p01_cosine: number;
  max_abs_diff: number;
  /** Items whose candidate vector has NaN or ±Inf. */
  non_finite: number;
}

/** Per-item and summary metrics of candidate vectors against reference vectors. A NaN cosine counts as -1. */
export function compareEmbeddings(reference: readonly ArrayLike<number>[], candidate: readonly ArrayLike<number>[]): { items: ItemComparison[]; summary: ComparisonSummary } {
  if (reference.length !== candidate.length) throw new RangeError(`${reference.length} reference vectors but ${candidate.length} candidate vectors`);
  const items = reference.map((r, index) => {
    const c = candidate[index]!;
    const nonFinite = Array.prototype.some.call(c, (x: number) => !Number.isFinite(x)) as boolean;
    const cos = cosineSimilarity(r, c);
    return { index, cosine: Number.isNaN(cos) ? -1 : cos, max_abs_diff: nonFinite ? Infinity : maxAbsDiff(r, c), non_finite: nonFinite };
  });
  const cosines = items.map((i) => i.cosine).sort((a, b) => a - b);
  const n = items.length;
  return {
    items,
    summary: {
      n,
      min_cosine: n ? cosines[0]! : NaN,
      mean_cosine: n ? cosines.reduce((s, x) => s + x, 0) / n : NaN,
      p01_cosine: n ? cosines[Math.max(0, Math.ceil(0.01 * n) - 1)]! : NaN,
      max_abs_diff: items.reduce((m, i) => Math.max(m, i.max_abs_diff), 0),
      non_finite: items.filter((i) => i.non_finite).length,
    },
  };
}
