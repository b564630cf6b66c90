import type { Log } from "../util/log.js";
import { readFile, stat } from "node:fs/promises";
import { listFiles, modelInfo, pathsInfo } from "@huggingface/hub";
import { BgeError, ToolFailedError, ToolMissingError, UsageError } from "../errors.js";
import { RepoCache } from "./cache-layout.js";
import { downloadBlob } from "./download-blob.js";
import { HubClient, HubRequestError } from "./hub-client.js";
import { checkRepoId, checkRevision, COMMIT_SHA } from "./hub-id.js";
import { blobName, expectedContent, type ExpectedContent, type RepoFileEntry } from "./integrity.js";
import { createDownloadProgress, formatBytes, type DownloadProgress } from "./progress.js";
import { checkRepoFilePath } from "./repo-path.js";
import { chooseWeights, ONNX_FOLDER, REQUIRED_FILES, shardNames, TOOLCHAIN_FILES, WEIGHT_FILES } from "./select-files.js";

/** Where bge's words about a download go (an Output fits). */
export type HubLog = Log;

export type IncludeExtra = "onnx";

export interface DownloadSnapshotParams {
  /** ORG/NAME */
  repo: string;
  /** Branch, tag or commit sha. @default "main" */
  revision?: string;
  /** The hub cache folder (holding models--ORG--NAME). */
  cacheDir: string;
  endpoint: string;
  token?: string;
  /** Use the cache only; missing files are an error (exit 3) naming them. @default false */
  offline?: boolean;
  /** Also fetch the repo's onnx/ folder. @default [] */
  include?: readonly IncludeExtra[];
  progress?: DownloadProgress;
  log?: HubLog;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
  /** Metadata requests: retries after failures. @default 3 */
  apiRetries?: number;
  /** File transfers: failures in a row without progress. @default 5 */
  attempts?: number;
  /** First backoff delay, doubling. @default 500 */
  backoffMs?: number;
  /** @default 10000 */
  apiTimeoutMs?: number;
  /** @default 10000 */
  stallTimeoutMs?: number;
  /** Parallel file transfers. @default 4 */
  concurrency?: number;
}

export interface SnapshotFile {
  path: string;
  size: number;
  /** The blob's name in the cache: sha256 (LFS) or git blob sha1. */
  blob?: string;
  algorithm?: ExpectedContent["algorithm"];
  /** Already in the cache: no transfer. */
  cached: boolean;
  bytesTransferred: number;
}

export interface SnapshotResult {
  repo: string;
  revision: string;
  commit: string;
  /** `CACHE/models--ORG--NAME/snapshots/<commit>`: a checkpoint folder. */
  snapshotDir: string;
  cacheDir: string;
  files: SnapshotFile[];
  bytesTransferred: number;
  /** Resolved from the cache alone (offline, or the hub unreachable). */
  offline: boolean;
}

const silent: HubLog = { info: () => undefined, verbose: () => undefined, warn: () => undefined };

/**
 * Fetches what the toolchain needs from a hub model into the Hugging Face cache and returns the
 * snapshot folder. The revision is resolved to a commit sha first, so files of one call never
 * scatter across snapshots; each file is verified against the listing's hash before it gets its
 * final name; files already in the cache are not transferred again.
 */
export async function downloadSnapshot(params: DownloadSnapshotParams): Promise<SnapshotResult> {
  const client = new HubClient({
    endpoint: params.endpoint,
    token: params.token,
    fetch: params.fetch,
    retries: params.apiRetries,
    backoffMs: params.backoffMs,
    timeoutMs: params.apiTimeoutMs,
    onRetry: (m) => (params.log ?? silent).verbose(`retrying ${m}`),
  });
  try {
    return await download(params, client);
  } catch (err) {
    // Whatever went wrong, the token never leaves in a message.
    if (err instanceof Error) {
      err.message = client.redact(err.message);
      if (err.stack) err.stack = client.redact(err.stack);
    }
    throw err;
  }
}

