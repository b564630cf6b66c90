import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, SHARED_FIXTURES } from "../../test/helpers/paths.js";
import { tempDir } from "../../test/helpers/tmp.js";
import { usageError } from "../../test/helpers/usage-error.js";
import { knownInstruction } from "../checkpoint/model-spec.js";
import { FIXTURE_SHAPES } from "../fixture/shapes.js";
import { DEFAULT_TOLERANCES } from "../parity/tolerances.js";
import { CALIBRATION_METHODS } from "../quantize/calibrate.js";
import { DYNAMIC_ACTIVATIONS } from "../quantize/dynamic-graph.js";
import {
  batchSeq,
  bundledPipelines,
  loadPipelineFor,
  PIPELINE_PRECISIONS,
  PIPELINE_SCHEMA,
  PIPELINES_DIR,
  pipelineTolerance,
  readPipeline,
  TOLERANCE_KEYS,
  type Pipeline,
} from "./pipeline.js";

const schema = JSON.parse(readFileSync(PIPELINE_SCHEMA, "utf8"));
const SOURCES = join(SHARED_FIXTURES, "SOURCES.md");

describe("bundled pipelines", () => {
  let pipelines: Pipeline[];
  beforeAll(async () => {
    pipelines = await Promise.all((await bundledPipelines()).map((f) => readPipeline(f)));
  });

  it("one per model of FACTS.md's BGE table (the fixture shapes), named after the hub id", async () => {
    const names = (await bundledPipelines()).map((f) => basename(f, ".json"));
    expect(names).toEqual(Object.keys(FIXTURE_SHAPES).sort());
    for (const p of pipelines) expect(p.model).toBe(`BAAI/${basename(p.file, ".json")}`);
  });

  it("each validates and names corpora that exist under pipelines/corpus, resolved against its own folder", () => {
    for (const p of pipelines) {
      for (const f of [p.calibration?.texts, p.verification?.texts, p.verification?.queries]) {
        expect(f, p.file).toBeDefined();
        expect(f!.startsWith(join(PIPELINES_DIR, "corpus") + "/"), f).toBe(true);
        expect(existsSync(f!)).toBe(true);
        expect(readFileSync(f!, "utf8").split("\n").filter(Boolean).length).toBeGreaterThanOrEqual(500);
      }
    }
  });

  it("Chinese models calibrate and verify on Chinese, English on English; bge-m3 calibrates on one and verifies on the other", () => {
    for (const p of pipelines) {
      const lang = FIXTURE_SHAPES[basename(p.file, ".json")]!.language;
      const corpora = [p.calibration!.texts, p.verification!.texts, p.verification!.queries!].map((f) => basename(f).slice(0, 2));
      if (lang === "multilingual") {
        expect(corpora[0]).not.toBe(corpora[1]);
        expect(corpora[1]).toBe(corpora[2]);
      } else {
        expect(corpora).toEqual([lang, lang, lang]);
      }
    }
  });

  it("the query instruction is exactly the model's (FACTS.md; bge-m3 none) and max_length fits the position table", () => {
    for (const p of pipelines) {
      expect(p.query_instruction, p.model).toBe(knownInstruction(p.model) ?? null);
      const shape = FIXTURE_SHAPES[basename(p.file, ".json")]!;
      const offset = shape.arch === "xlm-roberta" ? 2 : 0; // XLM-R positions start after the pad id
      expect(p.max_length).toBe(512);
      expect(p.max_length!).toBeLessThanOrEqual(shape.maxPositionEmbeddings - offset);
      const [, maxSeq] = batchSeq(p.shapes!.max);
      expect(maxSeq).toBe(p.max_length);
      // Named profiles are for longer inputs, within the position table: bge-m3's 8192.
      for (const [name, profile] of Object.entries(p.profiles ?? {})) {
        const [, seq] = batchSeq(profile.max);
        expect(seq, `${p.model} ${name}`).toBeGreaterThan(p.max_length!);
        expect(seq, `${p.model} ${name}`).toBeLessThanOrEqual(shape.maxPositionEmbeddings - offset);
      }
    }
    const m3 = pipelines.find((p) => p.model === "BAAI/bge-m3")!;
    expect(Object.keys(m3.profiles ?? {})).toEqual(["8192"]);
    expect(batchSeq(m3.profiles!["8192"]!.max)[1]).toBe(8192);
    expect(pipelines.filter((p) => p.profiles).map((p) => p.model)).toEqual(["BAAI/bge-m3"]);
  });

  it("builds fp32, fp16 and int8 at SPEC.md's default tolerances", () => {
    for (const p of pipelines) {
      expect(Object.keys(p.precisions!)).toEqual([...PIPELINE_PRECISIONS]);
      for (const precision of PIPELINE_PRECISIONS) {
        const t = p.precisions![precision]!;
        expect(t.min_cosine).toBe(DEFAULT_TOLERANCES[precision]!.min_cosine);
        expect(t.mean_cosine).toBe(DEFAULT_TOLERANCES[precision]!.mean_cosine);
      }
    }
  });

  it.skipIf(!existsSync(SOURCES))("pins a revision only where the shared fixtures' SOURCES.md knows the full commit, and says so where it does not", () => {
    const sources = readFileSync(SOURCES, "utf8");
    for (const p of pipelines) {
      const name = basename(p.file, ".json");
      const line = sources.split("\n").find((l) => l.startsWith(`* ${name} @ `));
      const full = line?.match(/\b[0-9a-f]{40}\b/)?.[0];
      if (full) {
        expect(p.revision, name).toBe(full);
      } else {
        expect(p.revision, `${name}: a revision nobody published`).toBeUndefined();
        expect(p.notes?.some((n) => /^revision not pinned/.test(n)), name).toBe(true);
      }
    }
  });
});

