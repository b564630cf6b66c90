import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { UsageError } from "../errors.js";
import type { EncoderConfig } from "./config.js";
import { readSafetensors } from "./safetensors.js";
import { openTorchBin } from "./torch-bin.js";
import type { TensorInfo, TensorSource } from "./tensor.js";
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
    return e.source.readBytes(e.original);
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

/** The shape every encoder tensor must have under this config (names as normalised). */
export function expectedEncoderShapes(cfg: EncoderConfig): Map<string, number[]> {
  const h = cfg.hiddenSize;
  const shapes = new Map<string, number[]>([
    ["embeddings.word_embeddings.weight", [cfg.vocabSize, h]],
    ["embeddings.position_embeddings.weight", [cfg.maxPositionEmbeddings, h]],
    ["embeddings.token_type_embeddings.weight", [cfg.typeVocabSize, h]],
    ["embeddings.LayerNorm.weight", [h]],
    ["embeddings.LayerNorm.bias", [h]],
  ]);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `encoder.layer.${l}`;
    for (const m of ["query", "key", "value"]) {
      shapes.set(`${p}.attention.self.${m}.weight`, [h, h]);
      shapes.set(`${p}.attention.self.${m}.bias`, [h]);
    }
    shapes.set(`${p}.attention.output.dense.weight`, [h, h]);
    shapes.set(`${p}.attention.output.dense.bias`, [h]);
    shapes.set(`${p}.attention.output.LayerNorm.weight`, [h]);
    shapes.set(`${p}.attention.output.LayerNorm.bias`, [h]);
    shapes.set(`${p}.intermediate.dense.weight`, [cfg.intermediateSize, h]);
    shapes.set(`${p}.intermediate.dense.bias`, [cfg.intermediateSize]);
    shapes.set(`${p}.output.dense.weight`, [h, cfg.intermediateSize]);
    shapes.set(`${p}.output.dense.bias`, [h]);
    shapes.set(`${p}.output.LayerNorm.weight`, [h]);
    shapes.set(`${p}.output.LayerNorm.bias`, [h]);
  }
  return shapes;
}

/** Refuses a checkpoint whose tensors are missing or contradict config.json, naming the first offender. */
export function checkEncoderShapes(source: TensorSource, cfg: EncoderConfig): void {
  const have = new Map(source.list().map((i) => [i.name, i]));
  for (const [name, shape] of expectedEncoderShapes(cfg)) {
    const info = have.get(name);
    if (!info) throw new UsageError(`${source.path}: tensor ${name} is missing (config.json describes ${cfg.numLayers} ${cfg.arch} layers)`);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new UsageError(`${source.path}: tensor ${name} has shape [${info.shape.join(", ")}] but config.json implies [${shape.join(", ")}]`);
    }
    if (!["F32", "F16", "BF16", "F64"].includes(info.dtype)) {
      throw new UsageError(`${source.path}: tensor ${name} has dtype ${info.dtype}; expected F32, F16 or BF16`);
    }
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

export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}