async function download(params: DownloadSnapshotParams, client: HubClient): Promise<SnapshotResult> {
  const repo = checkRepoId(params.repo);
  const revision = checkRevision(params.revision ?? "main");
  const include = new Set(params.include ?? []);
  const log = params.log ?? silent;
  const cache = new RepoCache(params.cacheDir, repo);
  const label = `${repo}@${revision}`;

  if (params.offline) {
    const found = await cachedSnapshot(cache, revision, include);
    if ("missing" in found) {
      throw new ToolMissingError(
        `offline (--offline or HF_HUB_OFFLINE): ${label} is not complete in the cache ${params.cacheDir}: missing ${found.missing.join(", ")}; run bge download ${repo}${revision === "main" ? "" : ` --revision ${revision}`} with network access first`,
      );
    }
    log.verbose(`offline: ${label} is commit ${found.commit} in ${found.snapshotDir}`);
    return { repo, revision, ...found, cacheDir: params.cacheDir, bytesTransferred: 0, offline: true };
  }

  const hub: HubCall = { repo: { type: "model", name: repo }, hubUrl: client.endpoint, fetch: client.libraryFetch, hasToken: Boolean(params.token) };
  let commit: string;
  let entries: Map<string, RepoFileEntry>;
  try {
    commit = COMMIT_SHA.test(revision) ? revision : await resolveCommit(repo, revision, hub);
    entries = await listWanted(repo, commit, include, hub, log);
  } catch (err) {
    if (!(err instanceof ToolMissingError)) throw err;
    // Unreachable hub: a complete cached snapshot of that revision still serves, as in huggingface_hub.
    const found = await cachedSnapshot(cache, revision, include);
    if ("missing" in found) throw new ToolMissingError(`${err.message}; the cache has no complete copy of ${label} (missing ${found.missing.join(", ")})`);
    log.warn(`the hub at ${client.endpoint} is unreachable; using the cached snapshot ${found.commit} of ${label}`);
    log.verbose(err.message);
    return { repo, revision, ...found, cacheDir: params.cacheDir, bytesTransferred: 0, offline: true };
  }

  const present = new Set(entries.keys());
  if (!present.has("config.json")) throw new UsageError(`${label} (commit ${commit}) has no config.json: not a transformers checkpoint bge can use`);
  if (!present.has("tokenizer.json")) log.warn(`${label} has no tokenizer.json; bge's tokenizer needs it`);
  const weights = chooseWeights(present);
  if (!weights) throw new UsageError(`${label} (commit ${commit}) has none of ${WEIGHT_FILES.join(", ")}: no weights bge can read`);
  for (const w of WEIGHT_FILES) if (w !== weights) entries.delete(w);

  await cache.prepare(commit);
  const progress = params.progress ?? createDownloadProgress({ mode: "none" });
  const results: SnapshotFile[] = [];
  try {
    const fetcher = new SnapshotFetcher(params, client, cache, commit, repo, progress, log);
    const first = [...entries.values()];
    const toFetch = await fetcher.plan(first);
    if (toFetch.bytes > 0) log.info(`${label} is commit ${commit}: fetching ${toFetch.count} file(s), ${formatBytes(toFetch.bytes)}${toFetch.cachedCount ? `; ${toFetch.cachedCount} already in the cache` : ""}`);
    else log.verbose(`${label} is commit ${commit}: all ${first.length} files already in the cache`);
    results.push(...(await fetcher.fetchAll(first)));
    if (weights === "model.safetensors.index.json") {
      const indexPath = cache.pointerPath(commit, weights);
      const shards = shardNames(await readFile(indexPath, "utf8"), `${label} ${weights}`);
      const shardEntries = await pathsInfoEntries(hub, commit, shards);
      const missing = shards.filter((s) => !shardEntries.has(s));
      if (missing.length) throw new UsageError(`${label} ${weights} names ${missing.join(", ")}, which the repository lacks`);
      const list = [...shardEntries.values()];
      const plan = await fetcher.plan(list);
      if (plan.bytes > 0) log.info(`fetching ${plan.count} weight shard(s), ${formatBytes(plan.bytes)}`);
      results.push(...(await fetcher.fetchAll(list)));
    }
  } finally {
    progress.stop();
  }
  if (revision !== commit) await cache.writeRef(revision, commit);
  const bytesTransferred = results.reduce((s, f) => s + f.bytesTransferred, 0);
  results.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { repo, revision, commit, snapshotDir: cache.snapshotDir(commit), cacheDir: params.cacheDir, files: results, bytesTransferred, offline: false };
}

