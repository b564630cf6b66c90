import type { JsonFields } from "./json-fields.js";

/** The special ids wrapped around a single text: [CLS] … [SEP] for BERT, <s> … </s> for XLM-R. */
export interface SpecialTokens {
  prefix: number[];
  suffix: number[];
}

/** Reads the single-sequence part of tokenizer.json `post_processor`. */
export function readSpecialTokens(config: unknown, fields: JsonFields): SpecialTokens {
  if (config === null || config === undefined) return { prefix: [], suffix: [] };
  const c = fields.object(config, "post_processor");
  const type = fields.string(c.type, "post_processor.type");
  switch (type) {
    case "TemplateProcessing": {
      const specials = fields.object(c.special_tokens, "post_processor.special_tokens");
      const result: SpecialTokens = { prefix: [], suffix: [] };
      let seenSequence = false;
      fields.array(c.single, "post_processor.single").forEach((item, i) => {
        const where = `post_processor.single[${i}]`;
        const piece = fields.object(item, where);
        if (piece.Sequence !== undefined) {
          seenSequence = true;
          return;
        }
        const name = fields.string(fields.object(piece.SpecialToken, `${where}.SpecialToken`).id, `${where}.SpecialToken.id`);
        const special = fields.object(specials[name], `post_processor.special_tokens["${name}"]`);
        const ids = fields.array(special.ids, `post_processor.special_tokens["${name}"].ids`).map((id, k) =>
          fields.integer(id, `post_processor.special_tokens["${name}"].ids[${k}]`),
        );
        (seenSequence ? result.suffix : result.prefix).push(...ids);
      });
      if (!seenSequence) fields.fail("post_processor.single", "has no Sequence entry");
      return result;
    }
    case "BertProcessing":
    case "RobertaProcessing": {
      // Both wrap a single text as cls … sep; each is serialised as [token, id].
      const cls = fields.array(c.cls, "post_processor.cls");
      const sep = fields.array(c.sep, "post_processor.sep");
      return {
        prefix: [fields.integer(cls[1], "post_processor.cls[1]")],
        suffix: [fields.integer(sep[1], "post_processor.sep[1]")],
      };
    }
    default:
      fields.fail("post_processor.type", `is "${type}", a post-processor bge does not implement`);
  }
}
