import { rmSync } from "node:fs";

/**
 * What an interrupted command must undo: temporary files it is writing and locks it holds. Writers
 * register a path while it exists and unregister it once it is renamed or removed; on SIGINT/SIGTERM
 * `runInterruptCleanup` removes whatever is still registered, synchronously, before the process exits.
 */
const tempPaths = new Set<string>();
const cleanups = new Set<() => void>();

export function trackTempPath(path: string): () => void {
  tempPaths.add(path);
  return () => {
    tempPaths.delete(path);
  };
}

/** A synchronous undo step (release a lock, kill a child process) run on interruption. */
export function onInterrupt(cleanup: () => void): () => void {
  cleanups.add(cleanup);
  return () => {
    cleanups.delete(cleanup);
  };
}

/** Removes every registered temporary file, then runs the other cleanups (locks last: they guard the files). */
export function runInterruptCleanup(): void {
  for (const path of tempPaths) {
    try {
      rmSync(path, { force: true, recursive: true });
    } catch {
      // Best effort: the next writer of the folder removes leftovers it recognises.
    }
  }
  tempPaths.clear();
  for (const cleanup of [...cleanups].reverse()) {
    try {
      cleanup();
    } catch {
      // keep going: every other cleanup still deserves its chance
    }
  }
  cleanups.clear();
}

/** The temporary-name pattern of `tempPathFor`: `.NAME.PID.HEX8.tmp`. */
export const TEMP_NAME = /^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$/;
