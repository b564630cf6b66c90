import { beforeAll, describe, expect, it } from "vitest";
import { bertNormalize, cleanText, padChineseChars, stripAccents } from "./bert-normalizer.js";
import { JsonFields } from "./json-fields.js";
import { createNormalizer, nmt } from "./normalizers.js";
import { bertPreTokenizer } from "./pre-tokenizers.js";
import { normalizeUnicode, type UnicodeForm } from "./unicode-classes.js";

/**
 * Proves the generated Unicode tables (and the code using them) against the Rust crate for every
 * Unicode scalar value. If Node's ICU moves to a newer Unicode version, this is where it shows:
 * rerun src/tokenize/generate-unicode-tables.mjs.
 */
type Oracle = typeof import("@anush008/tokenizers");
let oracle: Oracle;

beforeAll(async () => {
  oracle = await import("@anush008/tokenizers");
});

/** All scalar values (no surrogates), in chunks, each code point preceded by `separator`. */
function* chunks(separator: string, size = 4096): Generator<{ text: string; codePoints: number[] }> {
  let codePoints: number[] = [];
  for (let cp = 0; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    codePoints.push(cp);
    if (codePoints.length === size || cp === 0x10ffff) {
      yield { text: codePoints.map((c) => separator + String.fromCodePoint(c)).join("") + separator, codePoints };
      codePoints = [];
    }
  }
}

/** Compares whole chunks (fast); on a difference, lists the offending code points one by one. */
function expectSameOnEveryCodePoint(
  ours: (text: string) => unknown,
  theirs: (text: string) => unknown,
  separator = "a",
): void {
  const offenders: string[] = [];
  for (const { text, codePoints } of chunks(separator)) {
    if (JSON.stringify(ours(text)) === JSON.stringify(theirs(text))) continue;
    for (const cp of codePoints) {
      const single = separator + String.fromCodePoint(cp) + separator;
      if (JSON.stringify(ours(single)) !== JSON.stringify(theirs(single))) offenders.push(`U+${cp.toString(16).toUpperCase()}`);
    }
  }
  expect(offenders.slice(0, 50)).toEqual([]);
}

const bertOnly = (options: Partial<Record<"clean_text" | "handle_chinese_chars" | "lowercase", boolean>> & { strip_accents?: boolean }) => ({
  clean_text: false,
  handle_chinese_chars: false,
  lowercase: false,
  strip_accents: false,
  ...options,
});

describe("BertNormalizer steps agree with the crate on every code point", () => {
  const rust = (options: Parameters<Oracle["bertNormalizer"]>[0]) =>
    oracle.bertNormalizer({ cleanText: false, handleChineseChars: false, stripAccents: false, lowercase: false, ...options });

  it("clean_text (control, format, private use, whitespace)", () => {
    const n = rust({ cleanText: true });
    expectSameOnEveryCodePoint(cleanText, (t) => n.normalizeString(t));
  });
  it("handle_chinese_chars (the crate's CJK ranges, incl. extension planes)", () => {
    const n = rust({ handleChineseChars: true });
    expectSameOnEveryCodePoint(padChineseChars, (t) => n.normalizeString(t));
  });
  it("strip_accents (NFD, then drop Mn)", () => {
    const n = rust({ stripAccents: true });
    expectSameOnEveryCodePoint(stripAccents, (t) => n.normalizeString(t));
  });
  it("lowercase (per character; a capital sigma after a letter stays σ)", () => {
    const n = rust({ lowercase: true, stripAccents: false });
    expectSameOnEveryCodePoint((t) => bertNormalize(t, bertOnly({ lowercase: true })), (t) => n.normalizeString(t), "A");
    expectSameOnEveryCodePoint((t) => bertNormalize(t, bertOnly({ lowercase: true })), (t) => n.normalizeString(t), "\u03a3");
  });
  it("all steps together, as bge-*-en configures them", () => {
    // bge-en says strip_accents: null, which follows lowercase (true); the binding needs it spelt out.
    const n = rust({ cleanText: true, handleChineseChars: true, lowercase: true, stripAccents: true });
    const ours = (t: string) => bertNormalize(t, { clean_text: true, handle_chinese_chars: true, lowercase: true, strip_accents: null });
    expectSameOnEveryCodePoint(ours, (t) => n.normalizeString(t), "Ab");
  });
});

describe("other components agree with the crate on every code point", () => {
  it("BertPreTokenizer (whitespace and the crate's punctuation)", () => {
    const pre = oracle.bertPreTokenizer();
    expectSameOnEveryCodePoint(
      (t) => bertPreTokenizer([{ text: t, atStart: true }]).map((p) => p.text),
      (t) => pre.preTokenizeString(t).map(([piece]) => piece),
    );
  });

  for (const form of ["NFC", "NFD", "NFKC", "NFKD"] as const satisfies readonly UnicodeForm[]) {
    it(`${form}`, () => {
      const n = { NFC: oracle.nfcNormalizer, NFD: oracle.nfdNormalizer, NFKC: oracle.nfkcNormalizer, NFKD: oracle.nfkdNormalizer }[form]();
      expectSameOnEveryCodePoint((t) => normalizeUnicode(t, form), (t) => n.normalizeString(t));
    });
  }

  it("canonical reordering of marks whose combining class the crate does not know", () => {
    const n = oracle.nfdNormalizer();
    for (const mark of ["\u0334", "\u0316", "\u0301", "\u0345"]) {
      expectSameOnEveryCodePoint((t) => normalizeUnicode(t, "NFD"), (t) => n.normalizeString(t), mark);
    }
  });

  it("Nmt and the standalone StripAccents normaliser", () => {
    const fields = new JsonFields("test");
    const ours = createNormalizer({ type: "StripAccents" }, fields)!;
    const rustStrip = oracle.stripAccentsNormalizer();
    expectSameOnEveryCodePoint((t) => ours.normalize(t), (t) => rustStrip.normalizeString(t));
    const rustNmt = oracle.nmt();
    expectSameOnEveryCodePoint(nmt, (t) => rustNmt.normalizeString(t));
  });
});
