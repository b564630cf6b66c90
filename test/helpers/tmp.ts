import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "vitest";

/**
 * Folders made by tempDir in this test file. They are removed by one afterAll registered when this
 * module loads (at the file's top level: an afterAll registered inside a running hook or test is not
 * run, which once left gigabytes of artifacts behind every run), and, should the worker end first
 * (a timeout, a crash), on its exit.
 */
const made = new Set<string>();

afterAll(async () => {
  await Promise.all([...made].map((dir) => rm(dir, { recursive: true, force: true })));
  made.clear();
});

process.once("exit", () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** A fresh temporary folder, removed after the test file finishes. */
export async function tempDir(prefix = "bge-test-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.add(dir);
  return dir;
}
