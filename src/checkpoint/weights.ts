import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { UsageError } from "../errors.js";
import type { EncoderConfig } from "./config.js";
import { assertFiniteTensor } from "./dtype.js";
import { readSafetensors } from "./safetensors.js";
import { openTorchBin } from "./torch-bin.js";
import { DTYPE_BYTES, elementCount, tensorChunks, type ChunkScratch, type TensorInfo, type TensorSource } from "./tensor.js";
import { sha256FileInWorker } from "../util/hash-worker.js";
import { pathExists as exists } from "../util/fs.js";

/** Which files hold a checkpoint's weights, in the order FlagModel's transformers would prefer them. */
export interface WeightFiles {
  format: "safetensors" | "safetensors-sharded" | "pytorch-bin";
  files: string[];
}

export async function findWeightFiles(dir: string): Promise<WeightFiles> {
  if (await exists(join(dir, "model.safetensors"))) return { format: "safetensors", files: [join(dir, "model.safetensors")] };
  const index = join(dir, "model.safetensors.index.json");
  if (await exists(index)) {
    const shards = [...new Set(Object.values(await readShardIndex(index)))].sort();
    return { format: "safetensors-sharded", files: shards.map((s) => join(dir, s)) };
  }
  if (await exists(join(dir, "pytorch_model.bin"))) return { format: "pytorch-bin", files: [join(dir, "pytorch_model.bin")] };
  throw new UsageError(`${dir}: no weights found (expected model.safetensors, model.safetensors.index.json or pytorch_model.bin)`);
}

async function readShardIndex(path: string): Promise<Record<string, string>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new UsageError(`${path}: cannot read the shard index (${(err as Error).message})`);
  }
  const map = (parsed as { weight_map?: unknown })?.weight_map;
  if (typeof map !== "object" || map === null) throw new UsageError(`${path}: shard index has no weight_map object`);
  const root = resolve(path, "..");
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== "string" || !file.endsWith(".safetensors")) {
      throw new UsageError(`${path}: weight_map entry ${name} must name a .safetensors file`);
    }
    const full = resolve(root, file);
    if (!full.startsWith(root + sep)) throw new UsageError(`${path}: weight_map entry ${name} points outside the model folder (${file})`);
  }
  return map as Record<string, string>;
}

/**
 * HF checkpoints store the encoder under `bert.` / `roberta.` (heads) or bare (BertModel), and old
 * TF conversions call LayerNorm parameters gamma/beta. Everything downstream uses the bare names.
 */
export function normalizeTensorName(name: string): string {
  return name
    .replace(/^(bert|roberta|model)\./, "")
    .replace(/LayerNorm\.gamma$/, "LayerNorm.weight")
    .replace(/LayerNorm\.beta$/, "LayerNorm.bias");
}

/** A TensorSource whose names are normalised and whose tensors may come from several shards. */
class NormalizedSource implements TensorSource {
  private readonly byName = new Map<string, { source: TensorSource; info: TensorInfo; original: string }>();
  constructor(
    readonly path: string,
    private readonly sources: TensorSource[],
  ) {
    for (const source of sources) {
      for (const info of source.list()) {
        const name = normalizeTensorName(info.name);
        if (this.byName.has(name)) throw new UsageError(`${path}: tensor ${name} appears twice in the checkpoint`);
        this.byName.set(name, { source, info: { ...info, name }, original: info.name });
      }
    }
  }
  list(): TensorInfo[] {
    return [...this.byName.values()].map((e) => e.info);
  }
  async readBytes(name: string): Promise<Uint8Array> {
    const e = this.byName.get(name);
    if (!e) throw new UsageError(`${this.path}: checkpoint has no tensor ${name}`);
    const bytes = await e.source.readBytes(e.original);
    // Every consumer (reference, export) reads through here: one NaN/Inf turns every vector into NaN.
    assertFiniteTensor(bytes, e.info.dtype, `${e.source.path}: tensor ${e.original}`);
    return bytes;
  }
  async *readChunks(name: string, scratch: ChunkScratch): AsyncGenerator<Uint8Array> {
    const e = this.byName.get(name);
    if (!e) throw new UsageError(`${this.path}: checkpoint has no tensor ${name}`);
    const size = DTYPE_BYTES[e.info.dtype];
    const count = elementCount(e.info.shape);
    let first = 0;
    for await (const chunk of tensorChunks(e.source, e.original, scratch, size)) {
      assertFiniteTensor(chunk, e.info.dtype, `${e.source.path}: tensor ${e.original}`, { first, count });
      first += chunk.byteLength / size;
      yield chunk;
    }
  }
  /** File order across shards: the shard's index, then the offset within it. */
  position(name: string): number | undefined {
    const e = this.byName.get(name);
    const at = e?.source.position?.(e.original);
    return e && at !== undefined ? this.sources.indexOf(e.source) * 2 ** 45 + at : undefined;
  }
  startDigest(): boolean {
    if (!this.sources.every((s) => s.startDigest && s.finishDigest && s.position)) return false;
    for (const s of this.sources) s.startDigest!();
    return true;
  }
  /** As hashWeights: the file's sha256, or for shards that of "<shard name> <sha256>" lines in name order. */
  async finishDigest(): Promise<string | undefined> {
    const digests = await Promise.all(this.sources.map((s) => s.finishDigest?.()));
    if (digests.some((d) => d === undefined)) return undefined;
    if (digests.length === 1) return digests[0];
    const h = createHash("sha256");
    this.sources.forEach((s, i) => h.update(`${s.path.split(sep).pop()} ${digests[i]}\n`));
    return h.digest("hex");
  }
  async close(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.close()));
  }
}

