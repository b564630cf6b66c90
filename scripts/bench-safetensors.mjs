#!/usr/bin/env node
// Peak RSS while reading every tensor of a bge-large-en-v1.5-shaped safetensors checkpoint, as a
// ratio of the file size (target ≤ 1.3). The checkpoint is generated once under .bench/ by
// `bge fixture` in its own process, so generation does not count; the reading runs in a fresh
// child process whose peak RSS (getrusage maxrss) is what we report.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const shape = process.argv[2] ?? "bge-large-en-v1.5";
const dir = join(root, ".bench", `${shape}-fixture`);
const weights = join(dir, "model.safetensors");

if (!existsSync(weights)) {
  console.error(`generating ${shape} fixture in ${dir} …`);
  execFileSync(process.execPath, [join(root, "bin", "bge.js"), "fixture", dir, "--shape", shape, "--seed", "1", "--force"], { stdio: "inherit" });
}

const reader = `
  const { openWeights, checkEncoderShapes } = await import(${JSON.stringify(join(root, "dist", "checkpoint", "weights.js"))});
  const { readEncoderConfig } = await import(${JSON.stringify(join(root, "dist", "checkpoint", "config.js"))});
  const t0 = performance.now();
  const src = await openWeights(${JSON.stringify(dir)});
  checkEncoderShapes(src, await readEncoderConfig(${JSON.stringify(dir)}));
  let bytes = 0, checksum = 0;
  for (const info of src.list()) {
    const b = await src.readBytes(info.name);
    bytes += b.byteLength;
    for (let i = 0; i < b.byteLength; i += 4096) checksum = (checksum + b[i]) % 1000003;
  }
  await src.close();
  const ms = performance.now() - t0;
  console.log(JSON.stringify({ bytes, checksum, ms, maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
`;
const run = spawnSync(process.execPath, ["--input-type=module", "-e", reader], { encoding: "utf8" });
if (run.status !== 0) {
  console.error(run.stderr);
  process.exit(1);
}
const r = JSON.parse(run.stdout.trim().split("\n").pop());
const size = statSync(weights).size;
const ratio = r.maxRssBytes / size;
const line = {
  date: new Date().toISOString(),
  machine: `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`,
  shape,
  file_bytes: size,
  tensor_bytes_read: r.bytes,
  read_seconds: +(r.ms / 1000).toFixed(2),
  peak_rss_bytes: r.maxRssBytes,
  peak_rss_over_file: +ratio.toFixed(3),
  target: "≤ 1.3",
  pass: ratio <= 1.3,
};
console.log(JSON.stringify(line, null, 2));
process.exit(line.pass ? 0 : 1);
