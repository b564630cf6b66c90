import { createHash } from "node:crypto";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { sha256File } from "../util/sha256.js";

/** JSON with object keys sorted at every depth: the same options always give the same key. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

/**
 * A stage's key: the sha256 of its name, the hashes of its inputs and the options that affect its
 * output. The tool's version is one of those options: another bge may write other bytes.
 */
export function stageKey(stage: string, inputs: Record<string, string>, options: Record<string, unknown>): string {
  return createHash("sha256").update(canonicalJson({ stage, inputs, options })).digest("hex");
}

/**
 * sha256 of every file of a checkpoint folder by its relative path: the weights, the config and the
 * tokenizer files. Content, not mtimes: a file rewritten with other bytes and an old mtime is seen.
 * Hidden files and the hub's optional `onnx/` export are not inputs of the conversion.
 */
export async function hashFolderFiles(dir: string): Promise<Record<string, string>> {
  return hashTree(dir, "", (rel) => rel === "onnx");
}

/**
 * The identity of the code that runs the stages: the sha256 of every compiled module of this bge.
 * A stage made by other code (a new version, or a build of other sources) is made again.
 */
export async function codeIdentity(distDir: string): Promise<string> {
  const files = await hashTree(distDir, "", () => false);
  return createHash("sha256").update(canonicalJson(Object.fromEntries(Object.entries(files).filter(([p]) => p.endsWith(".js"))))).digest("hex");
}

async function hashTree(dir: string, prefix: string, skipDir: (rel: string) => boolean): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const entries = await readdir(join(dir, prefix), { withFileTypes: true });
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (e.name.startsWith(".")) continue;
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    const full = join(dir, rel);
    // The hub cache's snapshot folders hold symlinks into blobs/: the content is what counts.
    const kind = e.isSymbolicLink() ? await stat(full) : e;
    if (kind.isDirectory()) {
      if (!skipDir(rel)) Object.assign(out, await hashTree(dir, rel, skipDir));
    } else if (kind.isFile()) {
      out[rel] = await sha256File(full);
    }
  }
  return out;
}
