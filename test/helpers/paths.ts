import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The shared fixtures beside the checkout (never copied into the project). */
export const SHARED_FIXTURES = resolve(REPO_ROOT, "..", "shared", "fixtures");
export const ZH_TOKENIZER = join(SHARED_FIXTURES, "tokenizers", "bge-small-zh-v1.5");
export const EN_TOKENIZER = join(SHARED_FIXTURES, "tokenizers", "bge-small-en-v1.5");
export const HAVE_SHARED = existsSync(join(ZH_TOKENIZER, "tokenizer.json")) && existsSync(join(EN_TOKENIZER, "tokenizer.json"));
export const SHARED_MISSING_REASON = `real tokenizer files not found at ${SHARED_FIXTURES} (the shared fixtures live beside the checkout)`;
export const BGE_BIN = join(REPO_ROOT, "bin", "bge.js");
