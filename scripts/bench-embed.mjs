#!/usr/bin/env node
// Embedding throughput (texts/s) of bge's OnnxEmbedder against the transformers.js
// feature-extraction pipeline, on the same exported fp32 ONNX of a bge-small-zh-v1.5-shaped
// fixture, in the same process, batch 32. Both are timed end to end (tokenise, run, pool,
// normalise) on the same few hundred passages of 10–200 tokens in shuffled order; bge batches
// them itself (sorted by length), transformers.js gets them 32 at a time in input order, as a
// user of its pipeline would pass them. One warm-up pass each, then REPS passes per variant,
// interleaved; the figure is the median pass. Needs `npm run build` first (imports dist/).
//
//   node scripts/bench-embed.mjs [--texts N] [--reps R] [--batch B] [--threads T]
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { link, mkdir } from "node:fs/promises";
import { availableParallelism, cpus, loadavg, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values: args } = parseArgs({
  options: {
    texts: { type: "string", default: "320" },
    reps: { type: "string", default: "7" },
    batch: { type: "string", default: "32" },
    threads: { type: "string" },
    seed: { type: "string", default: "1" },
  },
});
const N_TEXTS = Number(args.texts);
const REPS = Number(args.reps);
const BATCH = Number(args.batch);
const THREADS = args.threads === undefined ? undefined : Number(args.threads);
const SHAPE = "bge-small-zh-v1.5";
const MIN_TOKENS = 10;
const MAX_TOKENS = 200;

const zhTokenizer = resolve(root, "..", "shared", "fixtures", "tokenizers", SHAPE);
const haveRealTokenizer = existsSync(join(zhTokenizer, "tokenizer.json"));
const benchDir = join(root, ".bench", `${SHAPE}-embed`);
const checkpoint = join(benchDir, "checkpoint");
const artifact = join(benchDir, "onnx");
const peerRoot = join(benchDir, "peer");
const peerId = "bge-small-zh";
const bgeBin = join(root, "bin", "bge.js");

if (!existsSync(join(root, "dist", "runners", "load-embedder.js"))) {
  console.error("dist/ is missing: run `npm run build` first");
  process.exit(2);
}

// -------------------------------------------------------------------------------------------
// the model, generated once: fixture → bge export fp32 → transformers.js layout (hard links)

if (!existsSync(join(artifact, "model.fp32.onnx"))) {
  console.error(`generating a ${SHAPE} fixture and its fp32 export in ${benchDir} …`);
  const fixtureArgs = ["fixture", checkpoint, "--shape", SHAPE, "--seed", "1", "--force"];
  if (haveRealTokenizer) fixtureArgs.push("--tokenizer", zhTokenizer);
  execFileSync(process.execPath, [bgeBin, ...fixtureArgs], { stdio: "inherit" });
  execFileSync(process.execPath, [bgeBin, "export", checkpoint, "-o", artifact, "--precision", "fp32", "--quiet"], { stdio: "inherit" });
}
const peerDir = join(peerRoot, peerId);
if (!existsSync(join(peerDir, "onnx", "model.onnx"))) {
  await mkdir(join(peerDir, "onnx"), { recursive: true });
  for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]) await link(join(artifact, f), join(peerDir, f));
  await link(join(artifact, "model.fp32.onnx"), join(peerDir, "onnx", "model.onnx"));
}

// -------------------------------------------------------------------------------------------
// both embedders, same process

const { loadEmbedder } = await import(join(root, "dist", "runners", "load-embedder.js"));
const transformers = await import("@huggingface/transformers");
const { env, pipeline } = transformers;
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = peerRoot;
env.useFSCache = false;

const { embedder } = await loadEmbedder(artifact, { backend: "onnx", threads: THREADS });
const peerOptions = { dtype: "fp32" };
if (THREADS !== undefined) peerOptions.session_options = { intraOpNumThreads: THREADS, interOpNumThreads: 1 };
const extractor = await pipeline("feature-extraction", peerId, peerOptions);
const tokenCount = (text) => extractor.tokenizer(text).input_ids.dims[1];

// -------------------------------------------------------------------------------------------
// texts: N passages with token counts drawn uniformly from [MIN_TOKENS, MAX_TOKENS], built from
// the hand-written sentences of test/data/peer-texts.json (zh, en, mixed), in shuffled order

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const data = JSON.parse(readFileSync(join(root, "test", "data", "peer-texts.json"), "utf8"));
const rand = mulberry32(Number(args.seed));
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const texts = [];
const lengths = [];
for (let i = 0; i < N_TEXTS; i++) {
  const target = MIN_TOKENS + Math.floor(rand() * (MAX_TOKENS - MIN_TOKENS + 1));
  const pool = [data.zh, data.en, data.mixed][i % 3];
  const sep = pool === data.zh ? "" : " ";
  let text = pick(pool);
  while (tokenCount(text) < target) text += sep + pick(pool);
  // cut characters off the end until the text has at most `target` tokens (binary search)
  let lo = 1;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (tokenCount(text.slice(0, mid)) <= target) lo = mid;
    else hi = mid - 1;
  }
  text = text.slice(0, lo);
  texts.push(text);
  lengths.push(tokenCount(text));
}
const sortedIdx = texts.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b);
const textsByLength = sortedIdx.map((i) => texts[i]);

// -------------------------------------------------------------------------------------------
// variants

