import { join } from "node:path";
import { UsageError } from "../errors.js";
import { pathExists } from "../util/fs.js";
import { assertFiniteTensor, bytesToFloat64 } from "./dtype.js";
import { openTorchBin } from "./torch-bin.js";

/** bge-m3's heads beyond the dense CLS vector (FlagEmbedding BGE_M3: sparse_linear.pt, colbert_linear.pt). */
export type M3Head = "sparse" | "colbert";
/** Every head a graph can carry: dense is the pooled `sentence_embedding`. */
export type Head = "dense" | M3Head;
export const HEADS: readonly Head[] = ["dense", "sparse", "colbert"];

export const M3_HEAD_FILES: Record<M3Head, string> = { sparse: "sparse_linear.pt", colbert: "colbert_linear.pt" };

/** One nn.Linear: weight [outDim, inDim] row-major as torch stores it, bias [outDim]. */
export interface LinearHead {
  weight: Float64Array;
  bias: Float64Array;
  inDim: number;
  outDim: number;
}

export interface M3Heads {
  sparse?: LinearHead;
  colbert?: LinearHead;
}

/** Which head files a checkpoint folder has (no file is read). */
export async function availableHeads(dir: string): Promise<M3Head[]> {
  const out: M3Head[] = [];
  for (const head of ["sparse", "colbert"] as const) if (await pathExists(join(dir, M3_HEAD_FILES[head]))) out.push(head);
  return out;
}

/**
 * The heads' weights in float64 (exact for their fp16), read with the restricted unpickler: a file
 * that is not a torch.save state dict of exactly `weight` and `bias` of a Linear(hidden → 1) (sparse)
 * or Linear(hidden → D) (ColBERT), or holds anything but finite floats, is refused (exit 2).
 */
export async function loadM3Heads(dir: string, hiddenSize: number, which?: readonly M3Head[]): Promise<M3Heads> {
  const heads: M3Heads = {};
  for (const head of which ?? (await availableHeads(dir))) {
    const path = join(dir, M3_HEAD_FILES[head]);
    if (!(await pathExists(path))) throw new UsageError(`${dir}: no ${M3_HEAD_FILES[head]}, so this model has no ${head} head (bge-m3 ships it beside the weights)`);
    heads[head] = await readLinear(path, hiddenSize, head === "sparse" ? 1 : undefined);
  }
  return heads;
}

async function readLinear(path: string, inDim: number, outDim: number | undefined): Promise<LinearHead> {
  const source = await openTorchBin(path);
  try {
    const list = source.list();
    const names = list.map((t) => t.name).sort();
    if (names.length !== 2 || names[0] !== "bias" || names[1] !== "weight") {
      throw new UsageError(`${path}: holds tensors ${names.join(", ")}; a head is an nn.Linear state dict of exactly weight and bias`);
    }
    const w = list.find((t) => t.name === "weight")!;
    const b = list.find((t) => t.name === "bias")!;
    const out = outDim ?? w.shape[0]!;
    if (w.shape.length !== 2 || w.shape[1] !== inDim || w.shape[0] !== out || !(out > 0)) {
      throw new UsageError(`${path}: weight has shape [${w.shape.join(", ")}]; expected [${outDim ?? "D"}, ${inDim}] (config.json hidden_size ${inDim}); use the head files that came with these weights`);
    }
    if (b.shape.length !== 1 || b.shape[0] !== out) throw new UsageError(`${path}: bias has shape [${b.shape.join(", ")}]; expected [${out}]`);
    const read = async (name: string, dtype: typeof w.dtype) => {
      if (!["F16", "F32", "BF16", "F64"].includes(dtype)) throw new UsageError(`${path}: tensor ${name} has dtype ${dtype}; expected F16, F32 or BF16`);
      const bytes = await source.readBytes(name);
      assertFiniteTensor(bytes, dtype, `${path}: tensor ${name}`);
      return bytesToFloat64(bytes, dtype, name);
    };
    return { weight: await read("weight", w.dtype), bias: await read("bias", b.dtype), inDim, outDim: out };
  } finally {
    await source.close();
  }
}
