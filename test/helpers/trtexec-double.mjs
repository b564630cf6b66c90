#!/usr/bin/env node
// A stand-in for NVIDIA's trtexec, one version at a time (TRTEXEC_DOUBLE_VERSION = 8.6.1, 10.16.0 or
// 11.0.0), for machines without TensorRT. It checks options the way that version does (an option it
// does not know fails the run, as the 11.0.0 fixture shows), prints that version's log lines (forms
// taken from ../shared/fixtures/trtexec/), "builds" an engine file that names the ONNX it came from,
// and answers --loadInputs/--exportOutput by running that ONNX on onnxruntime (CPU), rounding outputs
// to FP16 for engines built with FP16 enabled. Knobs: TRTEXEC_DOUBLE_GPU, TRTEXEC_DOUBLE_CC, and
// TRTEXEC_DOUBLE_FAIL=exit|signal|failed-line|bad-export|no-engine for the failure paths.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename, resolve } from "node:path";

/** Options every modelled version accepts (the ones bge uses, and common ones users add). */
const COMMON = [
  "--onnx", "--saveEngine", "--loadEngine", "--minShapes", "--optShapes", "--maxShapes", "--shapes", "--loadInputs",
  "--exportOutput", "--exportTimes", "--exportProfile", "--exportLayerInfo", "--timingCacheFile", "--builderOptimizationLevel",
  "--memPoolSize", "--skipInference", "--noTF32", "--verbose", "--iterations", "--warmUp", "--duration", "--avgRuns",
  "--useCudaGraph", "--useSpinWait", "--noDataTransfers", "--separateProfileRun", "--dumpProfile", "--dumpOutput",
  "--dumpLayerInfo", "--profilingVerbosity", "--device", "--maxAuxStreams", "--plugins", "--help",
];
/** Weak-typing precision options: in 8.6 and 10.x, removed in 11.x (FACTS.md). */
const WEAK_PRECISION = ["--fp16", "--int8", "--best", "--calib", "--precisionConstraints", "--layerPrecisions"];
const VERSIONS = {
  "8.6.1": { tag: "[TensorRT v8601]", family: "8.6", inputBytes: 4, options: [...COMMON, ...WEAK_PRECISION, "--workspace", "--explicitBatch", "--buildOnly"] },
  "10.16.0": { tag: "[TensorRT v101600] [b72]", family: "10", inputBytes: 8, options: [...COMMON, ...WEAK_PRECISION, "--stronglyTyped", "--bf16", "--fp8"] },
  "11.0.0": { tag: "[TensorRT v110000] [b114]", family: "11", inputBytes: 8, options: [...COMMON, "--stronglyTyped"] },
};
const MAGIC = "BGE-TRTEXEC-DOUBLE-ENGINE\n";

const version = process.env.TRTEXEC_DOUBLE_VERSION ?? "10.16.0";
const spec = VERSIONS[version];
if (!spec) {
  process.stderr.write(`trtexec-double: TRTEXEC_DOUBLE_VERSION=${version} is not one of ${Object.keys(VERSIONS).join(", ")}\n`);
  process.exit(64);
}
const gpu = process.env.TRTEXEC_DOUBLE_GPU ?? "NVIDIA A100-SXM4-80GB";
const cc = process.env.TRTEXEC_DOUBLE_CC ?? "8.0";
const fail = process.env.TRTEXEC_DOUBLE_FAIL ?? "";
const argv = process.argv.slice(2);
const commandLine = `trtexec ${argv.join(" ")}`;

const pad = (n) => String(n).padStart(2, "0");
function stamp() {
  const d = new Date();
  return `[${pad(d.getMonth() + 1)}/${pad(d.getDate())}/${d.getFullYear()}-${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}]`;
}
// trtexec's logger sends warnings and errors to stderr, the rest to stdout.
const info = (s) => process.stdout.write(`${stamp()} [I] ${s}\n`);
const warn = (s) => process.stderr.write(`${stamp()} [W] ${s}\n`);
const error = (s) => process.stderr.write(`${stamp()} [E] ${s}\n`);
function failed(code = 1) {
  process.stdout.write(`&&&& FAILED TensorRT.trtexec ${spec.tag} # ${commandLine}\n`);
  process.exit(code);
}
function passed() {
  if (fail === "failed-line") failed(0); // a FAILED line under a zero exit: callers must read the log
  process.stdout.write(`&&&& PASSED TensorRT.trtexec ${spec.tag} # ${commandLine}\n`);
  process.exit(0);
}
/** Dies the way a crash does: no FAILED line. */
function crash() {
  if (fail === "signal") process.kill(process.pid, "SIGKILL");
  if (fail === "exit") process.exit(3);
}

