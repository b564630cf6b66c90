#!/usr/bin/env node
// The main job on the bundled default, end to end on this machine through the real `bge` CLI:
// a bge-small-zh-v1.5-shaped checkpoint (seeded weights; the real tokenizer when ../shared/fixtures
// is present) → `bge convert`: native ONNX export (fp32, fp16) → INT8 calibrated on the project's
// corpus → TensorRT engines where a trtexec exists (skipped here, with the reason) → a float64
// reference golden → the parity gate on every artifact, ending with the summary table.
// Then the same gate on a wrong conversion (mean pooling), to show what a failure looks like.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const work = join(root, ".demo");
const model = join(work, "bge-small-zh-v1.5");
const artifact = join(work, "bge-small-zh-v1.5-onnx");
const realTokenizer = resolve(root, "..", "shared", "fixtures", "tokenizers", "bge-small-zh-v1.5");
mkdirSync(work, { recursive: true });

function bge(args, { expect = 0 } = {}) {
  console.log(`\n$ bge ${args.map((a) => (a.startsWith(root) ? a.slice(root.length + 1) : a)).join(" ")}`);
  const r = spawnSync(process.execPath, [join(root, "bin", "bge.js"), ...args], { stdio: "inherit" });
  if (r.status !== expect) {
    console.error(`demo: bge ${args[0]} exited ${r.status}, expected ${expect}`);
    process.exit(r.status || 1);
  }
}

const fixtureArgs = ["fixture", model, "--shape", "bge-small-zh-v1.5", "--seed", "42", "--force"];
if (existsSync(join(realTokenizer, "tokenizer.json"))) fixtureArgs.push("--tokenizer", realTokenizer);
else console.log(`(real tokenizer not found at ${realTokenizer}: using a generated one)`);
bge(fixtureArgs);
// No Hugging Face hub here: the checkpoint is a local folder, so convert uses the project's own
// corpora (pipelines/corpus for calibration, golden/texts for verification).
bge(["convert", model, "-o", artifact, "--junit", join(work, "parity.xml")]);

console.log("\n# A hand-converted model that pools mean instead of CLS — the gate says no and says why:");
bge(["export", model, "-o", join(work, "wrong-pooling-onnx"), "--precision", "fp32", "--pooling", "mean", "--quiet"]);
// The golden was pooled cls: verify refuses the mismatch (exit 2) unless told that it is intended.
bge(["verify", join(work, "wrong-pooling-onnx"), "--golden", join(artifact, "golden.json"), "--quiet", "--allow-settings-mismatch"], { expect: 1 });
console.log(`\ndemo done: artifacts and reports in ${work}`);
