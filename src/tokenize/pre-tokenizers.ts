import { isBertPunctuation, isWhitespace } from "./unicode-classes.js";

/** A stretch of normalised text; `atStart` says it begins at offset 0 of the original input. */
export interface Piece {
  text: string;
  atStart: boolean;
}

export type PreTokenizer = (pieces: Piece[]) => Piece[];

type Behavior = "removed" | "isolated" | "mergedWithNext";

/** The crate's `NormalizedString::split` on a character predicate; empty pieces are dropped. */
function splitOn(pieces: Piece[], isDelimiter: (c: string) => boolean, behavior: Behavior): Piece[] {
  const out: Piece[] = [];
  for (const piece of pieces) {
    const emit = (from: number, to: number) => {
      if (to > from) out.push({ text: piece.text.slice(from, to), atStart: piece.atStart && from === 0 });
    };
    let from = 0;
    let i = 0;
    for (const c of piece.text) {
      if (isDelimiter(c)) {
        emit(from, i);
        if (behavior === "isolated") emit(i, i + c.length);
        from = behavior === "mergedWithNext" ? i : i + c.length;
      }
      i += c.length;
    }
    emit(from, piece.text.length);
  }
  return out;
}

/** BertPreTokenizer: drop whitespace, then isolate every punctuation character. */
export const bertPreTokenizer: PreTokenizer = (pieces) =>
  splitOn(
    splitOn(pieces, isWhitespace, "removed"),
    (c) => isBertPunctuation(c.codePointAt(0)!),
    "isolated",
  );

/** WhitespaceSplit: split on whitespace and drop it. */
export const whitespaceSplitPreTokenizer: PreTokenizer = (pieces) => splitOn(pieces, isWhitespace, "removed");

export type PrependScheme = "always" | "first" | "never";

/**
 * Metaspace (SentencePiece style): every " " becomes the replacement ("▁"), a replacement is
 * prepended when the piece lacks one (always, or only for the piece at the start of the input),
 * and with `split` each "▁" starts a new piece. @huggingface/tokenizers 0.2 never splits, which
 * lets Unigram pieces span words; the crate splits by default.
 */
export function metaspacePreTokenizer(replacement: string, prependScheme: PrependScheme, split: boolean): PreTokenizer {
  return (pieces) => {
    const replaced = pieces.map((piece) => {
      let text = piece.text.replaceAll(" ", replacement);
      const prepend = prependScheme === "always" || (prependScheme === "first" && piece.atStart);
      // The crate's `prepend` is a no-op on an empty string; empty pieces never reach here anyway.
      if (prepend && text.length > 0 && !text.startsWith(replacement)) text = replacement + text;
      return { text, atStart: piece.atStart };
    });
    return split ? splitOn(replaced, (c) => c === replacement, "mergedWithNext") : replaced;
  };
}

export function sequencePreTokenizer(steps: PreTokenizer[]): PreTokenizer {
  return (pieces) => steps.reduce((acc, step) => step(acc), pieces);
}
