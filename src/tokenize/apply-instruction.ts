/**
 * FlagModel's query instruction: `encode_queries` formats `"{}{}".format(instruction, query)` —
 * plain concatenation, no separator — and `encode`/`encode_corpus` never add it to passages.
 */
export function applyInstruction(text: string, instruction: string | undefined, kind: "query" | "passage"): string {
  return kind === "query" && instruction ? `${instruction}${text}` : text;
}
