import { Worker } from "node:worker_threads";

// Dynamic imports only: eval'd worker code runs as CommonJS or as a module depending on how the
// parent process was started.
const HASH_SOURCE = `
(async () => {
  const { parentPort, workerData } = await import("node:worker_threads");
  const { createHash } = await import("node:crypto");
  const { open } = await import("node:fs/promises");
  const h = createHash("sha256");
  // One buffer read into again and again: fresh buffers per chunk would touch new pages for every
  // megabyte, which on a virtual machine costs more than the hashing.
  const buffer = Buffer.allocUnsafe(4 << 20);
  const handle = await open(workerData, "r");
  try {
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      h.update(buffer.subarray(0, bytesRead));
    }
  } finally {
    await handle.close();
  }
  parentPort.postMessage(h.digest("hex"));
})().catch(async (err) => (await import("node:worker_threads")).parentPort.postMessage({ error: String((err && err.message) || err) }));
`;

/** sha256 of a file on another thread, so that hashing a multi-GB checkpoint overlaps other work. */
export function sha256FileInWorker(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(HASH_SOURCE, { eval: true, workerData: path });
    worker.once("message", (m: string | { error: string }) => {
      void worker.terminate();
      if (typeof m === "string") resolve(m);
      else reject(new Error(`hashing ${path}: ${m.error}`));
    });
    worker.once("error", reject);
  });
}

const STREAM_SOURCE = `
(async () => {
  const { parentPort } = await import("node:worker_threads");
  const { createHash } = await import("node:crypto");
  const h = createHash("sha256");
  const buffers = [];
  parentPort.on("message", (m) => {
    if (m.done) {
      parentPort.postMessage({ digest: h.digest("hex") });
      return;
    }
    if (m.buffer) buffers[m.id] = m.buffer;
    h.update(new Uint8Array(buffers[m.id], m.offset, m.length));
    parentPort.postMessage({ ack: true });
  });
})();
`;

/**
 * sha256 of a stream of chunks computed on another thread, the chunks shared, not copied: each chunk
 * must be a view of a SharedArrayBuffer, left unchanged until the promise of its update settles.
 * Lets a reader hash what it reads for its own use in the same pass (one read of the file, the
 * hashing on the other core).
 */
export class StreamDigest {
  private readonly worker = new Worker(STREAM_SOURCE, { eval: true });
  private readonly waiting: { resolve: (m: { digest?: string }) => void; reject: (e: Error) => void }[] = [];
  private failed: Error | undefined;
  private readonly ids = new Map<SharedArrayBuffer, number>();

  constructor() {
    this.worker.on("message", (m: { digest?: string }) => {
      this.waiting.shift()?.resolve(m);
      if (this.waiting.length === 0) this.worker.unref();
    });
    this.worker.on("error", (err) => this.fail(err));
    this.worker.on("exit", (code) => this.fail(new Error(`hash worker exited with ${code}`)));
    // An idle digest never keeps the process alive; one with work outstanding does.
    this.worker.unref();
  }

  /** Hashes `chunk` next; resolves when its bytes have been read (the buffer may be reused then). */
  update(chunk: Uint8Array): Promise<void> {
    if (!(chunk.buffer instanceof SharedArrayBuffer)) throw new TypeError("StreamDigest.update needs a view of a SharedArrayBuffer");
    // Each buffer crosses to the worker once; later chunks in it are named by number.
    let id = this.ids.get(chunk.buffer);
    const first = id === undefined;
    if (id === undefined) this.ids.set(chunk.buffer, (id = this.ids.size));
    return this.request({ id, offset: chunk.byteOffset, length: chunk.byteLength, ...(first ? { buffer: chunk.buffer } : {}) }).then(() => undefined);
  }

  /** The hex sha256 of everything updated, in order; ends the worker. */
  async digest(): Promise<string> {
    const m = await this.request({ done: true });
    await this.close();
    return m.digest!;
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners("exit");
    await this.worker.terminate();
  }

  private request(message: object): Promise<{ digest?: string }> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      if (this.waiting.length === 0) this.worker.ref();
      this.waiting.push({ resolve, reject });
      this.worker.postMessage(message);
    });
  }

  private fail(err: Error): void {
    this.failed ??= err;
    for (const w of this.waiting.splice(0)) w.reject(err);
  }
}
