import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "../errors.js";
import { assertInputFile } from "../util/io-paths.js";
import { pathExists } from "../util/fs.js";
import { applyBertConfigOverrides } from "./bert-config-overrides.js";
import { JsonFields, type JsonObject } from "./json-fields.js";
import { buildPipeline, type TokenizerPipeline } from "./tokenizer-pipeline.js";
import { UnknownCharacterError } from "./unigram.js";

export { applyInstruction } from "./apply-instruction.js";

/** What FlagModel's `tokenizer(batch, padding=True, truncation=True, max_length=N)` returns. */
export interface EncodedBatch {
  input_ids: number[][];
  attention_mask: number[][];
  token_type_ids: number[][];
}

/** HF's "no limit set" sentinel for model_max_length is int(1e30); anything this big means unset. */
const UNSET_MODEL_MAX_LENGTH = 1e18;

/**
 * A model folder's tokenizer with FlagModel's batching rules on top: special tokens always kept
 * through truncation (the content is cut to maxLength minus the specials, tail first, as the Rust
 * crate's longest_first does for one sequence), right padding with the pad id to the longest text
 * of the batch, attention mask 1/0, token_type_ids all zero, output in input order.
 */
export class FlagTokenizer {
  /** Id padding is filled with (BERT [PAD] = 0, XLM-R <pad> = 1). */
  readonly padId: number;
  /** First special id of every encoding: [CLS] for BERT, <s> (bos) for XLM-R. */
  readonly clsId: number;
  /** Last special id of every encoding: [SEP] for BERT, </s> (eos) for XLM-R. */
  readonly sepId: number;
  readonly vocabSize: number;
  /** tokenizer_config.json `model_max_length`; undefined when absent or HF's "unset" sentinel. */
  readonly modelMaxLength: number | undefined;
  /** Whether the normaliser lowercases (bge-*-en: true; bge-*-zh: false even for Latin text). */
  readonly lowercase: boolean;

  constructor(
    private readonly pipeline: TokenizerPipeline,
    config: JsonObject,
    private readonly fields: JsonFields,
    configFields: JsonFields,
  ) {
    const { prefix, suffix } = pipeline.specials;
    if (prefix.length === 0 || suffix.length === 0) {
      fields.fail("post_processor", "adds no [CLS]/<s> … [SEP]/</s> tokens, which every BGE model needs");
    }
    this.clsId = prefix[0]!;
    this.sepId = suffix[suffix.length - 1]!;
    this.vocabSize = pipeline.vocabSize;
    this.lowercase = pipeline.lowercase;
    this.padId = resolvePadId(pipeline, config, configFields);
    const maxLength = config.model_max_length;
    this.modelMaxLength =
      typeof maxLength === "number" && Number.isFinite(maxLength) && maxLength < UNSET_MODEL_MAX_LENGTH ? maxLength : undefined;
  }

  /**
   * Proves the tokenizer usable with a model whose embedding table has `modelVocabSize` rows, before
   * any work: a short text encodes with the special tokens around it, and no id it can emit (vocabulary,
   * added or special token, padding) lies beyond the table, where FlagModel fails mid-run with an index
   * error and an ONNX Gather reads garbage.
   */
  probe(modelVocabSize: number): void {
    const file = this.fields.file;
    const ids = this.encode("Hello world", this.specialTokenCount + 8);
    if (ids[0] !== this.clsId || ids.at(-1) !== this.sepId) {
      throw new UsageError(`${file}: encoding a probe text gave ${JSON.stringify(ids)}, not [CLS]/<s> … [SEP]/</s>; use the tokenizer files from the model's hub repository`);
    }
    const specials = [...this.pipeline.specials.prefix, ...this.pipeline.specials.suffix, this.padId];
    const stray = specials.find((id) => id > this.pipeline.maxTokenId);
    if (stray !== undefined) {
      throw new UsageError(`${file}: special token id ${stray} is not a token of the vocabulary (highest id ${this.pipeline.maxTokenId}); use the tokenizer files from the model's hub repository`);
    }
    const highest = Math.max(this.pipeline.maxTokenId, ...specials);
    if (highest >= modelVocabSize) {
      throw new UsageError(
        `${file}: the tokenizer has token ids up to ${highest} but config.json vocab_size is ${modelVocabSize} (the embedding table's rows); use the tokenizer files that came with these weights`,
      );
    }
  }