process.stdout.write(`&&&& RUNNING TensorRT.trtexec ${spec.tag} # ${commandLine}\n`);

// trtexec splits each argument at its first "=" into key and value, and reports whatever no option consumed.
const args = new Map();
const unknown = [];
for (const a of argv) {
  const eq = a.indexOf("=");
  const [key, value] = eq < 0 ? [a, ""] : [a.slice(0, eq), a.slice(eq + 1)];
  if (spec.options.includes(key)) args.set(key, value);
  else unknown.push(value ? `${key} ${value}` : key);
}
if (unknown.length) {
  for (const u of unknown) error(`Unknown option: ${u}`);
  failed();
}

const has = (k) => args.has(k);
const shapesOf = (k) => Object.fromEntries((args.get(k) ?? "").split(",").filter(Boolean).map((s) => {
  const i = s.lastIndexOf(":");
  return [s.slice(0, i), s.slice(i + 1).split("x").map(Number)];
}));

function memoryPools() {
  const pool = /(?:^|,)workspace:([^,]+)/.exec(args.get("--memPoolSize") ?? "")?.[1];
  let mib = "default";
  if (pool !== undefined) {
    if (spec.family === "8.6") mib = `${parseFloat(pool)} MiB`; // 8.6: the number is MiB (stod ignores any suffix)
    else {
      // 10.x+: the last character is the unit (B, K, M, G); a bare number is MiB
      const units = { B: 1 / 2 ** 20, K: 1 / 1024, M: 1, G: 1024 };
      const last = pool.at(-1);
      mib = `${/\d/.test(last) ? parseFloat(pool) : parseFloat(pool) * units[last.toUpperCase()]} MiB`;
    }
  } else if (has("--workspace")) mib = `${parseFloat(args.get("--workspace"))} MiB`;
  return `workspace: ${mib}, dlaSRAM: default, dlaLocalDRAM: default, dlaGlobalDRAM: default${spec.family === "8.6" ? "" : ", tacticSharedMem: default"}`;
}

function deviceBlock() {
  info("=== Device Information ===");
  const uuid = "GPU-5de52435-1295-4817-2a4e-60d7896052ea";
  if (spec.family !== "8.6") {
    info("Available Devices:");
    info(`  Device 0: "${gpu}" UUID: ${uuid}`);
  }
  info(`Selected Device: ${gpu}`);
  if (spec.family !== "8.6") {
    info("Selected Device ID: 0");
    info(`Selected Device UUID: ${uuid}`);
  }
  info(`Compute Capability: ${cc}`);
  info("SMs: 108");
  info("Device Global Memory: 81050 MiB");
  info("");
  info(`TensorRT version: ${version}`);
  info("Loading standard plugins");
}

function summary() {
  info("=== Performance summary ===");
  info("Throughput: 1523.41 qps");
  const stats = (a) => `min = ${a} ms, max = ${(a * 1.9).toPrecision(6)} ms, mean = ${(a * 1.1).toPrecision(6)} ms, median = ${(a * 1.05).toPrecision(6)} ms, percentile(90%) = ${(a * 1.2).toPrecision(6)} ms, percentile(95%) = ${(a * 1.3).toPrecision(6)} ms, percentile(99%) = ${(a * 1.6).toPrecision(6)} ms`;
  info(`Latency: ${stats(0.612305)}`);
  info(`Enqueue Time: ${stats(0.0212402)}`);
  info(`H2D Latency: ${stats(0.00292969)}`);
  info(`GPU Compute Time: ${stats(0.598145)}`);
  info(`D2H Latency: ${stats(0.00317383)}`);
  info("Total Host Walltime: 3.00014 s");
  info("Total GPU Compute Time: 2.99097 s");
  info("Explanations of the performance metrics are printed in the verbose logs.");
  info("");
}

