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
