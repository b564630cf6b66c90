/**
 * `bge golden --reference flagmodel` drives the real FlagModel through pipelines/flagmodel_golden.py.
 * FlagEmbedding cannot be installed here, so these tests put a test double of its FlagModel API on
 * PYTHONPATH (test/python/FlagEmbedding) and check the glue: every setting passed explicitly, the
 * instruction on queries only, the output completed and validated, and exit 3 / 4 when Python or
 * FlagModel is missing or fails. Skipped where no python3 exists.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readGolden } from "../src/artifacts/golden.js";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

const HAVE_PYTHON = spawnSync("python3", ["--version"]).status === 0;
const DOUBLE = join(REPO_ROOT, "test", "python");

describe.skipIf(!HAVE_PYTHON)("bge golden --reference flagmodel (FlagModel test double)", () => {
  let root: string;
  let model: string;
  let passages: string;
  let queries: string;
  beforeAll(async () => {
    root = await tempDir("bge-flagmodel-");
    model = join(root, "tiny");
    expect((await runBge(["fixture", model, "-q"])).code).toBe(0);
    passages = join(root, "p.txt");
    queries = join(root, "q.txt");
    await writeFile(passages, "北京是首都\nHello World\n");
    await writeFile(queries, "首都在哪\n");
  });

  it("passes every setting explicitly and writes a valid golden with FlagModel's provenance", async () => {
    const log = join(root, "calls.jsonl");
    const out = join(root, "g.json");
    const r = await runBge(["golden", model, "--texts", passages, "--queries", queries, "-o", out, "--reference", "flagmodel", "-q"], {
      env: { PYTHONPATH: DOUBLE, FAKE_FLAGMODEL_LOG: log },
    });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const calls = (await readFile(log, "utf8")).trim().split("\n").map((l) => JSON.parse(l));
    expect(calls[0]).toEqual({ event: "init", model, pooling_method: "cls", normalize_embeddings: true, query_instruction_for_retrieval: "为这个句子生成表示以用于检索相关文章：", use_fp16: false });
    expect(calls[1]).toMatchObject({ event: "encode", sentences: ["北京是首都", "Hello World"], max_length: 512 });
    expect(calls[2]).toMatchObject({ event: "encode", sentences: ["为这个句子生成表示以用于检索相关文章：首都在哪"] });
    const g = await readGolden(out);
    expect(g.model.id).toBe("bge-fixture/bge-tiny-zh");
    expect(g.model.weights_sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(g.producer).toMatchObject({ name: "FlagEmbedding.FlagModel", version: "0.0-test-double", pooling: "cls", normalize: true, use_fp16: false, max_length: 512, device: "cpu" });
    expect(g.items.map((i) => [i.kind, i.text])).toEqual([["passage", "北京是首都"], ["passage", "Hello World"], ["query", "首都在哪"]]);
    // The query's ids include the instruction's 19 characters; the passage's do not.
    expect(g.items[2]!.input_ids.length).toBe(2 + 19 + 4);
    expect(g.items[0]!.input_ids.length).toBe(2 + 5);
    expect(g.items[0]!.embedding.length).toBe(32);
  });

  it("exits 4 with the command line and the log tail when FlagModel fails, writing nothing", async () => {
    const out = join(root, "fail.json");
    const r = await runBge(["golden", model, "--texts", passages, "-o", out, "--reference", "flagmodel"], { env: { PYTHONPATH: DOUBLE, FAKE_FLAGMODEL_FAIL: "1" } });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^bge: FlagModel golden failed \(exit 1\): python3 .*pipelines\/flagmodel_golden\.py /m);
    expect(r.stderr).toContain("RuntimeError: CUDA out of memory (test double)");
    expect(existsSync(out)).toBe(false);
  });

  it("exits 3 when FlagEmbedding or the interpreter is missing", async () => {
    const out = join(root, "missing.json");
    const noPkg = await runBge(["golden", model, "--texts", passages, "-o", out, "--reference", "flagmodel"], { env: { PYTHONPATH: "" } });
    expect(noPkg.code).toBe(3);
    expect(noPkg.stderr).toMatch(/FlagEmbedding is not installed for python3 \(pip install FlagEmbedding\)/);
    const noPython = await runBge(["golden", model, "--texts", passages, "-o", out, "--reference", "flagmodel"], { env: { BGE_PYTHON: "/nonexistent/python3" } });
    expect(noPython.code).toBe(3);
    expect(noPython.stderr).toMatch(/\/nonexistent\/python3 not found/);
    expect(existsSync(out)).toBe(false);
  });
});
if (!HAVE_PYTHON) {
  describe("bge golden --reference flagmodel", () => {
    it.skip("skipped: no python3 on this machine", () => {});
  });
}
