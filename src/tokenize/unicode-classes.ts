import {
  BERT_PUNCTUATION,
  CLEAN_TEXT_REMOVED,
  COMBINING_MARK,
  NFC_UNCHANGED,
  NFD_UNCHANGED,
  NFKC_UNCHANGED,
  NFKD_UNCHANGED,
  NONSPACING_MARK,
  UNKNOWN_COMBINING_CLASS,
} from "./unicode-tables.js";

/**
 * Character classes exactly as the Rust `tokenizers` crate (what FlagModel runs) sees them. Where
 * the crate's Unicode data is older than Node's, the generated tables in unicode-tables.ts hold the
 * crate's answer; `unicode-tables.test.ts` proves every code point against the oracle.
 */

/** Binary search in a sorted flat list of inclusive ranges. */
export function inRanges(ranges: readonly number[], cp: number): boolean {
  let lo = 0;
  let hi = ranges.length / 2 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (cp < ranges[2 * mid]!) hi = mid - 1;
    else if (cp > ranges[2 * mid + 1]!) lo = mid + 1;
    else return true;
  }
  return false;
}

// Rust `char::is_whitespace` is the White_Space property from std, which tracks current Unicode as
// Node's regex engine does (the test confirms). JS `\s` would be wrong: it adds U+FEFF.
const WHITE_SPACE = /^\p{White_Space}$/u;

export function isWhitespace(c: string): boolean {
  return WHITE_SPACE.test(c);
}

/** BertNormalizer's is_whitespace: \t \n \r count as whitespace although they are controls. */
export function isBertWhitespace(c: string): boolean {
  return c === "\t" || c === "\n" || c === "\r" || WHITE_SPACE.test(c);
}

export function isCleanTextRemoved(cp: number): boolean {
  return inRanges(CLEAN_TEXT_REMOVED, cp);
}

export function isBertPunctuation(cp: number): boolean {
  return inRanges(BERT_PUNCTUATION, cp);
}

export function isNonspacingMark(cp: number): boolean {
  return inRanges(NONSPACING_MARK, cp);
}

/**
 * The Rust `is_chinese_char` ranges, verbatim. They are not the CJK blocks of current Unicode:
 * U+2B820–U+2B91F (part of extension E) and everything from extension G (U+30000) on are absent,
 * so those characters are *not* split off; matching the crate matters more than being right.
 */
const CHINESE_RANGES: readonly number[] = [
  0x4e00, 0x9fff, 0x3400, 0x4dbf, 0x20000, 0x2a6df, 0x2a700, 0x2b73f, 0x2b740, 0x2b81f, 0x2b920,
  0x2ceaf, 0xf900, 0xfaff, 0x2f800, 0x2fa1f,
];

export function isChineseChar(cp: number): boolean {
  for (let i = 0; i < CHINESE_RANGES.length; i += 2) {
    if (cp >= CHINESE_RANGES[i]! && cp <= CHINESE_RANGES[i + 1]!) return true;
  }
  return false;
}

/** The standalone StripAccents normalizer's test (Mn, Mc and Me in the crate's tables). */
export function isCombiningMark(cp: number): boolean {
  return inRanges(COMBINING_MARK, cp);
}

export type UnicodeForm = "NFC" | "NFD" | "NFKC" | "NFKD";

const UNCHANGED_BY_FORM: Record<UnicodeForm, readonly number[]> = {
  NFC: NFC_UNCHANGED,
  NFD: NFD_UNCHANGED,
  NFKC: NFKC_UNCHANGED,
  NFKD: NFKD_UNCHANGED,
};

/**
 * Unicode normalisation as the Rust crate does it: Node's `String.prototype.normalize` applied to
 * the runs between code points that the crate's older tables treat differently — those it leaves
 * unmapped, and marks whose combining class it does not know (to the crate they are starters, so
 * no reordering or composition crosses them; Node would reorder them). Those pass through as is.
 */
export function normalizeUnicode(text: string, form: UnicodeForm): string {
  const unchanged = UNCHANGED_BY_FORM[form];
  const lowest = Math.min(unchanged[0] ?? Infinity, UNKNOWN_COMBINING_CLASS[0] ?? Infinity);
  let out = "";
  let runStart = 0;
  let i = 0;
  while (i < text.length) {
    const cp = text.codePointAt(i)!;
    const width = cp > 0xffff ? 2 : 1;
    if (cp >= lowest && (inRanges(unchanged, cp) || inRanges(UNKNOWN_COMBINING_CLASS, cp))) {
      out += text.slice(runStart, i).normalize(form) + text.slice(i, i + width);
      runStart = i + width;
    }
    i += width;
  }
  return out + text.slice(runStart).normalize(form);
}

/**
 * Rust lowercases char by char (`char::to_lowercase`), so a word-final capital sigma becomes σ,
 * never the final form ς that JavaScript's context-sensitive `toLowerCase` produces.
 */
export function lowercaseByCodePoint(text: string): string {
  // Final_Sigma is the only context rule in JavaScript's locale-free toLowerCase.
  if (!text.includes("\u03A3")) return text.toLowerCase();
  let out = "";
  for (const c of text) out += c.toLowerCase();
  return out;
}

/**
 * Rust strings cannot hold lone surrogates; the binding (and any UTF-8 round trip) turns them into
 * U+FFFD, so we do the same before tokenising.
 */
export function toWellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}