interface HubCall {
  repo: { type: "model"; name: string };
  hubUrl: string;
  fetch: typeof fetch;
  hasToken: boolean;
}

/** What @huggingface/hub's functions take: no token (our fetch adds it for the endpoint's origin only). */
function libraryArgs(hub: HubCall) {
  return { repo: hub.repo, hubUrl: hub.hubUrl, fetch: hub.fetch };
}

async function resolveCommit(repo: string, revision: string, hub: HubCall): Promise<string> {
  let sha: unknown;
  try {
    sha = (await modelInfo({ name: repo, revision, additionalFields: ["sha"], hubUrl: hub.hubUrl, fetch: hub.fetch })).sha;
  } catch (err) {
    throw explainRefusal(libraryError(err, `resolving ${repo}@${revision}`), repo, revision, hub.hubUrl, hub.hasToken);
  }
  if (typeof sha !== "string" || !COMMIT_SHA.test(sha)) {
    throw new ToolFailedError(`the hub gave no commit sha for ${repo}@${revision} (got ${JSON.stringify(sha)})`);
  }
  return sha;
}

/** Errors from inside @huggingface/hub: ours pass through; anything else is an unreadable hub answer (exit 4). */
function libraryError(err: unknown, what: string): BgeError {
  if (err instanceof BgeError) return err;
  return new ToolFailedError(`${what}: the hub's answer could not be read (${(err as Error)?.message ?? String(err)})`);
}

/** The hub's 4xx answers about a repo or revision, said in the user's terms (exit 2). */
function explainRefusal(err: BgeError, repo: string, revision: string, endpoint: string, hasToken: boolean): BgeError {
  if (!(err instanceof HubRequestError)) return err;
  const answered = `the hub answered ${err.status}${err.code ? ` ${err.code}` : ""}`;
  if (err.code === "RevisionNotFound") return new HubRequestError(`${repo} has no revision ${revision} (${answered})`, err.status, err.code);
  if (err.code === "GatedRepo" || err.status === 403) {
    return new HubRequestError(`${repo} is gated or private (${answered}): accept its conditions on the hub and set HF_TOKEN to a token with access`, err.status, err.code);
  }
  if (err.code === "RepoNotFound" || err.status === 401 || err.status === 404) {
    const token = hasToken ? "; HF_TOKEN is set: check that it is valid and has access" : "; a private model needs HF_TOKEN";
    return new HubRequestError(`${repo} is not a model on ${endpoint} (${answered}): check the id${token}`, err.status, err.code);
  }
  return err;
}

function asEntry(item: { path: unknown; type?: unknown; size?: unknown; oid?: unknown; lfs?: unknown }, where: string): RepoFileEntry {
  const path = checkRepoFilePath(item.path, where);
  const lfs = item.lfs as { oid?: unknown; size?: unknown } | undefined;
  return {
    path,
    type: String(item.type ?? "file"),
    size: Number(item.size),
    oid: typeof item.oid === "string" ? item.oid : undefined,
    lfs: lfs && typeof lfs.oid === "string" ? { oid: lfs.oid, size: Number(lfs.size) } : undefined,
  };
}

