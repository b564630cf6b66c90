#!/usr/bin/env node
// `npm run bench:all`: regenerates docs/PERFORMANCE.md (and its SVG charts) in one run on this machine.
//  1. fp32 vs fp16 vs int8 ONNX on ONNX Runtime CPU for the bge-small-zh-v1.5 and bge-base-en-v1.5
//     shapes (`bge fixture --shape …`, real tokenizers where ../shared/fixtures has them), through
//     `bge bench` at batch 1, 8, 32 × 128 tokens, each row against the MatMul ceiling measured in the
//     same run;
//  2. `bge embed`'s engine (OnnxEmbedder) vs the transformers.js feature-extraction pipeline on the same
//     model.fp32.onnx and texts;
//  3. bge's tokeniser vs the Rust tokenizers binding (@anush008/tokenizers) on the same texts.
// Every claim is a ratio measured in this one run: absolute figures differ between machines.
// Results are printed as each completes; fixtures and artifacts are kept under .bench/ for reruns.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { link, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const bench = join(root, ".bench");
const bge = join(root, "bin", "bge.js");
const shared = resolve(root, "..", "shared", "fixtures", "tokenizers");
const started = Date.now();
const loadAtStart = loadavg();
const log = (s) => process.stderr.write(`${s}\n`);

const SHAPES = [
  { shape: "bge-small-zh-v1.5", tokenizer: join(shared, "bge-small-zh-v1.5") },
  { shape: "bge-base-en-v1.5", tokenizer: join(shared, "bge-small-en-v1.5") },
];
const GRID = { batch: "1,8,32", seq: "128", warmup: "1", runs: "5" };

function run(args, { quiet = false } = {}) {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [bge, ...args], { stdio: ["ignore", quiet ? "ignore" : "inherit", "inherit"] });
    child.on("error", fail);
    child.on("close", (code) => (code === 0 ? done() : fail(new Error(`bge ${args.join(" ")} exited with ${code}`))));
  });
}

async function texts() {
  const passages = (await readFile(join(root, "golden", "texts", "verify-passages.txt"), "utf8")).split("\n").filter(Boolean);
  const queries = (await readFile(join(root, "golden", "texts", "verify-queries.txt"), "utf8")).split("\n").filter(Boolean);
  return [...passages, ...queries];
}

