import { basename, dirname, join, resolve } from "node:path";
import { MANIFEST_NAME, precisionOfRole, readManifest, TRT_PRECISIONS, verifyManifestFiles, type ArtifactFile, type Manifest } from "../artifacts/manifest.js";
import { readModelSpec, type ModelSpec, type Pooling } from "../checkpoint/model-spec.js";
import { resolveModelDir } from "../checkpoint/resolve-model.js";
import type { Log } from "../util/log.js";
import { UsageError } from "../errors.js";
import { ReferenceEmbedder } from "./reference-embedder.js";
import type { Embedder } from "./embedder.js";
import { OnnxEmbedder } from "./onnx-embedder.js";
import { readOnnxMetadata } from "../onnx/model-metadata.js";
import { isDir, isFile } from "../util/fs.js";
import { discoverTrtexec } from "../trt/discover-trtexec.js";
import { engineRecordOf } from "../trt/engine-binding.js";
import { TrtEmbedder } from "./trt-embedder.js";

export type Backend = "reference" | "onnx" | "trt";

/** File names of serialized TensorRT engines (bge build writes `model.<precision>.plan`). */
const ENGINE_FILE = /\.(plan|engine|trt)$/i;

/** Whether a path names a TensorRT engine file (which only --backend trt runs); a folder never is one. */
export async function isEngineFile(path: string): Promise<boolean> {
  return ENGINE_FILE.test(path) && !(await isDir(path));
}

export interface LoadEmbedderOptions {
  backend?: Backend;
  /** Which ONNX or engine of an artifact folder: fp32, fp16, … @default fp32 when present, else the first listed */
  precision?: string;
  /** --backend trt: the trtexec to run engines with (else $TRTEXEC, PATH, /usr/src/tensorrt/bin). */
  trtexec?: string;
  pooling?: Pooling;
  normalize?: boolean;
  maxLength?: number;
  /** --backend trt: take the engine whose profile takes sequences this long (bench's longest --seq). @default maxLength, else the manifest's max_length */
  engineSequence?: number;
  instruction?: string | null;
  threads?: number;
  /** Where a hub download's messages and progress go. */
  out?: Log;
}

export interface LoadedEmbedder {
  embedder: Embedder | OnnxEmbedder | TrtEmbedder;
  spec: ModelSpec;
  /** What the target was, and the file that computes the vectors. */
  target: { kind: "checkpoint" | "artifact" | "onnx"; path: string; precision?: string; manifest?: Manifest; role?: ArtifactFile["role"] };
}

function specOverrides(o: LoadEmbedderOptions) {
  return { pooling: o.pooling, normalize: o.normalize === false ? false : undefined, maxLength: o.maxLength, queryInstruction: o.instruction };
}

/**
 * Resolves `<model|artifact|onnx|engine>` to a backend: a checkpoint folder runs the float64
 * reference (or its `onnx/model.onnx` with --backend onnx), an artifact folder runs one of its ONNX
 * files (or, with --backend trt, one of its TensorRT engines) after checking the manifest's hashes, a
 * bare .onnx file runs with the tokenizer and config beside it, and an engine file runs from the
 * artifact folder that records it.
 */
