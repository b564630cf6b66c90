import { readFile, stat } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { sha256File } from "../util/sha256.js";
import { UsageError } from "../errors.js";
import { writeFileAtomic } from "../util/atomic.js";

export const ARTIFACT_FORMAT = "bge-artifact/1";
export const MANIFEST_NAME = "manifest.json";

/** Every role a manifest may give a file (SPEC "Artifact folder"); anything else is refused on reading. */
export const ARTIFACT_ROLES = [
  "onnx-fp32",
  "onnx-fp16",
  "onnx-int8-qdq",
  "onnx-int8-dynamic",
  "onnx-data",
  "trt-fp16",
  "trt-int8",
  "trt-fp32",
  "trt-log",
  "calib-cache",
  "tokenizer",
  "config",
  "golden",
] as const;
export type ArtifactRole = (typeof ARTIFACT_ROLES)[number];

export interface BuiltBy {
  tool: string;
  version: string;
  args: string[];
}

export interface ArtifactFile {
  path: string;
  role: ArtifactRole;
  sha256: string;
  size: number;
  /** For ONNX models: the external data file it loads, if any. */
  external_data?: string;
  built_by?: BuiltBy;
  /** INT8 models and the calibration cache: how they were calibrated. */
  quantization?: QuantizationRecord;
  /** TensorRT engines: an engine runs only with the TensorRT version and the GPU that built it. */
  trt?: EngineRecord;
}

export interface EngineRecord {
  /** TensorRT version X.Y.Z and its dialect family. */
  version: string;
  family: "8.6" | "10" | "11";
  gpu: string | null;
  compute_capability: string | null;
  /** The graph it was built from (its path in this folder) and the log of the build. */
  source: string;
  log: string;
  shapes: { min: [number, number]; opt: [number, number]; max: [number, number] };
  inputs: string[];
  /** Engine outputs: those of the graph it was built from. */
  outputs: string[];
  int8_source?: "qdq" | "calib";
  strongly_typed?: boolean;
  /**
   * A named profile beside the default one (bge-m3's "8192": long inputs): the engine is
   * model.<precision>.<profile>.plan, and runners take it for inputs the default engine cannot.
   */
  profile?: string;
}

/** A named engine profile becomes part of a file name (model.fp16.<name>.plan); pipeline.schema.json says the same. */
export const PROFILE_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;
export const PROFILE_NAME_RULE = "a profile name is 1–32 lowercase letters, digits and -, starting with a letter or digit";

export interface ParityRecord {
  pass: boolean;
  golden: string;
  min_cosine: number;
  mean_cosine: number;
  tolerance: number;
  checked_at: string;
}

/**
 * What `bge convert` did to the folder, stage by stage: each stage's key is the sha256 of its inputs'
 * hashes and the options that affect it, so that a rerun skips a stage whose key is unchanged and
 * whose outputs still match their hashes.
 */
export interface ConvertRecord {
  format: "bge-convert/1";
  stages: Record<string, StageRecord>;
}

export interface StageRecord {
  key: string;
  /** sha256 of each input (files by name, or a tool's identity). */
  inputs: Record<string, string>;
  /** The options that went into the key. */
  options: Record<string, unknown>;
  /** Files of this folder the stage wrote. */
  outputs: string[];
  seconds: number;
  finished: string;
  /** Stages that record a result (verify): what they found, reused when the stage is skipped. */
  result?: unknown;
}

export interface Manifest {
  format: typeof ARTIFACT_FORMAT;
  created: string;
  source: { model_id: string; revision: string | null; weights_sha256: string; arch: "bert" | "xlm-roberta"; hidden_size: number };
  pooling: "cls" | "mean" | "none";
  normalize: boolean;
  max_length: number;
  query_instruction: string | null;
  files: ArtifactFile[];
  parity: Record<string, ParityRecord>;
  convert?: ConvertRecord;
  /**
   * The heads the ONNX graphs carry (bge-m3): "dense" is `sentence_embedding`, "sparse" the per-token
   * `sparse_weights`, "colbert" the `colbert_vectors`. Absent: dense only.
   */
  heads?: ("dense" | "sparse" | "colbert")[];
}

/**
 * The precision names users pass (`--precision`) and the ONNX roles they select: `int8` is the
 * integer-MatMul graph for ONNX Runtime CPU, `int8-qdq` the Q/DQ graph for TensorRT (SPEC).
 */
