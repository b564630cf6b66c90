/** One entry of tokenizer.json `added_tokens`. */
export interface AddedToken {
  id: number;
  content: string;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** A stretch of input: either an added token (id) or text still to be tokenised. */
export interface Segment {
  text: string;
  /** UTF-16 offset of the segment in the string that was split. */
  offset: number;
  id?: number;
}

// The crate tests word boundaries and strips with Rust regex `\w` and `\s` (Unicode).
const WORD_CHAR = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;
const WHITE_SPACE = /\p{White_Space}/u;

/**
 * Finds added tokens (e.g. "[SEP]", "<mask>") in text the way the crate's AddedVocabulary does:
 * leftmost-longest, non-overlapping matches; a `single_word` match inside a word is discarded
 * (scanning resumes after it); `lstrip`/`rstrip` swallow neighbouring whitespace into the token.
 * A user's text containing "[SEP]" therefore yields the real [SEP] id, exactly as in FlagModel.
 */
export class AddedTokenSplitter {
  /** Tokens bucketed by first UTF-16 unit, longest first. */
  private readonly byFirstUnit = new Map<string, { content: string; token: AddedToken }[]>();

  /** `patterns` pairs each token with the text to look for (its content, or normalised content). */
  constructor(patterns: ReadonlyArray<{ content: string; token: AddedToken }>) {
    for (const p of patterns) {
      if (p.content.length === 0) continue;
      const bucket = this.byFirstUnit.get(p.content[0]!) ?? [];
      bucket.push(p);
      this.byFirstUnit.set(p.content[0]!, bucket);
    }
    // Stable sort: among equal lengths the earlier pattern wins, as in aho-corasick.
    for (const bucket of this.byFirstUnit.values()) bucket.sort((a, b) => b.content.length - a.content.length);
  }

  get isEmpty(): boolean {
    return this.byFirstUnit.size === 0;
  }

  split(text: string): Segment[] {
    if (this.isEmpty) return [{ text, offset: 0 }];
    const segments: Segment[] = [];
    let consumed = 0; // end of the last accepted token
    let i = 0;
    while (i < text.length) {
      const match = this.longestAt(text, i);
      if (match === undefined) {
        i++;
        continue;
      }
      let start = i;
      let stop = i + match.content.length;
      i = stop;
      const token = match.token;
      if (token.singleWord) {
        const wordBefore = start > 0 && WORD_CHAR.test(lastCodePoint(text, start));
        const wordAfter = stop < text.length && WORD_CHAR.test(String.fromCodePoint(text.codePointAt(stop)!));
        if (wordBefore || wordAfter) continue;
      }
      if (token.lstrip) {
        let s = start;
        while (s > 0 && WHITE_SPACE.test(lastCodePoint(text, s))) s -= lastCodePoint(text, s).length;
        start = Math.max(s, consumed);
      }
      if (token.rstrip) {
        while (stop < text.length && WHITE_SPACE.test(String.fromCodePoint(text.codePointAt(stop)!))) {
          stop += text.codePointAt(stop)! > 0xffff ? 2 : 1;
        }
      }
      if (consumed < start) segments.push({ text: text.slice(consumed, start), offset: consumed });
      segments.push({ text: text.slice(start, stop), offset: start, id: token.id });
      consumed = stop;
    }
    if (consumed < text.length) segments.push({ text: text.slice(consumed), offset: consumed });
    return segments;
  }

  private longestAt(text: string, i: number): { content: string; token: AddedToken } | undefined {
    const bucket = this.byFirstUnit.get(text[i]!);
    return bucket?.find((p) => text.startsWith(p.content, i));
  }
}

function lastCodePoint(text: string, end: number): string {
  const low = text.charCodeAt(end - 1);
  if (end >= 2 && low >= 0xdc00 && low <= 0xdfff) {
    const high = text.charCodeAt(end - 2);
    if (high >= 0xd800 && high <= 0xdbff) return text.slice(end - 2, end);
  }
  return text.slice(end - 1, end);
}
