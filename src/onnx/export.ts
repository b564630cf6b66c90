import { mkdir } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { readModelSpec, type ModelSpec, type Pooling } from "../checkpoint/model-spec.js";
import { checkEncoderShapes, hashWeights, openWeights } from "../checkpoint/weights.js";
import { ARTIFACT_FORMAT, ONNX_ROLES, describeFile, type ArtifactFile, type BuiltBy, type Manifest } from "../artifacts/manifest.js";
import { writeArtifactFolder } from "../artifacts/artifact-writer.js";
import { UsageError } from "../errors.js";
import { copyFileAtomic } from "../util/atomic.js";
import { pathExists as exists } from "../util/fs.js";
import { buildEncoderGraph, type GraphHeads, type OnnxPrecision } from "./encoder-graph.js";
import { availableHeads, loadM3Heads, M3_HEAD_FILES, type Head, type M3Head } from "../checkpoint/m3-heads.js";
import { m3SpecialIds } from "../reference/m3.js";
import { writeOnnxModel } from "./write-model.js";
import type { GraphBuilder } from "./graph-builder.js";
import type { TensorSource } from "../checkpoint/tensor.js";
import { loadCheckedTokenizer } from "../tokenize/flag-tokenizer.js";

export interface ExportOptions {
  modelDir: string;
  outDir: string;
  /** @default ["fp32", "fp16"] */
  precisions?: OnnxPrecision[];
  /** @default 17 */
  opset?: number;
  /** `auto` follows 1_Pooling/config.json. @default "auto" */
  pooling?: Pooling | "auto" | "none";
  maxLength?: number;
  /** false leaves L2 normalisation out of the graph. @default modules.json (normalise) */
  normalize?: boolean;
  /** The query instruction recorded for runners: null for none; undefined for the one known by model id. */
  instruction?: string | null;
  /** @default "auto" (on above 1.8 GB of weights) */
  externalData?: boolean | "auto";
  builtBy: BuiltBy;
  modelId?: string;
  /** Which heads the graphs carry (dense always; sparse/colbert need bge-m3's head files). @default every head the checkpoint has */
  heads?: Head[];
  /** Test only: graphs that break a head's contract (see GraphHeads.faults), to show the gate refusing them. */
  headFaults?: GraphHeads["faults"];
  onStage?: (message: string) => void;
  /** Where takeovers of an interrupted run's lock are reported. */
  onWarn?: (message: string) => void;
}