export const ONNX_ROLES = { fp32: "onnx-fp32", fp16: "onnx-fp16", int8: "onnx-int8-dynamic", "int8-qdq": "onnx-int8-qdq" } as const satisfies Record<string, ArtifactRole>;
export type OnnxPrecisionName = keyof typeof ONNX_ROLES;
export const ONNX_PRECISIONS = Object.keys(ONNX_ROLES) as OnnxPrecisionName[];

/** The precision names of TensorRT engines (`--precision` with `--backend trt`) and their roles. */
export const TRT_ROLES = { fp32: "trt-fp32", fp16: "trt-fp16", int8: "trt-int8" } as const satisfies Record<string, ArtifactRole>;
export type TrtPrecisionName = keyof typeof TRT_ROLES;
export const TRT_PRECISIONS = Object.keys(TRT_ROLES) as TrtPrecisionName[];

/** The precision name of an ONNX model's or engine's role (`onnx-int8-dynamic` → `int8`, `trt-fp16` → `fp16`). */
export function precisionOfRole(role: ArtifactRole): OnnxPrecisionName | undefined {
  return ONNX_PRECISIONS.find((p) => ONNX_ROLES[p] === role) ?? TRT_PRECISIONS.find((p) => TRT_ROLES[p] === role);
}

/** How an INT8 model was made: enough to tell whether a rerun would make the same one. */
export interface QuantizationRecord {
  method: "minmax" | "percentile" | "entropy";
  percentile?: number;
  /** sha256 of the calibration corpus file as read. */
  corpus_sha256: string;
  texts: number;
  tokens: number;
  /** Targets left in float (node names): asked for with --exclude, or found unrepresentable. */
  excluded: string[];
  /** Targets kept in float because INT8 would round most of an input to zero, with that share. */
  auto_excluded?: { node: string; zeroed_share: number }[];
  /** Activation tensors calibrated, and the spread of their amax. */
  tensors: number;
  amax: { min: number; median: number; max: number };
  calibration_seconds: number;
}

export async function describeFile(dir: string, path: string, role: ArtifactRole, extra: Partial<ArtifactFile> = {}): Promise<ArtifactFile> {
  const full = join(dir, path);
  const [sha256, s] = await Promise.all([sha256File(full), stat(full)]);
  return { path, role, sha256, size: s.size, ...extra };
}

export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(join(dir, MANIFEST_NAME), JSON.stringify(manifest, null, 2) + "\n");
}

export async function readManifest(dir: string): Promise<Manifest> {
  const path = join(dir, MANIFEST_NAME);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(code === "ENOENT" ? `${dir}: not an artifact folder (no ${MANIFEST_NAME}; make one with bge export)` : `${path}: unreadable manifest (${(err as Error).message})`);
  }
  return validateManifest(raw, path, dir);
}

/**
 * Checks every field of a parsed manifest against the Manifest type: runners trust these fields
 * (pooling, normalize, max_length pick how vectors are computed), so a wrong one is exit 2 naming
 * the field and its value, never a silently different vector.
 */
