import { readFile } from "node:fs/promises";
import { UsageError } from "../errors.js";
import { assertInputFile } from "../util/io-paths.js";
import { writeOutputFile } from "../util/atomic.js";

export const GOLDEN_FORMAT = "bge-golden/1";

export interface GoldenItem {
  text: string;
  kind: "passage" | "query";
  input_ids: number[];
  embedding: number[];
  /** bge-m3's lexical weights: token id (as a string, as FlagEmbedding keys them) → weight > 0, specials dropped. */
  sparse?: Record<string, number>;
  /** bge-m3's ColBERT vectors: one per token after CLS (input_ids.length − 1 of them), each L2-normalised, stored in full. */
  colbert?: number[][];
}

export interface GoldenFile {
  format: typeof GOLDEN_FORMAT;
  model: { id: string; revision: string | null; weights_sha256: string };
  producer: {
    name: string;
    version: string;
    pooling: "cls" | "mean";
    normalize: boolean;
    use_fp16: boolean;
    max_length: number;
    query_instruction: string | null;
    device: string;
    dtype?: string;
  };
  items: GoldenItem[];
}

export async function writeGolden(path: string, golden: GoldenFile): Promise<void> {
  // One item per line keeps goldens diffable and readable while staying plain JSON.
  const { items, ...head } = golden;
  const headJson = JSON.stringify(head, null, 2);
  const body = items.map((it) => "    " + JSON.stringify(it)).join(",\n");
  const text = `${headJson.slice(0, -2)},\n  "items": [\n${body}\n  ]\n}\n`;
  await writeOutputFile(path, text);
}

/** Reads and validates a golden file; anything malformed is a one-line UsageError naming the file and the problem. */
export async function readGolden(path: string): Promise<GoldenFile> {
  let text: string;
  await assertInputFile(path, "golden file");
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new UsageError(`${path}: cannot read golden file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${path}: golden file is not valid JSON (${(err as Error).message})`);
  }
  return validateGolden(raw, path);
}

export function validateGolden(raw: unknown, path: string): GoldenFile {
  const bad = (why: string) => new UsageError(`${path}: malformed golden file: ${why}`);
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw bad("not a JSON object");
  const g = raw as Record<string, unknown>;
  if (g.format !== GOLDEN_FORMAT) throw bad(`format is ${JSON.stringify(g.format)}, expected "${GOLDEN_FORMAT}"`);
  const model = g.model as Record<string, unknown> | undefined;
  if (typeof model !== "object" || model === null) throw bad("missing model object");
  if (typeof model.id !== "string" || !model.id) throw bad("model.id must be a non-empty string");
  if (typeof model.weights_sha256 !== "string" || !/^[0-9a-f]{64}$/.test(model.weights_sha256)) throw bad("model.weights_sha256 must be 64 hex digits");
  if (model.revision !== null && model.revision !== undefined && typeof model.revision !== "string") throw bad("model.revision must be a string or null");
  const p = g.producer as Record<string, unknown> | undefined;
  if (typeof p !== "object" || p === null) throw bad("missing producer object");
  if (p.pooling !== "cls" && p.pooling !== "mean") throw bad(`producer.pooling is ${JSON.stringify(p.pooling)}, expected "cls" or "mean"`);
  if (typeof p.normalize !== "boolean") throw bad("producer.normalize must be true or false");
  if (typeof p.use_fp16 !== "boolean") throw bad("producer.use_fp16 must be true or false");
  if (!Number.isSafeInteger(p.max_length) || (p.max_length as number) < 2) throw bad("producer.max_length must be an integer ≥ 2");
  if (p.query_instruction !== null && p.query_instruction !== undefined && typeof p.query_instruction !== "string") {
    throw bad("producer.query_instruction must be a string or null");
  }
  if (!Array.isArray(g.items) || g.items.length === 0) throw bad("items must be a non-empty array");
  let dim = -1;
  g.items.forEach((item: unknown, i: number) => {
    const it = item as Record<string, unknown>;
    if (typeof it !== "object" || it === null) throw bad(`item ${i} is not an object`);
    if (typeof it.text !== "string") throw bad(`item ${i} has no text`);
    if (it.kind !== "passage" && it.kind !== "query") throw bad(`item ${i} kind is ${JSON.stringify(it.kind)}, expected "passage" or "query"`);
    if (!Array.isArray(it.input_ids) || !it.input_ids.every((v) => Number.isSafeInteger(v) && v >= 0)) throw bad(`item ${i} input_ids must be non-negative integers`);
    if (!Array.isArray(it.embedding) || it.embedding.length === 0) throw bad(`item ${i} has no embedding`);
    const nonFinite = it.embedding.findIndex((v) => typeof v !== "number" || !Number.isFinite(v));
    if (nonFinite >= 0) throw bad(`item ${i} embedding[${nonFinite}] is not a finite number`);
    if (dim === -1) dim = it.embedding.length;
    else if (it.embedding.length !== dim) throw bad(`item ${i} has dimension ${it.embedding.length}, item 0 has ${dim}`);
    validateHeads(it, i, (g.items as Record<string, unknown>[])[0]!, bad);
  });
  return raw as GoldenFile;
}

/** The optional bge-m3 heads of one item: present on every item or on none, well-formed, finite. */
function validateHeads(it: Record<string, unknown>, i: number, first: Record<string, unknown>, bad: (why: string) => UsageError): void {
  for (const head of ["sparse", "colbert"] as const) {
    if ((it[head] === undefined) !== (first[head] === undefined)) throw bad(`item ${i} ${it[head] === undefined ? "has no" : "has a"} ${head} head but item 0 ${first[head] === undefined ? "has none" : "has one"}`);
  }
  if (it.sparse !== undefined) {
    const s = it.sparse;
    if (typeof s !== "object" || s === null || Array.isArray(s)) throw bad(`item ${i} sparse must be an object of token id → weight`);
    for (const [id, w] of Object.entries(s)) {
      if (!/^(0|[1-9]\d*)$/.test(id)) throw bad(`item ${i} sparse key ${JSON.stringify(id)} is not a token id`);
      if (typeof w !== "number" || !Number.isFinite(w) || w <= 0) throw bad(`item ${i} sparse[${id}] must be a finite weight > 0`);
    }
  }
  if (it.colbert !== undefined) {
    const c = it.colbert;
    const ids = it.input_ids as unknown[];
    if (!Array.isArray(c) || c.length !== ids.length - 1) throw bad(`item ${i} colbert must hold one vector per token after CLS (${ids.length - 1})`);
    const width = Array.isArray((first.colbert as unknown[][] | undefined)?.[0]) ? (first.colbert as unknown[][])[0]!.length : undefined;
    c.forEach((v: unknown, t: number) => {
      if (!Array.isArray(v) || v.length === 0 || (width !== undefined && v.length !== width)) throw bad(`item ${i} colbert[${t}] must be a vector of ${width ?? "the same"} numbers`);
      if (v.some((x) => typeof x !== "number" || !Number.isFinite(x))) throw bad(`item ${i} colbert[${t}] holds a non-finite number`);
    });
  }
}
