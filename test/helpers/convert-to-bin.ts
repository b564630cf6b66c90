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