/** Opens whatever weights the folder has, with normalised tensor names. */
export async function openWeights(dir: string): Promise<TensorSource> {
  const wf = await findWeightFiles(dir);
  const sources: TensorSource[] = [];
  try {
    for (const file of wf.files) {
      sources.push(wf.format === "pytorch-bin" ? await openTorchBin(file) : await readSafetensors(file));
    }
    return new NormalizedSource(wf.files.length === 1 ? wf.files[0]! : join(dir, "model.safetensors.index.json"), sources);
  } catch (err) {
    await Promise.all(sources.map((s) => s.close()));
    throw err;
  }
}

/** The config.json fields that fix the dimensions of encoder tensors. */
type DimensionField = "vocab_size" | "hidden_size" | "max_position_embeddings" | "type_vocab_size" | "intermediate_size";

function dimensionValue(cfg: EncoderConfig, field: DimensionField): number {
  switch (field) {
    case "vocab_size":
      return cfg.vocabSize;
    case "hidden_size":
      return cfg.hiddenSize;
    case "max_position_embeddings":
      return cfg.maxPositionEmbeddings;
    case "type_vocab_size":
      return cfg.typeVocabSize;
    case "intermediate_size":
      return cfg.intermediateSize;
  }
}

/** Every encoder tensor (names as normalised) with the config field behind each of its dimensions. */
function encoderTensorFields(cfg: EncoderConfig): Map<string, DimensionField[]> {
  const fields = new Map<string, DimensionField[]>([
    ["embeddings.word_embeddings.weight", ["vocab_size", "hidden_size"]],
    ["embeddings.position_embeddings.weight", ["max_position_embeddings", "hidden_size"]],
    ["embeddings.token_type_embeddings.weight", ["type_vocab_size", "hidden_size"]],
    ["embeddings.LayerNorm.weight", ["hidden_size"]],
    ["embeddings.LayerNorm.bias", ["hidden_size"]],
  ]);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `encoder.layer.${l}`;
    for (const m of ["query", "key", "value"]) {
      fields.set(`${p}.attention.self.${m}.weight`, ["hidden_size", "hidden_size"]);
      fields.set(`${p}.attention.self.${m}.bias`, ["hidden_size"]);
    }
    fields.set(`${p}.attention.output.dense.weight`, ["hidden_size", "hidden_size"]);
    fields.set(`${p}.attention.output.dense.bias`, ["hidden_size"]);
    fields.set(`${p}.attention.output.LayerNorm.weight`, ["hidden_size"]);
    fields.set(`${p}.attention.output.LayerNorm.bias`, ["hidden_size"]);
    fields.set(`${p}.intermediate.dense.weight`, ["intermediate_size", "hidden_size"]);
    fields.set(`${p}.intermediate.dense.bias`, ["intermediate_size"]);
    fields.set(`${p}.output.dense.weight`, ["hidden_size", "intermediate_size"]);
    fields.set(`${p}.output.dense.bias`, ["hidden_size"]);
    fields.set(`${p}.output.LayerNorm.weight`, ["hidden_size"]);
    fields.set(`${p}.output.LayerNorm.bias`, ["hidden_size"]);
  }
  return fields;
}