async function pathsInfoEntries(hub: HubCall, commit: string, paths: string[]): Promise<Map<string, RepoFileEntry>> {
  let infos: Awaited<ReturnType<typeof pathsInfo>>;
  try {
    infos = await pathsInfo({ ...libraryArgs(hub), paths, revision: commit });
  } catch (err) {
    throw explainRefusal(libraryError(err, `listing files of ${hub.repo.name}@${commit}`), hub.repo.name, commit, hub.hubUrl, hub.hasToken);
  }
  const wanted = new Set(paths);
  const out = new Map<string, RepoFileEntry>();
  for (const info of infos) {
    // Every name is checked, asked for or not: a server that answers with ../x is not trusted.
    const entry = asEntry(info, `the hub's file list for ${hub.repo.name}@${commit}`);
    if (entry.type === "file" && wanted.has(entry.path)) out.set(entry.path, entry);
  }
  return out;
}

async function listWanted(repo: string, commit: string, include: Set<string>, hub: HubCall, log: HubLog): Promise<Map<string, RepoFileEntry>> {
  const entries = await pathsInfoEntries(hub, commit, [...TOOLCHAIN_FILES, ...WEIGHT_FILES]);
  if (include.has("onnx")) {
    let found = 0;
    try {
      for await (const item of listFiles({ ...libraryArgs(hub), path: ONNX_FOLDER, recursive: true, revision: commit })) {
        const entry = asEntry(item, `the hub's ${ONNX_FOLDER}/ listing for ${repo}@${commit}`);
        if (!entry.path.startsWith(`${ONNX_FOLDER}/`)) throw new UsageError(`the hub's ${ONNX_FOLDER}/ listing for ${repo} names ${JSON.stringify(entry.path)}, outside ${ONNX_FOLDER}/`);
        if (entry.type !== "file") continue;
        entries.set(entry.path, entry);
        found++;
      }
    } catch (err) {
      if (!(err instanceof HubRequestError && err.status === 404)) throw libraryError(err, `listing ${repo}/${ONNX_FOLDER}`);
    }
    if (!found) log.warn(`${repo}@${commit} has no ${ONNX_FOLDER}/ folder`);
  }
  return entries;
}

/** Moves files from the hub into the cache, several at a time, each blob once. */
class SnapshotFetcher {
  private readonly inFlight = new Map<string, Promise<number>>();
  private readonly expected = new Map<string, ExpectedContent>();

  constructor(
    private readonly params: DownloadSnapshotParams,
    private readonly client: HubClient,
    private readonly cache: RepoCache,
    private readonly commit: string,
    private readonly repo: string,
    private readonly progress: DownloadProgress,
    private readonly log: HubLog,
  ) {}

  private expect(entry: RepoFileEntry): ExpectedContent {
    let e = this.expected.get(entry.path);
    if (!e) this.expected.set(entry.path, (e = expectedContent(entry)));
    return e;
  }

  private async isCached(entry: RepoFileEntry): Promise<boolean> {
    const e = this.expect(entry);
    return (await this.cache.inspect(this.commit, entry.path, { size: e.size, blob: blobName(e) })) === "ok";
  }

  /** How much is not in the cache yet. */
  async plan(entries: RepoFileEntry[]): Promise<{ count: number; bytes: number; cachedCount: number }> {
    let count = 0;
    let bytes = 0;
    const blobs = new Set<string>();
    for (const entry of entries) {
      const e = this.expect(entry);
      if (await this.isCached(entry)) continue;
      if ((await this.cache.blobSize(blobName(e))) === e.size || blobs.has(blobName(e))) continue;
      blobs.add(blobName(e));
      count++;
      bytes += e.size;
    }
    return { count, bytes, cachedCount: entries.length - count };
  }

  async fetchAll(entries: RepoFileEntry[]): Promise<SnapshotFile[]> {
    const queue = [...entries].sort((a, b) => this.expect(b).size - this.expect(a).size);
    const out: SnapshotFile[] = [];
    let failed = false;
    const workers = Array.from({ length: Math.max(1, Math.min(this.params.concurrency ?? 4, queue.length)) }, async () => {
      for (let entry = queue.shift(); entry && !failed; entry = queue.shift()) {
        try {
          out.push(await this.fetchOne(entry));
        } catch (err) {
          failed = true;
          throw err;
        }
      }
    });
    // On a failure the other transfers finish (or fail) before it is reported: nothing keeps writing after we return.
    const settled = await Promise.allSettled(workers);
    const rejected = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (rejected) throw rejected.reason;
    return out;
  }

