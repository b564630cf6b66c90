import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { BgeError, ToolFailedError } from "../errors.js";
import { backoffDelay, isRetryableStatus, networkReason, sleep, type HubClient } from "./hub-client.js";
import { ContentHasher, type ExpectedContent } from "./integrity.js";
import { claimResumeLock } from "./resume-lock.js";
import type { FileProgress } from "./progress.js";

export interface DownloadBlobParams {
  client: HubClient;
  /** The resolve URL, by commit sha. */
  url: string;
  /** The repo path, for messages. */
  path: string;
  expected: ExpectedContent;
  /** Final blob path: written only with verified bytes, by rename. */
  blobPath: string;
  progress?: FileProgress;
  /** Failed attempts in a row without progress before giving up (a hash mismatch counts as one). @default 5 */
  attempts?: number;
  /** No byte for this long: abort and resume. @default 10000 */
  stallTimeoutMs?: number;
  onRetry?: (message: string) => void;
}

export interface DownloadBlobResult {
  /** Bytes received over the network (a resumed prefix does not count). */
  bytesTransferred: number;
  /** Bytes found in an earlier run's partial file and kept. */
  resumedFrom: number;
  requests: number;
}

/** An attempt failed in a way worth another; `restart` discards what was received. */
class Retry extends Error {
  constructor(
    message: string,
    readonly restart = false,
  ) {
    super(message);
  }
}

interface TransferState {
  handle: FileHandle;
  hasher: ContentHasher;
  /** Bytes in the partial file, all of them hashed. */
  offset: number;
  received: number;
  requests: number;
}

/**
 * Downloads one file into `<blob>.incomplete`, resuming it with Range where an earlier attempt or run
 * stopped, hashing every byte as it arrives, and renames it onto `blobPath` only when size and hash
 * match the listing. A mismatch discards the partial file and starts over; connection resets,
 * stalls, truncated bodies and 5xx resume after a backoff. After `attempts` failures in a row that
 * brought no new bytes it fails (exit 4) naming the file, with nothing under the final name.
 */
export async function downloadBlob(params: DownloadBlobParams): Promise<DownloadBlobResult> {
  const { client, expected, path } = params;
  const maxAttempts = params.attempts ?? 5;
  const stallMs = params.stallTimeoutMs ?? 10_000;
  const onRetry = params.onRetry ?? (() => undefined);
  const release = await claimResumeLock(`${params.blobPath}.incomplete.lock`);
  // Without the lock another live process is resuming the shared partial file: use a private one.
  const temp = release ? `${params.blobPath}.incomplete` : `${params.blobPath}.${process.pid}.${randomBytes(4).toString("hex")}.incomplete`;
  await (await open(temp, "a")).close();
  const state: TransferState = { handle: await open(temp, "r+"), hasher: new ContentHasher(expected), offset: 0, received: 0, requests: 0 };
  let done = false;
  try {
    state.offset = (await state.handle.stat()).size;
    if (state.offset > expected.size) await restart(state);
    const resumedFrom = state.offset;
    if (state.offset > 0) await hashPrefix(state);
    params.progress?.update(state.offset);

    let failuresInARow = 0;
    for (let attempt = 1; ; attempt++) {
      const before = state.offset;
      try {
        if (state.offset < expected.size) await fetchInto(params, state, stallMs);
        if (state.offset < expected.size) throw new Retry(`the body ended after ${state.offset} of ${expected.size} bytes`);
        const digest = state.hasher.digest();
        if (digest !== expected.digest) throw new Retry(`its ${expected.algorithm} ${digest} does not match the listing's ${expected.digest}`, true);
        await state.handle.sync();
        await state.handle.close();
        await rename(temp, params.blobPath);
        done = true;
        params.progress?.finish(true);
        return { bytesTransferred: state.received, resumedFrom, requests: state.requests };
      } catch (err) {
        if (!(err instanceof Retry)) throw err;
        if (err.restart) await restart(state);
        failuresInARow = state.offset > before ? 1 : failuresInARow + 1;
        // Bounded twice: by failures without progress, and by attempts overall.
        if (failuresInARow >= maxAttempts || attempt >= maxAttempts * 4) {
          throw new ToolFailedError(
            `${path}: download failed after ${attempt} attempts (last: ${client.redact(err.message)}); nothing was written under its final name`,
          );
        }
        const delay = backoffDelay(client.backoffMs, failuresInARow);
        onRetry(`${path}: ${client.redact(err.message)}; ${state.offset > 0 ? `resuming at byte ${state.offset}` : "starting over"} in ${delay} ms`);
        await sleep(delay);
      }
    }
  } catch (err) {
    params.progress?.finish(false);
    throw err;
  } finally {
    await state.handle.close().catch(() => undefined);
    // A private temp file is never resumed; a shared one is kept for the next run only if it holds bytes.
    if (!done && (!release || state.offset === 0)) await rm(temp, { force: true });
    await release?.();
  }
}

