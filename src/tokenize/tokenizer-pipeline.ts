import { AddedTokenSplitter, type AddedToken } from "./added-tokens.js";
import type { JsonFields, JsonObject } from "./json-fields.js";
import { createNormalizer, type Normalizer } from "./normalizers.js";
import { readSpecialTokens, type SpecialTokens } from "./post-processor.js";
import {
  bertPreTokenizer,
  metaspacePreTokenizer,
  sequencePreTokenizer,
  whitespaceSplitPreTokenizer,
  type PrependScheme,
  type PreTokenizer,
} from "./pre-tokenizers.js";
import { UnigramModel } from "./unigram.js";
import { toWellFormed } from "./unicode-classes.js";
import { WordPieceModel } from "./wordpiece.js";

interface Model {
  tokenize(word: string, out: number[]): void;
}

/** A tokenizer.json turned into the Rust crate's encode path (without truncation or padding). */
export interface TokenizerPipeline {
  /** Ids of the text alone: added tokens → normaliser → pre-tokeniser → model. No special tokens. */
  encodeContent(text: string): number[];
  specials: SpecialTokens;
  /** Model vocabulary plus any added token beyond it (the embedding table's row count). */
  vocabSize: number;
  /** The highest id the vocabulary or an added token has (a hand-edited vocabulary may have gaps). */
  maxTokenId: number;
  lowercase: boolean;
  tokenToId(token: string): number | undefined;
}

/**
 * Why not @huggingface/tokenizers 0.2 for this: every stage it offers for BGE differs from the
 * crate on some input (BertNormalizer order, CJK outside the BMP, final sigma, Unicode version of
 * the character classes, Metaspace never splitting, lattice Viterbi tie-breaks, added tokens
 * without single_word) and 100% identical ids are the requirement, so each stage is implemented
 * here against the crate's semantics and proven against the crate itself in the tests.
 */
export function buildPipeline(json: unknown, fields: JsonFields): TokenizerPipeline {
  const root = fields.object(json, "the top level");
  const normalizer = createNormalizer(root.normalizer, fields);
  const preTokenizer = root.pre_tokenizer == null ? null : createPreTokenizer(root.pre_tokenizer, fields, "pre_tokenizer");
  const { model, modelVocab } = createModel(root.model, fields);
  const addedTokens = assignAddedTokenIds(readAddedTokens(root.added_tokens, fields), modelVocab);
  const specials = readSpecialTokens(root.post_processor, fields);

  const addedIds = new Map(addedTokens.map((t) => [t.content, t.id]));
  // Special tokens are matched first in the crate (they come first in its pattern list).
  const ordered = [...addedTokens.filter((t) => t.special), ...addedTokens.filter((t) => !t.special)];
  const rawSplitter = new AddedTokenSplitter(
    ordered.filter((t) => !t.normalized).map((token) => ({ content: token.content, token })),
  );
  const normalizedSplitter = new AddedTokenSplitter(
    ordered
      .filter((t) => t.normalized)
      .map((token) => ({ content: normalizer ? normalizer.normalize(token.content) : token.content, token })),
  );

  // Metaspace's prepend_scheme "first" asks whether the piece's first normalised character comes
  // from offset 0 of the input; the crate knows through its alignments. We approximate: it does
  // unless the normaliser deletes the input's first character (Strip, control removal, …).
  const firstCharSurvives = (text: string): boolean => {
    if (!normalizer) return true;
    const first = String.fromCodePoint(text.codePointAt(0)!);
    return normalizer.normalize(first).length > 0;
  };

  const encodeContent = (text: string): number[] => {
    const ids: number[] = [];
    for (const segment of rawSplitter.split(toWellFormed(text))) {
      if (segment.id !== undefined) {
        ids.push(segment.id);
        continue;
      }
      const normalized = normalizer ? normalizer.normalize(segment.text) : segment.text;
      if (normalized.length === 0) continue;
      for (const part of normalizedSplitter.split(normalized)) {
        if (part.id !== undefined) {
          ids.push(part.id);
          continue;
        }
        const atStart = segment.offset === 0 && part.offset === 0 && firstCharSurvives(segment.text);
        const piece = { text: part.text, atStart };
        for (const word of preTokenizer ? preTokenizer([piece]) : [piece]) model.tokenize(word.text, ids);
      }
    }
    return ids;
  };

  const maxAddedId = addedTokens.reduce((max, t) => Math.max(max, t.id), -1);
  return {
    encodeContent,
    specials,
    vocabSize: Math.max(modelVocab.size, maxAddedId + 1),
    maxTokenId: highestId(modelVocab, maxAddedId),
    lowercase: normalizer?.lowercases ?? false,
    tokenToId: (token) => addedIds.get(token) ?? modelVocab.get(token),
  };
}

/** A loop, not Math.max(...ids): bge-m3's 250k ids would overflow the argument stack. */
function highestId(vocab: ReadonlyMap<string, number>, floor: number): number {
  let max = floor;
  for (const id of vocab.values()) if (id > max) max = id;
  return max;
}

function createPreTokenizer(config: unknown, fields: JsonFields, where: string): PreTokenizer {
  const c = fields.object(config, where);
  const type = fields.string(c.type, `${where}.type`);
  switch (type) {
    case "BertPreTokenizer":
      return bertPreTokenizer;
    case "WhitespaceSplit":
      return whitespaceSplitPreTokenizer;
    case "Metaspace": {
      const replacement = fields.string(c.replacement ?? "\u2581", `${where}.replacement`);
      if (Array.from(replacement).length !== 1) fields.fail(`${where}.replacement`, "must be a single character");
      return metaspacePreTokenizer(replacement, readPrependScheme(c, fields, where), fields.boolean(c.split, `${where}.split`, true));
    }
    case "Sequence":
      return sequencePreTokenizer(
        fields.array(c.pretokenizers, `${where}.pretokenizers`).map((step, i) => createPreTokenizer(step, fields, `${where}.pretokenizers[${i}]`)),
      );
    default:
      fields.fail(`${where}.type`, `is "${type}", a pre-tokenizer bge does not implement`);
  }
}

