import { mkdir, readdir, rename, rm, rmdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { UsageError } from "../errors.js";
import { lockFolder } from "../util/folder-lock.js";
import { pathExists, isDir } from "../util/fs.js";
import { tempPathFor } from "../util/atomic.js";
import { onInterrupt, trackTempPath } from "../util/interrupt.js";
import { rmdirSync } from "node:fs";
import { MANIFEST_NAME, readManifest, writeManifest, type Manifest } from "./manifest.js";

/** Names bge writes into an artifact folder: what it may remove when no manifest lists them. */
const OWN_NAMES = [
  /^model\.[A-Za-z0-9.-]+\.onnx(\.data)?$/,
  /^model\.[A-Za-z0-9-]+\.(plan|engine|log|cache)$/,
  /^(tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|vocab\.txt|sentencepiece\.bpe\.model)$/,
  /^(config\.json|modules\.json|sentence_bert_config\.json|config_sentence_transformers\.json|1_Pooling\/config\.json)$/,
  /^calibration\.[A-Za-z0-9.-]+$/,
  /^golden\.json$/,
];

export function isOwnArtifactName(path: string): boolean {
  return OWN_NAMES.some((re) => re.test(path));
}

async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, prefix), { withFileTypes: true })) {
    if (e.name.startsWith(".")) continue;
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else out.push(rel);
  }
  return out;
}

export interface ArtifactWriteContext {
  /** A private folder inside the artifact folder: write this run's files here, under their final relative names. */
  staging: string;
  /** The manifest the folder held before, if it was an artifact. */
  previous?: Manifest;
}

export interface ArtifactWriteOptions {
  /** The writing command, named in the lock. */
  command: string;
  warn?: (message: string) => void;
}

/**
 * The one protocol for writing an artifact folder. The folder is locked; this run's files are written
 * into a staging folder inside it and take their final names only once all of them are complete,
 * followed by the manifest; then whatever the folder holds of bge's own files that the new manifest
 * does not list (an earlier checkpoint's model, an interrupted run's leftovers) is removed. On failure
 * or interruption the staging folder goes, and a folder this run created is removed again. A folder
 * holding other files than an artifact's is refused.
 */
export async function writeArtifactFolder(
  outDir: string,
  options: ArtifactWriteOptions,
  fill: (ctx: ArtifactWriteContext) => Promise<Manifest>,
): Promise<Manifest> {
  const created = !(await pathExists(outDir));
  if (!created && !(await isDir(outDir))) throw new UsageError(`${outDir} is a file; give a folder name (new or empty, or an artifact folder)`);
  await mkdir(outDir, { recursive: true });
  // Registered before the lock so that, interrupted, the lock goes first and then the folder, if empty.
  const dropCreated = created ? onInterrupt(() => rmdirSync(outDir)) : () => undefined;
  let lock;
  try {
    lock = await lockFolder(outDir, { command: options.command, warn: options.warn });
  } catch (err) {
    dropCreated();
    if (created) await rmdir(outDir).catch(() => undefined);
    throw err;
  }
  const staging = tempPathFor(join(outDir, "staging"));
  const untrack = trackTempPath(staging);
  let committed = false;
  try {
    const previous = await existingArtifact(outDir, lock.tookOverStale);
    await mkdir(staging);
    const manifest = await fill({ staging, previous });
    for (const f of manifest.files) {
      const from = join(staging, f.path);
      if (!(await pathExists(from))) continue;
      const to = join(outDir, f.path);
      await mkdir(dirname(to), { recursive: true });
      await rename(from, to);
    }
    await writeManifest(outDir, manifest);
    committed = true;
    await pruneUnlisted(outDir, manifest);
    return manifest;
  } finally {
    await rm(staging, { recursive: true, force: true });
    untrack();
    await lock.release();
    dropCreated();
    if (created && !committed) await rm(outDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** The folder's manifest, or undefined for an empty folder (or one holding only an interrupted bge run's files). */
async function existingArtifact(outDir: string, interruptedRun: boolean): Promise<Manifest | undefined> {
  if (await pathExists(join(outDir, MANIFEST_NAME))) return readManifest(outDir);
  const entries = await listFiles(outDir);
  const foreign = entries.filter((e) => !isOwnArtifactName(e));
  if (foreign.length || (entries.length && !interruptedRun)) {
    throw new UsageError(`${outDir} is not empty and not a bge artifact folder (it holds ${JSON.stringify((foreign[0] ?? entries[0])!)}); choose a new or empty folder`);
  }
  return undefined;
}

/** After any command the folder holds exactly what its manifest lists (plus files that are not bge's). */
async function pruneUnlisted(outDir: string, manifest: Manifest): Promise<void> {
  const listed = new Set([MANIFEST_NAME, ...manifest.files.map((f) => f.path)]);
  for (const f of await listFiles(outDir)) {
    if (!listed.has(f) && isOwnArtifactName(f)) await rm(join(outDir, f), { force: true });
  }
  if ((await pathExists(join(outDir, "1_Pooling"))) && (await readdir(join(outDir, "1_Pooling"))).length === 0) await rmdir(join(outDir, "1_Pooling"));
}