describe("the schema and the code agree", () => {
  it("tolerance keys, precisions and calibration methods are the ones the gate, convert and quantize know", () => {
    expect(schema.$schema).toBe("https://json-schema.org/draft/2020-12/schema");
    expect(Object.keys(schema.$defs.tolerance.properties)).toEqual([...TOLERANCE_KEYS]);
    expect(Object.keys(schema.properties.precisions.properties)).toEqual([...PIPELINE_PRECISIONS]);
    expect(schema.properties.calibration.properties.method.enum).toEqual([...CALIBRATION_METHODS]);
    expect(schema.properties.calibration.properties.activations.enum).toEqual([...DYNAMIC_ACTIVATIONS]);
  });

  it("pipelineTolerance gives int8's gates to both INT8 graphs", async () => {
    const p = (await loadPipelineFor("BAAI/bge-small-zh-v1.5"))!;
    expect(pipelineTolerance(p, "int8-qdq")).toEqual(p.precisions!.int8);
    expect(pipelineTolerance(p, "int8")).toEqual(p.precisions!.int8);
    expect(pipelineTolerance(p, "fp16")).toEqual(p.precisions!.fp16);
    expect(pipelineTolerance({}, "fp16")).toBeUndefined();
  });
});

describe("loadPipelineFor", () => {
  it("finds the bundled pipeline of a hub id, with or without a revision, whatever the case", async () => {
    expect((await loadPipelineFor("BAAI/bge-small-zh-v1.5"))?.file).toBe(join(PIPELINES_DIR, "bge-small-zh-v1.5.json"));
    expect((await loadPipelineFor("BAAI/bge-m3@main"))?.model).toBe("BAAI/bge-m3");
    expect((await loadPipelineFor("baai/BGE-Large-EN-v1.5"))?.model).toBe("BAAI/bge-large-en-v1.5");
  });

  it("gives none for an unknown model, a fine-tune under another name, or a local folder", async () => {
    expect(await loadPipelineFor("BAAI/bge-reranker-base")).toBeUndefined();
    expect(await loadPipelineFor("someone/bge-small-zh-v1.5")).toBeUndefined();
    expect(await loadPipelineFor("/tmp/bge-small-zh-v1.5")).toBeUndefined();
    expect(await loadPipelineFor("./bge-small-zh-v1.5")).toBeUndefined();
  });
});

