import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./helpers/paths.js";

/**
 * src/ reads bottom up as the pipeline (STYLE.md): a folder imports only from folders below it, so
 * the import graph has no arrow running back up a floor. Formats (artifacts/) sit low because every
 * stage reads and writes them; the trtexec driver sits below the runners that use it, and quantize
 * above the runners it calibrates with.
 */
const FLOORS = ["util", "artifacts", "hub", "checkpoint", "tokenize", "reference", "fixture", "onnx", "trt", "runners", "quantize", "parity", "convert", "bench", "commands", "cli"];
/** The command table (cli/) and the commands it maps onto share the top floor. */
const floorOf = (folder: string) => (folder === "cli" ? FLOORS.indexOf("commands") : FLOORS.indexOf(folder));

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) out.push(join(e.parentPath, e.name));
  }
  return out;
}

describe("layering", () => {
  it("no folder under src/ imports from a folder above it, and every folder has a floor", async () => {
    expect(floorOf("runners")).toBeLessThan(floorOf("parity"));
    const src = join(REPO_ROOT, "src");
    const upward: string[] = [];
    for (const file of await sources(src)) {
      const rel = file.slice(src.length + 1);
      if (!rel.includes("/")) continue; // errors.ts: the error family every floor uses
      const floor = rel.split("/")[0]!;
      expect(FLOORS, `${rel} lives in a folder without a floor`).toContain(floor);
      const text = await readFile(file, "utf8");
      for (const m of text.matchAll(/from "\.\.\/([a-z-]+)\//g)) {
        const target = m[1]!;
        expect(FLOORS, `${rel} imports from unknown folder ${target}`).toContain(target);
        if (floorOf(target) > floorOf(floor)) upward.push(`${rel} → ${target}/`);
      }
    }
    expect(upward).toEqual([]);
  });
});