/** What precision the builder may use: the flags on 8.6/10 weakly typed, the graph's own types otherwise. */
function enginePrecision(onnxPath, bytes) {
  const strongly = spec.family === "11" || has("--stronglyTyped");
  if (!strongly) return { precision: has("--int8") ? "int8" : has("--fp16") || has("--best") ? "fp16" : "fp32", fp16: has("--fp16") || has("--best"), stronglyTyped: false };
  // The double does not decode ONNX here: Q/DQ nodes name their op type in the bytes; bge's fp16 graph is named so.
  if (bytes.includes("QuantizeLinear")) return { precision: "int8", fp16: false, stronglyTyped: true };
  const fp16 = /fp16/.test(basename(onnxPath));
  return { precision: fp16 ? "fp16" : "fp32", fp16, stronglyTyped: true };
}

function build() {
  const onnx = args.get("--onnx");
  info("=== Model Options ===");
  info("Format: ONNX");
  info(`Model: ${onnx}`);
  info("=== Build Options ===");
  info(`Memory Pools: ${memoryPools()}`);
  const strongly = spec.family === "11" || has("--stronglyTyped");
  if (spec.family === "10" && !strongly) warn("Weakly-typed networks have been deprecated in TensorRT. You can use the AutoCast tool (https://nvidia.github.io/TensorRT-Model-Optimizer/guides/8_autocast.html) to convert the network to be strongly typed.");
  info(`Precision: ${strongly ? "Strongly Typed" : `FP32${has("--fp16") ? "+FP16" : ""}${has("--int8") ? "+INT8" : ""}`}`);
  if (has("--layerPrecisions")) info(`LayerPrecisions: ${args.get("--layerPrecisions")}`);
  info(`Calibration: ${args.get("--calib") ?? ""}`);
  info(`Skip inference: ${has("--skipInference") ? "Enabled" : "Disabled"}`);
  info(`Save engine: ${args.get("--saveEngine") ?? ""}`);
  info(`timingCacheFile: ${args.get("--timingCacheFile") ?? ""}`);
  info(`BuilderOptimizationLevel: ${args.get("--builderOptimizationLevel") ?? (spec.family === "8.6" ? "3" : "-1")}`);
  const min = shapesOf("--minShapes"), opt = shapesOf("--optShapes"), max = shapesOf("--maxShapes");
  for (const name of Object.keys(opt)) info(`Input build shape (profile 0): ${name}=${min[name]?.join("x")}+${opt[name].join("x")}+${max[name]?.join("x")}`);
  deviceBlock();
  info("Start parsing network model.");
  if (!existsSync(onnx)) {
    error(`[TRT] ModelImporter.cpp:0: Could not open file ${onnx}`);
    error("Failed to parse onnx file");
    error("Parsing model failed");
    error("Failed to create engine from model or file.");
    error("Engine set up failed");
    failed();
  }
  const bytes = readFileSync(onnx);
  info("[TRT] ----------------------------------------------------------------");
  info(`[TRT] Input filename:   ${onnx}`);
  info("[TRT] ----------------------------------------------------------------");
  info("Finished parsing network model. Parse time: 0.0158849");
  const saveTo = args.get("--saveEngine");
  const header = {
    version, gpu, computeCapability: cc, ...enginePrecision(onnx, bytes),
    onnx: resolve(onnx), onnxSha256: createHash("sha256").update(bytes).digest("hex"),
    profile: { min, opt, max }, calib: args.get("--calib") ?? null,
  };
  const engine = Buffer.concat([Buffer.from(MAGIC), Buffer.from(`${JSON.stringify(header)}\n`), Buffer.alloc(64, 0xab)]);
  if (saveTo && (fail === "exit" || fail === "signal")) {
    writeFileSync(saveTo, engine.subarray(0, 20)); // a half-written engine, as a killed build leaves one
    crash();
  }
  info(`Created engine with size: ${(engine.length / 2 ** 20).toPrecision(6)} MiB`);
  info("Engine built in 5.6446 sec.");
  if (saveTo && fail !== "no-engine") writeFileSync(saveTo, engine);
  info("Engine deserialized in 0.081026 sec.");
  if (has("--skipInference")) {
    info("Skipped inference phase since --skipInference is added.");
    passed();
  }
  summary();
  passed();
}