  private async fetchOne(entry: RepoFileEntry): Promise<SnapshotFile> {
    const e = this.expect(entry);
    const blob = blobName(e);
    const base = { path: entry.path, size: e.size, blob, algorithm: e.algorithm };
    if (await this.isCached(entry)) return { ...base, cached: true, bytesTransferred: 0 };
    let transferred = 0;
    if ((await this.cache.blobSize(blob)) !== e.size) {
      let pending = this.inFlight.get(blob);
      if (!pending) {
        pending = this.transfer(entry, e, blob);
        this.inFlight.set(blob, pending);
        transferred = await pending;
      } else {
        await pending;
      }
    }
    await this.cache.link(this.commit, entry.path, blob);
    return { ...base, cached: transferred === 0, bytesTransferred: transferred };
  }

  private async transfer(entry: RepoFileEntry, e: ExpectedContent, blob: string): Promise<number> {
    const url = `${this.client.endpoint}/${this.repo}/resolve/${this.commit}/${entry.path.split("/").map(encodeURIComponent).join("/")}`;
    const result = await downloadBlob({
      client: this.client,
      url,
      path: entry.path,
      expected: e,
      blobPath: this.cache.blobPath(blob),
      progress: this.progress.file(entry.path, e.size),
      attempts: this.params.attempts,
      stallTimeoutMs: this.params.stallTimeoutMs,
      onRetry: (m) => this.log.verbose(`retrying ${m}`),
    });
    if (result.resumedFrom > 0) this.log.verbose(`${entry.path}: resumed an earlier partial download at byte ${result.resumedFrom}`);
    return result.bytesTransferred;
  }
}

interface CachedFound {
  commit: string;
  snapshotDir: string;
  files: SnapshotFile[];
}

/**
 * A snapshot from the cache alone: the commit from the revision (a sha, or refs/<branch>), then the
 * files bge needs — config.json, tokenizer.json, the weights (all shards of an index) and onnx/ when
 * asked. Returns what is missing when it is not complete.
 */
export async function cachedSnapshot(cache: RepoCache, revision: string, include: Set<string>): Promise<CachedFound | { missing: string[] }> {
  const commit = COMMIT_SHA.test(revision) ? revision : await cache.readRef(revision);
  if (!commit) return { missing: [`refs/${revision} (this revision was never downloaded)`] };
  const snapshotDir = cache.snapshotDir(commit);
  if (!(await stat(snapshotDir).then((s) => s.isDirectory(), () => false))) return { missing: [`snapshots/${commit}`] };
  const missing: string[] = [];
  const files: SnapshotFile[] = [];
  const has = async (path: string) => (await cache.inspect(commit, path)) === "ok";
  const add = async (path: string) => files.push({ path, size: (await stat(cache.pointerPath(commit, path))).size, cached: true, bytesTransferred: 0 });
  for (const path of TOOLCHAIN_FILES) {
    if (await has(path)) await add(path);
    else if ((REQUIRED_FILES as readonly string[]).includes(path)) missing.push(path);
  }
  const present = new Set<string>();
  for (const w of WEIGHT_FILES) if (await has(w)) present.add(w);
  const weights = chooseWeights(present);
  if (!weights) missing.push(`weights (${WEIGHT_FILES.join(" or ")})`);
  else {
    await add(weights);
    if (weights === "model.safetensors.index.json") {
      const shards = shardNames(await readFile(cache.pointerPath(commit, weights), "utf8"), `${cache.repo} ${weights} in the cache`);
      for (const s of shards) {
        if (await has(s)) await add(s);
        else missing.push(s);
      }
    }
  }
  if (include.has("onnx")) {
    if (await has(`${ONNX_FOLDER}/model.onnx`)) await add(`${ONNX_FOLDER}/model.onnx`);
    else missing.push(`${ONNX_FOLDER}/model.onnx`);
  }
  return missing.length ? { missing } : { commit, snapshotDir, files };
}
