#!/usr/bin/env node
// The bundled default, end to end on this machine, every step through the real `bge` CLI:
// a bge-small-zh-v1.5-shaped checkpoint (seeded weights; the real tokenizer when ../shared/fixtures
// is present) → a float64 reference golden → native ONNX export (fp32, fp16) → INT8 (bge quantize) →
// the parity gate on all four.
// Then the same gate on a wrong conversion (mean pooling), to show what a failure looks like.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const work = join(root, ".demo");
const model = join(work, "bge-small-zh-v1.5");
const artifact = join(work, "bge-small-zh-v1.5-onnx");
const golden = join(work, "golden.json");
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
bge(["golden", model, "--texts", join(root, "golden", "texts", "demo-passages.txt"), "--queries", join(root, "golden", "texts", "demo-queries.txt"), "-o", golden]);
bge(["export", model, "-o", artifact, "--precision", "fp32,fp16"]);
// INT8: calibrated on the project's corpus (passages and queries, as the model will see them).
const calibration = join(work, "calibration.txt");
const corpus = (f, n) => readFileSync(join(root, "pipelines", "corpus", f), "utf8").split("\n").filter(Boolean).slice(0, n);
writeFileSync(calibration, [...corpus("zh-passages.txt", 300), ...corpus("zh-queries.txt", 200)].join("\n") + "\n");
bge(["quantize", artifact, "--calibration", calibration]);
bge(["verify", artifact, "--golden", golden, "--junit", join(work, "parity.xml")]);

console.log("\n# A hand-converted model that pools mean instead of CLS — the gate says no and says why:");
bge(["export", model, "-o", join(work, "wrong-pooling-onnx"), "--precision", "fp32", "--pooling", "mean", "--quiet"]);
// The golden was pooled cls: verify refuses the mismatch (exit 2) unless told that it is intended.
bge(["verify", join(work, "wrong-pooling-onnx"), "--golden", golden, "--quiet", "--allow-settings-mismatch"], { expect: 1 });
console.log(`\ndemo done: artifacts and reports in ${work}`);
