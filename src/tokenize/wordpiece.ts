/**
 * WordPiece as the Rust crate runs it: greedy longest-match-first over code points, continuation
 * pieces carry the prefix ("##"), and a word with any unmatchable remainder, or longer than
 * `maxInputCharsPerWord` code points, becomes a single unknown token.
 */
export class WordPieceModel {
  constructor(
    private readonly vocab: ReadonlyMap<string, number>,
    private readonly unkId: number,
    private readonly continuingSubwordPrefix: string,
    private readonly maxInputCharsPerWord: number,
  ) {}

  tokenize(word: string, out: number[]): void {
    const chars = Array.from(word);
    if (chars.length > this.maxInputCharsPerWord) {
      out.push(this.unkId);
      return;
    }
    const pieces: number[] = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found: number | undefined;
      while (start < end) {
        const body = chars.slice(start, end).join("");
        found = this.vocab.get(start > 0 ? this.continuingSubwordPrefix + body : body);
        if (found !== undefined) break;
        end--;
      }
      if (found === undefined) {
        out.push(this.unkId);
        return;
      }
      pieces.push(found);
      start = end;
    }
    for (const id of pieces) out.push(id);
  }
}
