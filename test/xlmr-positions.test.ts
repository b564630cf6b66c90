import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { EncoderConfig } from "../src/checkpoint/config.js";
import { readModelSpec, type ModelSpec } from "../src/checkpoint/model-spec.js";
import { openWeights } from "../src/checkpoint/weights.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { buildEncoderGraph } from "../src/onnx/encoder-graph.js";
import { exportOnnx } from "../src/onnx/export.js";
import { OnnxType } from "../src/onnx/proto.js";
import { compareEmbeddings, cosineSimilarity } from "../src/parity/metrics.js";
import { l2Normalize } from "../src/reference/pooling.js";
import { encoderForward, loadEncoderWeights, positionIds, type EncoderWeights } from "../src/reference/encoder.js";
import { ReferenceEmbedder } from "../src/runners/reference-embedder.js";
import { loadEmbedder } from "../src/runners/load-embedder.js";
import { loadFlagTokenizer } from "../src/tokenize/flag-tokenizer.js";
import { tempDir } from "./helpers/tmp.js";

/**
 * XLM-R position ids follow transformers' `create_position_ids_from_input_ids`, not the attention mask:
 * a literal `<pad>` in a text is tokenised to the pad id, attended to, but neither numbered nor counted.
 */

/** transformers' rule written out as a plain loop: cumsum(ids != pad) * (ids != pad) + pad. */
function transformersPositions(ids: readonly number[], pad: number): number[] {
  const out: number[] = [];
  let cumsum = 0;
  for (const id of ids) {
    const keep = id !== pad ? 1 : 0;
    cumsum += keep;
    out.push(cumsum * keep + pad);
  }
  return out;
}

/** The old, mask-based rule: (arange + 1) * mask + pad. */
function maskPositions(mask: readonly number[], pad: number): number[] {
  return mask.map((m, i) => (i + 1) * m + pad);
}

/**
 * The encoder run with explicit positions: a BERT numbering (0, 1, …) over a position table whose row
 * t is row positions[t] of the real one gives exactly the pass that uses `positions`.
 */
function forwardAt(cfg: EncoderConfig, w: EncoderWeights, ids: readonly number[], positions: readonly number[]): Float64Array {
  const H = cfg.hiddenSize;
  const posEmb = new Float64Array(ids.length * H);
  positions.forEach((p, t) => posEmb.set(w.posEmb.subarray(p * H, (p + 1) * H), t * H));
  return encoderForward({ ...cfg, arch: "bert", maxPositionEmbeddings: ids.length }, { ...w, posEmb }, ids).hidden;
}

const clsVector = (hidden: Float64Array, H: number) => Array.from(l2Normalize(hidden.slice(0, H)));

let root: string;
let dir: string;
let spec: ModelSpec;
let weights: EncoderWeights;
const PAD = 1;

beforeAll(async () => {
  root = await tempDir("bge-xlmr-pos-");
  dir = join(root, "tiny-m3");
  await writeFixture({ dir, arch: "xlm-roberta", seed: 31 });
  spec = await readModelSpec(dir);
  const src = await openWeights(dir);
  weights = await loadEncoderWeights(src, spec.config);
  await src.close();
});

describe("XLM-R position ids: transformers' rule in the reference encoder", () => {
  it("the tiny fixture's tokenizer turns a literal <pad> into the pad id, attended to", async () => {
    expect(spec.config.padTokenId).toBe(PAD);
    const tok = await loadFlagTokenizer(dir);
    const ids = tok.encode("a <pad> b", 512);
    expect(ids.filter((id) => id === PAD)).toHaveLength(1);
    expect(ids[0]).toBe(0);
    expect(ids.at(-1)).toBe(2);
  });

  it("positionIds equals the plain-loop formula for ids with the pad id mid-text, at the ends and in a padded tail", () => {
    const cases = [
      [0, 649, 4, 1, 650, 2],
      [0, 1, 1, 7, 1, 2, 1, 1],
      [1, 5, 6],
      [0, 1, 2],
      [0, 5, 6, 7, 2],
    ];
    for (const ids of cases) expect(positionIds(spec.config, ids)).toEqual(transformersPositions(ids, PAD));
    // The literal pad is numbered pad_id and the next token continues the count as if it were absent.
    expect(positionIds(spec.config, [0, 649, 4, 1, 650, 2])).toEqual([2, 3, 4, 1, 5, 6]);
    // BERT stays 0, 1, 2, … whatever the ids.
    expect(positionIds({ ...spec.config, arch: "bert" }, [0, 1, 2])).toEqual([0, 1, 2]);
  });

  it("encoderForward uses those positions, with or without a padded tail, and the mask rule gives another vector", () => {
    const H = spec.config.hiddenSize;
    const ids = [0, 649, 4, 1, 650, 2];
    const expected = forwardAt(spec.config, weights, ids, transformersPositions(ids, PAD));
    expect(Array.from(encoderForward(spec.config, weights, ids).hidden)).toEqual(Array.from(expected));
    const padded = encoderForward(spec.config, weights, [...ids, PAD, PAD], [...ids.map(() => 1), 0, 0]);
    expect(Array.from(padded.hidden)).toEqual(Array.from(expected));
    const byMask = forwardAt(spec.config, weights, ids, maskPositions(ids.map(() => 1), PAD));
    expect(cosineSimilarity(clsVector(expected, H), clsVector(byMask, H))).toBeLessThan(0.9999);
  });
});

