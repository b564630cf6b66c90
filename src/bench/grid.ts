import { UsageError } from "../errors.js";

/** One shape the bench measures: `batch` sequences of exactly `seq` tokens each. */
export interface GridPoint {
  batch: number;
  seq: number;
}

export interface GridLimits {
  /** The longest sequence the model's position table allows. */
  maxSeq: number;
  /** Where the limit comes from, for the message. */
  maxSeqWhy: string;
  /** A TensorRT engine's optimisation profile: batch and sequence must lie within it. */
  profile?: { min: readonly [number, number]; max: readonly [number, number]; engine: string };
}

/**
 * Every batch × sequence pair, batch-major, after checking each value against the model (and the
 * engine's profile): a value outside is bad usage naming the flag and the limit.
 */
export function benchGrid(batches: readonly number[], seqs: readonly number[], limits: GridLimits): GridPoint[] {
  for (const s of seqs) {
    if (s > limits.maxSeq) throw new UsageError(`--seq ${s}: longer than the model allows (${limits.maxSeq}, ${limits.maxSeqWhy})`);
  }
  const p = limits.profile;
  if (p) {
    for (const b of batches) {
      if (b < p.min[0] || b > p.max[0]) throw new UsageError(`--batch ${b}: outside the engine's profile (batch ${p.min[0]} to ${p.max[0]} in ${p.engine}); rebuild it with bge build --max-shape ${b}x${p.max[1]}`);
    }
    for (const s of seqs) {
      if (s < p.min[1] || s > p.max[1]) throw new UsageError(`--seq ${s}: outside the engine's profile (sequence ${p.min[1]} to ${p.max[1]} in ${p.engine}); rebuild it with bge build --max-shape ${p.max[0]}x${s}`);
    }
  }
  return batches.flatMap((batch) => seqs.map((seq) => ({ batch, seq })));
}

/**
 * Token ids for `batch` rows of exactly `seq` tokens: [CLS]-like first and [SEP]-like last ids, and
 * varied ordinary ids between them, all below the vocabulary size and none of them the pad id (so an
 * attention mask of all ones is what a real full-length batch has).
 */
export function syntheticRows(point: GridPoint, vocabSize: number, padId: number, special: { first: number; last: number }): number[][] {
  const low = Math.min(1000, Math.floor(vocabSize / 2));
  const span = Math.max(1, vocabSize - low);
  return Array.from({ length: point.batch }, (_, r) =>
    Array.from({ length: point.seq }, (_, c) => {
      if (c === 0) return special.first;
      if (c === point.seq - 1 && point.seq > 1) return special.last;
      let id = low + ((r * 7919 + c * 104729) % span);
      if (id === padId) id = id + 1 < vocabSize ? id + 1 : low;
      return id;
    }),
  );
}