/** Fixture, export (fp32, fp16), INT8 from a small calibration corpus; reused when already made. */
async function artifactFor({ shape, tokenizer }) {
  const ck = join(bench, `all-${shape}-checkpoint`);
  const art = join(bench, `all-${shape}-artifact`);
  const realTokenizer = existsSync(join(tokenizer, "tokenizer.json"));
  if (!existsSync(join(ck, "model.safetensors"))) {
    await rm(ck, { recursive: true, force: true });
    await run(["fixture", ck, "--shape", shape, "--seed", "1", ...(realTokenizer ? ["--tokenizer", tokenizer] : [])], { quiet: true });
  }
  const manifest = join(art, "manifest.json");
  const hasInt8 = existsSync(manifest) && JSON.parse(await readFile(manifest, "utf8")).files.some((f) => f.role === "onnx-int8-dynamic");
  if (!hasInt8) {
    await rm(art, { recursive: true, force: true });
    const t0 = performance.now();
    await run(["export", ck, "-o", art, "--precision", "fp32,fp16", "--quiet"]);
    const corpus = join(bench, "all-calibration.txt");
    await writeFile(corpus, (await texts()).slice(0, 32).join("\n") + "\n");
    await run(["quantize", art, "--calibration", corpus, "--precision", "int8", "--quiet"]);
    log(`${shape}: exported and quantised in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  return { ck, art, realTokenizer };
}

async function benchShape(entry) {
  const { art, realTokenizer } = await artifactFor(entry);
  const report = join(bench, `all-${entry.shape}.json`);
  const chart = join(root, "docs", `performance-${entry.shape}.svg`);
  await run(["bench", art, "--precision", "fp32,fp16,int8", "--batch", GRID.batch, "--seq", GRID.seq, "--warmup", GRID.warmup, "--runs", GRID.runs, "--report", report, "--chart", chart]);
  return { ...entry, art, realTokenizer, report: JSON.parse(await readFile(report, "utf8")), chart };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Medians of `repeats` timed runs of each function after one warm-up each, the functions taking turns
 * (a, b, a, b, …) so that a burst of load from other processes falls on both alike.
 */
async function interleaved(fns, repeats) {
  for (const fn of fns) await fn();
  const ms = fns.map(() => []);
  for (let i = 0; i < repeats; i++) {
    for (const [k, fn] of fns.entries()) {
      const t0 = performance.now();
      await fn();
      ms[k].push(performance.now() - t0);
    }
  }
  return ms.map(median);
}

/** bge's tokeniser vs the Rust tokenizers binding, one text at a time, same texts and max_length. */
async function tokenisation(art, all) {
  const { loadFlagTokenizer } = await import(join(root, "dist", "tokenize", "flag-tokenizer.js"));
  const { Tokenizer } = await import("@anush008/tokenizers");
  const ours = await loadFlagTokenizer(art);
  const rust = Tokenizer.fromFile(join(art, "tokenizer.json"));
  rust.setTruncation(512);
  let tokens = 0;
  const [bgeMs, rustMs, batchMs] = await interleaved(
    [
      async () => {
        tokens = 0;
        for (const t of all) tokens += ours.encode(t, 512).length;
      },
      async () => {
        for (const t of all) await rust.encode(t);
      },
      () => rust.encodeBatch(all),
    ],
    9,
  );
  return { texts: all.length, tokens, bgeMs, rustMs, rustBatchMs: batchMs, ratio: rustMs / bgeMs, ratioBatch: batchMs / bgeMs };
}

/** OnnxEmbedder (what `bge embed` runs) vs transformers.js on the same model.fp32.onnx and texts, batches of 32. */
async function peer(art, all) {
  const { loadEmbedder } = await import(join(root, "dist", "runners", "load-embedder.js"));
  const { env, pipeline } = await import("@huggingface/transformers");
  const peerRoot = join(bench, "all-peer-models");
  const id = "bench/bge-small-zh";
  const dir = join(peerRoot, id);
  await rm(peerRoot, { recursive: true, force: true });
  await mkdir(join(dir, "onnx"), { recursive: true });
  for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]) await link(join(art, f), join(dir, f));
  await link(join(art, "model.fp32.onnx"), join(dir, "onnx", "model.onnx"));
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = peerRoot;
  env.useFSCache = false;
  const { embedder } = await loadEmbedder(art, { backend: "onnx", precision: "fp32" });
  const extractor = await pipeline("feature-extraction", id, { dtype: "fp32" });
  const B = 32;
  const [bgeMs, peerMs] = await interleaved(
    [
      () => embedder.embed(all, "passage", { batchSize: B }),
      async () => {
        for (let i = 0; i < all.length; i += B) await extractor(all.slice(i, i + B), { pooling: "cls", normalize: true });
      },
    ],
    9,
  );
  await embedder.deactivate();
  await extractor.dispose();
  await rm(peerRoot, { recursive: true, force: true });
  return { texts: all.length, batch: B, bgeMs, peerMs, ratio: peerMs / bgeMs };
}

const pct = (x) => (x === undefined ? "–" : `${x.toFixed(0)}%`);
const num = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const mib = (b) => `${(b / 2 ** 20).toFixed(0)} MiB`;

function shapeSection(r) {
  const { rows, models } = r.report;
  const cfg = models[0].config;
  const seq = Number(GRID.seq);
  const fp = (flops) => `${(flops / 1e9).toFixed(1)} GFLOP`;
  const perSeq = cfg.layers * (8 * seq * cfg.hidden ** 2 + 4 * seq * cfg.hidden * cfg.intermediate + 4 * seq * seq * cfg.hidden);
  const out = [
    `### ${r.shape} shape (${cfg.layers} layers, hidden ${cfg.hidden}, intermediate ${cfg.intermediate}${r.realTokenizer ? ", real tokenizer" : ", generated tokenizer"})`,
    "",
    `${fp(perSeq)} per ${seq}-token sequence. ![sequences/s vs batch](performance-${r.shape}.svg)`,
    "",
    "| precision | batch | p50 ms | p95 ms | seq/s | tok/s | ceiling seq/s | % of ceiling | vs fp32 |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
  ];
  for (const row of rows) {
    const base = rows.find((x) => x.precision === "fp32" && x.batch === row.batch && x.seq === row.seq);
    out.push(`| ${row.precision} | ${row.batch} | ${num(row.latencyMs.p50)} | ${num(row.latencyMs.p95)} | ${num(row.sequencesPerSecond)} | ${num(row.tokensPerSecond)} | ${num(row.ceiling.sequencesPerSecond)} | ${pct(row.pctOfCeiling)} | ${(row.sequencesPerSecond / base.sequencesPerSecond).toFixed(2)}× |`);
  }
  out.push("", "| precision | weights | peak RSS of the bench process | RSS / weights |", "|---|--:|--:|--:|");
  for (const m of models) out.push(`| ${m.precision} | ${mib(m.weightsBytes)} | ${mib(m.peakRssBytes)} | ${m.rssOverWeights.toFixed(1)}× |`);
  const c32 = rows.find((x) => x.precision === "fp32" && x.batch === 32)?.ceiling;
  if (c32) out.push("", `MatMul rates measured at 32·${seq} rows: ${(c32.hiddenFlops / 1e9).toFixed(1)} GFLOP/s (H×H), ${(c32.intermediateFlops / 1e9).toFixed(1)} GFLOP/s (H×I).`);
  return out.join("\n");
}

async function main() {
  await mkdir(bench, { recursive: true });
  const { machineInfo } = await import(join(root, "dist", "bench", "report.js"));
  const results = [];
  for (const s of SHAPES) {
    log(`== ${s.shape} ==`);
    results.push(await benchShape(s));
  }
  const all = await texts();
  const small = results[0];
  // The peer comparison first: the Rust binding's encodeBatch starts a native thread pool that then
  // shares the CPUs with ONNX Runtime's threads for the rest of the process.
  log("== bge embed vs transformers.js ==");
  const p = await peer(small.art, all);
  log(`  ${p.texts} texts: bge ${p.bgeMs.toFixed(0)} ms, transformers.js ${p.peerMs.toFixed(0)} ms (${p.ratio.toFixed(2)}×)`);
  log("== tokenisation: bge vs @anush008/tokenizers ==");
  const tok = await tokenisation(small.art, all);
  log(`  ${tok.texts} texts: bge ${tok.bgeMs.toFixed(1)} ms, Rust binding ${tok.rustMs.toFixed(1)} ms one by one (${tok.ratio.toFixed(2)}×), ${tok.rustBatchMs.toFixed(1)} ms encodeBatch (${tok.ratioBatch.toFixed(2)}×)`);
  const machine = await machineInfo();
  const loadAtEnd = loadavg();
  const minutes = (Date.now() - started) / 60000;
  const fp32at32 = results.map((r) => ({ shape: r.shape, row: r.report.rows.find((x) => x.precision === "fp32" && x.batch === 32) }));
  const doc = [
    "# Performance",
    "",
    "<!-- Generated by `npm run bench:all` (scripts/bench-all.mjs); edit the script or docs/performance-notes.md, not this file. -->",
    "",
    `Measured ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC on ${machine.cpu}, ${machine.cores} cores (${machine.logicalCpus} logical), ${(machine.memoryBytes / 2 ** 30).toFixed(0)} GiB; ISA ${machine.isa.join(" ")}; node ${machine.node}, onnxruntime-node ${machine.onnxruntime} (CPU, ${results[0].report.settings.threads} threads). The whole run took ${minutes.toFixed(1)} minutes.`,
    "",
    `Load average ${loadAtStart.map((x) => x.toFixed(2)).join(" ")} at the start and ${loadAtEnd.map((x) => x.toFixed(2)).join(" ")} at the end${loadAtStart[0] > 1 ? `: other processes were running on the same ${machine.logicalCpus} CPUs, so absolute figures are low and noisy` : ": nothing else ran when it started (the load during the run is the benchmark's own)"}. Every claim below is a ratio of two figures measured in this one run, under the same load (at each grid point the MatMul ceiling's runs take turns with the model's own, so a burst of load falls on both).`,
    "",
    "## How the ceiling is computed",
    "",
    "FLOPs per sequence of L tokens, from config.json (H hidden, I intermediate, n layers; a multiply-add counts 2):",
    "",
    "    n · (8·L·H² + 4·L·H·I + 4·L²·H)   = n · (24·L·H² + 4·L²·H)  when I = 4H",
    "",
    "8·L·H² is the Q, K, V and output projections, 4·L·H·I the feed-forward pair, 4·L²·H attention's QKᵀ and AV. Embeddings, layer norms, softmax and GELU are O(L·H) and left out.",
    "",
    "`bge bench` measures, in the same process, runtime and thread count, two ONNX graphs of MatMuls only (written with bge's own ONNX writer): 4·n chained M×H · H×H products and n chained (M×H · H×I, M×I · I×H) pairs, at M = batch·seq rows. Their rates give the seconds one sequence's GEMMs need at best (attention's products at the H×H rate); its inverse is the ceiling in sequences/s, and each row's throughput is shown as a percentage of it. The ceiling is fp32: fp16 and int8 rows are measured against the same figure, so an int8 model can exceed 100%.",
    "",
    "## fp32 vs fp16 vs int8 (ONNX Runtime CPU, 128 tokens)",
    "",
    ...results.flatMap((r) => [shapeSection(r), ""]),
    "## Against peers (same run, same texts)",
    "",
    "| comparison | bge | peer | ratio (peer time / bge time) | target | met |",
    "|---|--:|--:|--:|--:|---|",
    `| \`bge embed\` engine vs transformers.js feature-extraction, ${p.texts} texts (golden/texts/verify-*.txt), batch ${p.batch}, bge-small-zh shape fp32 | ${p.bgeMs.toFixed(0)} ms | ${p.peerMs.toFixed(0)} ms | ${p.ratio.toFixed(2)}× | ≥ 1.3× | ${p.ratio >= 1.3 ? "yes" : "**no**"} |`,
    `| tokenisation, ${tok.texts} texts (${tok.tokens} tokens), bge vs @anush008/tokenizers \`encode\` one text at a time | ${tok.bgeMs.toFixed(1)} ms | ${tok.rustMs.toFixed(1)} ms | ${tok.ratio.toFixed(2)}× | ≥ 0.5× | ${tok.ratio >= 0.5 ? "yes" : "**no**"} |`,
    `| tokenisation, the same, Rust \`encodeBatch\` (its own threads) | ${tok.bgeMs.toFixed(1)} ms | ${tok.rustBatchMs.toFixed(1)} ms | ${tok.ratioBatch.toFixed(2)}× | ≥ 0.5× | ${tok.ratioBatch >= 0.5 ? "yes" : "**no**"} |`,
    "",
    "## Targets",
    "",
    ...fp32at32.map(({ shape, row }) => `- fp32 at batch 32 × 128 reaches ≥ 60% of the ceiling — ${shape}: ${pct(row?.pctOfCeiling)} (${(row?.pctOfCeiling ?? 0) >= 60 ? "met" : "**missed**"}).`),
    `- \`bge embed\` ≥ 1.3× transformers.js: ${p.ratio.toFixed(2)}× (${p.ratio >= 1.3 ? "met" : "**missed**"}).`,
    `- tokenisation ≥ 0.5× the Rust binding: ${tok.ratio.toFixed(2)}× one by one, ${tok.ratioBatch.toFixed(2)}× against encodeBatch (${tok.ratio >= 0.5 ? "met" : "**missed**"}).`,
    "",
    "@@NOTES@@",
    "",
    "Rerun: `npm run bench:all` (builds first; fixtures and artifacts are cached under .bench/). One artifact by hand: `bge bench DIR --precision fp32,fp16,int8 --batch 1,8,32 --seq 128 --report r.json --chart c.svg`.",
    "",
  ].join("\n");
  const notesFile = join(root, "docs", "performance-notes.md");
  const notes = existsSync(notesFile) ? (await readFile(notesFile, "utf8")).trim() : "";
  await writeFile(join(root, "docs", "PERFORMANCE.md"), doc.replace("@@NOTES@@", notes));
  await writeFile(join(bench, "all-results.json"), JSON.stringify({ machine, loadAtStart, loadAtEnd, minutes, tokenisation: tok, peer: p, shapes: results.map((r) => ({ shape: r.shape, report: r.report })) }, null, 2));
  log(`docs/PERFORMANCE.md written (${minutes.toFixed(1)} min)`);
}

await main();