export function validateManifest(raw: unknown, path: string, dir: string): Manifest {
  const bad = (field: string, value: unknown, expected: string) =>
    new UsageError(`${path}: field ${field} is ${value === undefined ? "missing" : JSON.stringify(value)}, expected ${expected}`);
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  const isSha256 = (v: unknown) => typeof v === "string" && /^[0-9a-f]{64}$/.test(v);
  const isCount = (v: unknown, min: number) => typeof v === "number" && Number.isSafeInteger(v) && v >= min;
  if (!isObject(raw)) throw new UsageError(`${path}: manifest is not a JSON object`);
  const m = raw;
  if (m.format !== ARTIFACT_FORMAT) throw new UsageError(`${path}: format is ${JSON.stringify(m.format)}, expected "${ARTIFACT_FORMAT}"`);
  if (typeof m.created !== "string") throw bad("created", m.created, "a timestamp string");

  const src = m.source;
  if (!isObject(src)) throw bad("source", src, "an object");
  if (typeof src.model_id !== "string" || !src.model_id) throw bad("source.model_id", src.model_id, "a non-empty string");
  if (src.revision !== null && typeof src.revision !== "string") throw bad("source.revision", src.revision, "a commit string or null");
  if (!isSha256(src.weights_sha256)) throw bad("source.weights_sha256", src.weights_sha256, "64 lowercase hex digits");
  if (src.arch !== "bert" && src.arch !== "xlm-roberta") throw bad("source.arch", src.arch, '"bert" or "xlm-roberta"');
  if (!isCount(src.hidden_size, 1)) throw bad("source.hidden_size", src.hidden_size, "a positive integer");

  if (m.pooling !== "cls" && m.pooling !== "mean" && m.pooling !== "none") throw bad("pooling", m.pooling, '"cls", "mean" or "none"');
  if (typeof m.normalize !== "boolean") throw bad("normalize", m.normalize, "true or false");
  if (!isCount(m.max_length, 2)) throw bad("max_length", m.max_length, "an integer ≥ 2");
  if (m.query_instruction !== null && typeof m.query_instruction !== "string") throw bad("query_instruction", m.query_instruction, "a string or null");

  if (!Array.isArray(m.files)) throw bad("files", m.files, "a list of files");
  const root = resolve(dir);
  const inside = (p: unknown) => typeof p === "string" && p !== "" && resolve(root, p).startsWith(root + sep);
  m.files.forEach((f: unknown, i: number) => {
    const at = `files[${i}]`;
    if (!isObject(f)) throw bad(at, f, "an object");
    if (!inside(f.path)) throw new UsageError(`${path}: file entry ${JSON.stringify(f.path)} points outside the artifact folder`);
    if (!(ARTIFACT_ROLES as readonly unknown[]).includes(f.role)) throw bad(`${at}.role`, f.role, `one of ${ARTIFACT_ROLES.join(", ")}`);
    if (!isSha256(f.sha256)) throw bad(`${at}.sha256`, f.sha256, "64 lowercase hex digits");
    if (!isCount(f.size, 0)) throw bad(`${at}.size`, f.size, "a byte count");
    if (f.external_data !== undefined && !inside(f.external_data)) throw new UsageError(`${path}: external data ${JSON.stringify(f.external_data)} of ${f.path} points outside the artifact folder`);
    const b = f.built_by;
    if (b !== undefined && !(isObject(b) && typeof b.tool === "string" && typeof b.version === "string" && Array.isArray(b.args) && b.args.every((a) => typeof a === "string"))) {
      throw bad(`${at}.built_by`, b, "{tool, version, args: [strings]}");
    }
  });

  if (!isObject(m.parity)) throw bad("parity", m.parity, "an object of parity results by file");
  for (const [file, r] of Object.entries(m.parity)) {
    // A failed run may record NaN cosines, which JSON writes as null.
    const cos = (v: unknown) => v === null || typeof v === "number";
    if (!isObject(r) || typeof r.pass !== "boolean" || !cos(r.min_cosine) || !cos(r.mean_cosine) || !cos(r.tolerance)) {
      throw bad(`parity[${JSON.stringify(file)}]`, r, "{pass, golden, min_cosine, mean_cosine, tolerance, checked_at}");
    }
  }
  if (m.heads !== undefined) {
    const h = m.heads;
    if (!Array.isArray(h) || !h.includes("dense") || h.some((x) => x !== "dense" && x !== "sparse" && x !== "colbert") || new Set(h).size !== h.length) {
      throw bad("heads", h, 'a list of distinct "dense", "sparse", "colbert" that includes "dense"');
    }
  }
  if (m.convert !== undefined) {
    const c = m.convert;
    if (!isObject(c) || c.format !== "bge-convert/1" || !isObject(c.stages)) throw bad("convert", c, '{format: "bge-convert/1", stages}');
    for (const [name, st] of Object.entries(c.stages)) {
      if (!isObject(st) || !isSha256(st.key) || !isObject(st.inputs) || !Array.isArray(st.outputs)) throw bad(`convert.stages.${name}`, st, "{key, inputs, options, outputs, seconds, finished}");
    }
  }
  return m as unknown as Manifest;
}

/** Refuses an artifact whose files differ from what its manifest recorded (sha256 and size), naming the first. */
export async function verifyManifestFiles(dir: string, manifest: Manifest, only?: (f: ArtifactFile) => boolean): Promise<void> {
  for (const f of manifest.files.filter(only ?? (() => true))) {
    const full = join(dir, f.path);
    let size: number;
    try {
      size = (await stat(full)).size;
    } catch {
      throw new UsageError(`${dir}: ${f.path} is listed in the manifest but missing`);
    }
    if (size !== f.size) throw new UsageError(`${dir}: ${f.path} is ${size} bytes, the manifest says ${f.size}: the artifact was modified`);
    const sha = await sha256File(full);
    if (sha !== f.sha256) throw new UsageError(`${dir}: ${f.path} has sha256 ${sha}, the manifest says ${f.sha256}: the artifact was modified`);
  }
}
