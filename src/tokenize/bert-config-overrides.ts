import type { JsonObject } from "./json-fields.js";

const BERT_CLASSES = new Set(["BertTokenizer", "BertTokenizerFast"]);

/**
 * FlagModel loads the tokenizer with transformers' AutoTokenizer, which builds BertTokenizerFast;
 * its constructor (transformers 4.x) compares the BertNormalizer in tokenizer.json with
 * tokenizer_config.json's `do_lower_case` (default true), `strip_accents` (default null) and
 * `tokenize_chinese_chars` (default true), and rebuilds the normaliser from the config when they
 * differ. Hub BGE files agree, so this changes nothing for them; a hand-edited or fine-tuned folder
 * whose files disagree is tokenised by the config's flags, and so are we.
 *
 * Returns the tokenizer.json to use (the input itself when nothing changes).
 */
export function applyBertConfigOverrides(tokenizerJson: unknown, config: JsonObject): unknown {
  if (typeof tokenizerJson !== "object" || tokenizerJson === null) return tokenizerJson;
  const root = tokenizerJson as JsonObject;
  const normalizer = root.normalizer as JsonObject | null | undefined;
  if (!normalizer || normalizer.type !== "BertNormalizer") return tokenizerJson;
  const tokenizerClass = config.tokenizer_class;
  if (tokenizerClass !== undefined && !(typeof tokenizerClass === "string" && BERT_CLASSES.has(tokenizerClass))) {
    return tokenizerJson;
  }
  const wanted = {
    lowercase: config.do_lower_case ?? true,
    strip_accents: config.strip_accents ?? null,
    handle_chinese_chars: config.tokenize_chinese_chars ?? true,
  };
  const current = {
    lowercase: normalizer.lowercase ?? true,
    strip_accents: normalizer.strip_accents ?? null,
    handle_chinese_chars: normalizer.handle_chinese_chars ?? true,
  };
  const differs = (Object.keys(wanted) as (keyof typeof wanted)[]).some((key) => wanted[key] !== current[key]);
  return differs ? { ...root, normalizer: { ...normalizer, ...wanted } } : tokenizerJson;
}
