import { copyFile, open, rename, rm, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { randomBytes } from "node:crypto";

/** A temporary name in the same folder as `path`, so that the final rename is atomic. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
}

/**
 * Writes `path` through a temporary file in the same folder and renames it into place only after
 * `write` finished and the data reached the disk. On any failure the temporary file is removed and
 * nothing exists under the final name that was not there before.
 */
export async function writeAtomic(path: string, write: (handle: FileHandle) => Promise<void>): Promise<void> {
  const tmp = tempPathFor(path);
  const handle = await open(tmp, "wx");
  try {
    await write(handle);
    await handle.sync();
    await handle.close();
    await rename(tmp, path);
  } catch (err) {
    await handle.close().catch(() => undefined);
    await rm(tmp, { force: true });
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
  const handle = await open(tmp, "wx");
  let closed = false;
  return {
    handle,
    async commit() {
      await handle.sync();
      await handle.close();
      closed = true;
      await rename(tmp, path);
    },
    async abort() {
      if (!closed) await handle.close().catch(() => undefined);
      await rm(tmp, { force: true });
    },
  };
}

/** Copies `from` to `to` through a temporary name beside `to`: `to` is the whole file or untouched. */
export async function copyFileAtomic(from: string, to: string): Promise<void> {
  const tmp = tempPathFor(to);
  try {
    await copyFile(from, tmp);
    await rename(tmp, to);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await writeAtomic(path, async (handle) => {
    await handle.writeFile(data);
  });
}
