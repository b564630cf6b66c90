import { UsageError } from "../errors.js";

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