/** Files copied beside the graphs so that the artifact folder is self-contained. */
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "sentencepiece.bpe.model"];
const CONFIG_FILES = ["config.json", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json"];
export const SUPPORTED_OPSETS = [17, 18, 19, 20, 21];

export async function exportOnnx(options: ExportOptions): Promise<{ manifest: Manifest; spec: ModelSpec }> {
  const precisions = options.precisions ?? ["fp32", "fp16"];
  const opset = options.opset ?? 17;
  if (!SUPPORTED_OPSETS.includes(opset)) throw new UsageError(`--opset ${opset} is not supported; choose one of ${SUPPORTED_OPSETS.join(", ")} (17 loads in TensorRT 8.6+)`);
  const pooling = options.pooling ?? "auto";
  const spec = await readModelSpec(options.modelDir, {
    id: options.modelId,
    maxLength: options.maxLength,
    pooling: pooling === "auto" || pooling === "none" ? undefined : pooling,
    normalize: options.normalize === false ? false : undefined,
    queryInstruction: options.instruction,
  });
  // Bad weights are refused before anything is created.
  const source = await openWeights(options.modelDir);
  const files: ArtifactFile[] = [];
  try {
    checkEncoderShapes(source, spec.config);
    // The artifact carries the tokenizer: a missing, broken or oversized one is refused now, not
    // when the artifact is first used.
    const tokenizer = await loadCheckedTokenizer(options.modelDir, spec.config.vocabSize);
    const available = await availableHeads(options.modelDir);
    const heads = options.heads ?? ["dense", ...available];
    if (!heads.includes("dense")) throw new UsageError(`--heads ${heads.join(",")}: dense is always exported (sentence_embedding); add it to the list`);
    const missing = heads.filter((h): h is M3Head => h !== "dense" && !available.includes(h));
    if (missing.length) {
      throw new UsageError(`--heads ${heads.join(",")}: ${options.modelDir} has no ${missing.map((h) => M3_HEAD_FILES[h]).join(" or ")}, so no ${missing.join(" or ")} head (bge-m3 ships sparse_linear.pt and colbert_linear.pt)`);
    }
    const m3 = await loadM3Heads(options.modelDir, spec.config.hiddenSize, heads.filter((h): h is M3Head => h !== "dense"));
    const specials = await m3SpecialIds(options.modelDir, tokenizer);
    const graphHeads: GraphHeads | undefined =
      m3.sparse || m3.colbert ? { ...m3, specialIds: [tokenizer.clsId, ...[...specials].filter((id) => id !== tokenizer.clsId)], faults: options.headFaults } : undefined;
    const manifest = await writeArtifactFolder(options.outDir, { command: "export", warn: options.onWarn }, async ({ staging, previous }) => {
      // The checkpoint's hash: where the source can, from the bytes the first graph reads (in file
      // order, hashed on another thread: one read of the checkpoint); otherwise a separate read on
      // another thread while the graphs are written.
      const oneRead = source.startDigest?.() ?? false;
      let weightsShaPromise = oneRead ? undefined : hashWeights(options.modelDir);
      weightsShaPromise?.catch(() => undefined);
      const graphPooling = pooling === "none" ? "none" : spec.pooling;
      for (const [i, precision] of precisions.entries()) {
        const name = `model.${precision}.onnx`;
        options.onStage?.(`writing ${name}`);
        const graph = buildEncoderGraph(spec.config, source, { precision, pooling: graphPooling, normalize: spec.normalize, heads: graphHeads, opset });
        inFileOrder(graph, source);
        const written = await writeOnnxModel(join(staging, name), graph, {
          opset,
          producerName: "bge",
          producerVersion: options.builtBy.version,
          docString: `${spec.id} ${precision}: ${graphPooling} pooling${spec.normalize ? ", L2-normalised" : ""}`,
          metadata: { model_id: spec.id, pooling: graphPooling, normalize: String(spec.normalize), precision, ...(graphHeads ? { heads: heads.join(",") } : {}) },
          externalData: options.externalData ?? "auto",
        });
        const dataName = written.externalDataPath ? basename(written.externalDataPath) : undefined;
        files.push({ path: name, role: ONNX_ROLES[precision]!, sha256: written.sha256, size: written.bytes, built_by: options.builtBy, ...(dataName ? { external_data: dataName } : {}) });
        if (dataName) files.push({ path: dataName, role: "onnx-data", sha256: written.externalDataSha256!, size: written.externalDataBytes!, built_by: options.builtBy });
        // The first graph read every tensor in file order: its digest is complete (the tail hashed, the
        // worker drained) before the next graph reads the checkpoint again from the start.
        if (i === 0 && oneRead) {
          const digest = await source.finishDigest!();
          weightsShaPromise = digest !== undefined ? Promise.resolve(digest) : hashWeights(options.modelDir);
          weightsShaPromise.catch(() => undefined);
        }
      }
      for (const f of [...TOKENIZER_FILES, ...CONFIG_FILES]) {
        const from = join(options.modelDir, f);
        if (!(await exists(from))) continue;
        const to = join(staging, f);
        await mkdir(dirname(to), { recursive: true });
        await copyFileAtomic(from, to);
        files.push(await describeFile(staging, f, TOKENIZER_FILES.includes(f) ? "tokenizer" : "config"));
      }
      const weightsSha = weightsShaPromise ? await weightsShaPromise : await hashWeights(options.modelDir);
      // Keep what an earlier run produced that this one did not rewrite (another precision, an engine).
      const rewritten = new Set(files.map((f) => f.path));
      const sameSource = previous !== undefined && previous.source.weights_sha256 === weightsSha;
      // Artifacts of other weights cannot share a manifest: then only this export's files stay (the rest is removed).
      const kept = sameSource ? previous.files.filter((f) => !rewritten.has(f.path)) : [];
      const m: Manifest = {
        format: ARTIFACT_FORMAT,
        created: new Date().toISOString(),
        source: { model_id: spec.id, revision: spec.revision, weights_sha256: weightsSha, arch: spec.config.arch, hidden_size: spec.config.hiddenSize },
        pooling: graphPooling,
        normalize: spec.normalize,
        max_length: spec.maxLength,
        query_instruction: spec.queryInstruction ?? null,
        files: [...kept, ...files],
        parity: sameSource ? Object.fromEntries(Object.entries(previous.parity ?? {}).filter(([p]) => !rewritten.has(p))) : {},
        // bge convert's stage keys stay with the files they describe; each names its inputs' hashes.
        ...(sameSource && previous.convert ? { convert: previous.convert } : {}),
        ...(graphHeads ? { heads } : {}),
      };
      return m;
    });
    return { manifest, spec };
  } finally {
    await source.close();
  }
}

/**
 * Orders the graph's initializers as their tensors lie in the checkpoint (ONNX leaves the order
 * free): the weights are then read front to back, which lets the source hash them in the same pass.
 * Initializers of no checkpoint tensor (constants, bge-m3's heads) come first, in their own order.
 */
function inFileOrder(graph: GraphBuilder, source: TensorSource): void {
  if (!source.position) return;
  const at = new Map(graph.initializers.map((t, i) => [t.name, source.position!(t.name) ?? -1 - graph.initializers.length + i]));
  graph.initializers.sort((a, b) => at.get(a.name)! - at.get(b.name)!);
}
