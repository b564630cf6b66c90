import { copyFile, open, rename, rm, stat, writeFile, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { trackTempPath } from "./interrupt.js";
import { standardStream } from "./io-paths.js";

/** A temporary name in the same folder as `path`, so that the final rename is atomic. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
}

/**
 * Writes `path` through a temporary file in the same folder and renames it into place only after
 * `write` finished and the data reached the disk. On any failure (or SIGINT/SIGTERM) the temporary
 * file is removed and nothing exists under the final name that was not there before.
 */
export async function writeAtomic(path: string, write: (handle: FileHandle) => Promise<void>): Promise<void> {
  const pending = await createPendingFile(path);
  try {
    await write(pending.handle);
    await pending.commit();
  } catch (err) {
    await pending.abort();
    throw err;
  }
}

/** A file being written under a temporary name: `commit` syncs and renames it into place, `abort` removes it. */
export interface PendingFile {
  handle: FileHandle;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/** For writes that must land together (a model and its external data): commit each only when all succeeded. */
export async function createPendingFile(path: string): Promise<PendingFile> {
  const tmp = tempPathFor(path);
  const untrack = trackTempPath(tmp);
  let handle: FileHandle;
  try {
    handle = await open(tmp, "wx");
  } catch (err) {
    untrack();
    throw err;
  }
  let closed = false;
  return {
    handle,
    async commit() {
      await handle.sync();
      await handle.close();
      closed = true;
      await rename(tmp, path);
      untrack();
    },
    async abort() {
      if (!closed) await handle.close().catch(() => undefined);
      await rm(tmp, { force: true });
      untrack();
    },
  };
}

/** Copies `from` to `to` through a temporary name beside `to`: `to` is the whole file or untouched. */
export async function copyFileAtomic(from: string, to: string): Promise<void> {
  const tmp = tempPathFor(to);
  const untrack = trackTempPath(tmp);
  try {
    await copyFile(from, tmp);
    await rename(tmp, to);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  } finally {
    untrack();
  }
}

export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await writeAtomic(path, async (handle) => {
    await handle.writeFile(data);
  });
}

/**
 * A user-named output file: a character device or FIFO (`/dev/null`, `/dev/stdout`, a pipe) is
 * written to directly — renaming over it would replace the device node with a regular file —
 * anything else atomically.
 */
export async function writeOutputFile(path: string, data: string | Uint8Array): Promise<void> {
  const s = await stat(path).catch(() => undefined);
  const stream = s ? standardStream(s) : undefined;
  if (stream !== undefined) {
    // This process's own stdout/stderr (a socket cannot be opened by path): written through.
    const target = stream === 1 ? process.stdout : process.stderr;
    await new Promise<void>((resolve) => target.write(data, () => resolve()));
    return;
  }
  if (s && (s.isCharacterDevice() || s.isFIFO())) {
    await writeFile(path, data);
    return;
  }
  await writeFileAtomic(path, data);
}
