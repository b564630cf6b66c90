import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { scanCacheDir } from "@huggingface/hub";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { readGolden } from "../src/artifacts/golden.js";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { filesContaining, HubServer, type ServedRepo, checkAndReset } from "./helpers/hub-server.js";
import { runBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

/**
 * The built CLI as users run it, against the hub imitation on 127.0.0.1: HF_ENDPOINT and HF_HOME
 * point at the test server and a temporary cache, so no command reaches the network or the user's
 * own cache. The served model is a bge-small-zh-v1.5-shaped fixture (95.8 MB of weights).
 */

const ID = "BAAI/bge-small-zh-v1.5";
const TOKEN = "hf_cliSECRETtoken9876543210";

let root: string;
let fixtureDir: string;
let server: HubServer;
let zh: ServedRepo;
let hfHome: string;
let homes = 0;

/** Environment for one run: this test's hub and cache, and nothing of the caller's HF_* settings. */
function hubEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { HF_ENDPOINT: server.url, HF_HOME: home, HF_HUB_CACHE: "", HUGGINGFACE_HUB_CACHE: "", HF_TOKEN: "", HF_HUB_OFFLINE: "", ...extra };
}

const newHome = () => join(root, `hf-home-${++homes}`);

beforeAll(async () => {
  root = await tempDir("bge-hub-cli-");
  fixtureDir = join(root, "fixture");
  await writeFixture({ dir: fixtureDir, shape: "bge-small-zh-v1.5", seed: 1 });
  server = await HubServer.start();
  zh = await server.addRepoFromDir(ID, fixtureDir, { files: { "README.md": "# card\n", "onnx/model.onnx": Buffer.alloc(2048, 9) } });
  hfHome = newHome();
  const first = await runBge(["download", ID], { env: hubEnv(hfHome) });
  if (first.code !== 0) throw new Error(`first download failed: ${first.stderr}`);
});

afterAll(async () => {
  await server?.close();
});

afterEach(() => checkAndReset(server, (overflowed) => expect(overflowed).toBe(false)));

describe("bge download (built CLI, local hub)", () => {
  it("printed the snapshot folder, which @huggingface/hub's cache scan sees; a second run transfers zero bytes", async () => {
    const snapshot = join(hfHome, "hub", "models--BAAI--bge-small-zh-v1.5", "snapshots", zh.commit);
    const scan = await scanCacheDir(join(hfHome, "hub"));
    expect(scan.warnings).toEqual([]);
    expect(scan.repos.map((r) => [r.id.name, r.revisions.map((v) => [v.commitOid, v.refs, v.path])])).toEqual([[ID, [[zh.commit, ["main"], snapshot]]]]);
    expect(scan.repos[0]!.size).toBeGreaterThan(95_000_000);

    server.resetLog();
    const again = await runBge(["download", ID, "--json"], { env: hubEnv(hfHome) });
    expect(again.code).toBe(0);
    const result = JSON.parse(again.stdout);
    expect(result).toMatchObject({ snapshot, repo: ID, revision: "main", commit: zh.commit, bytes_transferred: 0, offline: false });
    expect(result.files).toHaveLength(10);
    expect(result.files.every((f: { cached: boolean }) => f.cached)).toBe(true);
    expect(result.files.find((f: { path: string }) => f.path === "model.safetensors")).toMatchObject({ algorithm: "sha256", blob: zh.files.get("model.safetensors")!.sha256 });
    expect(server.fileGets()).toEqual([]);
    expect(server.bytesSent()).toBe(0);
  });

  it("prints plain progress lines on a non-TTY stderr, and only the folder on stdout", async () => {
    const home = newHome();
    const r = await runBge(["download", ID, "--revision", "main"], { env: hubEnv(home) });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(join(home, "hub", "models--BAAI--bge-small-zh-v1.5", "snapshots", zh.commit) + "\n");
    expect(r.stderr).toContain(`${ID}@main is commit ${zh.commit}: fetching 10 file(s), 96.3 MB`);
    expect(r.stderr).toMatch(/^fetched model\.safetensors \(95\.8 MB in [\d.]+ s\)$/m);
    expect(r.stderr).toMatch(new RegExp(`transferred 96\\.3 MB in 10 file\\(s\\) in [\\d.]+ s$`, "m"));
    expect(server.fileGets().some((g) => g.file === "README.md" || g.file?.startsWith("onnx/"))).toBe(false);
    const quiet = await runBge(["download", ID, "--quiet", "--include", "onnx"], { env: hubEnv(home) });
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).toBe("");
    expect(await readdir(join(quiet.stdout.trim(), "onnx"))).toEqual(["model.onnx"]);
  });

  it("--cache-dir and --endpoint override HF_HOME and HF_ENDPOINT", async () => {
    const cacheDir = join(root, "explicit-cache");
    const r = await runBge(["download", ID, "--cache-dir", cacheDir, "--endpoint", server.url], { env: hubEnv(newHome(), { HF_ENDPOINT: "http://127.0.0.1:9" }) });
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(join(cacheDir, "models--BAAI--bge-small-zh-v1.5", "snapshots", zh.commit));
  });
});