  /** Number of special tokens added around each text (2 for BGE). */
  get specialTokenCount(): number {
    return this.pipeline.specials.prefix.length + this.pipeline.specials.suffix.length;
  }

  /** Ids with special tokens, truncated to at most `maxLength` ids with the specials kept. */
  encode(text: string, maxLength: number): number[] {
    const { prefix, suffix } = this.pipeline.specials;
    const room = this.contentRoom(maxLength);
    let content: number[];
    try {
      content = this.pipeline.encodeContent(text);
    } catch (error) {
      if (error instanceof UnknownCharacterError) this.fields.fail("model", `cannot encode the text: ${error.message}`);
      throw error;
    }
    if (content.length > room) content.length = room;
    return [...prefix, ...content, ...suffix];
  }

  /** FlagModel's batch call: each text encoded as `encode` does, right-padded to the batch's longest. */
  encodeBatch(texts: string[], maxLength: number): EncodedBatch {
    this.contentRoom(maxLength);
    const encoded = texts.map((text) => this.encode(text, maxLength));
    const longest = encoded.reduce((max, ids) => Math.max(max, ids.length), 0);
    const batch: EncodedBatch = { input_ids: [], attention_mask: [], token_type_ids: [] };
    for (const ids of encoded) {
      const padding = longest - ids.length;
      batch.input_ids.push([...ids, ...new Array<number>(padding).fill(this.padId)]);
      batch.attention_mask.push([...new Array<number>(ids.length).fill(1), ...new Array<number>(padding).fill(0)]);
      batch.token_type_ids.push(new Array<number>(longest).fill(0));
    }
    return batch;
  }

  private contentRoom(maxLength: number): number {
    if (!Number.isInteger(maxLength) || maxLength < this.specialTokenCount) {
      throw new UsageError(
        `max length ${maxLength} cannot hold the ${this.specialTokenCount} special tokens; use an integer of at least ${this.specialTokenCount} (FlagModel uses 512)`,
      );
    }
    return maxLength - this.specialTokenCount;
  }
}

/** pad_token from tokenizer_config.json (a string or an AddedToken dict), else tokenizer.json `padding`. */
function resolvePadId(pipeline: TokenizerPipeline, config: JsonObject, configFields: JsonFields): number {
  const declared = config.pad_token;
  if (declared !== undefined && declared !== null) {
    const content =
      typeof declared === "string" ? declared : configFields.string(configFields.object(declared, "pad_token").content, "pad_token.content");
    const id = pipeline.tokenToId(content);
    if (id === undefined) configFields.fail("pad_token", `(${content}) is not a token of tokenizer.json`);
    return id;
  }
  for (const candidate of ["[PAD]", "<pad>"]) {
    const id = pipeline.tokenToId(candidate);
    if (id !== undefined) return id;
  }
  configFields.fail("pad_token", "is missing and tokenizer.json has no [PAD] or <pad> token");
}

async function readJson(file: string): Promise<unknown> {
  let text: string;
  if (await pathExists(file)) await assertInputFile(file, "tokenizer file");
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new UsageError(`${file} not found: point at a model folder holding tokenizer.json and tokenizer_config.json (bge download <model> fetches them)`);
    }
    throw new UsageError(`${file} cannot be read (${code ?? String(error)}); check its permissions`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${file} is not valid JSON (${(error as Error).message}); download the tokenizer files again`);
  }
}

/** Loads a model folder's tokenizer and {@link FlagTokenizer.probe}s it against the model's vocab_size. */
export async function loadCheckedTokenizer(dir: string, modelVocabSize: number): Promise<FlagTokenizer> {
  const tokenizer = await loadFlagTokenizer(dir);
  tokenizer.probe(modelVocabSize);
  return tokenizer;
}

/** Reads `tokenizer.json` and `tokenizer_config.json` from a model folder. */
export async function loadFlagTokenizer(dir: string): Promise<FlagTokenizer> {
  const tokenizerFile = join(dir, "tokenizer.json");
  const configFile = join(dir, "tokenizer_config.json");
  // One after the other, so that a folder missing both files always reports tokenizer.json.
  const tokenizerJson = await readJson(tokenizerFile);
  const configJson = await readJson(configFile);
  const fields = new JsonFields(tokenizerFile);
  const configFields = new JsonFields(configFile);
  const config = configFields.object(configJson, "the top level");
  const pipeline = buildPipeline(applyBertConfigOverrides(tokenizerJson, config), fields);
  return new FlagTokenizer(pipeline, config, fields, configFields);
}
