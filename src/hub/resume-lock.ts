import { open, readFile, rm } from "node:fs/promises";
import { processAlive } from "../util/process-alive.js";


/**
 * Claims `<blob>.incomplete` for this process, so that two bge runs sharing a cache never append to
 * the same partial file. Returns the release function, or null when a live process holds it (the
 * caller then downloads under a private temporary name, without resuming). A lock left by a dead
 * process is taken over.
 */
export async function claimResumeLock(lockPath: string): Promise<(() => Promise<void>) | null> {
  for (let tries = 0; tries < 2; tries++) {
    try {
      const handle = await open(lockPath, "wx");
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number((await readFile(lockPath, "utf8").catch(() => "")).trim());
    if (Number.isSafeInteger(owner) && owner > 0 && processAlive(owner)) return null;
    await rm(lockPath, { force: true });
  }
  return null;
}