function readEngine(path) {
  if (!existsSync(path)) {
    error(`Error opening engine file: ${path}`);
    error("Failed to create engine from model or file.");
    error("Engine set up failed");
    failed();
  }
  const buf = readFileSync(path);
  const nl = buf.indexOf(10, MAGIC.length);
  let header;
  try {
    if (buf.subarray(0, MAGIC.length).toString() !== MAGIC) throw new Error("magic");
    header = JSON.parse(buf.subarray(MAGIC.length, nl).toString());
  } catch {
    error("[TRT] IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)");
    error("Engine deserialization failed");
    failed();
  }
  if (header.version !== version) {
    error(`[TRT] IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan file is not compatible with this version of TensorRT, expecting library version ${version} got ${header.version}, please rebuild.)`);
    error("Engine deserialization failed");
    failed();
  }
  if (header.gpu !== gpu || header.computeCapability !== cc) warn(`[TRT] Using an engine plan file across different models of devices is not supported and is likely to affect performance or even cause errors (built on ${header.gpu}, running on ${gpu}).`);
  return header;
}

/** Float32 → nearest FP16 (ties to even) → float32: what an FP16 output binding holds. */
function roundToHalf(x) {
  if (!Number.isFinite(x)) return x;
  const a = Math.abs(x);
  if (a >= 65520) return Math.sign(x) * Infinity;
  if (a < 2 ** -24 / 2) return x < 0 || Object.is(x, -0) ? -0 : 0;
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  const ulp = 2 ** (e - 10);
  let q = a / ulp;
  const f = Math.floor(q);
  const r = q - f;
  q = r > 0.5 || (r === 0.5 && f % 2 === 1) ? f + 1 : f;
  return Math.sign(x) * q * ulp;
}