describe("XLM-R position ids: the exported ONNX graph agrees with the reference", () => {
  it("counts with a float32 MatMul, not CumSum, in the fp16 graph too", async () => {
    const src = await openWeights(dir);
    const g = buildEncoderGraph(spec.config, src, { precision: "fp16", pooling: "cls", normalize: true });
    await src.close();
    expect(g.nodes.filter((n) => n.opType === "CumSum")).toEqual([]);
    const producer = new Map(g.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
    const matmul = g.nodes.find((n) => n.name === "/embeddings/position_ids/MatMul")!;
    for (const input of matmul.inputs) expect(producer.get(input)).toMatchObject({ opType: "Cast", attributes: { to: { kind: "int", value: OnnxType.FLOAT } } });
  });

  const TEXTS = ["a <pad> b", "<pad>", "x<pad>y", "a <pad><pad> b", "<pad> at the start", "at the end <pad>", "a b", "北京是中国的首都", "hello world, a longer normal sentence"];

  it("fp32 and fp16, texts with and without a literal <pad>, batched with padding", async () => {
    const out = join(root, "tiny-m3-onnx");
    await exportOnnx({ modelDir: dir, outDir: out, builtBy: { tool: "bge", version: "test", args: ["export"] } });
    const ref = await (await ReferenceEmbedder.load(spec, { threads: 1 })).embed(TEXTS, "passage");
    expect(ref.inputIds.filter((ids) => ids.includes(PAD)).length).toBe(6);
    // The worker threads (dist/, where built) run the same rule.
    const threaded = await ReferenceEmbedder.load(spec, { threads: 2 });
    expect((await threaded.embed(TEXTS, "passage")).embeddings).toEqual(ref.embeddings);
    await threaded.deactivate();

    // The mask rule's vector for "a <pad> b" differs: a graph that still numbered by the mask fails below.
    const H = spec.config.hiddenSize;
    const ids = ref.inputIds[0]!;
    const byMask = clsVector(forwardAt(spec.config, weights, ids, maskPositions(ids.map(() => 1), PAD)), H);
    const ruleVsMask = cosineSimilarity(ref.embeddings[0]!, byMask);
    console.log(`"a <pad> b": cosine(transformers' rule, mask rule) = ${ruleVsMask}`);
    expect(ruleVsMask).toBeLessThan(0.9999);

    const summaries: Record<string, ReturnType<typeof compareEmbeddings>["summary"]> = {};
    for (const precision of ["fp32", "fp16"]) {
      const { embedder } = await loadEmbedder(out, { precision });
      // Batches of 4 mix lengths, so the graph also sees right padding next to literal pads.
      const got = await embedder.embed(TEXTS, "passage", { batchSize: 4 });
      await embedder.deactivate();
      expect(got.inputIds).toEqual(ref.inputIds);
      summaries[precision] = compareEmbeddings(ref.embeddings, got.embeddings).summary;
      expect(cosineSimilarity(got.embeddings[0]!, byMask)).toBeLessThan(0.9999);
    }
    console.log(`tiny xlm-roberta, texts with <pad>: ${JSON.stringify(summaries)}`);
    expect(summaries.fp32!.max_abs_diff).toBeLessThanOrEqual(1e-5);
    expect(summaries.fp32!.min_cosine).toBeGreaterThanOrEqual(0.999999);
    expect(summaries.fp16!.min_cosine).toBeGreaterThanOrEqual(0.999);
    expect(summaries.fp16!.non_finite).toBe(0);
  }, 120_000);
});