describe("every <model> command accepts the hub id", () => {
  it("tokenize and embed give exactly what they give on the local folder, reusing the cache (no file GET)", async () => {
    server.resetLog();
    const viaHub = await runBge(["tokenize", ID, "你好", "hello"], { env: hubEnv(hfHome) });
    expect(viaHub.code).toBe(0);
    const local = await runBge(["tokenize", fixtureDir, "你好", "hello"]);
    expect(viaHub.stdout).toBe(local.stdout);
    const embedHub = await runBge(["embed", ID, "北京", "--json"], { env: hubEnv(hfHome) });
    expect(embedHub.code).toBe(0);
    const embedLocal = await runBge(["embed", fixtureDir, "北京", "--json"]);
    expect(JSON.parse(embedHub.stdout).embeddings).toEqual(JSON.parse(embedLocal.stdout).embeddings);
    expect(JSON.parse(embedHub.stdout).embeddings[0]).toHaveLength(512);
    expect(server.fileGets()).toEqual([]);
  });

  it("golden and export record the hub id and the commit sha; a fresh cache is filled on the way", async () => {
    const home = newHome();
    const texts = join(root, "texts.txt");
    await writeFile(texts, "北京是中国的首都。\nhello world\n");
    const g = join(root, "g.json");
    const golden = await runBge(["golden", ID, "--texts", texts, "-o", g, "--quiet"], { env: hubEnv(home) });
    expect(golden.code).toBe(0);
    expect(golden.stderr).toBe("");
    const parsed = await readGolden(g);
    expect(parsed.model.id).toBe(ID);
    expect(parsed.model.revision).toBe(zh.commit);
    expect(server.fileGets().filter((r) => r.kind === "cdn").map((r) => r.file)).toEqual(["model.safetensors"]);

    server.resetLog();
    const out = join(root, "artifact");
    const exp = await runBge(["export", `${ID}@${zh.commit}`, "-o", out, "--precision", "fp32"], { env: hubEnv(home) });
    expect(exp.code).toBe(0);
    expect(server.fileGets()).toEqual([]);
    const manifest = JSON.parse(await readFile(join(out, "manifest.json"), "utf8"));
    expect(JSON.stringify(manifest)).toContain(ID);
    expect(JSON.stringify(manifest)).toContain(zh.commit);
    expect(manifest.source).toMatchObject({ model_id: ID, revision: zh.commit });
    const viaArtifact = await runBge(["embed", out, "北京", "--json"]);
    const viaHub = await runBge(["embed", ID, "北京", "--json"], { env: hubEnv(home) });
    const a = JSON.parse(viaArtifact.stdout).embeddings[0] as number[];
    const b = JSON.parse(viaHub.stdout).embeddings[0] as number[];
    expect(a.reduce((s, x, i) => s + x * b[i]!, 0)).toBeGreaterThan(0.99999);
  });

  it("offline: a hub id runs from the cache with no request at all, and an uncached one is exit 3 naming what is missing", async () => {
    server.resetLog();
    const ok = await runBge(["tokenize", ID, "你好"], { env: hubEnv(hfHome, { HF_HUB_OFFLINE: "1", HF_ENDPOINT: "http://127.0.0.1:9" }) });
    expect(ok.code).toBe(0);
    expect(server.requests).toEqual([]);
    const home = newHome();
    const miss = await runBge(["embed", ID, "你好"], { env: hubEnv(home, { HF_HUB_OFFLINE: "1" }) });
    expect(miss.code).toBe(3);
    expect(miss.stderr).toBe(
      `bge: offline (--offline or HF_HUB_OFFLINE): ${ID}@main is not complete in the cache ${join(home, "hub")}: missing refs/main (this revision was never downloaded); run bge download ${ID} with network access first\n`,
    );
    const flag = await runBge(["download", ID, "--offline"], { env: hubEnv(home) });
    expect(flag.code).toBe(3);
    expect(server.requests).toEqual([]);
  });
});

