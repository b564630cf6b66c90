/**
 * A reference-encoder thread: receives the config and the weights (SharedArrayBuffer-backed, so every
 * thread reads the same memory), then pools sequences on request. Started by EncoderPool.
 */
import { parentPort } from "node:worker_threads";
import type { EncoderConfig } from "../checkpoint/config.js";
import type { Pooling } from "../checkpoint/model-spec.js";
import { pooledForward, type EncoderWeights } from "./encoder.js";

export type WorkerRequest =
  | { type: "init"; config: EncoderConfig; weights: EncoderWeights; pooling: Pooling }
  | { type: "job"; id: number; sequences: number[][] };

export type WorkerReply = { type: "result"; id: number; vectors: Float64Array[] } | { type: "error"; id: number; message: string };

let config: EncoderConfig | undefined;
let weights: EncoderWeights | undefined;
let pooling: Pooling = "cls";

parentPort!.on("message", (msg: WorkerRequest) => {
  if (msg.type === "init") {
    ({ config, weights, pooling } = msg);
    return;
  }
  try {
    const vectors = msg.sequences.map((ids) => pooledForward(config!, weights!, ids, pooling));
    const reply: WorkerReply = { type: "result", id: msg.id, vectors };
    parentPort!.postMessage(reply, vectors.map((v) => v.buffer as ArrayBuffer));
  } catch (err) {
    parentPort!.postMessage({ type: "error", id: msg.id, message: (err as Error).message } satisfies WorkerReply);
  }
});