export async function loadEmbedder(target: string, options: LoadEmbedderOptions = {}): Promise<LoadedEmbedder> {
  const full = resolve(target);
  if (await isEngineFile(full)) {
    if (options.backend !== undefined && options.backend !== "trt") throw new UsageError(`${target} is a TensorRT engine; it runs only with --backend trt`);
    if (!(await isFile(full))) throw new UsageError(`${target}: no such engine file`);
    const beside = dirname(full);
    const manifest = (await isFile(join(beside, MANIFEST_NAME))) ? await readManifest(beside) : undefined;
    const file = manifest?.files.find((f) => f.path === basename(full) && f.role.startsWith("trt-") && f.role !== "trt-log");
    if (!manifest || !file) {
      throw new UsageError(`${target}: an engine runs only from the artifact folder whose manifest records it (its TensorRT version, GPU and shape profile); give that folder with --backend trt, or build one with bge build`);
    }
    if (options.precision !== undefined && options.precision !== precisionOfRole(file.role)) {
      throw new UsageError(`--precision ${options.precision}: ${target} is the ${precisionOfRole(file.role)} engine`);
    }
    return loadArtifactEngine(beside, manifest, file, options);
  }
  if (full.endsWith(".onnx") && options.backend === "trt") {
    throw new UsageError(`${target} is an ONNX file; --backend trt runs TensorRT engines: build them with bge build ARTIFACT and give the artifact folder`);
  }
  if (full.endsWith(".onnx")) {
    if (!(await isFile(full))) throw new UsageError(`${target}: no such ONNX file`);
    if (options.backend === "reference") throw new UsageError(`${target} is an ONNX file; the reference backend needs a checkpoint folder`);
    const beside = dirname(full);
    if (await isFile(join(beside, MANIFEST_NAME))) {
      const manifest = await readManifest(beside);
      const file = manifest.files.find((f) => f.path === basename(full));
      if (file) return loadArtifactFile(beside, manifest, file, options);
    }
    // optimum keeps onnx/model.onnx one level below the checkpoint's tokenizer and config.
    const modelDir = (await isFile(join(beside, "tokenizer.json"))) ? beside : dirname(beside);
    if (!(await isFile(join(modelDir, "tokenizer.json")))) throw new UsageError(`${target}: no tokenizer.json beside it or in ${modelDir}`);
    const spec = await readModelSpec(modelDir, specOverrides(options));
    const embedder = await OnnxEmbedder.load(full, spec, modelDir, { threads: options.threads, precision: options.precision });
    return { embedder, spec, target: { kind: "onnx", path: full } };
  }
  const dir = await resolveModelDir(target, { out: options.out });
  if (await isFile(join(dir, MANIFEST_NAME))) {
    if (options.backend === "reference") throw new UsageError(`${target} is an artifact folder; the reference backend needs the checkpoint it was exported from`);
    const manifest = await readManifest(dir);
    if (options.backend === "trt") {
      const engines = manifest.files.filter((f) => f.role.startsWith("trt-") && f.role !== "trt-log");
      if (!engines.length) throw new UsageError(`${target} has no TensorRT engine; build one with bge build ${target} --precision fp16`);
      const wanted = options.precision ?? (engines.some((f) => f.role === "trt-fp32") ? "fp32" : precisionOfRole(engines[0]!.role)!);
      const file = pickEngine(engines.filter((f) => precisionOfRole(f.role) === wanted), options.engineSequence ?? options.maxLength ?? manifest.max_length);
      if (!file) {
        const has = engines.map((f) => precisionOfRole(f.role)).join(", ");
        const hint = (TRT_PRECISIONS as readonly string[]).includes(wanted) ? `build it with bge build ${target} --precision ${wanted}` : `engines are ${TRT_PRECISIONS.join(", ")}`;
        throw new UsageError(`${target} has no ${wanted} engine (it has: ${has}); ${hint}`);
      }
      return loadArtifactEngine(dir, manifest, file, options);
    }
    const onnx = manifest.files.filter((f) => f.role.startsWith("onnx-") && f.role !== "onnx-data");
    const wanted = options.precision ?? (onnx.some((f) => f.role === "onnx-fp32") ? "fp32" : precisionOfRole(onnx[0]?.role ?? "onnx-fp32"));
    const file = onnx.find((f) => precisionOfRole(f.role) === wanted);
    if (!file) throw new UsageError(`${target} has no ${wanted ?? "ONNX"} model (it has: ${onnx.map((f) => precisionOfRole(f.role)).join(", ") || "none"})`);
    return loadArtifactFile(dir, manifest, file, options);
  }
  if (options.backend === "trt") {
    throw new UsageError(`${target} is a checkpoint; --backend trt runs the TensorRT engines of an artifact folder: bge export ${target} -o DIR, bge build DIR, then give DIR`);
  }
  if (options.backend === "onnx") {
    const hubOnnx = join(dir, "onnx", "model.onnx");
    if (await isFile(hubOnnx)) return loadEmbedder(hubOnnx, options);
    throw new UsageError(`${target} is a checkpoint without ONNX; run bge export ${target} -o DIR and embed DIR`);
  }
  if (options.precision !== undefined) {
    throw new UsageError(`--precision ${options.precision} does not apply to the reference backend (it computes in float64); give an artifact folder or an .onnx file to choose a precision`);
  }
  const spec = await readModelSpec(dir, specOverrides(options));
  return { embedder: await ReferenceEmbedder.load(spec), spec, target: { kind: "checkpoint", path: dir } };
}

async function loadArtifactFile(dir: string, manifest: Manifest, file: ArtifactFile, options: LoadEmbedderOptions): Promise<LoadedEmbedder> {
  const needed = new Set([file.path, file.external_data, ...manifest.files.filter((f) => f.role === "tokenizer" || f.role === "config").map((f) => f.path)]);
  await verifyManifestFiles(dir, manifest, (f) => needed.has(f.path));
  const graphPooling = manifest.pooling === "none" ? undefined : manifest.pooling;
  const spec = await readModelSpec(dir, {
    id: manifest.source.model_id,
    pooling: options.pooling ?? graphPooling,
    normalize: options.normalize === false ? false : manifest.normalize,
    maxLength: options.maxLength ?? manifest.max_length,
    queryInstruction: options.instruction !== undefined ? options.instruction : manifest.query_instruction,
  });
  await checkGraphMetadata(dir, manifest, file);
  const embedder = await OnnxEmbedder.load(join(dir, file.path), spec, dir, {
    threads: options.threads,
    graphPooling: { pooling: manifest.pooling, normalize: manifest.normalize },
    precision: precisionOfRole(file.role),
  });
  const graphDim = embedder.graphDimension;
  if (graphDim !== undefined && graphDim !== manifest.source.hidden_size) {
    await embedder.deactivate();
    throw new UsageError(`${join(dir, MANIFEST_NAME)}: source.hidden_size is ${manifest.source.hidden_size} but ${file.path} outputs ${graphDim}-dimensional vectors: the manifest does not describe this graph`);
  }
  return { embedder, spec, target: { kind: "artifact", path: join(dir, file.path), precision: precisionOfRole(file.role), manifest, role: file.role } };
}

