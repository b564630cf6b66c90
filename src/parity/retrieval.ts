/** Query→passage score matrix [queries][passages] of dot products (vectors are normalised). */
function scores(queries: readonly ArrayLike<number>[], passages: readonly ArrayLike<number>[]): number[][] {
  return queries.map((q) =>
    passages.map((p) => {
      let s = 0;
      for (let i = 0; i < q.length; i++) s += q[i]! * p[i]!;
      return s;
    }),
  );
}

function topK(row: number[], k: number): Set<number> {
  return new Set(
    row
      .map((s, i) => [s, i] as const)
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .slice(0, k)
      .map(([, i]) => i),
  );
}

function ranks(values: number[]): number[] {
  const order = values.map((v, i) => [v, i] as const).sort((a, b) => a[0] - b[0]);
  const r = new Array<number>(values.length);
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++;
    for (let t = i; t <= j; t++) r[order[t]![1]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return r;
}

/** Spearman's rank correlation (Pearson on average ranks); 1 for fewer than two values. */
export function spearman(a: number[], b: number[]): number {
  if (a.length < 2) return 1;
  const ra = ranks(a);
  const rb = ranks(b);
  const mean = (ra.length + 1) / 2;
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < ra.length; i++) {
    const x = ra[i]! - mean;
    const y = rb[i]! - mean;
    num += x * y;
    da += x * x;
    db += y * y;
  }
  return da && db ? num / Math.sqrt(da * db) : 1;
}

export interface RetrievalAgreement {
  k: number;
  queries: number;
  passages: number;
  /** Mean over queries of |topk(golden) ∩ topk(candidate)| / k. */
  topk_agreement: number;
  min_topk_agreement: number;
  mean_spearman: number;
  min_spearman: number;
}

/** How well the candidate keeps the golden's query→passage rankings: what a vector index would return. */
export function retrievalAgreement(
  golden: { queries: readonly ArrayLike<number>[]; passages: readonly ArrayLike<number>[] },
  candidate: { queries: readonly ArrayLike<number>[]; passages: readonly ArrayLike<number>[] },
  k = 10,
): RetrievalAgreement | undefined {
  if (!golden.queries.length || golden.passages.length < 2) return undefined;
  return scoreAgreement(scores(golden.queries, golden.passages), scores(candidate.queries, candidate.passages), k);
}

/** {@link retrievalAgreement} on given query→passage score matrices [queries][passages] (any scoring, e.g. bge-m3's combined score). */
export function scoreAgreement(g: number[][], c: number[][], k = 10): RetrievalAgreement {
  const passages = g[0]?.length ?? 0;
  // A top-k that spans most of the passages says nothing: keep k at most half of them.
  const kk = Math.max(1, Math.min(k, Math.floor(passages / 2)));
  const overlaps = g.map((row, q) => {
    const a = topK(row, kk);
    let n = 0;
    for (const i of topK(c[q]!, kk)) if (a.has(i)) n++;
    return n / kk;
  });
  const rhos = g.map((row, q) => spearman(row, c[q]!));
  return {
    k: kk,
    queries: g.length,
    passages,
    topk_agreement: overlaps.reduce((s, x) => s + x, 0) / overlaps.length,
    min_topk_agreement: Math.min(...overlaps),
    mean_spearman: rhos.reduce((s, x) => s + x, 0) / rhos.length,
    min_spearman: Math.min(...rhos),
  };
}