/** The shape every encoder tensor must have under this config (names as normalised). */
export function expectedEncoderShapes(cfg: EncoderConfig): Map<string, number[]> {
  return new Map([...encoderTensorFields(cfg)].map(([name, fields]) => [name, fields.map((f) => dimensionValue(cfg, f))]));
}

const LAYER_NAME = /^encoder\.layer\.(\d+)\./;

/**
 * Refuses a checkpoint whose tensors are missing or contradict config.json, naming the first
 * offender and, where a config field is to blame, the field with both values. Header only: no
 * tensor data is read, so every command can run it before any work.
 */
export function checkEncoderShapes(source: TensorSource, cfg: EncoderConfig): void {
  const have = new Map(source.list().map((i) => [i.name, i]));
  const expected = encoderTensorFields(cfg);
  checkLayerCount(source, cfg, have, expected);
  for (const [name, fields] of expected) {
    const shape = fields.map((f) => dimensionValue(cfg, f));
    const info = have.get(name);
    if (!info) throw new UsageError(`${source.path}: tensor ${name} is missing (config.json describes ${cfg.numLayers} ${cfg.arch} layers)`);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      const i = info.shape.length === shape.length ? shape.findIndex((d, k) => d !== info.shape[k]) : -1;
      const field = i >= 0 ? ` (config.json ${fields[i]} is ${shape[i]}, the weights have ${info.shape[i]})` : "";
      throw new UsageError(`${source.path}: tensor ${name} has shape [${info.shape.join(", ")}] but config.json implies [${shape.join(", ")}]${field}; use the config.json that came with these weights`);
    }
    if (!["F32", "F16", "BF16", "F64"].includes(info.dtype)) {
      throw new UsageError(`${source.path}: tensor ${name} has dtype ${info.dtype}; expected F32, F16 or BF16`);
    }
  }
}

/**
 * num_hidden_layers against the encoder.layer.N tensors present: more layers than the config says
 * would be silently skipped (a different model), fewer would be missing mid-load.
 */
function checkLayerCount(source: TensorSource, cfg: EncoderConfig, have: Map<string, TensorInfo>, expected: Map<string, unknown>): void {
  const present = new Set<number>();
  for (const name of have.keys()) {
    const m = LAYER_NAME.exec(name);
    if (m) present.add(Number(m[1]));
  }
  const beyond = [...present].filter((l) => l >= cfg.numLayers).sort((a, b) => a - b);
  const missing = [...expected.keys()].find((name) => LAYER_NAME.test(name) && !have.has(name));
  if (beyond.length === 0 && present.size === cfg.numLayers) return;
  const why = beyond.length ? `encoder.layer.${beyond[0]} and beyond would be ignored` : `tensor ${missing} is missing`;
  throw new UsageError(
    `${source.path}: config.json num_hidden_layers is ${cfg.numLayers} but the weights hold ${present.size} encoder layers (${why}); use the config.json that came with these weights`,
  );
}

/** Config against weights from the safetensors/bin headers alone, for commands that do not load the weights themselves. */
export async function checkWeightsMatchConfig(dir: string, cfg: EncoderConfig): Promise<void> {
  const source = await openWeights(dir);
  try {
    checkEncoderShapes(source, cfg);
  } finally {
    await source.close();
  }
}

/**
 * sha256 identifying the weights: of the file itself for a single file; for shards, of the lines
 * "<shard name> <sha256>" in name order. Streamed.
 */
export async function hashWeights(dir: string): Promise<string> {
  const wf = await findWeightFiles(dir);
  const digests = await Promise.all(wf.files.map((f) => sha256FileInWorker(f)));
  if (digests.length === 1) return digests[0]!;
  const h = createHash("sha256");
  wf.files.forEach((f, i) => h.update(`${f.split(sep).pop()} ${digests[i]}\n`));
  return h.digest("hex");
}

