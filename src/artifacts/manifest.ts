import { readFile, stat } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { sha256File } from "../checkpoint/weights.js";
import { UsageError } from "../errors.js";
import { writeFileAtomic } from "../util/atomic.js";

export const ARTIFACT_FORMAT = "bge-artifact/1";
export const MANIFEST_NAME = "manifest.json";

export type ArtifactRole =
  | "onnx-fp32"
  | "onnx-fp16"
  | "onnx-int8-qdq"
  | "onnx-int8-dynamic"
  | "onnx-data"
  | "trt-fp16"
  | "trt-int8"
  | "calib-cache"
  | "tokenizer"
  | "config";

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
}

export interface ParityRecord {
  pass: boolean;
  golden: string;
  min_cosine: number;
  mean_cosine: number;
  tolerance: number;
  checked_at: string;
}

export interface Manifest {
  format: typeof ARTIFACT_FORMAT;
  created: string;
  source: { model_id: string; revision: string | null; weights_sha256: string; arch: string; hidden_size: number };
  pooling: "cls" | "mean" | "none";
  normalize: boolean;
  max_length: number;
  query_instruction: string | null;
  files: ArtifactFile[];
  parity: Record<string, ParityRecord>;
}

export const ONNX_ROLES: Record<string, ArtifactRole> = { fp32: "onnx-fp32", fp16: "onnx-fp16", int8: "onnx-int8-qdq", "int8-dynamic": "onnx-int8-dynamic" };

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
  const m = raw as Manifest;
  if (m?.format !== ARTIFACT_FORMAT) throw new UsageError(`${path}: format is ${JSON.stringify(m?.format)}, expected "${ARTIFACT_FORMAT}"`);
  if (!Array.isArray(m.files)) throw new UsageError(`${path}: manifest has no files list`);
  const root = resolve(dir);
  for (const f of m.files) {
    if (typeof f.path !== "string" || !resolve(root, f.path).startsWith(root + sep)) throw new UsageError(`${path}: file entry ${JSON.stringify(f.path)} points outside the artifact folder`);
  }
  return m;
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