describe("readPipeline refuses a malformed pipeline (exit 2, naming the file and the field)", () => {
  let dir: string;
  let good: Record<string, unknown>;
  beforeAll(async () => {
    dir = await tempDir("bge-pipeline-");
    await mkdir(join(dir, "texts"));
    await writeFile(join(dir, "texts", "p.txt"), "一\n二\n");
    await writeFile(join(dir, "texts", "q.txt"), "三\n");
    good = JSON.parse(await readFile(join(PIPELINES_DIR, "bge-small-zh-v1.5.json"), "utf8"));
    good.calibration = { texts: "texts/p.txt" };
    good.verification = { texts: "texts/p.txt", queries: "texts/q.txt" };
  });

  let n = 0;
  async function refusal(edit: (p: Record<string, any>) => void): Promise<string> {
    const p = structuredClone(good) as Record<string, any>;
    edit(p);
    const file = join(dir, `p${n++}.json`);
    await writeFile(file, JSON.stringify(p));
    const message = (await usageError(() => readPipeline(file))).message;
    expect(message.startsWith(`${file}: `)).toBe(true);
    return message;
  }

  it("accepts a pipeline elsewhere, its paths relative to its own folder, and returns them absolute", async () => {
    const file = join(dir, "ok.json");
    await writeFile(file, JSON.stringify(good));
    const p = await readPipeline(file);
    expect(p.file).toBe(file);
    expect(p.calibration!.texts).toBe(join(dir, "texts", "p.txt"));
    expect(p.verification).toEqual({ texts: join(dir, "texts", "p.txt"), queries: join(dir, "texts", "q.txt") });
    expect(p).not.toHaveProperty("$schema");
  });

  it("accepts the smallest pipeline verify needs: a model and some tolerances", async () => {
    const file = join(dir, "small.json");
    await writeFile(file, JSON.stringify({ model: "bge-fixture/bge-tiny-zh", precisions: { fp16: { min_cosine: 0.99999999 } } }));
    expect((await readPipeline(file)).precisions).toEqual({ fp16: { min_cosine: 0.99999999 } });
  });

  it("a value of the wrong type, saying what is accepted", async () => {
    expect(await refusal((p) => (p.precisions.int8.min_cosine = "0.98"))).toMatch(/precisions\.int8\.min_cosine must be a number greater than 0 and at most 1, got "0\.98"/);
    expect(await refusal((p) => (p.max_length = 512.5))).toMatch(/max_length must be a whole number at least 2 and at most 8192, got 512\.5/);
    expect(await refusal((p) => (p.calibration = "texts/p.txt"))).toMatch(/calibration must be an object with texts \(required\), method, percentile, max_texts, activations, got "texts\/p\.txt"/);
    expect(await refusal((p) => (p.query_instruction = 7))).toMatch(/query_instruction must be a non-empty string or null, got 7/);
    expect(await refusal((p) => (p.calibration.method = "kl"))).toMatch(/calibration\.method must be one of "minmax", "percentile", "entropy", got "kl"/);
    expect(await refusal((p) => (p.calibration.activations = "per-row"))).toMatch(/calibration\.activations must be one of "static", "per-token", "per-tensor", got "per-row"/);
  });

  it("an unknown key, listing the known ones", async () => {
    expect(await refusal((p) => (p.precisions.fp16.min_cosin = 0.9))).toMatch(/precisions\.fp16\.min_cosin is not a tolerance \(use min_cosine, mean_cosine, batch_drift, topk_agreement, norm, token_mismatches\)/);
    expect(await refusal((p) => (p.precisions.int4 = {}))).toMatch(/precisions\.int4 is not a precision \(use fp32, fp16, int8\)/);
    expect(await refusal((p) => (p.tolerance = 0.9))).toMatch(/tolerance is not a pipeline field \(use model, revision, notes, max_length, query_instruction, precisions, shapes, profiles, calibration, verification\)/);
    expect(await refusal((p) => (p.verification.passages = "texts/p.txt"))).toMatch(/verification\.passages is not a verification field \(use texts, queries\)/);
  });

  it("an out-of-range tolerance (the former range checks, kept)", async () => {
    expect(await refusal((p) => (p.precisions.fp32.min_cosine = 0))).toMatch(/precisions\.fp32\.min_cosine must be a number greater than 0 and at most 1, got 0/);
    expect(await refusal((p) => (p.precisions.fp16.mean_cosine = 1.5))).toMatch(/precisions\.fp16\.mean_cosine must be .* at most 1, got 1\.5/);
    expect(await refusal((p) => (p.precisions.int8.batch_drift = -1e-3))).toMatch(/precisions\.int8\.batch_drift must be a number greater than 0/);
    expect(await refusal((p) => (p.precisions.int8.token_mismatches = -1))).toMatch(/precisions\.int8\.token_mismatches must be a whole number at least 0, got -1/);
  });

  it("every problem at once, one line", async () => {
    const m = await refusal((p) => {
      p.revision = "main";
      p.precisions.fp16.min_cosine = 2;
      delete p.model;
    });
    expect(m).toMatch(/model is missing \(a hub id/);
    expect(m).toMatch(/revision must be a full 40-digit lower-case hex commit sha .*got "main"/);
    expect(m).toMatch(/precisions\.fp16\.min_cosine must be .*got 2/);
    expect(m).toMatch(/\(schema: pipelines\/pipeline\.schema\.json\)$/);
  });

  it("a corpus file that does not exist, or is a folder, relative to the pipeline's folder", async () => {
    expect(await refusal((p) => (p.calibration.texts = "corpus/zh-passages.txt"))).toMatch(
      new RegExp(`calibration\\.texts \\("corpus/zh-passages\\.txt", relative to the pipeline file's folder\\): ${dir}/corpus/zh-passages\\.txt: no such file`),
    );
    expect(await refusal((p) => (p.verification.queries = "texts"))).toMatch(/verification\.queries \("texts", relative to the pipeline file's folder\): .*texts is a folder/);
  });

  it("a shape that is not BxS", async () => {
    for (const bad of ["32X128", "0x128", "32x", "32x128x1", " 32x128", 32]) {
      expect(await refusal((p) => (p.shapes.opt = bad))).toMatch(/shapes\.opt must be BxS, batch × sequence length, e\.g\. 32x128, got /);
    }
    expect(await refusal((p) => delete p.shapes.min)).toMatch(/shapes\.min is missing \(BxS/);
  });

  it("corners out of order (min ≤ opt ≤ max in batch and in sequence), beyond the limits, or short of max_length", async () => {
    expect(await refusal((p) => (p.shapes = { min: "1x2", opt: "64x128", max: "32x512" }))).toMatch(/shapes\.opt 64x128 exceeds shapes\.max 32x512 \(batch and sequence must each keep min ≤ opt ≤ max\)/);
    expect(await refusal((p) => (p.shapes = { min: "1x256", opt: "32x128", max: "64x512" }))).toMatch(/shapes\.min 1x256 exceeds shapes\.opt 32x128/);
    expect(await refusal((p) => (p.shapes = { min: "1x2", opt: "32x128", max: "8192x512" }))).toMatch(/shapes\.max is 8192x512; a batch may be at most 4096/);
    expect(await refusal((p) => (p.shapes = { min: "1x2", opt: "32x128", max: "64x256" }))).toMatch(/shapes\.max 64x256 takes sequences of at most 256 tokens but max_length is 512: raise shapes\.max to Bx512 or lower max_length/);
  });

  it("named profiles: corners in order, longer than max_length (the default profile covers that), a name fit for a file name", async () => {
    expect(await refusal((p) => (p.profiles = { long: { min: "1x2", opt: "2x4096", max: "1x8192" } }))).toMatch(/profiles\.long\.opt 2x4096 exceeds profiles\.long\.max 1x8192/);
    expect(await refusal((p) => (p.profiles = { long: { min: "1x2", opt: "1x128", max: "4x512" } }))).toMatch(/profiles\.long\.max 4x512 takes no longer sequences than max_length 512, which the default profile \(shapes\) already covers/);
    expect(await refusal((p) => (p.profiles = { "../x": { min: "1x2", opt: "1x128", max: "4x1024" } }))).toMatch(/profiles has a key "\.\.\/x"; a profile name is 1–32 lowercase letters, digits and -/);
    const file = join(dir, "profiles.json");
    await writeFile(file, JSON.stringify({ ...good, profiles: { "8192": { min: "1x2", opt: "1x2048", max: "4x8192" } } }));
    expect((await readPipeline(file)).profiles).toEqual({ "8192": { min: "1x2", opt: "1x2048", max: "4x8192" } });
  });

  it("a percentile without method percentile", async () => {
    expect(await refusal((p) => (p.calibration.percentile = 99.99))).toMatch(/calibration\.percentile applies to method "percentile" only, but calibration\.method is "minmax"/);
    const file = join(dir, "pct.json");
    await writeFile(file, JSON.stringify({ ...good, calibration: { texts: "texts/p.txt", method: "percentile", percentile: 99.99 } }));
    expect((await readPipeline(file)).calibration).toMatchObject({ method: "percentile", percentile: 99.99 });
  });

  it("a file that is not JSON, not an object, or not there", async () => {
    const file = join(dir, "broken.json");
    await writeFile(file, "{ model: 1 ");
    expect((await usageError(() => readPipeline(file))).message).toMatch(/broken\.json: cannot read pipeline \(.*JSON/);
    await writeFile(file, "[]");
    expect((await usageError(() => readPipeline(file))).message).toMatch(/broken\.json: a pipeline must be an object with model \(required\)/);
    expect((await usageError(() => readPipeline(join(dir, "none.json")))).message).toMatch(/none\.json: no such file \(the pipeline file\)/);
  });
});
