import { readFile } from "node:fs/promises";
import { basename, join, resolve, sep } from "node:path";
import { UsageError } from "../errors.js";
import { maxModelLength, readEncoderConfig, readJsonFile, type EncoderConfig } from "./config.js";
import { pathExists as exists } from "../util/fs.js";

export type Pooling = "cls" | "mean";

/** Everything FlagModel semantics depend on, in one place. */
export interface ModelSpec {
  /** Hub id (or the fixture's / folder's name) used in goldens and manifests. */
  id: string;
  /** The commit of a Hugging Face cache snapshot folder; null elsewhere. */
  revision: string | null;
  dir: string;
  config: EncoderConfig;
  pooling: Pooling;
  normalize: boolean;
  /** FlagModel's max_length: 512 unless overridden, never beyond the position table. */
  maxLength: number;
  /** Prepended to queries only; undefined where the model has none (bge-m3). */
  queryInstruction: string | undefined;
  /** Where each setting came from, for `--verbose` and reports. */
  sources: Record<"pooling" | "normalize" | "queryInstruction" | "id", string>;
}

export const BGE_INSTRUCTIONS = {
  zh: "为这个句子生成表示以用于检索相关文章：",
  en: "Represent this sentence for searching relevant passages: ",
} as const;

/** FlagModel's default `max_length`. */
export const FLAGMODEL_MAX_LENGTH = 512;

/** The query instruction that FlagEmbedding's model card gives for a model id (BGE v1/v1.5 zh and en; none otherwise). */
export function knownInstruction(id: string): string | undefined {
  const name = id.toLowerCase().split("/").pop() ?? "";
  if (/^bge-m3/.test(name) || /reranker/.test(name)) return undefined;
  if (/^bge-.*-zh(-|$)/.test(name)) return BGE_INSTRUCTIONS.zh;
  if (/^bge-.*-en(-|$)/.test(name)) return BGE_INSTRUCTIONS.en;
  return undefined;
}

export interface ModelSpecOptions {
  id?: string;
  pooling?: Pooling;
  normalize?: boolean;
  maxLength?: number;
  /** `null` switches the instruction off; a string replaces the known one. */
  queryInstruction?: string | null;
}

export async function readModelSpec(dir: string, options: ModelSpecOptions = {}): Promise<ModelSpec> {
  const config = await readEncoderConfig(dir);
  const sources: ModelSpec["sources"] = { pooling: "", normalize: "", queryInstruction: "", id: "" };

  const [id, idSource] = options.id ? [options.id, "option"] : await inferModelId(dir);
  sources.id = idSource;

  let pooling: Pooling;
  if (options.pooling) {
    pooling = options.pooling;
    sources.pooling = "option";
  } else {
    pooling = (await readPooling(dir)) ?? "cls";
    sources.pooling = (await exists(join(dir, "1_Pooling", "config.json"))) ? "1_Pooling/config.json" : "FlagModel default (cls)";
  }

  let normalize: boolean;
  if (options.normalize !== undefined) {
    normalize = options.normalize;
    sources.normalize = "option";
  } else {
    const fromModules = await readNormalizeModule(dir);
    normalize = fromModules ?? true;
    sources.normalize = fromModules === undefined ? "FlagModel default (normalize)" : "modules.json";
  }

  const limit = maxModelLength(config);
  const maxLength = options.maxLength ?? Math.min(FLAGMODEL_MAX_LENGTH, limit);
  if (!Number.isSafeInteger(maxLength) || maxLength < 2) throw new UsageError(`--max-length must be an integer ≥ 2, got ${maxLength}`);
  if (maxLength > limit) {
    throw new UsageError(
      `--max-length ${maxLength} exceeds what the model's position table allows (${limit} = max_position_embeddings ${config.maxPositionEmbeddings} - offset ${config.positionOffset})`,
    );
  }

  let queryInstruction: string | undefined;
  if (options.queryInstruction === null) {
    queryInstruction = undefined;
    sources.queryInstruction = "option (none)";
  } else if (typeof options.queryInstruction === "string") {
    queryInstruction = options.queryInstruction;
    sources.queryInstruction = "option";
  } else {
    queryInstruction = knownInstruction(id);
    sources.queryInstruction = queryInstruction === undefined ? "none known for this model id" : "known for this model id";
  }

  return { id, revision: snapshotRevision(dir), dir, config, pooling, normalize, maxLength, queryInstruction, sources };
}

async function readPooling(dir: string): Promise<Pooling | undefined> {
  const path = join(dir, "1_Pooling", "config.json");
  if (!(await exists(path))) return undefined;
  const cfg = (await readJsonFile(path, "pooling config")) as Record<string, unknown>;
  const cls = cfg.pooling_mode_cls_token === true;
  const mean = cfg.pooling_mode_mean_tokens === true;
  const other = ["pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"]
    .filter((k) => cfg[k] === true);
  if (other.length > 0 || Number(cls) + Number(mean) !== 1) {
    throw new UsageError(`${path}: exactly one pooling mode must be set, and bge supports cls or mean (found ${[cls && "cls", mean && "mean", ...other].filter(Boolean).join(", ") || "none"})`);
  }
  return cls ? "cls" : "mean";
}

async function readNormalizeModule(dir: string): Promise<boolean | undefined> {
  const path = join(dir, "modules.json");
  if (!(await exists(path))) return undefined;
  const modules = await readJsonFile(path, "modules.json");
  if (!Array.isArray(modules)) throw new UsageError(`${path}: modules.json must be a JSON array`);
  return modules.some((m) => typeof m === "object" && m !== null && String((m as { type?: unknown }).type).endsWith("models.Normalize"));
}

/** A folder inside a Hugging Face cache snapshot (…/snapshots/SHA) names its commit. */
function snapshotRevision(dir: string): string | null {
  const m = /[\\/]snapshots[\\/]([0-9a-f]{40})(?:[\\/]|$)/.exec(resolve(dir));
  return m ? m[1]! : null;
}

/**
 * A model id for goldens and manifests: the hub id of a Hugging Face cache snapshot
 * (…/models--ORG--NAME/snapshots/SHA), else an `ORG/NAME`-shaped `_name_or_path`, else the folder name.
 */
async function inferModelId(dir: string): Promise<[string, string]> {
  const parts = resolve(dir).split(sep);
  const snap = parts.lastIndexOf("snapshots");
  if (snap > 0 && parts[snap - 1]!.startsWith("models--")) {
    return [parts[snap - 1]!.slice("models--".length).split("--").join("/"), "hub cache path"];
  }
  try {
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as { _name_or_path?: unknown };
    const name = typeof cfg._name_or_path === "string" ? cfg._name_or_path : "";
    if (/^[\w.-]+\/[\w.-]+$/.test(name)) return [name, "config.json _name_or_path"];
  } catch {
    // readEncoderConfig already reported an unreadable config.
  }
  return [basename(resolve(dir)), "folder name"];
}
