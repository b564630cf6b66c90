import { readdir, readFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import { UsageError } from "../errors.js";
import { PROFILE_NAME_RULE } from "./manifest.js";
import { assertInputFile } from "../util/io-paths.js";

/** The gates a pipeline may set per precision (the parity gate's Tolerance fields, by name). */
export const TOLERANCE_KEYS = ["min_cosine", "mean_cosine", "batch_drift", "topk_agreement", "norm", "token_mismatches"] as const;
export type PipelineTolerance = Partial<Record<(typeof TOLERANCE_KEYS)[number], number>>;

/** What a pipeline can build: `bge convert --precision`'s names (int8 = both INT8 graphs). */
export const PIPELINE_PRECISIONS = ["fp32", "fp16", "int8"] as const;
export type PipelinePrecision = (typeof PIPELINE_PRECISIONS)[number];

/**
 * A pipeline's gates for an artifact precision: `int8-qdq` (the TensorRT Q/DQ graph) and `int8` (the
 * ONNX Runtime graph) both take the pipeline's int8 entry; undefined where the pipeline sets none.
 */
export function pipelineTolerance(pipeline: Pick<Pipeline, "precisions">, precision: string): PipelineTolerance | undefined {
  const key = precision.startsWith("int8") ? "int8" : precision;
  return pipeline.precisions?.[key];
}

/** The bundled pipelines (pipelines/<model>.json) and their schema; the same place from src/ and dist/. */
export const PIPELINES_DIR = fileURLToPath(new URL("../../pipelines/", import.meta.url));
export const PIPELINE_SCHEMA = join(PIPELINES_DIR, "pipeline.schema.json");

/** A batch × sequence corner of a TensorRT profile, as written: `32x128`. */
export type BatchSeq = `${number}x${number}`;

export interface ProfileShapes {
  min: BatchSeq;
  opt: BatchSeq;
  max: BatchSeq;
}

/**
 * A declarative recipe (pipelines/<model>.json, validated against pipelines/pipeline.schema.json).
 * Every file path in it is absolute here: the file gives them relative to its own folder.
 */
export interface Pipeline {
  /** The pipeline file itself (absolute). */
  file: string;
  model: string;
  /** A full commit sha; absent where no pin is known (see `notes`). */
  revision?: string;
  notes?: string[];
  max_length?: number;
  /** null: the model has none (bge-m3); absent: the one known for the model id. */
  query_instruction?: string | null;
  /**
   * The precisions to build and gate (keys: PIPELINE_PRECISIONS), each with the gates it overrides.
   * Look one up with `pipelineTolerance`, which also finds int8's for the int8-qdq graph.
   */
  precisions?: Record<string, PipelineTolerance>;
  shapes?: ProfileShapes;
  /** Named profiles beside the default one, each built into model.<precision>.<name>.plan (bge-m3: "8192"). */
  profiles?: Record<string, ProfileShapes>;
  calibration?: { texts: string; method?: "minmax" | "percentile" | "entropy"; percentile?: number; max_texts?: number; activations?: "static" | "per-token" | "per-tensor" };
  verification?: { texts: string; queries?: string };
}

/** The file paths a pipeline names, by field. */
const PATH_FIELDS = [
  ["calibration", "texts"],
  ["verification", "texts"],
  ["verification", "queries"],
] as const;

/** FlagModel's default max_length, which a profile must cover when the pipeline gives none. */
const DEFAULT_MAX_LENGTH = 512;
/** The CLI's limits on a batch and a sequence (cli/options LIMITS): a profile beyond them cannot be run. */
const MAX_BATCH = 4096;
const MAX_SEQUENCE = 8192;

type SchemaNode = Record<string, unknown>;
let validator: Promise<{ validate: ValidateFunction; schema: SchemaNode }> | undefined;

function schemaValidator(): Promise<{ validate: ValidateFunction; schema: SchemaNode }> {
  validator ??= readFile(PIPELINE_SCHEMA, "utf8").then((text) => {
    const schema = JSON.parse(text) as SchemaNode;
    // strict: a typo in the schema is an error, not a keyword silently ignored. verbose: errors carry
    // the schema node they broke, so that a message can say what is accepted.
    const validate = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true, verbose: true }).compile(schema);
    return { validate, schema };
  });
  return validator;
}