async function restart(state: TransferState): Promise<void> {
  await state.handle.truncate(0);
  state.hasher.reset();
  state.offset = 0;
}

async function hashPrefix(state: TransferState): Promise<void> {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let pos = 0; pos < state.offset; ) {
    const { bytesRead } = await state.handle.read(buf, 0, Math.min(buf.length, state.offset - pos), pos);
    if (bytesRead === 0) throw new Error(`partial file shrank while hashing at byte ${pos}`);
    state.hasher.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

/** One GET from `state.offset`, appending and hashing what arrives. Throws Retry for anything worth another attempt. */
async function fetchInto(params: DownloadBlobParams, state: TransferState, stallMs: number): Promise<void> {
  const { client, expected } = params;
  const controller = new AbortController();
  let timer = setTimeout(() => controller.abort(), stallMs);
  const kick = () => {
    clearTimeout(timer);
    timer = setTimeout(() => controller.abort(), stallMs);
  };
  try {
    const headers: Record<string, string> = { "Accept-Encoding": "identity" };
    if (state.offset > 0) headers.Range = `bytes=${state.offset}-`;
    let res: Response;
    state.requests++;
    try {
      res = await client.send(params.url, { headers, signal: controller.signal });
    } catch (err) {
      if (err instanceof BgeError) throw err;
      throw new Retry(controller.signal.aborted ? `no response in ${stallMs} ms` : `request failed (${networkReason(err)})`);
    }
    if (res.status === 206) {
      const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
      if (!range || Number(range[1]) !== state.offset || (range[3] !== "*" && Number(range[3]) !== expected.size)) {
        await res.body?.cancel().catch(() => undefined);
        throw new Retry(`unexpected Content-Range ${JSON.stringify(res.headers.get("content-range"))} for a resume at byte ${state.offset}`, true);
      }
    } else if (res.status === 200) {
      // A full body: the server ignored Range, so what we had is replaced.
      if (state.offset > 0) await restart(state);
    } else if (res.status === 416) {
      await res.body?.cancel().catch(() => undefined);
      throw new Retry("the server refused to resume (416)", true);
    } else if (isRetryableStatus(res.status)) {
      await res.body?.cancel().catch(() => undefined);
      throw new Retry(`HTTP ${res.status}`);
    } else {
      throw await client.responseError(res, params.url, `downloading ${params.path}`);
    }
    if (!res.body) throw new Retry("a response without a body");
    kick();
    const reader = res.body.getReader();
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          throw new Retry(controller.signal.aborted ? `stalled: no byte for ${stallMs} ms` : `connection lost (${networkReason(err)})`);
        }
        if (chunk.done) break;
        kick();
        const bytes = chunk.value;
        if (state.offset + bytes.length > expected.size) throw new Retry(`the server sent more than the listed ${expected.size} bytes`, true);
        await state.handle.write(bytes, 0, bytes.length, state.offset);
        state.hasher.update(bytes);
        state.offset += bytes.length;
        state.received += bytes.length;
        params.progress?.update(state.offset);
      }
    } finally {
      reader.releaseLock();
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}
