import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import { UsageError } from "../errors.js";

/** A `<model>` argument as a local checkpoint folder. */
export async function resolveModelDir(model: string): Promise<string> {
  const dir = resolve(model);
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) throw new UsageError(`${model} is a file; <model> must be a checkpoint folder (config.json, tokenizer.json, weights)`);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${model}: no such checkpoint folder`);
  }
  return dir;
}