/** A property's schema node with its local `$ref` (`#/$defs/x`) followed. */
function deref(node: SchemaNode | undefined, root: SchemaNode): SchemaNode | undefined {
  const ref = node?.$ref;
  if (typeof ref !== "string" || !ref.startsWith("#/")) return node;
  return ref
    .slice(2)
    .split("/")
    .reduce<SchemaNode | undefined>((n, key) => n?.[key] as SchemaNode | undefined, root);
}

/** `/precisions/int8/min_cosine` → `precisions.int8.min_cosine`. */
function fieldPath(pointer: string, child?: string): string {
  const parts = pointer
    .split("/")
    .slice(1)
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (child !== undefined) parts.push(child);
  return parts.join(".");
}

const TYPE_WORDS: Record<string, string> = {
  string: "a string",
  number: "a number",
  integer: "a whole number",
  object: "an object",
  array: "a list",
  boolean: "true or false",
  null: "null",
};

/** What a schema node accepts, in words: "a number greater than 0 and at most 1". */
export function describeAccepted(schema: Record<string, unknown>): string {
  if (Array.isArray(schema.enum)) return `one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`;
  const types = ([] as string[]).concat((schema.type as string | string[] | undefined) ?? []);
  // A string's description says what it must hold better than its pattern could.
  if (typeof schema.description === "string" && types.length === 1 && types[0] === "string") return schema.description;
  let words = types.map((t) => TYPE_WORDS[t] ?? t).join(" or ");
  if (types.includes("string") && schema.minLength === 1) words = words.replace("a string", "a non-empty string");
  const bounds: string[] = [];
  if (typeof schema.exclusiveMinimum === "number") bounds.push(`greater than ${schema.exclusiveMinimum}`);
  if (typeof schema.minimum === "number") bounds.push(`at least ${schema.minimum}`);
  if (typeof schema.maximum === "number") bounds.push(`at most ${schema.maximum}`);
  if (typeof schema.exclusiveMaximum === "number") bounds.push(`less than ${schema.exclusiveMaximum}`);
  if (bounds.length) words += ` ${bounds.join(" and ")}`;
  if (types.includes("object") && schema.properties) {
    const required = new Set((schema.required as string[] | undefined) ?? []);
    const keys = Object.keys(schema.properties as object).filter((k) => k !== "$schema");
    words += ` with ${keys.map((k) => (required.has(k) ? `${k} (required)` : k)).join(", ")}`;
  }
  if (types.includes("array") && schema.items) words += ` of ${describeAccepted(schema.items as Record<string, unknown>).replace(/^an? /, "")}s`;
  return words || "a value this schema accepts";
}

/** What an unknown key's neighbours are, by where it sits. */
function keyNoun(parent: string): string {
  if (parent === "") return "pipeline field";
  if (parent === "/precisions") return "precision";
  if (/^\/precisions\/[^/]+$/.test(parent)) return "tolerance";
  return `${fieldPath(parent)} field`;
}

