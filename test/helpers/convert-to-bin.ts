import { rm } from "node:fs/promises";
import { join } from "node:path";
import { readSafetensors } from "../../src/checkpoint/safetensors.js";
import { writeTorchBin, type TorchBinTensor } from "./torch-bin-writer.js";

/** Re-saves a fixture's model.safetensors as pytorch_model.bin (as bge-base-zh-v1.5 ships), under a `bert.` prefix. */
export async function convertFixtureToBin(dir: string, options: { prefix?: string; keepSafetensors?: boolean } = {}): Promise<TorchBinTensor[]> {
  const src = await readSafetensors(join(dir, "model.safetensors"));
  const tensors: TorchBinTensor[] = [];
  for (const info of src.list()) {
    tensors.push({ name: `${options.prefix ?? "bert."}${info.name}`, dtype: info.dtype, shape: info.shape, data: await src.readBytes(info.name) });
  }
  await src.close();
  await writeTorchBin(join(dir, "pytorch_model.bin"), tensors);
  if (!options.keepSafetensors) await rm(join(dir, "model.safetensors"));
  return tensors;
}

/** Flips one byte at 80% of a file: inside the last layers' weights of a .bin, far from the zip directories at its end. */
export async function flipLateByte(path: string): Promise<void> {
  const { readFile, writeFile } = await import("node:fs/promises");
  const bytes = await readFile(path);
  const at = Math.floor(bytes.length * 0.8);
  bytes[at] = bytes[at]! ^ 0xff;
  await writeFile(path, bytes);
}
