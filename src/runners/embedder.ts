import { UsageError } from "../errors.js";
import type { Head } from "../checkpoint/m3-heads.js";
import type { M3Output } from "../reference/m3.js";

/** What every backend produces for a list of texts: one vector per text in input order, plus the ids it fed. */
export interface EmbedResult {
  embeddings: Float64Array[];
  inputIds: number[][];
}

export type TextKind = "query" | "passage";

/**
 * A backend that turns texts into pooled vectors with FlagModel semantics (reference encoder,
 * ONNX Runtime, TensorRT). `activate`/`deactivate` bracket expensive resources, as Polygraphy's runners do.
 */
export interface Embedder {
  readonly name: string;
  readonly dimension: number;
  embed(texts: readonly string[], kind: TextKind, options?: { batchSize?: number; onProgress?: (done: number, total: number) => void }): Promise<EmbedResult>;
  deactivate(): Promise<void>;
  /** The heads this backend computes (bge-m3: dense, sparse, colbert); undefined means dense only. */
  readonly heads?: readonly Head[];
  /** Every asked-for head per text (dense always), for backends with {@link heads}. */
  embedHeads?(texts: readonly string[], kind: TextKind, want: readonly Head[], options?: { batchSize?: number; onProgress?: (done: number, total: number) => void }): Promise<HeadsResult>;
}

export interface HeadsResult {
  outputs: M3Output[];
  inputIds: number[][];
}

/** Refuses (exit 2) heads the backend does not have, naming what it has and where the heads come from. */
export function assertHeads(embedder: Embedder, want: readonly Head[], what: string): void {
  const has = embedder.heads ?? ["dense"];
  const missing = want.filter((h) => !has.includes(h));
  if (missing.length === 0) return;
  throw new UsageError(
    `${what} has no ${missing.join(" or ")} head (it has: ${has.join(", ")}); sparse and ColBERT heads come with bge-m3 (sparse_linear.pt, colbert_linear.pt) and are exported by bge export --heads`,
  );
}

/**
 * A vector holding NaN or ±Infinity is garbage whatever computed it (NaN weights, an fp16 overflow,
 * a broken graph): it is refused where vectors leave bge (printed or written into a golden), naming
 * the text, so that no consumer ever stores it. `what` says which text, e.g. "text 3" or "query 0".
 */
export function assertFiniteEmbedding(vector: ArrayLike<number>, what: string, text: string): void {
  for (let i = 0; i < vector.length; i++) {
    const v = vector[i]!;
    if (Number.isFinite(v)) continue;
    throw new UsageError(
      `${what} (${textPrefix(text)}): the model produced a non-finite vector (${v} at dimension ${i}), which bge never outputs; check the model's weights and config.json, or use a higher precision`,
    );
  }
}

/** The start of a text for a one-line message: JSON-quoted so that newlines and quotes stay on the line. */
function textPrefix(text: string, chars = 24): string {
  const cps = Array.from(text);
  return JSON.stringify(cps.length > chars ? cps.slice(0, chars).join("") + "…" : text);
}