/** Newer files say `prepend_scheme`; older ones only `add_prefix_space` (true → always). */
function readPrependScheme(c: JsonObject, fields: JsonFields, where: string): PrependScheme {
  if (c.prepend_scheme !== undefined && c.prepend_scheme !== null) {
    const scheme = fields.string(c.prepend_scheme, `${where}.prepend_scheme`);
    if (scheme !== "always" && scheme !== "first" && scheme !== "never") {
      fields.fail(`${where}.prepend_scheme`, `is "${scheme}", not always, first or never`);
    }
    return scheme;
  }
  return fields.boolean(c.add_prefix_space, `${where}.add_prefix_space`, true) ? "always" : "never";
}

function createModel(config: unknown, fields: JsonFields): { model: Model; modelVocab: Map<string, number> } {
  if (config === undefined || config === null) fields.fail("model", "is missing (it holds the vocabulary)");
  const c = fields.object(config, "model");
  const type = c.type === undefined ? inferModelType(c) : fields.string(c.type, "model.type");
  if (type === "WordPiece") {
    const vocabObject = fields.object(c.vocab, "model.vocab");
    const vocab = new Map<string, number>();
    for (const [token, id] of Object.entries(vocabObject)) vocab.set(token, fields.integer(id, `model.vocab["${token}"]`));
    const unkToken = fields.string(c.unk_token ?? "[UNK]", "model.unk_token");
    const unkId = vocab.get(unkToken);
    if (unkId === undefined) fields.fail("model.unk_token", `(${unkToken}) is not in model.vocab`);
    const prefix = fields.string(c.continuing_subword_prefix ?? "##", "model.continuing_subword_prefix");
    const maxChars = fields.integer(c.max_input_chars_per_word ?? 100, "model.max_input_chars_per_word");
    return { model: new WordPieceModel(vocab, unkId, prefix, maxChars), modelVocab: vocab };
  }
  if (type === "Unigram") {
    const entries = fields.array(c.vocab, "model.vocab").map((entry, i): [string, number] => {
      const pair = fields.array(entry, `model.vocab[${i}]`);
      return [fields.string(pair[0], `model.vocab[${i}][0]`), fields.number(pair[1], `model.vocab[${i}][1]`)];
    });
    if (entries.length === 0) fields.fail("model.vocab", "is empty");
    const unkId = c.unk_id === null || c.unk_id === undefined ? null : fields.integer(c.unk_id, "model.unk_id");
    if (unkId !== null && unkId >= entries.length) fields.fail("model.unk_id", "is beyond the vocabulary");
    const byteFallback = fields.boolean(c.byte_fallback, "model.byte_fallback", false);
    const modelVocab = new Map(entries.map(([piece], id) => [piece, id]));
    return { model: new UnigramModel(entries, unkId, byteFallback), modelVocab };
  }
  fields.fail("model.type", `is "${type}"; bge implements WordPiece (BERT) and Unigram (XLM-R)`);
}

/** Old files omit model.type; the crate tells the models apart by their fields. */
function inferModelType(c: JsonObject): string {
  if (Array.isArray(c.vocab)) return "Unigram";
  if (c.continuing_subword_prefix !== undefined || c.max_input_chars_per_word !== undefined) return "WordPiece";
  return "unknown";
}

/**
 * The crate ignores the `id` written in added_tokens: on load it re-adds each token in file order,
 * giving it the id its content already has (earlier added token, else model vocabulary) or else
 * the next id after the vocabulary and the highest added id. Real hub files agree with this; a
 * hand-edited one may not, and FlagModel then uses the crate's ids, so we do too.
 */
function assignAddedTokenIds(tokens: AddedToken[], modelVocab: ReadonlyMap<string, number>): AddedToken[] {
  const assigned = new Map<string, number>();
  const out: AddedToken[] = [];
  let maxAdded = -1;
  for (const token of tokens) {
    if (token.content.length === 0) continue;
    let id = assigned.get(token.content) ?? modelVocab.get(token.content);
    if (id === undefined) {
      id = assigned.size > 0 && (maxAdded >= modelVocab.size || modelVocab.size === 0) ? maxAdded + 1 : modelVocab.size;
    }
    assigned.set(token.content, id);
    maxAdded = Math.max(maxAdded, id);
    out.push({ ...token, id });
  }
  return out;
}

function readAddedTokens(config: unknown, fields: JsonFields): AddedToken[] {
  if (config === undefined || config === null) return [];
  return fields.array(config, "added_tokens").map((entry, i) => {
    const where = `added_tokens[${i}]`;
    const t = fields.object(entry, where);
    const special = fields.boolean(t.special, `${where}.special`, false);
    return {
      id: fields.integer(t.id, `${where}.id`),
      content: fields.string(t.content, `${where}.content`),
      singleWord: fields.boolean(t.single_word, `${where}.single_word`, false),
      lstrip: fields.boolean(t.lstrip, `${where}.lstrip`, false),
      rstrip: fields.boolean(t.rstrip, `${where}.rstrip`, false),
      normalized: fields.boolean(t.normalized, `${where}.normalized`, !special),
      special,
    };
  });
}
