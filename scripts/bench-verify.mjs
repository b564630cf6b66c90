#!/usr/bin/env node
// Where `bge verify` spends its time (issue 4 target: ≥ 90% inside ONNX Runtime) on 1,000 texts
// with a bge-small-zh-v1.5-shaped fixture. The fixture, its export and a 1,000-item reference golden
// are made once under .bench/ (the golden takes a few minutes: the float64 reference is slow by
// design). Then verify runs in this process with InferenceSession.prototype.run wrapped to sum the
// wall time spent inside ONNX Runtime (session creation and runs).
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const bench = join(root, ".bench");
const bge = (...args) => execFileSync(process.execPath, [join(root, "bin", "bge.js"), ...args], { stdio: ["ignore", "ignore", "inherit"] });
const model = join(bench, "small-zh-verify");
const artifact = join(bench, "small-zh-verify-onnx");
const texts = join(bench, "verify-1000.txt");
const golden = join(bench, "verify-1000-golden.json");
const tokenizer = resolve(root, "..", "shared", "fixtures", "tokenizers", "bge-small-zh-v1.5");

if (!existsSync(join(model, "model.safetensors"))) {
  bge("fixture", model, "--shape", "bge-small-zh-v1.5", "--seed", "7", "--force", ...(existsSync(join(tokenizer, "tokenizer.json")) ? ["--tokenizer", tokenizer] : []));
}
if (!existsSync(join(artifact, "manifest.json"))) bge("export", model, "-o", artifact, "--precision", "fp32,fp16", "-q");
if (!existsSync(texts)) {
  // 1,000 texts: the 240 verification texts and the tokenizer corpus, then pairs of them joined, deterministically.
  const base = [
    ...readFileSync(join(root, "golden", "texts", "verify-passages.txt"), "utf8").trimEnd().split("\n"),
    ...JSON.parse(readFileSync(join(root, "test", "data", "tokenizer-corpus.json"), "utf8")).texts.filter((t) => t.trim() && t.length < 400 && !/[\r\n]/.test(t)),
  ];
  const out = [];
  for (let i = 0; out.length < 1000; i++) out.push(i < base.length ? base[i] : `${base[i % base.length]} ${base[(i * 7) % base.length]}`);
  writeFileSync(texts, out.join("\n") + "\n");
}
if (!existsSync(golden)) {
  console.error("making the 1,000-item reference golden (minutes) …");
  const t0 = Date.now();
  bge("golden", model, "--texts", texts, "-o", golden, "-q");
  console.error(`golden made in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

const { verifyCommand } = await import(join(root, "dist", "commands", "verify.js"));
const { createOutput } = await import(join(root, "dist", "cli", "output.js"));
// ONNX Runtime's work: loading and optimising the model (InferenceSession.create) and running it.
const proto = ort.InferenceSession.prototype;
const run = proto.run;
const create = ort.InferenceSession.create;
let inside = 0;
let calls = 0;
const timed = async (f) => {
  const t0 = performance.now();
  try {
    return await f();
  } finally {
    inside += performance.now() - t0;
  }
};
proto.run = function (...args) {
  calls++;
  return timed(() => run.apply(this, args));
};
ort.InferenceSession.create = (...args) => timed(() => create.apply(ort.InferenceSession, args));

const results = [];
for (const precision of ["fp32", "fp16"]) {
  inside = 0;
  calls = 0;
  const quiet = createOutput({ quiet: true }, { write: () => true }, process.stderr);
  const t0 = performance.now();
  await verifyCommand({ candidate: artifact, golden, precision, batchSize: 32 }, quiet);
  const total = performance.now() - t0;
  results.push({
    precision,
    texts: 1000,
    total_seconds: +(total / 1000).toFixed(2),
    inside_onnxruntime_seconds: +(inside / 1000).toFixed(2),
    fraction_in_onnxruntime: +(inside / total).toFixed(3),
    session_run_calls: calls,
  });
}
console.log(JSON.stringify({ date: new Date().toISOString(), machine: `${cpus().length} × ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`, results }, null, 2));
