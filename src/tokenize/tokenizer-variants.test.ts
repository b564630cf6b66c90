import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadFlagTokenizer } from "./flag-tokenizer.js";

/**
 * Tokenizer.json shapes beyond the two real files, each proven against the Rust crate on the whole
 * corpus: XLM-R style Unigram files (what `bge fixture --arch xlm-roberta` writes, and variations of
 * the Metaspace and normaliser options), and BERT files with other BertNormalizer flags and
 * added-token options.
 */
const CORPUS: string[] = JSON.parse(
  readFileSync(fileURLToPath(new URL("../../test/data/tokenizer-corpus.json", import.meta.url)), "utf8"),
).texts;
const EN_TOKENIZER = fileURLToPath(new URL("../../../shared/fixtures/tokenizers/bge-small-en-v1.5/tokenizer.json", import.meta.url));

type Oracle = typeof import("@anush008/tokenizers");
let oracle: Oracle | null = null;
let oracleError = "";
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "bge-tokenizer-variants-"));
  try {
    oracle = await import("@anush008/tokenizers");
  } catch (error) {
    oracleError = (error as Error).message;
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Small deterministic hash (FNV-1a) so vocabularies and scores are reproducible. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * A Unigram vocabulary of plain pieces drawn from the corpus: whole words with and without "▁",
 * sub-word fragments, most single characters (some left out so unknown-character fusion is hit),
 * pieces spanning a "▁" (only reachable if Metaspace does not split), and scores on a coarse grid
 * so that equal-score segmentations (tie-breaking) occur.
 */
function unigramVocab(): [string, number][] {
  const pieces = new Set<string>();
  CORPUS.slice(0, 400).forEach((text, i) => {
    const normalized = text.normalize("NFKC");
    for (const ch of normalized) if (hash(ch) % 11 !== 0) pieces.add(ch);
    for (const word of normalized.split(" ").filter(Boolean).slice(0, 30)) {
      const chars = Array.from(word);
      if (chars.length > 24) continue;
      pieces.add(hash(word) % 3 === 0 ? word : `▁${word}`);
      for (let s = 0; s + 2 <= chars.length; s++) {
        const fragment = chars.slice(s, s + 2 + (hash(word + s) % 3)).join("");
        if (hash(fragment + i) % 4 === 0) pieces.add(fragment);
      }
    }
  });
  for (const extra of ["▁", "s▁", "▁▁", "e▁t", "▁the▁", "ab", "a", "b"]) pieces.add(extra);
  for (const special of ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]) pieces.delete(special);
  // The corpus holds lone surrogates on purpose; a tokenizer.json cannot.
  for (const piece of pieces) if (/[\uD800-\uDFFF]/.test(piece.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ""))) pieces.delete(piece);
  const sorted = [...pieces].sort();
  const vocab: [string, number][] = [["<s>", 0], ["<pad>", 0], ["</s>", 0], ["<unk>", 0]];
  for (const piece of sorted) vocab.push([piece, -(1 + (hash(piece) % 24) * 0.5)]);
  vocab.push(["<mask>", 0]);
  return vocab;
}

