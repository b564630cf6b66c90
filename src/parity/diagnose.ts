import type { GoldenFile } from "../artifacts/golden.js";
import type { ModelSpec } from "../checkpoint/model-spec.js";
import type { EmbedOverrides } from "../runners/onnx-embedder.js";
import type { TextKind } from "../runners/embedder.js";
import { cosineSimilarity, relativeNormDiff, sameIds } from "./metrics.js";
import type { Fp16RangeResult } from "./fp16-range.js";

export interface Diagnosis {
  code:
    | "fp16-overflow"
    | "non-finite"
    | "pooling"
    | "normalization"
    | "instruction"
    | "truncation"
    | "lowercasing"
    | "token-type-ids"
    | "tokenizer"
    | "batch-dependence"
    | "settings"
    | "int8-layers"
    | "head-missing"
    | "sparse-specials"
    | "colbert-unnormalized"
    | "heads"
    | "unexplained";
  message: string;
  /** Golden item indices the diagnosis is about. */
  items?: number[];
}

/** What diagnosis needs from a candidate: re-running chosen texts with one setting changed. */
export interface DiagnosableCandidate {
  spec: ModelSpec;
  hasHiddenStates: boolean;
  hasTokenTypeInput: boolean;
  precision: string;
  embedWith(texts: readonly string[], kind: TextKind, overrides: EmbedOverrides & { batchSize?: number }): Promise<{ embeddings: Float64Array[]; inputIds: number[][] }>;
}

export interface DiagnoseInput {
  golden: GoldenFile;
  candidate: DiagnosableCandidate;
  /** The candidate's vectors and ids, per golden item. */
  embeddings: Float64Array[];
  inputIds: number[][];
  /** Golden item indices that failed the cosine gate. */
  failing: number[];
  minCosine: number;
  /** The norm gate: an item passes only when its vector length also matches. */
  maxNormDiff: number;
  /** Candidate settings the run used. */
  maxLength: number;
  instruction: string | undefined;
  fp16Range?: Fp16RangeResult | null;
}

const FP16_MAX = 65504;
const EXCERPT = 40;

function excerpt(text: string): string {
  const t = JSON.stringify(text.length > EXCERPT ? text.slice(0, EXCERPT) + "…" : text);
  return t;
}

function list(items: number[], max = 5): string {
  return items.slice(0, max).join(", ") + (items.length > max ? ` and ${items.length - max} more` : "");
}

/**
 * Tests each known cause of FlagModel mismatch against what the candidate produced: a hypothesis
 * holds when changing that one setting makes the failing items pass. Returns every cause that
 * holds, and `unexplained` when none does, so a failure never goes without a word.
 */
