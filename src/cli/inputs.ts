import { UsageError } from "../errors.js";
import { readTextsFile } from "../util/texts-file.js";

export { readTextsFile };

/** Texts from positional arguments and/or --file, in that order; at least one is required. */
export async function collectTexts(args: string[], file: string | undefined): Promise<string[]> {
  const texts = [...args];
  if (file) texts.push(...(await readTextsFile(file)));
  if (texts.length === 0) throw new UsageError("no texts given: pass TEXT arguments or --file F");
  return texts;
}
