/** Rust's penalty below the lowest piece score for an unknown character. */
const UNK_PENALTY = 10;

/**
 * SentencePiece Unigram as the Rust crate's `encode_optimized` runs it (what XLM-R / bge-m3 use):
 * a forward Viterbi keeping the best path per end position, ties going to the candidate found
 * first (earliest start), consecutive unknown characters fused into one unknown token.
 * @huggingface/tokenizers uses a lattice with per-node back-pointers instead; we follow the crate.
 */
export class UnigramModel {
  private readonly ids = new Map<string, number>();
  private readonly scores: Float64Array;
  private readonly unkScore: number;
  /** Longest piece in UTF-16 units, which bounds the candidate search at each position. */
  private readonly maxPieceUnits: number;

  constructor(
    vocab: ReadonlyArray<readonly [string, number]>,
    private readonly unkId: number | null,
    private readonly byteFallback: boolean,
  ) {
    this.scores = new Float64Array(vocab.length);
    let minScore = Infinity;
    let maxUnits = 0;
    vocab.forEach(([piece, score], id) => {
      this.ids.set(piece, id); // a duplicate piece keeps its last id, as the crate's HashMap does
      this.scores[id] = score;
      if (score < minScore) minScore = score;
      if (piece.length > maxUnits) maxUnits = piece.length;
    });
    this.unkScore = minScore - UNK_PENALTY;
    this.maxPieceUnits = maxUnits;
  }

  /** Appends the ids of one pre-tokenized piece; throws when a character is unknown and no unk_id exists. */
  tokenize(text: string, out: number[]): void {
    if (text.length === 0) return;
    // Positions are UTF-16 offsets; only code point boundaries are ever visited.
    const n = text.length;
    const bestScore = new Float64Array(n + 1);
    const bestStart = new Int32Array(n + 1).fill(-1);
    const bestId = new Int32Array(n + 1);
    for (let start = 0; start < n; ) {
      const tillHere = bestScore[start]!;
      const charUnits = text.codePointAt(start)! > 0xffff ? 2 : 1;
      let hasSingleChar = false;
      const limit = Math.min(n, start + this.maxPieceUnits);
      for (let end = start + charUnits; end <= limit; ) {
        const id = this.ids.get(text.slice(start, end));
        if (id !== undefined) {
          const candidate = this.scores[id]! + tillHere;
          if (bestStart[end] === -1 || candidate > bestScore[end]!) {
            bestScore[end] = candidate;
            bestStart[end] = start;
            bestId[end] = id;
          }
          if (end - start === charUnits) hasSingleChar = true;
        }
        end += end < n && text.codePointAt(end)! > 0xffff ? 2 : 1;
      }
      if (!hasSingleChar) {
        const end = start + charUnits;
        const candidate = this.unkScore + tillHere;
        if (bestStart[end] === -1 || candidate > bestScore[end]!) {
          bestScore[end] = candidate;
          bestStart[end] = start;
          bestId[end] = this.unkId ?? -1;
        }
      }
      start += charUnits;
    }

    // Walk back from the end, fusing runs of unknown nodes into one piece of text.
    const pieces: string[] = [];
    let unknownRunStart = -1;
    let unknownRunEnd = -1;
    for (let end = n; end > 0; ) {
      const start = bestStart[end]!;
      if (bestId[end] === -1) throw new UnknownCharacterError(text.slice(start, end));
      if (bestId[end] === this.unkId) {
        if (unknownRunEnd === -1) unknownRunEnd = end;
        unknownRunStart = start;
      } else {
        if (unknownRunEnd !== -1) pieces.push(text.slice(unknownRunStart, unknownRunEnd));
        unknownRunEnd = -1;
        pieces.push(text.slice(start, end));
      }
      end = start;
    }
    if (unknownRunEnd !== -1) pieces.push(text.slice(unknownRunStart, unknownRunEnd));
    for (let i = pieces.length - 1; i >= 0; i--) this.pushPiece(pieces[i]!, out);
  }

  private pushPiece(piece: string, out: number[]): void {
    const id = this.ids.get(piece);
    if (id !== undefined) {
      out.push(id);
      return;
    }
    if (this.byteFallback) {
      const byteIds = Array.from(new TextEncoder().encode(piece), (byte) =>
        this.ids.get(`<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`),
      );
      if (byteIds.every((b) => b !== undefined)) {
        for (const b of byteIds) out.push(b!);
        return;
      }
    }
    if (this.unkId === null) throw new UnknownCharacterError(piece);
    out.push(this.unkId);
  }
}

/** The text holds a character the Unigram vocabulary lacks and the model has no unk_id. */
export class UnknownCharacterError extends Error {
  constructor(readonly piece: string) {
    super(`no vocabulary piece covers ${JSON.stringify(piece)} and the model has no unk_id`);
  }
}
