import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../errors.js";
import { applyInstruction, loadFlagTokenizer, type FlagTokenizer } from "./flag-tokenizer.js";

// The real hub tokenizers live beside the repository (never copied into it).
const FIXTURES = fileURLToPath(new URL("../../../shared/fixtures/tokenizers/", import.meta.url));
const ZH = join(FIXTURES, "bge-small-zh-v1.5");
const EN = join(FIXTURES, "bge-small-en-v1.5");
const haveFixtures = existsSync(join(ZH, "tokenizer.json")) && existsSync(join(EN, "tokenizer.json"));
const SKIP_REASON = `skipped: ${FIXTURES} is absent, so the real bge-small-{zh,en}-v1.5 tokenizers cannot be loaded`;
const withFixtures = (name: string, fn: () => Promise<void> | void, timeout?: number) =>
  haveFixtures ? it(name, fn, timeout) : it.skip(`${name} (${SKIP_REASON})`, fn);

const CORPUS: string[] = JSON.parse(
  readFileSync(fileURLToPath(new URL("../../test/data/tokenizer-corpus.json", import.meta.url)), "utf8"),
).texts;

const ZH_INSTRUCTION = "为这个句子生成表示以用于检索相关文章：";
const EN_INSTRUCTION = "Represent this sentence for searching relevant passages: ";
const LONG_TEXT = CORPUS.reduce((a, b) => (b.length > a.length ? b : a));

/** The Rust tokenizers crate (what FlagModel runs through Python), as a Node binding. */
type Oracle = typeof import("@anush008/tokenizers");
let oracle: Oracle | null = null;
let oracleError = "";

async function oracleIds(path: string, texts: string[], maxLength: number): Promise<number[][]> {
  const rust = oracle!.Tokenizer.fromFile(path);
  rust.setTruncation(maxLength);
  const out: number[][] = [];
  for (const text of texts) out.push((await rust.encode(text)).getIds());
  return out;
}

beforeAll(async () => {
  try {
    oracle = await import("@anush008/tokenizers");
  } catch (error) {
    oracleError = (error as Error).message;
  }
});

describe("loadFlagTokenizer on the real BGE tokenizers", () => {
  let zh: FlagTokenizer;
  let en: FlagTokenizer;
  beforeAll(async () => {
    if (!haveFixtures) return;
    [zh, en] = await Promise.all([loadFlagTokenizer(ZH), loadFlagTokenizer(EN)]);
  });

  for (const [name, dir, get] of [
    ["bge-small-zh-v1.5", ZH, () => zh],
    ["bge-small-en-v1.5", EN, () => en],
  ] as const) {
    withFixtures(`${name}: encode(text, 512) gives the Rust crate's ids for every corpus text`, async () => {
      expect(oracle, `the oracle @anush008/tokenizers failed to load: ${oracleError}`).not.toBeNull();
      const expected = await oracleIds(join(dir, "tokenizer.json"), CORPUS, 512);
      const differing: number[] = [];
      CORPUS.forEach((text, i) => {
        if (JSON.stringify(get().encode(text, 512)) !== JSON.stringify(expected[i])) differing.push(i);
      });
      console.log(
        `tokenizer parity ${name}: texts=${CORPUS.length} identical=${CORPUS.length - differing.length} differing=${differing.length}`,
      );
      for (const i of differing.slice(0, 5)) {
        console.log(`  #${i} ${JSON.stringify(CORPUS[i]!.slice(0, 80))}\n    ours ${get().encode(CORPUS[i]!, 512)}\n    rust ${expected[i]}`);
      }
      expect(differing).toEqual([]);
    }, 120_000);

    withFixtures(`${name}: truncation to 8 matches the Rust crate too`, async () => {
      const texts = CORPUS.filter((_, i) => i % 7 === 0);
      const expected = await oracleIds(join(dir, "tokenizer.json"), texts, 8);
      expect(texts.map((t) => get().encode(t, 8))).toEqual(expected);
    });
  }

  withFixtures("reports the tokenizer's properties", () => {
    expect([zh.padId, zh.clsId, zh.sepId, zh.vocabSize, zh.modelMaxLength, zh.lowercase]).toEqual([0, 101, 102, 21128, 512, false]);
    expect([en.padId, en.clsId, en.sepId, en.vocabSize, en.modelMaxLength, en.lowercase]).toEqual([0, 101, 102, 30522, 512, true]);
  });

  withFixtures('bge-en tokenizes "embedding" as the FlagEmbedding tutorial shows', () => {
    expect(en.encode("embedding", 512)).toEqual([101, 7861, 8270, 4667, 102]);
  });

  withFixtures("bge-zh keeps upper case (lowercase: false), bge-en folds it", () => {
    expect(zh.encode("Hello", 512)).not.toEqual(zh.encode("hello", 512));
    expect(en.encode("Hello", 512)).toEqual(en.encode("hello", 512));
  });

  withFixtures("Greek final sigma lowercases to σ as in Rust, not to JavaScript's ς", () => {
    // ΟΔΟΣ → "οδοσ" → ο ##δ ##ο ##σ; JavaScript's toLowerCase would give "οδος".
    expect(en.encode("ΟΔΟΣ", 512)).toEqual([101, 1169, 29722, 29730, 29733, 102]);
  });

  withFixtures("truncation keeps [CLS] first and [SEP] last at exactly max_length", () => {
    for (const tok of [zh, en]) {
      for (const maxLength of [8, 512]) {
        const ids = tok.encode(LONG_TEXT, maxLength);
        expect(ids).toHaveLength(maxLength);
        expect(ids[0]).toBe(101);
        // Fails if truncation cut the token list after adding specials (the transformers.js bug).
        expect(ids[maxLength - 1]).toBe(102);
        expect(ids.slice(1, -1)).not.toContain(102);
      }
    }
  });

  withFixtures("truncation cuts the tail of the content only", () => {
    const full = en.encode(LONG_TEXT, 100_000);
    expect(full.length).toBeGreaterThan(512);
    expect(en.encode(LONG_TEXT, 512)).toEqual([...full.slice(0, 511), 102]);
    expect(en.encode("hello world", 2)).toEqual([101, 102]);
  });

  withFixtures("a max length that cannot hold [CLS] and [SEP] is a UsageError", () => {
    expect(() => en.encode("hello", 1)).toThrow(UsageError);
    expect(() => en.encodeBatch(["hello"], 0)).toThrow(UsageError);
    expect(() => en.encode("hello", 3.5)).toThrow(UsageError);
  });

  withFixtures("encodeBatch pads to the longest with the pad id, masks padding, zero type ids, keeps order", () => {
    const texts = ["embedding", "hello world, this is a longer sentence", "", "中文"];
    const batch = en.encodeBatch(texts, 512);
    const singles = texts.map((t) => en.encode(t, 512));
    const longest = Math.max(...singles.map((s) => s.length));
    expect(batch.input_ids).toHaveLength(texts.length);
    texts.forEach((_, i) => {
      const n = singles[i]!.length;
      expect(batch.input_ids[i]).toEqual([...singles[i]!, ...Array(longest - n).fill(0)]);
      expect(batch.attention_mask[i]).toEqual([...Array(n).fill(1), ...Array(longest - n).fill(0)]);
      expect(batch.token_type_ids[i]).toEqual(Array(longest).fill(0));
    });
    expect(batch.input_ids[0]).toEqual([101, 7861, 8270, 4667, 102, ...Array(longest - 5).fill(0)]);
    expect(batch.input_ids[2]!.slice(0, 3)).toEqual([101, 102, 0]);
  });

  withFixtures("encodeBatch truncates each text and pads no further than max_length", () => {
    const batch = zh.encodeBatch(["短", LONG_TEXT], 16);
    expect(batch.input_ids.map((r) => r.length)).toEqual([16, 16]);
    expect(batch.input_ids[0]!.slice(0, 4)).toEqual([101, zh.encode("短", 16)[1], 102, 0]);
    expect(batch.input_ids[1]![15]).toBe(102);
    expect(batch.attention_mask[0]).toEqual([1, 1, 1, ...Array(13).fill(0)]);
    expect(en.encodeBatch([], 512)).toEqual({ input_ids: [], attention_mask: [], token_type_ids: [] });
  });

  withFixtures("query instruction is prepended to queries only", () => {
    const query = zh.encode(applyInstruction("大熊猫", ZH_INSTRUCTION, "query"), 512);
    const instructionIds = zh.encode(ZH_INSTRUCTION, 512).slice(1, -1);
    expect(query.slice(1, 1 + instructionIds.length)).toEqual(instructionIds);
    expect(zh.encode(applyInstruction("大熊猫", ZH_INSTRUCTION, "passage"), 512)).toEqual(zh.encode("大熊猫", 512));
  });
});

