import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "../errors.js";
import { assertInputFile } from "../util/io-paths.js";

export type Arch = "bert" | "xlm-roberta";

/** The encoder hyper-parameters that every stage needs, read from a hub config.json. */
export interface EncoderConfig {
  arch: Arch;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  typeVocabSize: number;
  layerNormEps: number;
  padTokenId: number;
  /** XLM-R numbers positions from pad_id + 1; BERT from 0. */
  positionOffset: number;
}

export const SUPPORTED_ARCHITECTURES = ["BertModel", "XLMRobertaModel"] as const;
const MODEL_TYPES: Record<string, Arch> = { bert: "bert", "xlm-roberta": "xlm-roberta" };
/** Heads that wrap the same encoder weights under a prefix; the encoder is what we read. */
const ACCEPTED_ARCHITECTURES: Record<string, Arch> = {
  BertModel: "bert",
  BertForMaskedLM: "bert",
  BertForPreTraining: "bert",
  XLMRobertaModel: "xlm-roberta",
  XLMRobertaForMaskedLM: "xlm-roberta",
};

export async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  await assertInputFile(path, what);
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`${path}: cannot read ${what} (${code ?? String(err)})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${path}: ${what} is not valid JSON (${(err as Error).message})`);
  }
}

export async function readEncoderConfig(dir: string): Promise<EncoderConfig> {
  const path = join(dir, "config.json");
  const raw = (await readJsonFile(path, "config.json")) as Record<string, unknown>;
  if (typeof raw !== "object" || raw === null) throw new UsageError(`${path}: config.json is not a JSON object`);
  return parseEncoderConfig(raw, path);
}

export function parseEncoderConfig(raw: Record<string, unknown>, path = "config.json"): EncoderConfig {
  const archs = Array.isArray(raw.architectures) ? (raw.architectures as unknown[]).map(String) : [];
  const modelType = typeof raw.model_type === "string" ? raw.model_type : undefined;
  let arch: Arch | undefined = archs.map((a) => ACCEPTED_ARCHITECTURES[a]).find((a) => a !== undefined);
  if (!arch && archs.length === 0 && modelType) arch = MODEL_TYPES[modelType];
  if (!arch) {
    const named = archs.length ? archs.join(", ") : `model_type ${modelType ?? "(none)"}`;
    throw new UsageError(
      `${path}: unsupported architecture ${named}; supported: ${SUPPORTED_ARCHITECTURES.join(", ")} (model_type bert, xlm-roberta)`,
    );
  }
  const int = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      throw new UsageError(`${path}: ${key} must be a non-negative integer, got ${JSON.stringify(raw[key])}`);
    }
    return v;
  };
  const act = raw.hidden_act ?? "gelu";
  if (act !== "gelu") throw new UsageError(`${path}: hidden_act ${JSON.stringify(act)} is not supported; BGE models use exact "gelu"`);
  const posType = raw.position_embedding_type ?? "absolute";
  if (posType !== "absolute") {
    throw new UsageError(`${path}: position_embedding_type ${JSON.stringify(posType)} is not supported; BGE models use "absolute"`);
  }
  const padTokenId = int("pad_token_id", arch === "bert" ? 0 : 1);
  const cfg: EncoderConfig = {
    arch,
    hiddenSize: int("hidden_size"),
    numLayers: int("num_hidden_layers"),
    numHeads: int("num_attention_heads"),
    intermediateSize: int("intermediate_size"),
    vocabSize: int("vocab_size"),
    maxPositionEmbeddings: int("max_position_embeddings"),
    typeVocabSize: int("type_vocab_size", 2),
    layerNormEps: layerNormEps(raw.layer_norm_eps, path),
    padTokenId,
    positionOffset: arch === "xlm-roberta" ? padTokenId + 1 : 0,
  };
  // A zero-sized dimension builds an encoder that computes nothing (or divides by zero) without failing.
  const positive: [string, number][] = [
    ["hidden_size", cfg.hiddenSize],
    ["num_hidden_layers", cfg.numLayers],
    ["intermediate_size", cfg.intermediateSize],
    ["vocab_size", cfg.vocabSize],
    ["type_vocab_size", cfg.typeVocabSize],
  ];
  for (const [key, value] of positive) {
    if (value === 0) throw new UsageError(`${path}: ${key} is 0; a BGE encoder needs at least 1 (use the config.json that came with the weights)`);
  }
  if (cfg.padTokenId >= cfg.vocabSize) {
    throw new UsageError(`${path}: pad_token_id ${cfg.padTokenId} is not below vocab_size ${cfg.vocabSize}; use the config.json that came with the weights`);
  }
  if (cfg.numHeads === 0 || cfg.hiddenSize % cfg.numHeads !== 0) {
    throw new UsageError(`${path}: hidden_size ${cfg.hiddenSize} is not divisible by num_attention_heads ${cfg.numHeads}`);
  }
  if (cfg.maxPositionEmbeddings <= cfg.positionOffset) {
    throw new UsageError(`${path}: max_position_embeddings ${cfg.maxPositionEmbeddings} leaves no positions after offset ${cfg.positionOffset}`);
  }
  return cfg;
}

/**
 * LayerNorm divides by sqrt(variance + eps): eps 0 turns a constant row into NaN, a negative eps
 * into NaN for low-variance rows, and neither fails loudly. Absent means BERT's 1e-12.
 */
function layerNormEps(value: unknown, path: string): number {
  if (value === undefined) return 1e-12;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    // JSON.stringify would print a 1e999 (parsed as Infinity) as null.
    const shown = typeof value === "number" ? String(value) : JSON.stringify(value);
    throw new UsageError(`${path}: layer_norm_eps must be a positive finite number, got ${shown} (BERT uses 1e-12, XLM-R 1e-5)`);
  }
  return value;
}

/** The longest input the position table allows (512 for BERT; 8192 for bge-m3). */
export function maxModelLength(cfg: EncoderConfig): number {
  return cfg.maxPositionEmbeddings - cfg.positionOffset;
}
