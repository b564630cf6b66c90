import type { Arch } from "../checkpoint/config.js";
import type { Output } from "../cli/output.js";
import { writeFixture, type FixtureDType } from "../fixture/write-fixture.js";
import { checkOutputPaths } from "../util/io-paths.js";

export interface FixtureCommandOptions {
  dir: string;
  arch?: Arch;
  shape: string;
  seed: number;
  outliers: boolean;
  tokenizer?: string;
  dtype: FixtureDType;
  shards: number;
  force: boolean;
}

export async function fixtureCommand(options: FixtureCommandOptions, out: Output): Promise<void> {
  await checkOutputPaths([{ path: options.dir, flag: "<dir>", kind: "dir" }], options.tokenizer ? [{ path: options.tokenizer, what: "tokenizer folder", kind: "dir" }] : []);
  const result = await writeFixture({
    dir: options.dir,
    arch: options.arch,
    shape: options.shape,
    seed: options.seed,
    outliers: options.outliers,
    tokenizerDir: options.tokenizer,
    dtype: options.dtype,
    shards: options.shards,
    force: options.force,
    onWarn: (m) => out.warn(m),
  });
  const s = result.shape;
  const mb = (result.weightBytes / 1e6).toFixed(1);
  out.info(
    `wrote ${result.id} (${s.arch}, hidden ${s.hiddenSize}, ${s.numLayers} layers, vocab ${result.vocabSize}, ${mb} MB ${options.dtype} weights${options.outliers ? ", outliers" : ""}) to ${result.dir}`,
  );
  out.result(result.dir, { dir: result.dir, id: result.id, arch: s.arch, shape: options.shape, seed: options.seed, files: result.files, weight_bytes: result.weightBytes });
}
