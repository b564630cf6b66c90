import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SHARED_FIXTURES } from "../../test/helpers/paths.js";
import { tempDir } from "../../test/helpers/tmp.js";
import { UsageError } from "../errors.js";
import { maxModelLength, parseEncoderConfig, readEncoderConfig } from "./config.js";
import { BGE_INSTRUCTIONS, knownInstruction, readModelSpec } from "./model-spec.js";
import { existsSync } from "node:fs";

const configs = join(SHARED_FIXTURES, "configs");
const haveConfigs = existsSync(join(configs, "bge-m3", "config.json"));

describe("config.json", () => {
  it.skipIf(!haveConfigs)("reads the real BGE configs (shared fixtures)", async () => {
    const m3 = await readEncoderConfig(join(configs, "bge-m3"));
    expect(m3).toMatchObject({ arch: "xlm-roberta", hiddenSize: 1024, numLayers: 24, vocabSize: 250002, padTokenId: 1, positionOffset: 2, layerNormEps: 1e-5, typeVocabSize: 1 });
    expect(maxModelLength(m3)).toBe(8192);
    const large = await readEncoderConfig(join(configs, "bge-large-en-v1.5"));
    expect(large).toMatchObject({ arch: "bert", hiddenSize: 1024, numLayers: 24, numHeads: 16, intermediateSize: 4096, vocabSize: 30522, positionOffset: 0 });
    expect(maxModelLength(large)).toBe(512);
  });

  it("refuses an unsupported architecture, listing the supported ones", () => {
    const err = (() => {
      try {
        parseEncoderConfig({ architectures: ["GPT2LMHeadModel"], model_type: "gpt2" }, "x/config.json");
      } catch (e) {
        return e as UsageError;
      }
    })();
    expect(err).toBeInstanceOf(UsageError);
    expect(err!.message).toBe("x/config.json: unsupported architecture GPT2LMHeadModel; supported: BertModel, XLMRobertaModel (model_type bert, xlm-roberta)");
  });

  it("refuses the tanh GELU and relative positions, which BGE never uses", () => {
    const base = { architectures: ["BertModel"], hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16, vocab_size: 10, max_position_embeddings: 16 };
    expect(() => parseEncoderConfig({ ...base, hidden_act: "gelu_new" })).toThrow(/hidden_act "gelu_new"/);
    expect(() => parseEncoderConfig({ ...base, position_embedding_type: "relative_key" })).toThrow(/position_embedding_type/);
    expect(() => parseEncoderConfig({ ...base, num_attention_heads: 3 })).toThrow(/not divisible/);
    expect(() => parseEncoderConfig({ ...base, hidden_size: "8" })).toThrow(/hidden_size must be a non-negative integer/);
  });
});

describe("model spec", () => {
  it("knows the BGE query instructions by model id", () => {
    expect(knownInstruction("BAAI/bge-small-zh-v1.5")).toBe(BGE_INSTRUCTIONS.zh);
    expect(knownInstruction("BAAI/bge-large-en-v1.5")).toBe(BGE_INSTRUCTIONS.en);
    expect(knownInstruction("BAAI/bge-base-en")).toBe(BGE_INSTRUCTIONS.en);
    expect(knownInstruction("BAAI/bge-m3")).toBeUndefined();
    expect(knownInstruction("someone/other-model")).toBeUndefined();
  });

  it.skipIf(!haveConfigs)("reads pooling and normalisation from the sentence-transformers files and caps max_length", async () => {
    const dir = await tempDir();
    const model = join(dir, "models--BAAI--bge-small-zh-v1.5", "snapshots", "7999e1d3359715c523056ef9478215996d62a620");
    await mkdir(join(model, "1_Pooling"), { recursive: true });
    const zh = join(SHARED_FIXTURES, "tokenizers", "bge-small-zh-v1.5");
    const { readFile } = await import("node:fs/promises");
    for (const f of ["config.json", "modules.json", "1_Pooling/config.json"]) await writeFile(join(model, f), await readFile(join(zh, f)));
    const spec = await readModelSpec(model);
    expect(spec).toMatchObject({ id: "BAAI/bge-small-zh-v1.5", pooling: "cls", normalize: true, maxLength: 512, queryInstruction: BGE_INSTRUCTIONS.zh });
    expect(spec.sources.pooling).toBe("1_Pooling/config.json");
    expect(spec.revision).toBe("7999e1d3359715c523056ef9478215996d62a620");
    await expect(readModelSpec(model, { maxLength: 513 })).rejects.toThrow(/exceeds what the model's position table allows \(512/);
    expect((await readModelSpec(model, { queryInstruction: null })).queryInstruction).toBeUndefined();
    // A mean-pooling folder is read as mean.
    await writeFile(join(model, "1_Pooling", "config.json"), JSON.stringify({ pooling_mode_cls_token: false, pooling_mode_mean_tokens: true }));
    expect((await readModelSpec(model)).pooling).toBe("mean");
    await writeFile(join(model, "1_Pooling", "config.json"), JSON.stringify({ pooling_mode_max_tokens: true }));
    await expect(readModelSpec(model)).rejects.toThrow(/bge supports cls or mean \(found pooling_mode_max_tokens\)/);
  });
});