/** C++ ostream's default float output: %g with 6 significant digits; nan/inf bare. */
function formatValue(v) {
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  if (v === 0) return Object.is(v, -0) ? "-0" : "0";
  const [mant, expStr] = v.toExponential(5).split("e");
  const exp = Number(expStr);
  const strip = (s) => (s.includes(".") ? s.replace(/\.?0+$/, "") : s);
  if (exp < -4 || exp >= 6) return `${strip(mant)}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  return strip(v.toFixed(5 - exp));
}

/** trtexec's --exportOutput layout (sampleReporting: one record per output, ", " before the 2nd on). */
function exportJson(outputs) {
  let s = "[\n";
  let sep = "  ";
  for (const o of outputs) {
    s += `${sep}{ "name" : "${o.name}"\n`;
    sep = ", ";
    s += `  ${sep}"dimensions" : "${o.dims.join("x")}"\n`;
    s += `  ${sep}"values" : [ ${Array.from(o.data, (v) => (typeof v === "bigint" ? String(v) : formatValue(Number(v)))).join(", ")} ]\n`;
    s += "  }\n";
  }
  return `${s}]\n`;
}

async function run() {
  const header = readEngine(args.get("--loadEngine"));
  deviceBlock();
  info(`Engine loaded in 0.0123 sec.`);
  if (!existsSync(header.onnx) || createHash("sha256").update(readFileSync(header.onnx)).digest("hex") !== header.onnxSha256) {
    error(`trtexec-double: the engine's ONNX ${header.onnx} is gone or changed since the build; rebuild the engine`);
    failed();
  }
  info("Engine deserialized in 0.0245724 sec.");
  process.env.ORT_DISABLE_TELEMETRY ??= "1"; // before onnxruntime-node loads (src/runners/ort-telemetry.ts)
  const ort = await import("onnxruntime-node");
  const session = await ort.InferenceSession.create(header.onnx);
  const shapes = shapesOf("--shapes");
  const files = Object.fromEntries((args.get("--loadInputs") ?? "").split(",").filter(Boolean).map((s) => {
    const i = s.lastIndexOf(":");
    return [s.slice(0, i), s.slice(i + 1)];
  }));
  const feeds = {};
  for (const name of session.inputNames) {
    let dims = shapes[name];
    const prof = header.profile;
    if (!dims) {
      dims = prof.opt[name] ?? [1, 1];
      warn(`Dynamic dimensions required for input: ${name}, but no shapes were provided. Automatically overriding shape to: ${dims.join("x")}`);
    }
    if (prof.min[name] && dims.some((d, i) => d < prof.min[name][i] || d > prof.max[name][i])) {
      error(`[TRT] IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check failed, condition: engineDims.d[i] == dims.d[i]. Static dimension mismatch while setting input shape for ${name}. Set dimensions are [${dims.join(",")}]. Expected dimensions are [${prof.min[name].join(",")}] to [${prof.max[name].join(",")}].)`);
      failed();
    }
    info(`Set shape of input tensor ${name} to: ${dims.join("x")}`);
    const count = dims.reduce((a, b) => a * b, 1);
    const data = new BigInt64Array(count);
    if (files[name] !== undefined) {
      const raw = readFileSync(files[name]);
      if (raw.length !== count * spec.inputBytes) {
        error(`Input ${name}: file ${files[name]} holds ${raw.length} bytes, the binding needs ${count * spec.inputBytes} (${dims.join("x")} ${spec.inputBytes === 4 ? "int32" : "int64"})`);
        failed();
      }
      for (let i = 0; i < count; i++) data[i] = spec.inputBytes === 4 ? BigInt(raw.readInt32LE(i * 4)) : raw.readBigInt64LE(i * 8);
    } else {
      info(`Using random values for input ${name}`);
      for (let i = 0; i < count; i++) data[i] = BigInt((i * 7919) % 2);
    }
    info(`Input binding for ${name} with dimensions ${dims.join("x")} and type ${spec.inputBytes === 4 ? "int32" : "int64"} is created.`);
    feeds[name] = new ort.Tensor("int64", data, dims);
  }
  const result = await session.run(feeds);
  const outputs = session.outputNames.map((name) => {
    const t = result[name];
    const data = header.fp16 && t.type === "float32" ? Float32Array.from(t.data, roundToHalf) : t.data;
    info(`Output binding for ${name} with dimensions ${t.dims.join("x")} and type ${header.fp16 ? "fp16" : "fp32"} is created.`);
    return { name, dims: t.dims, data };
  });
  crash();
  const exportTo = args.get("--exportOutput");
  if (exportTo) {
    const text = exportJson(outputs);
    writeFileSync(exportTo, fail === "bad-export" ? text.slice(0, Math.floor(text.length / 2)) : text);
  }
  const timesTo = args.get("--exportTimes");
  if (timesTo) writeFileSync(timesTo, exportTimesJson(Number(args.get("--iterations") ?? 10)));
  summary();
  passed();
}

/**
 * trtexec's --exportTimes layout (one record per timed inference, sampleReporting's spacing): the
 * double's inferences take 0.6–1.0 ms of GPU compute each, back to back, with fixed transfers.
 */
function exportTimesJson(n) {
  const rows = [];
  let t = 16.5;
  for (let i = 0; i < Math.max(1, n); i++) {
    const compute = 0.6 + ((i * 37) % 11) * 0.04;
    const h2d = 0.003;
    const d2h = 0.004;
    const r = { startEnqMs: t, endEnqMs: t + 0.02, startH2dMs: t, endH2dMs: t + h2d, startComputeMs: t + h2d, endComputeMs: t + h2d + compute, startD2hMs: t + h2d + compute, endD2hMs: t + h2d + compute + d2h, h2dMs: h2d, computeMs: compute, d2hMs: d2h, latencyMs: h2d + compute + d2h };
    rows.push(`{ ${Object.entries(r).map(([k, v]) => `"${k}" : ${Number(v.toPrecision(6))}`).join(", ")} }`);
    t = r.endD2hMs;
  }
  return `[\n  ${rows.join("\n, ")}\n]\n`;
}

if (has("--onnx")) build();
else if (has("--loadEngine")) await run();
else {
  error("Model missing or format not specified");
  failed();
}