function xlmrTokenizer(vocab: [string, number][], overrides: Record<string, unknown>): Record<string, unknown> {
  const special = (id: number, content: string, lstrip = false) => ({
    id, content, single_word: false, lstrip, rstrip: false, normalized: false, special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<s>"), special(1, "<pad>"), special(2, "</s>"), special(3, "<unk>"), special(vocab.length - 1, "<mask>", true)],
    normalizer: { type: "Sequence", normalizers: [{ type: "NFKC" }, { type: "Replace", pattern: { Regex: " {2,}" }, content: " " }] },
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }, { Sequence: { id: "B", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      special_tokens: {
        "<s>": { id: "<s>", ids: [0], tokens: ["<s>"] },
        "</s>": { id: "</s>", ids: [2], tokens: ["</s>"] },
      },
    },
    decoder: null,
    model: { type: "Unigram", unk_id: 3, vocab, byte_fallback: false },
    ...overrides,
  };
}

const XLMR_CONFIG = { model_max_length: 8192, pad_token: "<pad>", bos_token: "<s>", eos_token: "</s>", tokenizer_class: "XLMRobertaTokenizer" };

/** Writes a model folder, then compares our ids with the crate's for every corpus text. */
async function expectParity(name: string, tokenizer: Record<string, unknown>, config: Record<string, unknown>, maxLength: number) {
  expect(oracle, `the oracle @anush008/tokenizers failed to load: ${oracleError}`).not.toBeNull();
  const folder = join(dir, name);
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, "tokenizer.json"), JSON.stringify(tokenizer));
  writeFileSync(join(folder, "tokenizer_config.json"), JSON.stringify(config));
  const ours = await loadFlagTokenizer(folder);
  const rust = oracle!.Tokenizer.fromFile(join(folder, "tokenizer.json"));
  rust.setTruncation(maxLength);
  const differing: number[] = [];
  for (const [i, text] of CORPUS.entries()) {
    const expected = (await rust.encode(text)).getIds();
    if (JSON.stringify(ours.encode(text, maxLength)) !== JSON.stringify(expected)) {
      if (differing.length < 3) {
        const tokens = (ids: number[]) => JSON.stringify(ids.map((id) => rust.idToToken(id)));
        console.log(`  ${name} #${i} ${JSON.stringify(text.slice(0, 60))}\n    ours ${tokens(ours.encode(text, maxLength))}\n    rust ${tokens(expected)}`);
      }
      differing.push(i);
    }
  }
  console.log(`tokenizer parity ${name}: texts=${CORPUS.length} identical=${CORPUS.length - differing.length} differing=${differing.length}`);
  expect(differing).toEqual([]);
  return ours;
}

describe("XLM-R style Unigram tokenizers match the Rust crate", () => {
  const vocab = unigramVocab();

  it("the `bge fixture` shape: NFKC + Replace, Metaspace always/split, <mask> lstrip", async () => {
    const tok = await expectParity("xlmr-fixture-shape", xlmrTokenizer(vocab, {}), XLMR_CONFIG, 512);
    expect([tok.clsId, tok.padId, tok.sepId, tok.vocabSize, tok.modelMaxLength, tok.lowercase]).toEqual([0, 1, 2, vocab.length, 8192, false]);
    const long = tok.encode(CORPUS.reduce((a, b) => (b.length > a.length ? b : a)), 16);
    expect([long.length, long[0], long[15]]).toEqual([16, 0, 2]);
    const batch = tok.encodeBatch(["a", "hello world again"], 512);
    expect(batch.input_ids[0]!.slice(-1)).toEqual([1]); // XLM-R pads with <pad> = 1, not 0
    expect(batch.attention_mask[0]!.at(-1)).toBe(0);
  }, 120_000);

  it("legacy Metaspace (add_prefix_space only) and no normaliser", async () => {
    const pre = { type: "Metaspace", replacement: "▁", add_prefix_space: true };
    await expectParity("xlmr-legacy-metaspace", xlmrTokenizer(vocab, { pre_tokenizer: pre, normalizer: null }), XLMR_CONFIG, 512);
  }, 120_000);

  it("prepend_scheme first without splitting, lowercase + strip normaliser", async () => {
    const pre = { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false };
    const normalizer = { type: "Sequence", normalizers: [{ type: "Strip", strip_left: true, strip_right: true }, { type: "Lowercase" }, { type: "NFD" }, { type: "StripAccents" }] };
    await expectParity("xlmr-first-nosplit", xlmrTokenizer(vocab, { pre_tokenizer: pre, normalizer }), XLMR_CONFIG, 512);
  }, 120_000);

  it("RobertaProcessing, NFKD + Nmt, no unknown fusion surprises at max length 64", async () => {
    const post = { type: "RobertaProcessing", sep: ["</s>", 2], cls: ["<s>", 0], trim_offsets: true, add_prefix_space: true };
    const normalizer = { type: "Sequence", normalizers: [{ type: "Nmt" }, { type: "NFKD" }, { type: "Prepend", prepend: "▁" }] };
    const pre = { type: "Metaspace", replacement: "▁", prepend_scheme: "never", split: true };
    await expectParity("xlmr-roberta-nfkd", xlmrTokenizer(vocab, { post_processor: post, normalizer, pre_tokenizer: pre }), XLMR_CONFIG, 64);
  }, 120_000);
});

const haveEn = existsSync(EN_TOKENIZER);
const withEn = (name: string, fn: () => Promise<void>) =>
  haveEn ? it(name, fn, 120_000) : it.skip(`${name} (skipped: ${EN_TOKENIZER} is absent)`, fn);

