/**
 * A reference-encoder thread: receives the config and the weights (SharedArrayBuffer-backed, so every
 * thread reads the same memory), then pools sequences on request. Started by EncoderPool.
 */
import { parentPort } from "node:worker_threads";
import type { EncoderConfig } from "../checkpoint/config.js";
import type { Pooling } from "../checkpoint/model-spec.js";
import { pooledForward, type EncoderWeights } from "./encoder.js";
import type { Head, M3Heads } from "../checkpoint/m3-heads.js";
import { m3Forward, type M3Output } from "./m3.js";

export type WorkerRequest =
  | { type: "init"; config: EncoderConfig; weights: EncoderWeights; pooling: Pooling; m3?: { heads: M3Heads; specials: number[]; normalize: boolean } }
  | { type: "job"; id: number; sequences: number[][] }
  | { type: "heads"; id: number; sequences: number[][]; want: Head[] };

export type WorkerReply =
  | { type: "result"; id: number; vectors: Float64Array[] }
  | { type: "heads"; id: number; outputs: M3Output[] }
  | { type: "error"; id: number; message: string };

let config: EncoderConfig | undefined;
let weights: EncoderWeights | undefined;
let pooling: Pooling = "cls";
let m3: { heads: M3Heads; specials: Set<number>; normalize: boolean } | undefined;

parentPort!.on("message", (msg: WorkerRequest) => {
  if (msg.type === "init") {
    ({ config, weights, pooling } = msg);
    m3 = msg.m3 ? { heads: msg.m3.heads, specials: new Set(msg.m3.specials), normalize: msg.m3.normalize } : undefined;
    return;
  }
  try {
    if (msg.type === "heads") {
      const outputs = msg.sequences.map((ids) => m3Forward(config!, weights!, m3!.heads, ids, m3!.specials, msg.want, { pooling, normalize: m3!.normalize }));
      parentPort!.postMessage({ type: "heads", id: msg.id, outputs } satisfies WorkerReply);
      return;
    }
    const vectors = msg.sequences.map((ids) => pooledForward(config!, weights!, ids, pooling));
    const reply: WorkerReply = { type: "result", id: msg.id, vectors };
    parentPort!.postMessage(reply, vectors.map((v) => v.buffer as ArrayBuffer));
  } catch (err) {
    parentPort!.postMessage({ type: "error", id: msg.id, message: (err as Error).message } satisfies WorkerReply);
  }
});
