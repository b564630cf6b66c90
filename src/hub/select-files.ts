import { UsageError } from "../errors.js";
import { checkRepoFilePath } from "./repo-path.js";

/** Config, tokenizer and sentence-transformers files the toolchain reads (each optional except config.json). */
export const TOOLCHAIN_FILES = [
  "config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.txt",
  "sentencepiece.bpe.model",
  "modules.json",
  "1_Pooling/config.json",
  "sentence_bert_config.json",
  "config_sentence_transformers.json",
] as const;

/** Weights in the order the checkpoint reader prefers them; only the first present one is fetched. */
export const WEIGHT_FILES = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"] as const;
export type WeightFile = (typeof WEIGHT_FILES)[number];

/** Without these a snapshot is of no use to bge (offline mode names them when missing). */
export const REQUIRED_FILES = ["config.json", "tokenizer.json"] as const;

export const ONNX_FOLDER = "onnx";

export function chooseWeights(present: Set<string>): WeightFile | undefined {
  return WEIGHT_FILES.find((w) => present.has(w));
}

/** The shard files a `model.safetensors.index.json` names, each checked to be a safe relative .safetensors path. */
export function shardNames(indexText: string, where: string): string[] {
  let map: unknown;
  try {
    map = (JSON.parse(indexText) as { weight_map?: unknown }).weight_map;
  } catch (err) {
    throw new UsageError(`${where}: not JSON (${(err as Error).message})`);
  }
  if (typeof map !== "object" || map === null || Array.isArray(map)) throw new UsageError(`${where}: no weight_map object`);
  const names = new Set<string>();
  for (const file of Object.values(map)) {
    const name = checkRepoFilePath(file, where);
    if (!name.endsWith(".safetensors")) throw new UsageError(`${where}: weight_map names ${JSON.stringify(name)}, not a .safetensors file`);
    names.add(name);
  }
  if (!names.size) throw new UsageError(`${where}: weight_map is empty`);
  return [...names].sort();
}