/** One message per field that the schema refused, saying what it got and what is accepted. */
function schemaMessages(errors: ErrorObject[], root: SchemaNode): string[] {
  const byField = new Map<string, string>();
  // A bad key is reported twice (its pattern, then propertyNames naming the key): the naming one first.
  const ordered = [...errors].sort((a, b) => Number(b.keyword === "propertyNames") - Number(a.keyword === "propertyNames"));
  for (const e of ordered) {
    const parent = e.parentSchema as Record<string, unknown> | undefined;
    let field: string;
    let message: string;
    if (e.keyword === "additionalProperties") {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      field = fieldPath(e.instancePath, key);
      const known = Object.keys((parent?.properties as object | undefined) ?? {}).filter((k) => k !== "$schema");
      message = `${field} is not a ${keyNoun(e.instancePath)} (use ${known.join(", ")})`;
    } else if (e.keyword === "required") {
      field = fieldPath(e.instancePath, (e.params as { missingProperty: string }).missingProperty);
      const node = deref(((parent?.properties as Record<string, SchemaNode> | undefined) ?? {})[field.split(".").pop()!], root);
      message = `${field} is missing${node ? ` (${describeAccepted(node)})` : ""}`;
    } else if (e.keyword === "propertyNames") {
      // A key that must be a name (profiles: it becomes part of a file name).
      const name = (e.params as { propertyName: string }).propertyName;
      field = fieldPath(e.instancePath);
      message = `${field} has a key ${JSON.stringify(name)}; ${PROFILE_NAME_RULE}`;
    } else if (e.keyword === "minProperties") {
      field = fieldPath(e.instancePath);
      message = `${field} is empty; list at least one of ${Object.keys((parent?.properties as object | undefined) ?? {}).join(", ")}`;
    } else {
      field = fieldPath(e.instancePath);
      message = `${field || "a pipeline"} must be ${parent ? describeAccepted(parent) : (e.message ?? "valid")}, got ${JSON.stringify(e.data)}`;
    }
    // A field broken in several ways (type and range, say) gets one message.
    if (!byField.has(field)) byField.set(field, message);
  }
  return [...byField.values()];
}

/** `32x128` → [32, 128]: a profile corner as `bge build` takes it (a validated pipeline's shapes always parse). */
export function batchSeq(shape: BatchSeq): [number, number] {
  const [b, s] = shape.split("x").map(Number);
  return [b!, s!];
}

/** A profile's corners within the CLI's limits and in order (min ≤ opt ≤ max in batch and in sequence). */
function profileProblems(field: string, shapes: ProfileShapes): string[] {
  const problems: string[] = [];
  const corners = (["min", "opt", "max"] as const).map((k) => [k, batchSeq(shapes[k])] as const);
  for (const [k, [b, s]] of corners) {
    if (b > MAX_BATCH || s > MAX_SEQUENCE) problems.push(`${field}.${k} is ${shapes[k]}; a batch may be at most ${MAX_BATCH} and a sequence at most ${MAX_SEQUENCE}`);
  }
  for (let i = 0; i + 1 < corners.length; i++) {
    const [ka, [ba, sa]] = corners[i]!;
    const [kb, [bb, sb]] = corners[i + 1]!;
    if (ba > bb || sa > sb) problems.push(`${field}.${ka} ${shapes[ka]} exceeds ${field}.${kb} ${shapes[kb]} (batch and sequence must each keep min ≤ opt ≤ max)`);
  }
  return problems;
}

