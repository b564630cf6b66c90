import { mkdir, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { downloadFileToCacheDir, scanCacheDir } from "@huggingface/hub";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { writeFixture } from "../src/fixture/write-fixture.js";
import { RepoCache } from "../src/hub/cache-layout.js";
import { downloadSnapshot, type DownloadSnapshotParams } from "../src/hub/download-snapshot.js";
import { createDownloadProgress } from "../src/hub/progress.js";
import { convertFixtureToBin } from "./helpers/convert-to-bin.js";
import { auditRepoCache, filesContaining, HubServer, servedFile, type ServedRepo, checkAndReset } from "./helpers/hub-server.js";
import { tempDir } from "./helpers/tmp.js";

const ID = "BAAI/bge-small-zh-v1.5";
const TOKEN = "hf_testSECRETtoken0123456789";

let root: string;
let server: HubServer;
let zh: ServedRepo;
let cacheN = 0;

/** A fresh, empty hub cache per test. */
function freshCache(): string {
  return join(root, `cache-${++cacheN}`);
}

function params(cacheDir: string, extra: Partial<DownloadSnapshotParams> = {}): DownloadSnapshotParams {
  // Fast backoff and short timeouts: the retry logic is the same, the test just does not wait.
  return { repo: ID, cacheDir, endpoint: server.url, backoffMs: 1, stallTimeoutMs: 400, apiTimeoutMs: 2000, ...extra };
}

function storageOf(cacheDir: string, repo = ID): string {
  return new RepoCache(cacheDir, repo).storage;
}

async function expectClean(cacheDir: string, repo = zh) {
  const audit = await auditRepoCache(storageOf(cacheDir, repo.id), repo);
  expect(audit.problems).toEqual([]);
  return audit;
}

async function failure(p: Promise<unknown>): Promise<{ exitCode: number; message: string; stack?: string }> {
  try {
    await p;
  } catch (err) {
    return err as { exitCode: number; message: string; stack?: string };
  }
  throw new Error("expected the download to fail");
}

const weightsOf = (repo: ServedRepo) => repo.files.get("model.safetensors")!;

beforeAll(async () => {
  root = await tempDir("bge-hub-");
  const fx = join(root, "fixture");
  await writeFixture({ dir: fx, shape: "tiny", seed: 3 });
  server = await HubServer.start();
  // Files a toolchain download must skip: a readme, the duplicate .bin weights, onnx/.
  zh = await server.addRepoFromDir(ID, fx, {
    files: { "README.md": "# model card\n", "pytorch_model.bin": Buffer.alloc(4096, 7), "onnx/model.onnx": Buffer.alloc(3000, 1), "onnx/tokenizer.json": "{}" },
    refs: ["v1.0"],
  });
});

afterAll(async () => {
  await server?.close();
});

afterEach(() => checkAndReset(server, (overflowed) => expect(overflowed).toBe(false)));

describe("hub download: cache layout and reuse", () => {
  it("fetches exactly the toolchain's files, verified, into the Hugging Face layout that @huggingface/hub's cache scan reads", async () => {
    const cache = freshCache();
    const snap = await downloadSnapshot(params(cache));
    expect(snap.commit).toBe(zh.commit);
    expect(snap.snapshotDir).toBe(join(cache, "models--BAAI--bge-small-zh-v1.5", "snapshots", zh.commit));
    const expected = [
      "1_Pooling/config.json",
      "config.json",
      "config_sentence_transformers.json",
      "model.safetensors",
      "modules.json",
      "sentence_bert_config.json",
      "special_tokens_map.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "vocab.txt",
    ];
    expect(snap.files.map((f) => f.path)).toEqual(expected);
    expect(server.fileGets().map((r) => r.file).sort()).toEqual([...expected, "model.safetensors"].sort()); // resolve 302 + CDN GET
    expect(snap.bytesTransferred).toBe(expected.reduce((s, p) => s + zh.files.get(p)!.content.length, 0));

    const audit = await expectClean(cache);
    expect([...audit.pointers.keys()].sort()).toEqual(expected);
    // LFS blobs are named by sha256, the rest by git blob sha1, as huggingface_hub names them.
    expect(audit.blobs).toContain(weightsOf(zh).sha256);
    expect(audit.blobs).toContain(zh.files.get("config.json")!.oid);
    expect(audit.partial).toEqual([]);
    expect(await readlink(join(snap.snapshotDir, "1_Pooling", "config.json"))).toBe(`../../../blobs/${zh.files.get("1_Pooling/config.json")!.oid}`);
    expect(await readFile(join(cache, "models--BAAI--bge-small-zh-v1.5", "refs", "main"), "utf8")).toBe(zh.commit);

    const scan = await scanCacheDir(cache);
    expect(scan.warnings).toEqual([]);
    expect(scan.repos).toHaveLength(1);
    const seen = scan.repos[0]!;
    expect(seen.id).toEqual({ name: ID, type: "model" });
    expect(seen.revisions.map((r) => [r.commitOid, r.refs])).toEqual([[zh.commit, ["main"]]]);
    // Its scan does not descend into snapshot subfolders, so 1_Pooling/config.json is not among them.
    const topLevel = expected.filter((p) => !p.includes("/"));
    expect(seen.revisions[0]!.files.map((f) => f.path.slice(snap.snapshotDir.length + 1)).sort()).toEqual(topLevel);
    expect(seen.filesCount).toBe(topLevel.length);
    expect(seen.size).toBe(topLevel.reduce((s, p) => s + zh.files.get(p)!.content.length, 0));
  });

  it("a second run transfers zero bytes: the server sees no file GET", async () => {
    const cache = freshCache();
    await downloadSnapshot(params(cache));
    server.resetLog();
    const again = await downloadSnapshot(params(cache));
    expect(again.bytesTransferred).toBe(0);
    expect(again.files.every((f) => f.cached)).toBe(true);
    expect(server.fileGets()).toEqual([]);
    expect(server.bytesSent()).toBe(0);
    expect(server.requests.map((r) => r.kind)).toEqual(["revision", "paths-info"]);
    // By commit sha there is not even a revision lookup.
    server.resetLog();
    await downloadSnapshot(params(cache, { revision: zh.commit }));
    expect(server.requests.map((r) => r.kind)).toEqual(["paths-info"]);
  });

  it("resolves a branch or tag to its commit first: one snapshot, refs for each name, no scattering", async () => {
    const cache = freshCache();
    await downloadSnapshot(params(cache, { revision: "main" }));
    await downloadSnapshot(params(cache, { revision: "v1.0" }));
    const storage = storageOf(cache);
    expect(await readdir(join(storage, "snapshots"))).toEqual([zh.commit]);
    expect(await readFile(join(storage, "refs", "v1.0"), "utf8")).toBe(zh.commit);
    // Every file GET named the commit, never the branch.
    expect(server.fileGets().filter((r) => r.kind === "resolve").every((r) => r.url.includes(`/resolve/${zh.commit}/`))).toBe(true);
  });

  it("reuses a cache written by @huggingface/hub's own downloadFileToCacheDir (the Python layout) without a file GET", async () => {
    const cache = freshCache();
    const debug = vi.spyOn(console, "debug").mockImplementation(() => undefined);
    try {
      for (const path of ["config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json", "vocab.txt"]) {
        await downloadFileToCacheDir({ repo: { type: "model", name: ID }, path, revision: zh.commit, cacheDir: cache, hubUrl: server.url });
      }
    } finally {
      debug.mockRestore();
    }
    await mkdir(join(storageOf(cache), "refs"), { recursive: true });
    await writeFile(join(storageOf(cache), "refs", "main"), zh.commit);
    server.resetLog();
    const snap = await downloadSnapshot(params(cache));
    const reused = snap.files.filter((f) => f.cached).map((f) => f.path);
    expect(reused.sort()).toEqual(["1_Pooling/config.json", "config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]);
    expect(server.fileGets().map((r) => r.file)).not.toContain("model.safetensors");
    expect(server.fileGets()).toHaveLength(10 - reused.length);
    await expectClean(cache);
  });

  it("takes pytorch_model.bin when the repo has no safetensors, and only the named shards of a sharded one", async () => {
    const binDir = join(root, "bin-fixture");
    await writeFixture({ dir: binDir, shape: "tiny", seed: 4 });
    await convertFixtureToBin(binDir);
    const binRepo = await server.addRepoFromDir("BAAI/bge-base-zh-v1.5", binDir);
    const cache = freshCache();
    const snap = await downloadSnapshot(params(cache, { repo: binRepo.id }));
    expect(snap.files.map((f) => f.path)).toContain("pytorch_model.bin");
    expect(snap.files.map((f) => f.path)).not.toContain("model.safetensors");
    await expectClean(cache, binRepo);

    const shardDir = join(root, "shard-fixture");
    await writeFixture({ dir: shardDir, shape: "tiny", seed: 5, shards: 3 });
    await writeFile(join(shardDir, "model-00009-of-00009.safetensors"), "not named by the index");
    const sharded = await server.addRepoFromDir("test/sharded", shardDir);
    const cache2 = freshCache();
    const snap2 = await downloadSnapshot(params(cache2, { repo: sharded.id }));
    const weights = snap2.files.map((f) => f.path).filter((p) => p.includes("safetensors"));
    expect(weights).toEqual([
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
      "model.safetensors.index.json",
    ]);
    await expectClean(cache2, sharded);
  });

  it("fetches onnx/ only with include onnx", async () => {
    const cache = freshCache();
    await downloadSnapshot(params(cache));
    expect(server.fileGets().some((r) => r.file?.startsWith("onnx/"))).toBe(false);
    server.resetLog();
    const snap = await downloadSnapshot(params(cache, { include: ["onnx"] }));
    expect(snap.files.filter((f) => !f.cached).map((f) => f.path).sort()).toEqual(["onnx/model.onnx", "onnx/tokenizer.json"]);
    expect(server.requests.some((r) => r.kind === "tree" && r.url.includes("/tree/" + zh.commit + "/onnx"))).toBe(true);
    await expectClean(cache);
  });
});

describe("hub download: every injected fault ends with correct files or a clear error", () => {
  const weights = "model.safetensors";

  it("a flipped byte fails the sha256 check; the file is fetched again from byte 0 and is correct", async () => {
    const cache = freshCache();
    server.fault(weights, { kind: "flip", at: 1000 });
    const snap = await downloadSnapshot(params(cache));
    const cdn = server.fileGets().filter((r) => r.kind === "cdn");
    expect(cdn).toHaveLength(2);
    expect(cdn[1]!.range).toBeUndefined(); // a mismatch discards everything: no resume
    expect(snap.files.find((f) => f.path === weights)!.bytesTransferred).toBe(2 * weightsOf(zh).content.length);
    await expectClean(cache);
  });

  it("a flipped byte in a small (git-sha1) file is caught too", async () => {
    const cache = freshCache();
    server.fault("config.json", { kind: "flip", at: 10 });
    await downloadSnapshot(params(cache));
    expect(server.fileGets().filter((r) => r.file === "config.json")).toHaveLength(2);
    await expectClean(cache);
  });

  it("bytes that never hash right: exit 4 naming the file, and nothing under its final name", async () => {
    const cache = freshCache();
    server.fault(weights, ...Array.from({ length: 5 }, () => ({ kind: "flip" as const })));
    const err = await failure(downloadSnapshot(params(cache, { attempts: 3 })));
    expect(err.exitCode).toBe(4);
    expect(err.message).toMatch(/^model\.safetensors: download failed after 3 attempts \(last: its sha256 [0-9a-f]{64} does not match the listing's [0-9a-f]{64}\)/);
    expect(err.message).toContain(weightsOf(zh).sha256);
    const audit = await expectClean(cache);
    expect(audit.blobs).not.toContain(weightsOf(zh).sha256);
    expect(audit.pointers.has(weights)).toBe(false);
    expect(audit.partial).toEqual([]); // the mismatching temp file was discarded
  });

  it("a connection reset mid-file resumes with Range from the last byte received", async () => {
    const cache = freshCache();
    const at = 100_000;
    server.fault(weights, { kind: "reset", at });
    const snap = await downloadSnapshot(params(cache));
    const cdn = server.fileGets().filter((r) => r.kind === "cdn");
    expect(cdn.map((r) => r.range)).toEqual([undefined, `bytes=${at}-`]);
    expect(cdn[1]!.status).toBe(206);
    // Nothing was sent twice.
    expect(cdn.reduce((s, r) => s + r.bytes, 0)).toBe(weightsOf(zh).content.length);
    expect(snap.files.find((f) => f.path === weights)!.bytesTransferred).toBe(weightsOf(zh).content.length);
    await expectClean(cache);
  });

  it("a truncated body (short Content-Length) is resumed, not accepted", async () => {
    const cache = freshCache();
    server.fault(weights, { kind: "truncate", at: 50_000 });
    await downloadSnapshot(params(cache));
    expect(server.fileGets().filter((r) => r.kind === "cdn").map((r) => r.range)).toEqual([undefined, "bytes=50000-"]);
    await expectClean(cache);
  });

  it("a server that ignores Range (200 on resume) makes it start over, and the result is still right", async () => {
    const cache = freshCache();
    server.fault(weights, { kind: "reset", at: 70_000 }, { kind: "ignore-range" });
    await downloadSnapshot(params(cache));
    expect(server.fileGets().filter((r) => r.kind === "cdn").map((r) => r.status)).toEqual([200, 200]);
    await expectClean(cache);
  });

  it("500s are retried with backoff; a hub that keeps failing is exit 4 naming the file", async () => {
    const cache = freshCache();
    server.fault("tokenizer.json", { kind: "status", status: 500 }, { kind: "status", status: 503 });
    await downloadSnapshot(params(cache));
    expect(server.fileGets().filter((r) => r.file === "tokenizer.json").map((r) => r.status)).toEqual([500, 503, 200]);
    await expectClean(cache);

    const cache2 = freshCache();
    server.fault("tokenizer.json", ...Array.from({ length: 3 }, () => ({ kind: "status" as const, status: 502 })));
    const err = await failure(downloadSnapshot(params(cache2, { attempts: 3 })));
    expect(err.exitCode).toBe(4);
    expect(err.message).toBe("tokenizer.json: download failed after 3 attempts (last: HTTP 502); nothing was written under its final name");
    const audit = await expectClean(cache2);
    expect(audit.pointers.has("tokenizer.json")).toBe(false);
  });

  it("a response that stalls past the timeout is abandoned and retried; a slow but steady one completes", async () => {
    const cache = freshCache();
    server.fault(weights, { kind: "delay", ms: 1500 });
    const started = Date.now();
    await downloadSnapshot(params(cache, { stallTimeoutMs: 300 }));
    expect(Date.now() - started).toBeLessThan(1400);
    expect(server.fileGets().filter((r) => r.kind === "cdn")).toHaveLength(2);
    await expectClean(cache);

    const cache2 = freshCache();
    server.resetLog();
    server.fault("tokenizer.json", { kind: "trickle", chunk: 4096, everyMs: 15 });
    const updates: number[] = [];
    const progress = { file: (p: string) => ({ update: (d: number) => p === "tokenizer.json" && updates.push(d), finish: () => undefined }), stop: () => undefined };
    await downloadSnapshot(params(cache2, { stallTimeoutMs: 300, progress }));
    expect(server.fileGets().filter((r) => r.file === "tokenizer.json")).toHaveLength(1);
    expect(updates.length).toBeGreaterThan(5);
    expect(updates.at(-1)).toBe(zh.files.get("tokenizer.json")!.content.length);
    await expectClean(cache2);
  });

  it("resumes a partial file left by an interrupted earlier run, and discards one whose bytes are wrong", async () => {
    const cache = freshCache();
    const storage = storageOf(cache);
    const w = weightsOf(zh);
    await mkdir(join(storage, "blobs"), { recursive: true });
    await writeFile(join(storage, "blobs", `${w.sha256}.incomplete`), w.content.subarray(0, 123_456));
    await downloadSnapshot(params(cache));
    const cdn = server.fileGets().filter((r) => r.kind === "cdn");
    expect(cdn.map((r) => r.range)).toEqual(["bytes=123456-"]);
    expect(cdn[0]!.bytes).toBe(w.content.length - 123_456);
    expect((await expectClean(cache)).partial).toEqual([]);

    const cache2 = freshCache();
    const storage2 = storageOf(cache2);
    await mkdir(join(storage2, "blobs"), { recursive: true });
    const bad = Buffer.from(w.content.subarray(0, 50_000));
    bad[10] = bad[10]! ^ 1;
    await writeFile(join(storage2, "blobs", `${w.sha256}.incomplete`), bad);
    server.resetLog();
    await downloadSnapshot(params(cache2));
    expect(server.fileGets().filter((r) => r.kind === "cdn").map((r) => r.range)).toEqual(["bytes=50000-", undefined]);
    await expectClean(cache2);
  });

  it("metadata 500s are retried; a dead endpoint is exit 3 unless the cache has the snapshot", async () => {
    const cache = freshCache();
    server.apiFault("revision", { kind: "status", status: 500 });
    server.apiFault("paths-info", { kind: "reset", at: 0 });
    await downloadSnapshot(params(cache));
    expect(server.requests.filter((r) => r.kind === "revision").length).toBe(2);
    expect(server.requests.filter((r) => r.kind === "paths-info").length).toBe(2);

    const dead = await HubServer.start();
    const deadUrl = dead.url;
    await dead.close();
    const err = await failure(downloadSnapshot(params(freshCache(), { endpoint: deadUrl, apiRetries: 1 })));
    expect(err.exitCode).toBe(3);
    expect(err.message).toMatch(/^cannot reach the hub at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED after 2 attempts\).*missing refs\/main/);

    const warned: string[] = [];
    const snap = await downloadSnapshot(params(cache, { endpoint: deadUrl, apiRetries: 0, log: { info: () => undefined, verbose: () => undefined, warn: (m) => warned.push(m) } }));
    expect(snap.offline).toBe(true);
    expect(snap.commit).toBe(zh.commit);
    expect(warned[0]).toMatch(/unreachable; using the cached snapshot/);
    const bySha = await downloadSnapshot(params(cache, { endpoint: deadUrl, revision: zh.commit, apiRetries: 0 }));
    expect(bySha.offline).toBe(true);
  });
});

describe("hub download: gates that must say no", () => {
  it("refuses a listing with ../, absolute or drive paths (exit 2), writing nothing outside the cache", async () => {
    for (const hostile of ["../x", "/etc/passwd", "1_Pooling/../../../escape.json", "C:/Windows/x", "a//b"]) {
      const cache = freshCache();
      server.listingHook = (entries) => [...entries, { type: "file", path: hostile, oid: "0".repeat(40), size: 1 }];
      const err = await failure(downloadSnapshot(params(cache)));
      expect(err.exitCode).toBe(2);
      expect(err.message).toContain(`names the file ${JSON.stringify(hostile)}`);
      expect(server.fileGets()).toEqual([]);
    }
    expect(await readdir(root)).not.toContain("x");
    expect(await readdir(root)).not.toContain("escape.json");
  });

  it("refuses a hostile onnx/ listing and a shard index that climbs out of the snapshot", async () => {
    server.listingHook = (entries, kind) => (kind === "tree" ? [...entries, { type: "file", path: "onnx/../../../evil.onnx", oid: "0".repeat(40), size: 1 }] : entries);
    const err = await failure(downloadSnapshot(params(freshCache(), { include: ["onnx"] })));
    expect(err.exitCode).toBe(2);
    expect(err.message).toContain('"onnx/../../../evil.onnx"');
    expect(err.message).toContain("climbs out of the snapshot");

    const shardDir = join(root, "evil-shards");
    await writeFixture({ dir: shardDir, shape: "tiny", shards: 2 });
    const index = JSON.parse(await readFile(join(shardDir, "model.safetensors.index.json"), "utf8"));
    index.weight_map["encoder.layer.0.output.dense.weight"] = "../../evil.safetensors";
    await writeFile(join(shardDir, "model.safetensors.index.json"), JSON.stringify(index));
    const evil = await server.addRepoFromDir("test/evil-shards", shardDir);
    const err2 = await failure(downloadSnapshot(params(freshCache(), { repo: evil.id })));
    expect(err2.exitCode).toBe(2);
    expect(err2.message).toContain('"../../evil.safetensors"');
  });

  it("refuses a cached snapshot entry that links outside the repo's cache folder", async () => {
    const cache = freshCache();
    await downloadSnapshot(params(cache));
    const outside = join(root, "planted.json");
    await writeFile(outside, "{}");
    const pointer = join(storageOf(cache), "snapshots", zh.commit, "config.json");
    await rm(pointer);
    await symlink(outside, pointer);
    const err = await failure(downloadSnapshot(params(cache)));
    expect(err.exitCode).toBe(2);
    expect(err.message).toContain("outside");
    const off = await failure(downloadSnapshot(params(cache, { offline: true })));
    expect(off.exitCode).toBe(2);
  });

  it("offline: an empty cache is exit 3 naming what is missing; a complete one needs no server at all", async () => {
    const cache = freshCache();
    const err = await failure(downloadSnapshot(params(cache, { offline: true })));
    expect(err.exitCode).toBe(3);
    expect(err.message).toBe(
      `offline (--offline or HF_HUB_OFFLINE): ${ID}@main is not complete in the cache ${cache}: missing refs/main (this revision was never downloaded); run bge download ${ID} with network access first`,
    );
    await downloadSnapshot(params(cache));
    server.resetLog();
    const snap = await downloadSnapshot(params(cache, { offline: true, endpoint: "http://127.0.0.1:9" }));
    expect(snap.snapshotDir).toBe(join(storageOf(cache), "snapshots", zh.commit));
    expect(server.requests).toEqual([]);
    await rm(join(snap.snapshotDir, "model.safetensors"));
    const err2 = await failure(downloadSnapshot(params(cache, { offline: true })));
    expect(err2.exitCode).toBe(3);
    expect(err2.message).toContain("missing weights (model.safetensors or model.safetensors.index.json or pytorch_model.bin)");
    const err3 = await failure(downloadSnapshot(params(cache, { offline: true, include: ["onnx"] })));
    expect(err3.message).toContain("onnx/model.onnx");
  });

  it("unknown repos and revisions are exit 2; malformed ids and revisions are refused before any request", async () => {
    const e1 = await failure(downloadSnapshot(params(freshCache(), { repo: "BAAI/no-such-model" })));
    expect(e1.exitCode).toBe(2);
    expect(e1.message).toBe(`BAAI/no-such-model is not a model on ${server.url} (the hub answered 401 RepoNotFound): check the id; a private model needs HF_TOKEN`);
    const e2 = await failure(downloadSnapshot(params(freshCache(), { revision: "no-such-branch" })));
    expect(e2.exitCode).toBe(2);
    expect(e2.message).toBe(`${ID} has no revision no-such-branch (the hub answered 404 RevisionNotFound)`);
    const e3 = await failure(downloadSnapshot(params(freshCache(), { revision: "f".repeat(40) })));
    expect(e3.message).toBe(`${ID} has no revision ${"f".repeat(40)} (the hub answered 404 RevisionNotFound)`);
    server.resetLog();
    for (const [repo, revision] of [["BAAI/../etc", undefined], ["BAAI", undefined], ["a/b/c", undefined], [ID, "../main"], [ID, "/abs"]] as const) {
      const e = await failure(downloadSnapshot(params(freshCache(), { repo, revision })));
      expect(e.exitCode).toBe(2);
    }
    expect(server.requests).toEqual([]);
  });
});

describe("hub download: the token", () => {
  it("is sent to the hub, never across the redirect to the CDN, never printed, never stored", async () => {
    server.requireToken = TOKEN;
    const anon = await failure(downloadSnapshot(params(freshCache())));
    expect(anon.exitCode).toBe(2);
    expect(anon.message).toContain("HF_TOKEN");

    server.resetLog();
    const cache = freshCache();
    await downloadSnapshot(params(cache, { token: TOKEN }));
    const hubSide = server.requests.filter((r) => r.kind !== "cdn");
    const cdnSide = server.requests.filter((r) => r.kind === "cdn");
    expect(hubSide.every((r) => r.authorization === `Bearer ${TOKEN}`)).toBe(true);
    expect(cdnSide).toHaveLength(1);
    expect(cdnSide[0]!.authorization).toBeUndefined();
    expect(await filesContaining(cache, TOKEN)).toEqual([]);
    expect(await filesContaining(cache, "testSECRET")).toEqual([]);
  });

  it("is redacted from an error message that carries it (a hub echoing the Authorization header in a 500)", async () => {
    server.requireToken = TOKEN;
    server.fault("config.json", ...Array.from({ length: 2 }, () => ({ kind: "status" as const, status: 500, echoAuth: true })));
    server.apiFault("revision", ...Array.from({ length: 2 }, () => ({ kind: "status" as const, status: 500, echoAuth: true })));
    const err = await failure(downloadSnapshot(params(freshCache(), { token: TOKEN, apiRetries: 1 })));
    expect(err.exitCode).toBe(4);
    expect(err.message).toContain(server.url);
    expect(err.message).toContain("upstream failed for Bearer ***");
    expect(err.message).not.toContain("SECRET");
    expect(err.stack ?? "").not.toContain("SECRET");
    const cache = freshCache();
    const err2 = await failure(downloadSnapshot(params(cache, { token: TOKEN, attempts: 2 })));
    expect(err2.message).not.toContain("SECRET");
    expect(await filesContaining(cache, "SECRET")).toEqual([]);
  });
});

describe("hub download: progress", () => {
  it("draws cli-progress bars (bytes, speed, ETA) on a TTY stream", async () => {
    let text = "";
    const tty = Object.assign(
      new Writable({
        write(chunk, _enc, cb) {
          text += String(chunk);
          cb();
        },
      }),
      { isTTY: true, columns: 120, rows: 40, cursorTo: () => true, moveCursor: () => true, clearLine: () => true, clearScreenDown: () => true },
    );
    const progress = createDownloadProgress({ mode: "bars", stream: tty });
    await downloadSnapshot(params(freshCache(), { progress }));
    expect(text).toMatch(/ model\.safetensors \|[█░]+\| 100% \| 339 kB \/ 339 kB \| [\d.]+ [kMG]?B\/s \| ETA /);
  });

  it("prints plain lines elsewhere", async () => {
    const lines: string[] = [];
    const details: string[] = [];
    const progress = createDownloadProgress({ mode: "lines", line: (m) => lines.push(m), detail: (m) => details.push(m) });
    const big = servedFile("model.safetensors", Buffer.alloc(9 * 1024 * 1024, 3));
    const files = new Map(zh.files);
    files.set("model.safetensors", big);
    server.addRepo("test/big", files);
    server.fault("model.safetensors", { kind: "trickle", chunk: 1024 * 1024, everyMs: 140 });
    await downloadSnapshot(params(freshCache(), { repo: "test/big", progress }));
    expect(lines.some((l) => /^model\.safetensors: [\d.]+ MB of 9\.4 MB \(\d+%, [\d.]+ [kM]B\/s, ETA \d+ s\)$/.test(l))).toBe(true);
    expect(lines.at(-1)).toMatch(/^fetched model\.safetensors \(9\.4 MB in [\d.]+ s\)$/);
    expect(details.filter((d) => /^fetched config\.json \(736 B in [\d.]+ s\)$/.test(d))).toHaveLength(1);
  });
});
