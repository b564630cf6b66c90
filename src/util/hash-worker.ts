import { Worker } from "node:worker_threads";

// Dynamic imports only: eval'd worker code runs as CommonJS or as a module depending on how the
// parent process was started.
const HASH_SOURCE = `
(async () => {
  const { parentPort, workerData } = await import("node:worker_threads");
  const { createHash } = await import("node:crypto");
  const { createReadStream } = await import("node:fs");
  const h = createHash("sha256");
  for await (const chunk of createReadStream(workerData, { highWaterMark: 4 << 20 })) h.update(chunk);
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