/**
 * One TensorRT engine of an artifact folder through trtexec: the engine, tokenizer and config are
 * checked against the manifest's hashes, trtexec is discovered, and the engine's record binds it to
 * the TensorRT version (checked here, before any run) and the GPU (checked on each run's log) that
 * built it.
 */
async function loadArtifactEngine(dir: string, manifest: Manifest, file: ArtifactFile, options: LoadEmbedderOptions): Promise<LoadedEmbedder> {
  const record = engineRecordOf(file, join(dir, MANIFEST_NAME), manifest.files.indexOf(file));
  const needed = new Set([file.path, ...manifest.files.filter((f) => f.role === "tokenizer" || f.role === "config").map((f) => f.path)]);
  await verifyManifestFiles(dir, manifest, (f) => needed.has(f.path));
  // The graph the engine was built from carries what its sentence_embedding computes; where it is
  // still in the folder, the manifest must agree with it (as for an ONNX model).
  const source = manifest.files.find((f) => f.path === record.source && f.role.startsWith("onnx-"));
  if (source && (await isFile(join(dir, source.path)))) await checkGraphMetadata(dir, manifest, source);
  const precision = precisionOfRole(file.role)!;
  const spec = await readModelSpec(dir, {
    id: manifest.source.model_id,
    pooling: options.pooling ?? (manifest.pooling === "none" ? undefined : manifest.pooling),
    normalize: options.normalize === false ? false : manifest.normalize,
    maxLength: options.maxLength ?? manifest.max_length,
    queryInstruction: options.instruction !== undefined ? options.instruction : manifest.query_instruction,
  });
  if (spec.config.hiddenSize !== manifest.source.hidden_size) {
    throw new UsageError(`${join(dir, MANIFEST_NAME)}: source.hidden_size is ${manifest.source.hidden_size} but config.json says ${spec.config.hiddenSize}: the manifest does not describe this artifact`);
  }
  const trtexec = await discoverTrtexec({ explicit: options.trtexec });
  const embedder = await TrtEmbedder.load({
    enginePath: join(dir, file.path),
    spec,
    tokenizerDir: dir,
    trtexec,
    profile: record.shapes,
    precision,
    inputs: record.inputs,
    outputs: record.outputs,
    graphPooling: { pooling: manifest.pooling, normalize: manifest.normalize },
    builtOn: { version: record.version, gpu: record.gpu, computeCapability: record.compute_capability, rebuild: `bge build ${dir} --precision ${precision}${record.int8_source === "calib" ? " --int8-source calib" : ""}` },
  });
  return { embedder, spec, target: { kind: "artifact", path: join(dir, file.path), precision, manifest, role: file.role } };
}

/**
 * The manifest is not hashed, so its pooling and normalize could be edited away from what the graph
 * computes; the runner would then trust a `sentence_embedding` pooled otherwise. bge export records
 * both in the ONNX metadata, which must agree (graphs without that metadata are not bge's: skipped).
 */
async function checkGraphMetadata(dir: string, manifest: Manifest, file: ArtifactFile): Promise<void> {
  const meta = await readOnnxMetadata(join(dir, file.path));
  const where = `${join(dir, MANIFEST_NAME)}`;
  if (meta?.pooling !== undefined && meta.pooling !== manifest.pooling) {
    throw new UsageError(`${where}: pooling is ${manifest.pooling} but ${file.path} was exported with pooling ${meta.pooling} (its ONNX metadata): the manifest does not describe this graph`);
  }
  if (meta?.normalize !== undefined && meta.normalize !== String(manifest.normalize)) {
    throw new UsageError(`${where}: normalize is ${manifest.normalize} but ${file.path} was exported with normalize ${meta.normalize} (its ONNX metadata): the manifest does not describe this graph`);
  }
}

/**
 * Of one precision's engines (the default profile and named ones such as bge-m3's "8192"), the one
 * for inputs of up to `maxLength` tokens: the default engine where its profile takes them, else the
 * named engine with the shortest max sequence that does, else the default (whose runs then refuse
 * each text that is too long, naming the remedy).
 */
export function pickEngine(engines: readonly ArtifactFile[], maxLength: number): ArtifactFile | undefined {
  const maxSeq = (f: ArtifactFile) => f.trt?.shapes?.max?.[1] ?? 0;
  const fallback = engines.find((f) => !f.trt?.profile) ?? engines[0];
  if (fallback && maxSeq(fallback) >= maxLength) return fallback;
  const covering = engines.filter((f) => maxSeq(f) >= maxLength).sort((a, b) => maxSeq(a) - maxSeq(b));
  return covering[0] ?? fallback;
}
