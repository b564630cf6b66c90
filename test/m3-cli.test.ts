import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { runBge, type BgeRun } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

let root: string;

async function ok(...args: string[]): Promise<BgeRun> {
  const r = await runBge(args);
  if (r.code !== 0) throw new Error(`bge ${args.join(" ")} → ${r.code}\n${r.stderr}`);
  return r;
}

beforeAll(async () => {
  root = await tempDir("bge-m3-cli-");
  await ok("fixture", join(root, "m3"), "--arch", "xlm-roberta", "--seed", "9", "-q");
}, 60_000);

describe("bge-m3's heads on the command line", () => {
  it("export --heads chooses the graph's heads; embed --output prints them from the artifact, exit 2 for one it lacks", async () => {
    const art = join(root, "art");
    const e = await ok("export", join(root, "m3"), "-o", art, "--precision", "fp32", "--heads", "dense,sparse", "--json");
    expect(JSON.parse(e.stdout).files.map((f: { path: string }) => f.path)).toContain("model.fp32.onnx");
    const r = await ok("embed", art, "hello <pad> 你好", "--output", "dense,sparse", "--json");
    const j = JSON.parse(r.stdout);
    expect(Object.keys(j)).toEqual(["dense", "sparse"]);
    expect(j.dense[0]).toHaveLength(32);
    expect(Object.keys(j.sparse[0]).every((k) => /^\d+$/.test(k) && !["0", "1", "2", "3"].includes(k))).toBe(true);
    // The reference on worker threads (the built CLI) agrees with the graph.
    const ref = JSON.parse((await ok("embed", join(root, "m3"), "hello <pad> 你好", "--output", "sparse,colbert", "--json")).stdout);
    expect(Object.keys(ref.sparse[0]).sort()).toEqual(Object.keys(j.sparse[0]).sort());
    for (const [id, w] of Object.entries(ref.sparse[0] as Record<string, number>)) expect(Math.abs(w - j.sparse[0][id])).toBeLessThan(1e-4);
    expect(ref.colbert[0].length).toBeGreaterThan(2);
    const no = await runBge(["embed", art, "hello", "--output", "colbert"]);
    expect(no.code).toBe(2);
    expect(no.stderr).toMatch(/has no colbert head \(it has: dense, sparse\)/);
    const bad = await runBge(["export", join(root, "m3"), "-o", join(root, "x"), "--heads", "dense,lexical"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--heads dense,lexical: name heads from dense, sparse, colbert/);
  });
});
