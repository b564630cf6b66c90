import { hostname } from "node:os";
import { open, readdir, readFile, rm } from "node:fs/promises";
import { rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { UsageError } from "../errors.js";
import { onInterrupt, TEMP_NAME } from "./interrupt.js";
import { processAlive } from "./process-alive.js";

export const LOCK_NAME = ".bge.lock";

interface LockRecord {
  pid: number;
  host: string;
  command: string;
  started: string;
}

export interface FolderLock {
  /** True when a dead writer's lock was found and taken over: its leftovers may lie in the folder. */
  readonly tookOverStale: boolean;
  release(): Promise<void>;
}

export interface LockOptions {
  /** The command taking the lock, shown to anyone who finds it held. */
  command: string;
  /** Where the takeover of a dead writer's lock is reported. */
  warn?: (message: string) => void;
  /** Folders below `dir` that writers also fill (cleaned of temporary files on takeover). */
  subfolders?: string[];
}


function parseLock(text: string): LockRecord | undefined {
  try {
    const r = JSON.parse(text) as Partial<LockRecord>;
    if (typeof r.pid === "number" && Number.isSafeInteger(r.pid) && r.pid > 0 && typeof r.host === "string") {
      return { pid: r.pid, host: r.host, command: String(r.command ?? "bge"), started: String(r.started ?? "?") };
    }
  } catch {
    // a torn or foreign lock file: treated as abandoned below
  }
  return undefined;
}

/** Removes the temporary files (`.NAME.PID.HEX.tmp`) that a dead writer left in `dir`; returns how many. */
export async function removeTempLeftovers(dir: string, subfolders: string[] = []): Promise<number> {
  let removed = 0;
  for (const d of [dir, ...subfolders.map((s) => join(dir, s))]) {
    const names = await readdir(d).catch(() => [] as string[]);
    for (const name of names) {
      const m = TEMP_NAME.exec(name);
      if (!m || processAlive(Number(m[1]))) continue;
      await rm(join(d, name), { force: true, recursive: true });
      removed++;
    }
  }
  return removed;
}

/** Folders this process holds the lock of, with how many holders within it. */
const heldHere = new Map<string, number>();

/**
 * Claims `dir` for one writing command. A live holder on this host is exit 2 naming its pid; a
 * dead one's lock is taken over with a message and its temporary files removed. The lock is also
 * released when the command is interrupted.
 */
export async function lockFolder(dir: string, options: LockOptions): Promise<FolderLock> {
  const path = join(dir, LOCK_NAME);
  // A command that holds the folder (convert) runs the stages that write it (export, quantize, build,
  // verify's record) in the same process: they share its lock instead of refusing their own holder.
  const key = resolve(dir);
  const depth = heldHere.get(key);
  if (depth !== undefined) {
    heldHere.set(key, depth + 1);
    let releasedNested = false;
    return {
      tookOverStale: false,
      async release() {
        if (releasedNested) return;
        releasedNested = true;
        heldHere.set(key, (heldHere.get(key) ?? 1) - 1);
      },
    };
  }
  const me: LockRecord = { pid: process.pid, host: hostname(), command: options.command, started: new Date().toISOString() };
  let tookOverStale = false;
  let acquired = false;
  for (let attempt = 0; attempt < 4 && !acquired; attempt++) {
    try {
      const handle = await open(path, "wx");
      try {
        await handle.writeFile(JSON.stringify(me) + "\n");
      } finally {
        await handle.close();
      }
      acquired = true;
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const text = await readFile(path, "utf8").catch(() => "");
    const holder = parseLock(text);
    if (holder && holder.host !== me.host) {
      throw new UsageError(
        `${dir} is locked by bge ${holder.command} (pid ${holder.pid} on host ${holder.host}, since ${holder.started}); if that process is gone, delete ${path}`,
      );
    }
    if (holder && processAlive(holder.pid)) {
      throw new UsageError(`${dir} is being written by bge ${holder.command} (pid ${holder.pid}, since ${holder.started}); wait for it to finish`);
    }
    if (!holder && attempt === 0) {
      // Perhaps just created by another writer and not yet filled in: look again before calling it abandoned.
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    options.warn?.(`${dir}: taking over the lock of an interrupted bge ${holder?.command ?? "run"}${holder ? ` (pid ${holder.pid}, no longer running)` : ""} and removing its temporary files`);
    await rm(path, { force: true });
    tookOverStale = true;
  }
  if (!acquired) throw new UsageError(`${dir}: could not take the lock ${path}; another bge keeps competing for it`);
  const removed = await removeTempLeftovers(dir, options.subfolders);
  if (removed && !tookOverStale) options.warn?.(`${dir}: removed ${removed} temporary file(s) left by an interrupted bge`);
  const dropOnInterrupt = onInterrupt(() => rmSync(path, { force: true }));
  heldHere.set(key, 0);
  let released = false;
  return {
    tookOverStale: tookOverStale || removed > 0,
    async release() {
      if (released) return;
      released = true;
      heldHere.delete(key);
      dropOnInterrupt();
      await rm(path, { force: true });
    },
  };
}

/** Runs `work` holding the lock on `dir`, releasing it however `work` ends. */
export async function withFolderLock<T>(dir: string, options: LockOptions, work: (lock: FolderLock) => Promise<T>): Promise<T> {
  const lock = await lockFolder(dir, options);
  try {
    return await work(lock);
  } finally {
    await lock.release();
  }
}

/** The holder of `dir`'s lock when a live process on this host holds it. */
export async function liveLockHolder(dir: string): Promise<{ pid: number; command: string } | undefined> {
  const holder = parseLock(await readFile(join(dir, LOCK_NAME), "utf8").catch(() => ""));
  if (!holder || holder.host !== hostname() || !processAlive(holder.pid) || holder.pid === process.pid) return undefined;
  return { pid: holder.pid, command: holder.command };
}