export async function diagnose(input: DiagnoseInput): Promise<Diagnosis[]> {
  const { golden, candidate, embeddings, inputIds, failing } = input;
  const out: Diagnosis[] = [];
  const items = golden.items;
  const producer = golden.producer;
  const gate = input.minCosine;

  // 0. FP16 tensors beyond 65504 (found by the range probe even where CPU results look fine).
  const over = input.fp16Range?.overflowing ?? [];
  if (over.length) {
    const layers = [...new Set(over.map((o) => /^\/encoder\/layer\.\d+\/[a-z_]+/.exec(o.tensor)?.[0] ?? o.tensor))];
    out.push({
      code: "fp16-overflow",
      message: `FP16 overflow: ${over.length} tensors exceed 65504, ${over[0]!.tensor} on ${over[0]!.texts} of ${input.fp16Range!.texts} texts (in ${layers.slice(0, 4).join(", ")}${layers.length > 4 ? ", …" : ""}); on a GPU they become inf and the vectors NaN. Pin those layers to FP32 (trtexec --layerPrecisions, or an FP32 island in the graph) or ship the fp32 artifact`,
    });
  }

  // 1. Non-finite or saturated outputs.
  const nonFinite = embeddings.map((e, i) => (e.some((x) => !Number.isFinite(x)) ? i : -1)).filter((i) => i >= 0);
  const saturated = embeddings.map((e, i) => (e.some((x) => Math.abs(x) >= FP16_MAX * 0.99) ? i : -1)).filter((i) => i >= 0);
  if (nonFinite.length || saturated.length) {
    const fp16 = candidate.precision === "fp16";
    out.push({
      code: fp16 ? "fp16-overflow" : "non-finite",
      items: [...new Set([...nonFinite, ...saturated])],
      message: fp16
        ? `${nonFinite.length} items have NaN/Inf and ${saturated.length} saturated values (items ${list(nonFinite.length ? nonFinite : saturated)}): FP16 overflow — activations exceed 65504. Keep LayerNormalization and Softmax in FP32 (bge export does), pin the overflowing layers to FP32, or ship the fp32 artifact`
        : `${nonFinite.length} items have NaN/Inf (items ${list(nonFinite)}): the graph computes non-finite values; check the attention-mask constant (finfo.min turns into -inf) and the weights`,
    });
    return out;
  }

  // Re-runs the failing items with one setting changed; true when every one of them then passes.
  const byKind = (idx: number[]) => ({
    passage: idx.filter((i) => items[i]!.kind === "passage"),
    query: idx.filter((i) => items[i]!.kind === "query"),
  });
  const explains = async (idx: number[], overrides: EmbedOverrides): Promise<boolean> => {
    if (!idx.length) return false;
    const groups = byKind(idx);
    for (const kind of ["passage", "query"] as const) {
      const g = groups[kind];
      if (!g.length) continue;
      const res = await candidate.embedWith(g.map((i) => items[i]!.text), kind, overrides);
      const passes = (i: number, k: number) =>
        cosineSimilarity(items[i]!.embedding, res.embeddings[k]!) >= gate &&
        relativeNormDiff(items[i]!.embedding, res.embeddings[k]!) <= input.maxNormDiff &&
        sameIds(items[i]!.input_ids, res.inputIds[k]!);
      if (!g.every(passes)) return false;
    }
    return true;
  };
  const explained = new Set<number>();
  const note = (d: Diagnosis) => {
    out.push(d);
    d.items?.forEach((i) => explained.add(i));
  };

  // 2. Pooling.
  if (candidate.hasHiddenStates) {
    const other = candidate.spec.pooling === "cls" ? "mean" : "cls";
    if (await explains(failing, { pooling: other })) {
      note({
        code: "pooling",
        items: failing,
        message: `the candidate pools ${candidate.spec.pooling} but the golden was pooled ${other} (FlagModel and every BGE model: cls): re-export with --pooling ${other === "cls" ? "auto (1_Pooling/config.json says cls)" : other}`,
      });
    }
  }

  // 3. Normalisation.
  const norms = failing.map((i) => Math.hypot(...embeddings[i]!));
  const candNormalized = norms.every((n) => Math.abs(n - 1) < 1e-3);
  if (!candNormalized && producer.normalize && (await explains(failing, { normalize: true }))) {
    note({
      code: "normalization",
      items: failing,
      message: `the candidate's vectors are not L2-normalised (norms ${Math.min(...norms).toFixed(3)}–${Math.max(...norms).toFixed(3)}) while FlagModel's are: add the normalisation (bge export puts it in the graph) or normalise after the model`,
    });
  } else if (candNormalized && !producer.normalize && (await explains(failing, { normalize: false }))) {
    note({ code: "normalization", items: failing, message: "the golden is not normalised (producer.normalize false) but the candidate is: make the golden with normalisation, as FlagModel does" });
  }

  // 4. Query instruction.
  const failingQueries = failing.filter((i) => items[i]!.kind === "query");
  const goldenInstruction = producer.query_instruction ?? undefined;
  if (failingQueries.length && goldenInstruction !== input.instruction) {
    if (await explains(failingQueries, { instruction: goldenInstruction ?? null })) {
      note({
        code: "instruction",
        items: failingQueries,
        message:
          goldenInstruction === undefined
            ? `the candidate prepends an instruction (${JSON.stringify(input.instruction)}) to queries that the golden did not: drop it (--no-instruction)`
            : input.instruction === undefined
              ? `the golden's queries carry the instruction ${JSON.stringify(goldenInstruction)} but the candidate run had none: prepend it to queries (never to passages), e.g. bge verify --instruction or the manifest's query_instruction`
              : `the golden's query instruction ${JSON.stringify(goldenInstruction)} differs from the candidate's ${JSON.stringify(input.instruction)}`,
      });
    }
  }

  // 5. Truncation length.
  if (producer.max_length !== input.maxLength) {
    const cut = failing.filter((i) => !explained.has(i) && (inputIds[i]!.length > producer.max_length || items[i]!.input_ids.length >= Math.min(producer.max_length, input.maxLength)));
    if (await explains(cut, { maxLength: producer.max_length })) {
      note({
        code: "truncation",
        items: cut,
        message: `the golden truncates at ${producer.max_length} tokens but the candidate at ${input.maxLength}: ${cut.length} long texts differ (items ${list(cut)}); run with max_length ${producer.max_length} (--max-length) or make the golden at ${input.maxLength}`,
      });
    }
  }

  // 6. Lowercasing (sentence-transformers lowercases bge-*-zh input; FlagModel does not).
  const cased = failing.filter((i) => !explained.has(i) && items[i]!.text !== items[i]!.text.toLowerCase());
  if (cased.length && (await explains(cased, { transform: (t) => t.toLowerCase() }))) {
    note({
      code: "lowercasing",
      items: cased,
      message: `the golden was computed from lowercased text (items ${list(cased)} have capitals): sentence-transformers lowercases bge-*-zh input (sentence_bert_config do_lower_case) while FlagModel and this tokenizer (lowercase false) do not; make the golden with FlagModel semantics (bge golden, or --reference flagmodel)`,
    });
  }

  // 7. Missing token_type_ids.
  if (!candidate.hasTokenTypeInput && candidate.spec.config.typeVocabSize > 1) {
    // Not testable by re-running (the graph lacks the path), but it shifts every vector: the likely cause.
    note({
      code: "token-type-ids",
      items: failing.filter((i) => !explained.has(i)),
      message: "the graph has no token_type_ids input though the model has token type embeddings: an export that drops it skips token_type_embeddings[0] for every token (optimum #2062, llama_index #12002); export with token_type_ids",
    });
  }

  // 8. Tokenisation differences nothing above accounts for.
  const tokenDiff = failing.filter((i) => !explained.has(i) && !sameIds(items[i]!.input_ids, inputIds[i]!));
  if (tokenDiff.length) {
    const first = tokenDiff[0]!;
    const g = items[first]!.input_ids;
    const c = inputIds[first]!;
    let pos = 0;
    while (pos < Math.min(g.length, c.length) && g[pos] === c[pos]) pos++;
    note({
      code: "tokenizer",
      items: tokenDiff,
      message: `the candidate's tokenizer gives other ids for ${tokenDiff.length} items (first: item ${first} ${excerpt(items[first]!.text)} differs at token ${pos}: golden ${g[pos] ?? "end"}, candidate ${c[pos] ?? "end"}): ship the model's own tokenizer.json and tokenise as FlagModel does`,
    });
  }

  const rest = failing.filter((i) => !explained.has(i));
  if (rest.length) {
    out.push({
      code: "unexplained",
      items: rest,
      message: `${out.length ? `${rest.length} failing items remain unexplained (items ${list(rest)})` : "no known cause explains the failure"} — pooling, normalisation, instruction, truncation, lowercasing, token_type_ids, tokenizer and FP16 overflow were tested: the weights or the graph differ (a corrupted or different checkpoint, or a faulty conversion)`,
    });
  }
  return out;
}
