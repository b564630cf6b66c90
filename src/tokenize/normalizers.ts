import { bertNormalize } from "./bert-normalizer.js";
import type { JsonFields, JsonObject } from "./json-fields.js";
import {
  isCombiningMark,
  isWhitespace,
  lowercaseByCodePoint,
  normalizeUnicode,
  type UnicodeForm,
} from "./unicode-classes.js";

export interface Normalizer {
  normalize(text: string): string;
  /** Whether this normalizer lowercases (what `FlagTokenizer.lowercase` reports). */
  lowercases: boolean;
}

/** Builds the tokenizer.json `normalizer` block with the Rust crate's semantics; null when absent. */
export function createNormalizer(config: unknown, fields: JsonFields, where = "normalizer"): Normalizer | null {
  if (config === null || config === undefined) return null;
  const c = fields.object(config, where);
  const type = fields.string(c.type, `${where}.type`);
  switch (type) {
    case "BertNormalizer": {
      const options = {
        clean_text: fields.boolean(c.clean_text, `${where}.clean_text`, true),
        handle_chinese_chars: fields.boolean(c.handle_chinese_chars, `${where}.handle_chinese_chars`, true),
        strip_accents: c.strip_accents === null || c.strip_accents === undefined
          ? null
          : fields.boolean(c.strip_accents, `${where}.strip_accents`, false),
        lowercase: fields.boolean(c.lowercase, `${where}.lowercase`, true),
      };
      return { normalize: (text) => bertNormalize(text, options), lowercases: options.lowercase };
    }
    case "Sequence": {
      const steps = fields
        .array(c.normalizers, `${where}.normalizers`)
        .map((step, i) => createNormalizer(step, fields, `${where}.normalizers[${i}]`))
        .filter((step): step is Normalizer => step !== null);
      return {
        normalize: (text) => steps.reduce((acc, step) => step.normalize(acc), text),
        lowercases: steps.some((step) => step.lowercases),
      };
    }
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD":
      return { normalize: (text) => normalizeUnicode(text, type as UnicodeForm), lowercases: false };
    case "Lowercase":
      return { normalize: lowercaseByCodePoint, lowercases: true };
    case "StripAccents":
      return { normalize: (text) => filterCodePoints(text, (cp) => !isCombiningMark(cp)), lowercases: false };
    case "Strip": {
      const left = fields.boolean(c.strip_left, `${where}.strip_left`, true);
      const right = fields.boolean(c.strip_right, `${where}.strip_right`, true);
      return { normalize: (text) => stripWhitespace(text, left, right), lowercases: false };
    }
    case "Replace":
      return replaceNormalizer(c, fields, where);
    case "Prepend": {
      const prepend = fields.string(c.prepend, `${where}.prepend`);
      return { normalize: (text) => (text.length > 0 ? prepend + text : text), lowercases: false };
    }
    case "Nmt":
      return { normalize: nmt, lowercases: false };
    case "Precompiled":
      // LIMITATION: the real bge-m3 / XLM-R tokenizer.json carries SentencePiece's
      // `precompiled_charsmap` (an nmt_nfkc table applied per grapheme). We do not decode it; we
      // approximate it with the NMT rules plus NFKC, as @huggingface/tokenizers does. That is exact
      // for ordinary text but can differ on rare characters whose SentencePiece mapping is not
      // plain NFKC (and where SentencePiece's Unicode version differs from Node's). Synthetic
      // fixtures carry no Precompiled block, so they are exact.
      return { normalize: (text) => nmt(text).normalize("NFKC"), lowercases: false };
    default:
      fields.fail(`${where}.type`, `is "${type}", a normalizer bge does not implement`);
  }
}

function filterCodePoints(text: string, keep: (cp: number) => boolean): string {
  let out = "";
  for (const ch of text) if (keep(ch.codePointAt(0)!)) out += ch;
  return out;
}

function stripWhitespace(text: string, left: boolean, right: boolean): string {
  const chars = Array.from(text);
  let start = 0;
  let end = chars.length;
  if (left) while (start < end && isWhitespace(chars[start]!)) start++;
  if (right) while (end > start && isWhitespace(chars[end - 1]!)) end--;
  return chars.slice(start, end).join("");
}

function replaceNormalizer(c: JsonObject, fields: JsonFields, where: string): Normalizer {
  const pattern = fields.object(c.pattern, `${where}.pattern`);
  const content = fields.string(c.content, `${where}.content`);
  if (typeof pattern.String === "string") {
    const literal = pattern.String;
    return { normalize: (text) => (literal === "" ? text : text.replaceAll(literal, content)), lowercases: false };
  }
  const source = fields.string(pattern.Regex, `${where}.pattern.Regex`);
  let regex: RegExp;
  try {
    // The crate compiles Oniguruma syntax; simple patterns (the only ones BGE files use, such as
    // " {2,}") mean the same in JavaScript with the u flag.
    regex = new RegExp(source, "gu");
  } catch {
    fields.fail(`${where}.pattern.Regex`, `(${JSON.stringify(source)}) is not a pattern JavaScript can run`);
  }
  return { normalize: (text) => text.replace(regex, () => content), lowercases: false };
}

/** SentencePiece's NMT rules: drop C0/C1 controls, turn other separators into a plain space. */
export function nmt(text: string): string {
  let out = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if ((cp >= 0x01 && cp <= 0x08) || cp === 0x0b || (cp >= 0x0e && cp <= 0x1f) || cp === 0x7f || cp === 0x8f || cp === 0x9f) {
      continue;
    }
    const toSpace =
      cp === 0x09 || cp === 0x0a || cp === 0x0c || cp === 0x0d || cp === 0x1680 || (cp >= 0x200b && cp <= 0x200f) ||
      cp === 0x2028 || cp === 0x2029 || cp === 0x2581 || cp === 0xfeff || cp === 0xfffd;
    out += toSpace ? " " : ch;
  }
  return out;
}
