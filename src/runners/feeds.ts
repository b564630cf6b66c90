import { ort } from "./ort.js";

/**
 * The int64 feeds of a BERT/XLM-R encoder graph for a batch of token id lists, right-padded with the
 * pad id to `seq` (default: the longest) as FlagModel pads; token_type_ids all zero where the graph
 * takes them.
 */
export function encoderFeeds(batch: readonly (readonly number[])[], padId: number, inputNames: readonly string[], seq?: number): Record<string, ort.Tensor> {
  const S = seq ?? Math.max(...batch.map((ids) => ids.length));
  const B = batch.length;
  const ids = new BigInt64Array(B * S).fill(BigInt(padId));
  const mask = new BigInt64Array(B * S);
  batch.forEach((row, r) => {
    row.forEach((id, c) => {
      ids[r * S + c] = BigInt(id);
      mask[r * S + c] = 1n;
    });
  });
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor("int64", ids, [B, S]),
    attention_mask: new ort.Tensor("int64", mask, [B, S]),
  };
  if (inputNames.includes("token_type_ids")) feeds.token_type_ids = new ort.Tensor("int64", new BigInt64Array(B * S), [B, S]);
  return feeds;
}