async function peerPass(list) {
  let rows = 0;
  for (let i = 0; i < list.length; i += BATCH) {
    const out = await extractor(list.slice(i, i + BATCH), { pooling: "cls", normalize: true });
    rows += out.dims[0];
  }
  if (rows !== list.length) throw new Error(`transformers.js returned ${rows} rows for ${list.length} texts`);
}

const variants = {
  bge: async () => {
    const r = await embedder.embed(texts, "passage", { batchSize: BATCH });
    if (r.embeddings.length !== texts.length) throw new Error("bge returned the wrong number of vectors");
  },
  "transformers.js": () => peerPass(texts),
  // diagnostic: the peer fed length-sorted batches, i.e. what bge's bucketing alone is worth
  "transformers.js (length-sorted batches)": () => peerPass(textsByLength),
};

// tokenisation alone, per pass over all texts (diagnostic)
const { loadFlagTokenizer } = await import(join(root, "dist", "tokenize", "flag-tokenizer.js")).catch(() => ({}));
const bgeTokenizer = loadFlagTokenizer ? await loadFlagTokenizer(artifact) : undefined;
const tokenizeMs = {};
{
  let t = performance.now();
  if (bgeTokenizer) {
    for (const text of texts) bgeTokenizer.encode(text, 512);
    tokenizeMs.bge = +(performance.now() - t).toFixed(1);
  }
  t = performance.now();
  for (let i = 0; i < texts.length; i += BATCH) extractor.tokenizer(texts.slice(i, i + BATCH), { padding: true, truncation: true });
  tokenizeMs["transformers.js"] = +(performance.now() - t).toFixed(1);
}

const times = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
const cpuTimes = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
const loadBefore = loadavg()[0];
for (const run of Object.values(variants)) await run(); // warm-up
for (let r = 0; r < REPS; r++) {
  for (const [name, run] of Object.entries(variants)) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await run();
    times[name].push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpuTimes[name].push((c.user + c.system) / 1000);
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const results = Object.fromEntries(
  Object.entries(times).map(([name, ms]) => [
    name,
    {
      median_texts_per_s: +(texts.length / (median(ms) / 1000)).toFixed(1),
      median_pass_ms: +median(ms).toFixed(1),
      best_texts_per_s: +(texts.length / (Math.min(...ms) / 1000)).toFixed(1),
      median_cpu_ms_per_pass: +median(cpuTimes[name]).toFixed(0),
      passes_ms: ms.map((x) => +x.toFixed(0)),
    },
  ]),
);

// padding each side computes: token slots fed to the model per pass
const slots = (order) => {
  let n = 0;
  for (let i = 0; i < order.length; i += BATCH) {
    const b = order.slice(i, i + BATCH).map((j) => lengths[j]);
    n += b.length * Math.max(...b);
  }
  return n;
};
const realTokens = lengths.reduce((s, x) => s + x, 0);

const pkg = (name) => JSON.parse(readFileSync(join(root, "node_modules", ...name.split("/"), "package.json"), "utf8")).version;
const sortedLengths = [...lengths].sort((a, b) => a - b);
const ratio = results.bge.median_texts_per_s / results["transformers.js"].median_texts_per_s;
// each bge pass against the transformers.js pass that ran right after it: robust to load drift
const pairedRatio = median(times.bge.map((ms, r) => times["transformers.js"][r] / ms));
const bestRatio = results.bge.best_texts_per_s / results["transformers.js"].best_texts_per_s;
const cpuRatio = results["transformers.js"].median_cpu_ms_per_pass / results.bge.median_cpu_ms_per_pass;
const line = {
  date: new Date().toISOString(),
  machine: {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: availableParallelism(),
    memory_gib: +(totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    loadavg_1min: { before: +loadBefore.toFixed(2), after: +loadavg()[0].toFixed(2) },
  },
  versions: {
    bge: JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version,
    "onnxruntime-node (bge)": pkg("onnxruntime-node"),
    "@huggingface/transformers": pkg("@huggingface/transformers"),
    "onnxruntime-node (transformers.js)": transformers.env.backends?.onnx?.versions?.node ?? "unknown",
  },
  model: {
    shape: SHAPE,
    tokenizer: haveRealTokenizer ? "real bge-small-zh-v1.5 tokenizer (shared fixtures)" : "generated (shared fixtures absent)",
    onnx: "bge export --precision fp32 (model.fp32.onnx; transformers.js loads the same file as onnx/model.onnx)",
  },
  setup: {
    texts: texts.length,
    tokens: { min: sortedLengths[0], median: sortedLengths[Math.floor(sortedLengths.length / 2)], max: sortedLengths.at(-1), total: realTokens },
    batch: BATCH,
    threads: THREADS ?? "defaults (bge: availableParallelism(); transformers.js: ONNX Runtime's default)",
    warmup_passes: 1,
    reps: REPS,
    token_slots_per_pass: {
      "bge (length-sorted)": slots(sortedIdx),
      "transformers.js (input order)": slots(texts.map((_, i) => i)),
    },
  },
  tokenize_ms_per_pass: tokenizeMs,
  results,
  ratio_bge_over_transformersjs: +ratio.toFixed(3),
  ratio_paired_median: +pairedRatio.toFixed(3),
  ratio_best_pass: +bestRatio.toFixed(3),
  ratio_cpu_time: +cpuRatio.toFixed(3),
  target: "≥ 1.0 (aim 1.3)",
  pass: ratio >= 1.0,
};
console.log(JSON.stringify(line, null, 2));
await embedder.deactivate();
await extractor.dispose();
process.exit(line.pass ? 0 : 1);