describe("the CLI's gates and exit codes", () => {
  it("bad ids are exit 2 with one line; a local folder always wins over a hub id", async () => {
    const bad = await runBge(["download", "BAAI/bge--x"], { env: hubEnv(newHome()) });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^bge: "BAAI\/bge--x" is not a hub model id: use ORG\/NAME[^\n]*\n$/);
    const two = await runBge(["download", `${ID}@main`, "--revision", "v2"], { env: hubEnv(newHome()) });
    expect(two.code).toBe(2);
    expect(two.stderr).toContain("give one");
    const nofolder = await runBge(["tokenize", "./no/such/dir", "x"], { env: hubEnv(newHome()) });
    expect(nofolder.code).toBe(2);
    expect(nofolder.stderr).toContain("no such checkpoint folder");
    const unknown = await runBge(["tokenize", "BAAI/no-such-model", "x"], { env: hubEnv(newHome()) });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe(`bge: BAAI/no-such-model is not a model on ${server.url} (the hub answered 401 RepoNotFound): check the id; a private model needs HF_TOKEN\n`);
    // A folder that happens to be named like a hub id is used as a folder, without asking the hub.
    server.resetLog();
    const shadow = await runBge(["tokenize", "fixture", "你好"], { cwd: root, env: hubEnv(newHome()) });
    expect(shadow.code).toBe(0);
    expect(server.requests).toEqual([]);
  });

  it("a hostile file list is exit 2 with one line, and nothing is fetched", async () => {
    server.listingHook = (entries) => [...entries, { type: "file", path: "../../.bashrc", oid: "1".repeat(40), size: 10 }];
    const r = await runBge(["download", ID], { env: hubEnv(newHome()) });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(`names the file "../../.bashrc", which climbs out of the snapshot with '..'`);
    expect(server.fileGets()).toEqual([]);
  });

  it("HF_TOKEN is used and never printed, even by --verbose or in an error that carries it", async () => {
    server.requireToken = TOKEN;
    const home = newHome();
    const r = await runBge(["download", ID, "--verbose", "--json"], { env: hubEnv(home, { HF_TOKEN: TOKEN }) });
    expect(r.code).toBe(0);
    expect(server.requests.filter((q) => q.kind !== "cdn").every((q) => q.authorization === `Bearer ${TOKEN}`)).toBe(true);
    expect(server.requests.filter((q) => q.kind === "cdn").every((q) => q.authorization === undefined)).toBe(true);
    expect(r.stdout + r.stderr).not.toContain("SECRET");
    expect(await filesContaining(home, "SECRET")).toEqual([]);

    server.apiFault("revision", ...Array.from({ length: 4 }, () => ({ kind: "status" as const, status: 500, echoAuth: true })));
    const err = await runBge(["download", ID], { env: hubEnv(newHome(), { HF_TOKEN: TOKEN }) });
    expect(err.code).toBe(4);
    expect(err.stderr).toContain(`for ${server.url}/api/models/${ID}/revision/main`);
    expect(err.stderr).toContain("upstream failed for Bearer ***");
    expect(err.stderr).not.toContain("SECRET");

    const wrong = await runBge(["download", ID], { env: hubEnv(newHome(), { HF_TOKEN: "hf_wrongSECRET000" }) });
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toBe(`bge: ${ID} is not a model on ${server.url} (the hub answered 401 RepoNotFound): check the id; HF_TOKEN is set: check that it is valid and has access\n`);
    expect(wrong.stderr).not.toContain("SECRET");
  }, 30_000);
});
