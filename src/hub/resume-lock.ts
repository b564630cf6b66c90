import { open, readFile, rm } from "node:fs/promises";

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

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
    if (Number.isSafeInteger(owner) && owner > 0 && alive(owner)) return null;
    await rm(lockPath, { force: true });
  }
  return null;
}