describe("applyInstruction", () => {
  it("concatenates with no separator for queries", () => {
    expect(applyInstruction("what is a panda?", EN_INSTRUCTION, "query")).toBe(
      "Represent this sentence for searching relevant passages: what is a panda?",
    );
    expect(applyInstruction("大熊猫", ZH_INSTRUCTION, "query")).toBe(`${ZH_INSTRUCTION}大熊猫`);
  });
  it("never touches passages, and a missing instruction (bge-m3) leaves queries alone", () => {
    expect(applyInstruction("what is a panda?", EN_INSTRUCTION, "passage")).toBe("what is a panda?");
    expect(applyInstruction("what is a panda?", undefined, "query")).toBe("what is a panda?");
  });
});

describe("loadFlagTokenizer input errors", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "bge-tokenize-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function usageError(folder: string): Promise<UsageError> {
    const error = await loadFlagTokenizer(folder).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(UsageError);
    expect((error as UsageError).exitCode).toBe(2);
    return error as UsageError;
  }

  it("names tokenizer.json when the folder lacks it", async () => {
    const error = await usageError(join(dir, "no-such-model"));
    expect(error.message).toContain(join(dir, "no-such-model", "tokenizer.json"));
    expect(error.message).toContain("not found");
  });

  it("names the file when it is not JSON", async () => {
    const folder = join(dir, "bad-json");
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, "tokenizer.json"), "{ not json");
    writeFileSync(join(folder, "tokenizer_config.json"), "{}");
    const error = await usageError(folder);
    expect(error.message).toContain(join(folder, "tokenizer.json"));
    expect(error.message).toContain("not valid JSON");
  });

  it("names the field when tokenizer.json has the wrong shape", async () => {
    const folder = join(dir, "bad-shape");
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, "tokenizer.json"), JSON.stringify({ model: { type: "BPE", vocab: {}, merges: [] } }));
    writeFileSync(join(folder, "tokenizer_config.json"), "{}");
    const error = await usageError(folder);
    expect(error.message).toContain("model.type");
    expect(error.message).toContain("BPE");
  });

  withFixtures("names tokenizer_config.json when only it is missing", async () => {
    const folder = join(dir, "no-config");
    mkdirSync(folder, { recursive: true });
    copyFileSync(join(EN, "tokenizer.json"), join(folder, "tokenizer.json"));
    const error = await usageError(folder);
    expect(error.message).toContain(join(folder, "tokenizer_config.json"));
  });
});