describe("BERT tokenizers with other BertNormalizer flags and added-token options match the Rust crate", () => {
  const BERT_CONFIG = { model_max_length: 512, pad_token: "[PAD]", tokenizer_class: "BertTokenizer" };
  const base = () => JSON.parse(readFileSync(EN_TOKENIZER, "utf8")) as Record<string, unknown> & { normalizer: Record<string, unknown>; added_tokens: unknown[] };

  const flagSets: Record<string, Record<string, unknown>> = {
    "cased-strip-accents": { lowercase: false, strip_accents: true },
    "uncased-keep-accents": { lowercase: true, strip_accents: false },
    "no-chinese-split": { handle_chinese_chars: false },
    "no-clean-text": { clean_text: false, lowercase: false },
  };
  for (const [name, flags] of Object.entries(flagSets)) {
    withEn(`BertNormalizer ${name}`, async () => {
      const tokenizer = base();
      tokenizer.normalizer = { ...tokenizer.normalizer, ...flags };
      // A real folder's tokenizer_config.json agrees with its normaliser (see the override test below).
      const n = tokenizer.normalizer;
      const config = { ...BERT_CONFIG, do_lower_case: n.lowercase, strip_accents: n.strip_accents, tokenize_chinese_chars: n.handle_chinese_chars };
      await expectParity(`bert-${name}`, tokenizer, config, 512);
    });
  }

  withEn("added tokens: single_word, lstrip/rstrip, normalized", async () => {
    const tokenizer = base();
    const added = (id: number, content: string, extra: Record<string, boolean>) => ({
      id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false, ...extra,
    });
    tokenizer.added_tokens = [
      ...tokenizer.added_tokens,
      added(30522, "panda", { single_word: true }),
      added(30523, "<tag>", { lstrip: true, rstrip: true }),
      added(30524, "Hello", { normalized: true }),
      added(30525, "中文", { normalized: true, special: true }),
      added(30526, "[SEP", {}),
    ];
    const extraTexts = ["the panda and pandas", "x <tag> y", "a  <tag>\t b", "HELLO hello", "中文 and [SEP] [SEP"];
    const tok = await expectParity("bert-added-tokens", tokenizer, BERT_CONFIG, 512);
    const rust = oracle!.Tokenizer.fromFile(join(dir, "bert-added-tokens", "tokenizer.json"));
    for (const text of extraTexts) expect(tok.encode(text, 512), text).toEqual((await rust.encode(text)).getIds());
    // "panda" is already in the vocabulary, so the crate gives it 25462 and only four ids are new.
    expect(tok.vocabSize).toBe(rust.getVocabSize(true));
    expect(tok.vocabSize).toBe(30526);
  });
});

describe("tokenizer_config.json flags override a disagreeing BertNormalizer, as BertTokenizerFast does", () => {
  const ZH_TOKENIZER = EN_TOKENIZER.replace("bge-small-en-v1.5", "bge-small-zh-v1.5");
  const withZh = (name: string, fn: () => Promise<void>) =>
    existsSync(ZH_TOKENIZER) ? it(name, fn, 120_000) : it.skip(`${name} (skipped: ${ZH_TOKENIZER} is absent)`, fn);

  withZh("do_lower_case: true on the cased zh tokenizer.json lowercases like a lowercase: true file", async () => {
    const zh = JSON.parse(readFileSync(ZH_TOKENIZER, "utf8")) as Record<string, unknown> & { normalizer: Record<string, unknown> };
    const folder = join(dir, "zh-config-lowercase");
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, "tokenizer.json"), JSON.stringify(zh));
    writeFileSync(join(folder, "tokenizer_config.json"), JSON.stringify({ tokenizer_class: "BertTokenizer", do_lower_case: true, pad_token: "[PAD]" }));
    const ours = await loadFlagTokenizer(folder);
    expect(ours.lowercase).toBe(true);
    const rust = oracle!.Tokenizer.fromString(JSON.stringify({ ...zh, normalizer: { ...zh.normalizer, lowercase: true } }));
    for (const text of ["Hello WORLD", "Crème Brûlée", "ΟΔΟΣ 中文"]) {
      expect(ours.encode(text, 512), text).toEqual((await rust.encode(text)).getIds());
    }
  });
});
