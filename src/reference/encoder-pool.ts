import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type { EncoderConfig } from "../checkpoint/config.js";
import type { Pooling } from "../checkpoint/model-spec.js";
import type { EncoderWeights } from "./encoder.js";
import type { WorkerReply, WorkerRequest } from "./encoder-worker.js";
import type { Head, M3Heads } from "../checkpoint/m3-heads.js";
import type { M3Output } from "./m3.js";

/** Copies every weight array into shared memory, so threads read one copy. */
function shareWeights(w: EncoderWeights): EncoderWeights {
  const share = (a: Float64Array) => {
    const s = new Float64Array(new SharedArrayBuffer(a.byteLength));
    s.set(a);
    return s;
  };
  const pair = (p: [Float64Array, Float64Array]): [Float64Array, Float64Array] => [share(p[0]), share(p[1])];
  return {
    wordEmb: share(w.wordEmb),
    posEmb: share(w.posEmb),
    typeEmb: share(w.typeEmb),
    embLn: pair(w.embLn),
    layers: w.layers.map((l) => ({
      q: pair(l.q),
      k: pair(l.k),
      v: pair(l.v),
      attnOut: pair(l.attnOut),
      attnLn: pair(l.attnLn),
      inter: pair(l.inter),
      out: pair(l.out),
      outLn: pair(l.outLn),
    })),
  };
}

/**
 * Reference forward passes on several threads. Each sequence is computed whole by one thread with
 * the same float64 code as the single-threaded path, so results do not depend on the thread count.
 */
export class EncoderPool {
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown[]) => void; reject: (e: Error) => void }>();

  private constructor(private readonly workers: Worker[]) {
    for (const w of workers) {
      w.on("message", (m: WorkerReply) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.type === "result") p.resolve(m.vectors);
        else if (m.type === "heads") p.resolve(m.outputs);
        else p.reject(new Error(m.message));
      });
      w.on("error", (err) => {
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      });
    }
  }

  /**
   * A pool of `threads` workers, or undefined where one thread suffices or the compiled worker is
   * not at hand (running from TypeScript sources under a test runner).
   */
  static create(
    config: EncoderConfig,
    weights: EncoderWeights,
    pooling: Pooling,
    threads = Math.min(availableParallelism(), 8),
    m3?: { heads: M3Heads; specials: number[]; normalize: boolean },
  ): EncoderPool | undefined {
    if (threads < 2) return undefined;
    const script = fileURLToPath(new URL("./encoder-worker.js", import.meta.url));
    if (!existsSync(script)) return undefined;
    const shared = shareWeights(weights);
    const workers = Array.from({ length: threads }, () => {
      // `node --input-type=module -e …` (bench scripts) would pass its flag to the worker, which then
      // refuses to load a file (ERR_INPUT_TYPE_NOT_ALLOWED); the rest of the parent's flags apply.
      const w = new Worker(script, { execArgv: process.execArgv.filter((a) => !a.startsWith("--input-type")) });
      w.postMessage({ type: "init", config, weights: shared, pooling, m3 } satisfies WorkerRequest);
      // Idle threads do not keep the process alive; pool() holds them while it waits.
      w.unref();
      return w;
    });
    return new EncoderPool(workers);
  }

  get size(): number {
    return this.workers.length;
  }

  /** Pooled (not normalised) vectors for unpadded sequences, in order. */
  async pool(sequences: number[][]): Promise<Float64Array[]> {
    return this.run(sequences, (id, part) => ({ type: "job", id, sequences: part }));
  }

  /** bge-m3's outputs (see m3Forward) for unpadded sequences, in order; the pool must have been created with heads. */
  async heads(sequences: number[][], want: Head[]): Promise<M3Output[]> {
    return this.run(sequences, (id, part) => ({ type: "heads", id, sequences: part, want }));
  }

  private async run<T>(sequences: number[][], request: (id: number, part: number[][]) => WorkerRequest): Promise<T[]> {
    // Longest first, each to the thread with the least work so far.
    const order = sequences.map((_, i) => i).sort((a, b) => sequences[b]!.length - sequences[a]!.length);
    const load = this.workers.map(() => 0);
    const assigned: number[][] = this.workers.map(() => []);
    for (const i of order) {
      const cost = sequences[i]!.length ** 2 + 64 * sequences[i]!.length;
      const w = load.indexOf(Math.min(...load));
      assigned[w]!.push(i);
      load[w]! += cost;
    }
    const out = new Array<T>(sequences.length);
    for (const w of this.workers) w.ref();
    try {
      await Promise.all(
      assigned.map(async (idx, w) => {
        if (!idx.length) return;
        const id = this.nextId++;
        const result = new Promise<T[]>((resolve, reject) => this.pending.set(id, { resolve: resolve as (v: unknown[]) => void, reject }));
        this.workers[w]!.postMessage(request(id, idx.map((i) => sequences[i]!)));
        (await result).forEach((v, k) => (out[idx[k]!] = v));
      }),
      );
    } finally {
      for (const w of this.workers) w.unref();
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