/** What the schema cannot say: a profile's corners in order and within limits, and a corpus that exists. */
async function semanticChecks(p: Omit<Pipeline, "file">, dir: string): Promise<string[]> {
  const problems: string[] = [];
  const maxLength = p.max_length ?? DEFAULT_MAX_LENGTH;
  if (p.shapes) {
    problems.push(...profileProblems("shapes", p.shapes));
    const [, maxSeq] = batchSeq(p.shapes.max);
    if (maxSeq < maxLength) {
      problems.push(`shapes.max ${p.shapes.max} takes sequences of at most ${maxSeq} tokens but max_length is ${maxLength}${p.max_length === undefined ? " (the default)" : ""}: raise shapes.max to Bx${maxLength} or lower max_length`);
    }
  }
  for (const [name, shapes] of Object.entries(p.profiles ?? {})) {
    problems.push(...profileProblems(`profiles.${name}`, shapes));
    // A named profile is there for what the default one cannot take.
    if (batchSeq(shapes.max)[1] <= maxLength) {
      problems.push(`profiles.${name}.max ${shapes.max} takes no longer sequences than max_length ${maxLength}, which the default profile (shapes) already covers: a named profile is for longer inputs`);
    }
  }
  if (p.calibration?.percentile !== undefined && p.calibration.method !== "percentile") {
    problems.push(`calibration.percentile applies to method "percentile" only, but calibration.method is ${JSON.stringify(p.calibration.method ?? "minmax")}`);
  }
  for (const [section, key] of PATH_FIELDS) {
    const rel = (p[section] as Record<string, string> | undefined)?.[key];
    if (rel === undefined) continue;
    try {
      await assertInputFile(resolve(dir, rel), "text file");
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      problems.push(`${section}.${key} (${JSON.stringify(rel)}, relative to the pipeline file's folder): ${err.message}`);
    }
  }
  return problems;
}

/**
 * Reads and validates a pipeline file: the JSON schema (pipelines/pipeline.schema.json), then what a
 * schema cannot say (profile corners in order, the profile covering max_length, the corpus files
 * existing). Any problem is a UsageError (exit 2) naming the file and each field, with what is
 * accepted. Paths come back absolute, resolved against the pipeline file's folder.
 */
export async function readPipeline(path: string): Promise<Pipeline> {
  await assertInputFile(path, "pipeline file");
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new UsageError(`${path}: cannot read pipeline (${(err as Error).message})`);
  }
  const { validate, schema } = await schemaValidator();
  if (!validate(raw)) {
    const messages = schemaMessages(validate.errors ?? [], schema);
    throw new UsageError(`${path}: ${messages.join("; ")} (schema: pipelines/pipeline.schema.json)`);
  }
  const p = raw as Omit<Pipeline, "file"> & { $schema?: string };
  const dir = dirname(resolve(path));
  const problems = await semanticChecks(p, dir);
  if (problems.length) throw new UsageError(`${path}: ${problems.join("; ")}`);
  const { $schema: _schema, ...rest } = p;
  const at = (rel: string) => resolve(dir, rel);
  return {
    file: resolve(path),
    ...rest,
    ...(rest.calibration ? { calibration: { ...rest.calibration, texts: at(rest.calibration.texts) } } : {}),
    ...(rest.verification
      ? { verification: { texts: at(rest.verification.texts), ...(rest.verification.queries !== undefined ? { queries: at(rest.verification.queries) } : {}) } }
      : {}),
  };
}

/** The bundled pipeline files (pipelines/<model>.json), absolute, sorted by name. */
export async function bundledPipelines(): Promise<string[]> {
  const names = await readdir(PIPELINES_DIR);
  return names
    .filter((n) => n.endsWith(".json") && !n.endsWith(".schema.json"))
    .sort()
    .map((n) => join(PIPELINES_DIR, n));
}

/**
 * The bundled pipeline for a hub id (`BAAI/bge-small-zh-v1.5`, also `…@<revision>`): pipelines/<name>.json
 * when that file's model is this id (case aside), else undefined — a fine-tune that shares a name under
 * another organisation does not get BAAI's pins. A revision in the id is the caller's to weigh against
 * the pipeline's.
 */
export async function loadPipelineFor(modelId: string): Promise<Pipeline | undefined> {
  const id = modelId.replace(/@[^@/]*$/, "");
  const m = /^([A-Za-z0-9][\w.-]*)\/([A-Za-z0-9][\w.-]*)$/.exec(id);
  if (!m) return undefined;
  const file = (await bundledPipelines()).find((f) => basename(f, ".json").toLowerCase() === m[2]!.toLowerCase());
  if (!file) return undefined;
  const pipeline = await readPipeline(file);
  return pipeline.model.toLowerCase() === id.toLowerCase() ? pipeline : undefined;
}
