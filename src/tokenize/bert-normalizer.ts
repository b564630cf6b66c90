import {
  isBertWhitespace,
  isChineseChar,
  isCleanTextRemoved,
  isNonspacingMark,
  lowercaseByCodePoint,
  normalizeUnicode,
} from "./unicode-classes.js";

/** The `BertNormalizer` block of tokenizer.json. */
export interface BertNormalizerOptions {
  clean_text: boolean;
  handle_chinese_chars: boolean;
  /** null means "follow lowercase", as in the Rust crate. */
  strip_accents: boolean | null;
  lowercase: boolean;
}

/**
 * Rust `BertNormalizer::normalize`, step for step. It differs from @huggingface/tokenizers 0.2 in
 * ways that change ids: the order is clean → CJK → strip accents → lowercase (JS lowercases first);
 * CJK detection walks code points, so extension B+ ideographs are split (JS walks UTF-16 units);
 * lowercasing is per character, so Σ → σ even word-finally; and the character classes are the
 * crate's (older Unicode), not Node's.
 */
export function bertNormalize(text: string, options: BertNormalizerOptions): string {
  if (options.clean_text) text = cleanText(text);
  if (options.handle_chinese_chars) text = padChineseChars(text);
  if (options.strip_accents ?? options.lowercase) text = stripAccents(text);
  if (options.lowercase) text = lowercaseByCodePoint(text);
  return text;
}

/** Drop U+0000, U+FFFD and control/format/private-use characters; every whitespace becomes " ". */
export function cleanText(text: string): string {
  let out = "";
  for (const c of text) {
    if (isCleanTextRemoved(c.codePointAt(0)!)) continue;
    out += isBertWhitespace(c) ? " " : c;
  }
  return out;
}

/** Surround each CJK ideograph (by the crate's ranges) with spaces so it becomes its own word. */
export function padChineseChars(text: string): string {
  let out = "";
  for (const c of text) out += isChineseChar(c.codePointAt(0)!) ? ` ${c} ` : c;
  return out;
}

/** NFD, then drop nonspacing marks (Mn). */
export function stripAccents(text: string): string {
  let out = "";
  for (const c of normalizeUnicode(text, "NFD")) {
    if (!isNonspacingMark(c.codePointAt(0)!)) out += c;
  }
  return out;
}
