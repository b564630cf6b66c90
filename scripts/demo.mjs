#!/usr/bin/env node
// The bundled default, end to end on this machine: a bge-small-zh-v1.5-shaped checkpoint (seeded
// weights; the real tokenizer when ../shared/fixtures is present), a float64 reference golden of the
// bundled texts, and a query ranked against the passages — every step through the real `bge` CLI.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const work = join(root, ".demo");
const model = join(work, "bge-small-zh-v1.5");
const realTokenizer = resolve(root, "..", "shared", "fixtures", "tokenizers", "bge-small-zh-v1.5");
mkdirSync(work, { recursive: true });

function bge(args, { capture = false } = {}) {
  console.error(`\n$ bge ${args.join(" ")}`);
  const r = spawnSync(process.execPath, [join(root, "bin", "bge.js"), ...args], { stdio: ["ignore", capture ? "pipe" : "inherit", "inherit"], encoding: "utf8" });
  if (r.status !== 0) process.exit(r.status ?? 1);
  return r.stdout;
}

const fixtureArgs = ["fixture", model, "--shape", "bge-small-zh-v1.5", "--seed", "42", "--force"];
if (existsSync(join(realTokenizer, "tokenizer.json"))) fixtureArgs.push("--tokenizer", realTokenizer);
else console.error(`(real tokenizer not found at ${realTokenizer}: using a generated one)`);
bge(fixtureArgs);

const passages = join(root, "golden", "texts", "demo-passages.txt");
const queries = join(root, "golden", "texts", "demo-queries.txt");
bge(["golden", model, "--texts", passages, "--queries", queries, "-o", join(work, "golden.json")]);

const query = readFileSync(queries, "utf8").split("\n")[0];
const q = JSON.parse(bge(["embed", model, query, "--query", "--json", "--quiet"], { capture: true })).embeddings[0];
const golden = JSON.parse(readFileSync(join(work, "golden.json"), "utf8"));
const ranked = golden.items
  .filter((it) => it.kind === "passage")
  .map((it) => ({ text: it.text, score: it.embedding.reduce((s, x, i) => s + x * q[i], 0) }))
  .sort((a, b) => b.score - a.score);
console.log(`\nquery (with the zh instruction): ${query}`);
console.log("passages by cosine (synthetic weights: the ranking shows the plumbing, not meaning):");
for (const r of ranked) console.log(`  ${r.score.toFixed(4)}  ${r.text}`);
console.log(`\ngolden file: ${join(work, "golden.json")} (${golden.items.length} items, dim ${q.length})`);
