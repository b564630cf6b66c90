import { createRequire } from "node:module";
import { readTextsFile } from "../cli/inputs.js";
import type { Output } from "../cli/output.js";
import { GOLDEN_FORMAT, validateGolden, writeGolden } from "../artifacts/golden.js";
import { assertFiniteItems, makeNativeGolden } from "../parity/native-golden.js";
import { runFlagModelGolden } from "../reference/flagmodel-golden.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { resolveModelDir } from "../checkpoint/resolve-model.js";
import { checkWeightsMatchConfig, hashWeights } from "../checkpoint/weights.js";
import { UsageError } from "../errors.js";
import { availableHeads } from "../checkpoint/m3-heads.js";
import { checkOutputPaths } from "../util/io-paths.js";
import { loadCheckedTokenizer } from "../tokenize/flag-tokenizer.js";

export interface GoldenCommandOptions {
  model: string;
  texts: string;
  queries?: string;
  output: string;
  reference: "native" | "flagmodel";
  /** FlagModel's use_fp16 (flagmodel reference only). */
  fp16?: boolean;
  maxLength?: number;
  batchSize: number;
  instruction?: string | null;
}

const pkg = createRequire(import.meta.url)("../../package.json") as { version: string };

export async function goldenCommand(options: GoldenCommandOptions, out: Output): Promise<void> {
  const dir = await resolveModelDir(options.model, { out });
  await checkOutputPaths(
    [{ path: options.output, flag: "-o", kind: "file" }],
    [
      { path: dir, what: "checkpoint folder", kind: "dir" },
      { path: options.texts, what: "texts file", kind: "file" },
      ...(options.queries ? [{ path: options.queries, what: "queries file", kind: "file" as const }] : []),
    ],
  );
  const spec = await readModelSpec(dir, { maxLength: options.maxLength, queryInstruction: options.instruction });
  // Config against the weights before texts are read or the weights hashed: a bad model costs nothing.
  await checkWeightsMatchConfig(dir, spec.config);
  const passages = await readTextsFile(options.texts);
  const queries = options.queries ? await readTextsFile(options.queries) : [];
  if (passages.length + queries.length === 0) throw new UsageError(`${options.texts}: no texts to embed`);
  if (queries.length && spec.queryInstruction === undefined) {
    out.warn(`${spec.id} has no known query instruction: queries are embedded as they are (pass --instruction to set one)`);
  }
  const weightsSha = await hashWeights(dir);
  const model = { id: spec.id, revision: spec.revision, weights_sha256: weightsSha };
  if (options.reference === "flagmodel") {
    // FlagModel would die mid-run on a token id beyond the embedding table: refuse it here instead.
    await loadCheckedTokenizer(dir, spec.config.vocabSize);
    out.info(`running FlagEmbedding's FlagModel on ${passages.length + queries.length} texts …`);
    const m3 = (await availableHeads(dir)).length > 0;
    if (m3) out.info(`${spec.id} has bge-m3's heads: running BGEM3FlagModel with dense, sparse and ColBERT outputs`);
    const produced = await runFlagModelGolden({ spec, passages, queries, useFp16: options.fp16 ?? false, batchSize: options.batchSize, m3 });
    const golden = validateGolden({ format: GOLDEN_FORMAT, model, ...produced }, `FlagModel output for ${options.output}`);
    const dim = golden.items[0]!.embedding.length;
    if (dim !== spec.config.hiddenSize) throw new UsageError(`FlagModel returned vectors of dimension ${dim}, the model's hidden size is ${spec.config.hiddenSize}`);
    assertFiniteItems(golden.items);
    await writeGolden(options.output, golden);
    out.info(`wrote ${golden.items.length} items (FlagEmbedding ${golden.producer.version}, ${golden.producer.device}, use_fp16 ${golden.producer.use_fp16}) to ${options.output}`);
    out.result(options.output, { golden: options.output, items: golden.items.length, dimension: dim, model: spec.id, weights_sha256: weightsSha, producer: golden.producer });
    return;
  }
  const golden = await makeNativeGolden({
    spec,
    weightsSha256: weightsSha,
    passages,
    queries,
    batchSize: options.batchSize,
    version: pkg.version,
    onProgress: out.progress("golden", passages.length + queries.length),
  });
  await writeGolden(options.output, golden);
  const items = golden.items;
  const dimension = items[0]!.embedding.length;
  const heads = ["dense", ...(items[0]!.sparse ? ["sparse"] : []), ...(items[0]!.colbert ? ["colbert"] : [])];
  out.info(`wrote ${items.length} items (${passages.length} passages, ${queries.length} queries, dim ${dimension}${heads.length > 1 ? `, heads ${heads.join(",")}` : ""}) to ${options.output}`);
  out.result(options.output, { golden: options.output, items: items.length, dimension, model: spec.id, weights_sha256: weightsSha });
}
