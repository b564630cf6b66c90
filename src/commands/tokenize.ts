import { collectTexts } from "../cli/inputs.js";
import type { Output } from "../cli/output.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { resolveModelDir } from "../checkpoint/resolve-model.js";
import { applyInstruction, loadCheckedTokenizer } from "../tokenize/flag-tokenizer.js";

export interface TokenizeCommandOptions {
  model: string;
  texts: string[];
  file?: string;
  maxLength?: number;
  query: boolean;
  instruction?: string | null;
}

/** One encoding per text, exactly as FlagModel's tokenizer call on a batch of one would give it. */
export async function tokenizeCommand(options: TokenizeCommandOptions, out: Output): Promise<void> {
  const dir = await resolveModelDir(options.model, { out });
  const spec = await readModelSpec(dir, { maxLength: options.maxLength, queryInstruction: options.instruction });
  // Ids beyond the model's embedding table would be printed as if usable: refused like everywhere else.
  const tokenizer = await loadCheckedTokenizer(dir, spec.config.vocabSize);
  const texts = await collectTexts(options.texts, options.file);
  const kind = options.query ? "query" : "passage";
  const encodings = texts.map((text) => {
    const enc = tokenizer.encodeBatch([applyInstruction(text, spec.queryInstruction, kind)], spec.maxLength);
    return { input_ids: enc.input_ids[0]!, attention_mask: enc.attention_mask[0]!, token_type_ids: enc.token_type_ids[0]! };
  });
  out.result(encodings.map((e) => JSON.stringify(e)).join("\n"), { encodings });
}
