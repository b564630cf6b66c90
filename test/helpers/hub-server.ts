import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { lstat, readdir, readFile, readlink, realpath } from "node:fs/promises";
import { join, relative, sep } from "node:path";

/**
 * A Hugging Face hub imitation on 127.0.0.1 for tests: the endpoints @huggingface/hub and
 * huggingface_hub call (revision, tree, paths-info, resolve with Range), LFS files redirected to a
 * second "CDN" origin, and faults injected per file. Every request is recorded; past `maxRequests`
 * it answers 503 so that no client loop can run away.
 */

export interface ServedFile {
  path: string;
  content: Buffer;
  lfs: boolean;
  /** Git blob sha1: of the content, or of the LFS pointer file for LFS files (as the hub lists them). */
  oid: string;
  sha256: string;
}

export interface ServedRepo {
  id: string;
  commit: string;
  refs: Map<string, string>;
  files: Map<string, ServedFile>;
}

export type Fault =
  /** Answer with this status (and a JSON error body). `echoAuth` puts the request's Authorization header in the body. */
  | { kind: "status"; status: number; echoAuth?: boolean }
  /** Send only the first `at` bytes of the body, with a Content-Length that says so. */
  | { kind: "truncate"; at: number }
  /** Send `at` bytes of a full-length body, then destroy the socket. */
  | { kind: "reset"; at: number }
  /** Invert the byte at file offset `at` (default: the middle). */
  | { kind: "flip"; at?: number }
  /** Wait before the status line. */
  | { kind: "delay"; ms: number }
  /** Send the body in `chunk`-byte pieces every `everyMs`. */
  | { kind: "trickle"; chunk: number; everyMs: number }
  /** Answer a Range request with the whole file and 200. */
  | { kind: "ignore-range" };

export interface RequestRecord {
  method: string;
  url: string;
  kind: "revision" | "tree" | "paths-info" | "resolve" | "cdn" | "other";
  repo?: string;
  file?: string;
  range?: string;
  authorization?: string;
  status: number;
  /** Body bytes of a file sent (resolve / cdn). */
  bytes: number;
}

export interface HubServerOptions {
  /** Redirect LFS files to a second origin, as the real hub does. @default true */
  cdn?: boolean;
  /** @default 400 */
  maxRequests?: number;
  /** Entries per tree page (Link: rel="next"). @default 1000 */
  pageSize?: number;
}

/** huggingface_hub's default .gitattributes: these go through LFS. */
const LFS_SUFFIXES = [".safetensors", ".bin", ".onnx", ".onnx_data", ".model", ".pt", ".h5", ".msgpack", ".ot"];

const sha1 = (b: Buffer | string) => createHash("sha1").update(b).digest("hex");
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const gitBlob = (b: Buffer) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");
const lfsPointer = (f: { sha256: string; size: number }) => Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${f.sha256}\nsize ${f.size}\n`);

export function servedFile(path: string, content: Buffer, lfs?: boolean): ServedFile {
  const isLfs = lfs ?? (LFS_SUFFIXES.some((s) => path.endsWith(s)) || content.length >= 10 * 1024 * 1024);
  const digest = sha256(content);
  return { path, content, lfs: isLfs, oid: isLfs ? gitBlob(lfsPointer({ sha256: digest, size: content.length })) : gitBlob(content), sha256: digest };
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(full)));
    else if (e.isFile()) out.push(full);
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class HubServer {
  readonly repos = new Map<string, ServedRepo>();
  readonly requests: RequestRecord[] = [];
  /** Faults per repo path, consumed one per matching file request (resolve or CDN body). */
  private readonly faults = new Map<string, Fault[]>();
  /** Faults per API endpoint kind ("revision", "tree", "paths-info"). */
  private readonly apiFaults = new Map<string, Fault[]>();
  /** Rewrites the entries of a tree or paths-info answer (hostile listings). */
  listingHook?: (entries: Record<string, unknown>[], kind: "tree" | "paths-info") => Record<string, unknown>[];
  /** When set, every request to the hub origin without `Bearer <token>` gets 401. */
  requireToken?: string;
  overflowed = false;
  url = "";
  cdnUrl = "";
  private hub!: Server;
  private cdn!: Server;
  private readonly options: Required<HubServerOptions>;

  private constructor(options: HubServerOptions) {
    this.options = { cdn: options.cdn ?? true, maxRequests: options.maxRequests ?? 400, pageSize: options.pageSize ?? 1000 };
  }

  static async start(options: HubServerOptions = {}): Promise<HubServer> {
    const s = new HubServer(options);
    s.hub = createServer((req, res) => void s.handle(req, res, false));
    s.cdn = createServer((req, res) => void s.handle(req, res, true));
    s.url = await listen(s.hub);
    s.cdnUrl = await listen(s.cdn);
    return s;
  }

  async close(): Promise<void> {
    for (const srv of [this.hub, this.cdn]) {
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  }

  /** Serves the files of `dir` (a fixture) as repo `id`, with branch main and any `refs` given. */
  async addRepoFromDir(id: string, dir: string, extra: { files?: Record<string, Buffer | string>; refs?: string[] } = {}): Promise<ServedRepo> {
    const files = new Map<string, ServedFile>();
    for (const full of await walk(dir)) {
      const path = relative(dir, full).split(sep).join("/");
      files.set(path, servedFile(path, await readFile(full)));
    }
    for (const [path, content] of Object.entries(extra.files ?? {})) files.set(path, servedFile(path, Buffer.from(content)));
    return this.addRepo(id, files, extra.refs);
  }

  addRepo(id: string, files: Map<string, ServedFile>, refs: string[] = []): ServedRepo {
    const listing = [...files.values()].map((f) => `${f.path}:${f.oid}`).sort().join("\n");
    const commit = sha1(`${id}\n${listing}`);
    const repo: ServedRepo = { id, commit, refs: new Map([["main", commit], ...refs.map((r) => [r, commit] as [string, string])]), files };
    this.repos.set(id, repo);
    return repo;
  }

  /** Queues faults for a repo file's body requests, used in order, one per request. */
  fault(path: string, ...faults: Fault[]): void {
    this.faults.set(path, [...(this.faults.get(path) ?? []), ...faults]);
  }

  apiFault(kind: "revision" | "tree" | "paths-info", ...faults: Fault[]): void {
    this.apiFaults.set(kind, [...(this.apiFaults.get(kind) ?? []), ...faults]);
  }

  /** GETs that carried file bytes (resolve and CDN), the thing a cached second run must not do. */
  fileGets(): RequestRecord[] {
    return this.requests.filter((r) => (r.kind === "resolve" || r.kind === "cdn") && r.method === "GET");
  }

  bytesSent(): number {
    return this.requests.reduce((s, r) => s + r.bytes, 0);
  }

  clearFaults(): void {
    this.faults.clear();
    this.apiFaults.clear();
  }

  resetLog(): void {
    this.requests.length = 0;
  }

  private async handle(req: IncomingMessage, res: ServerResponse, isCdn: boolean): Promise<void> {
    const rec: RequestRecord = {
      method: req.method ?? "GET",
      url: req.url ?? "/",
      kind: "other",
      range: req.headers.range,
      authorization: req.headers.authorization,
      status: 0,
      bytes: 0,
    };
    this.requests.push(rec);
    res.on("finish", () => (rec.status = res.statusCode));
    res.on("close", () => (rec.status ||= res.statusCode));
    try {
      if (this.requests.length > this.options.maxRequests) {
        this.overflowed = true;
        return this.error(res, 503, "TooManyRequests", "test server request limit reached");
      }
      const url = new URL(req.url ?? "/", this.url);
      if (isCdn) return await this.serveCdn(url, req, res, rec);
      if (this.requireToken && req.headers.authorization !== `Bearer ${this.requireToken}`) {
        return this.error(res, 401, "RepoNotFound", "Repository Not Found for url: " + url.href + ". Invalid credentials in Authorization header");
      }
      const api = /^\/api\/models\/([^/]+)\/([^/]+)\/(revision|tree|paths-info)(?:\/(.*))?$/.exec(url.pathname);
      if (api) {
        const [, org, name, kind, rest] = api as unknown as [string, string, string, RequestRecord["kind"], string | undefined];
        rec.kind = kind;
        rec.repo = `${org}/${name}`;
        const fault = this.apiFaults.get(kind)?.shift();
        if (fault && (await this.applyApiFault(fault, req, res))) return;
        const repo = this.repos.get(rec.repo);
        if (!repo) return this.error(res, 401, "RepoNotFound", `Repository Not Found for url: ${url.href}.`);
        if (kind === "revision") return this.serveRevision(repo, decodeURIComponent(rest ?? ""), res);
        if (kind === "tree") return this.serveTree(repo, rest ?? "", url, res);
        return await this.servePathsInfo(repo, decodeURIComponent(rest ?? ""), req, res);
      }
      const resolve = /^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
      if (resolve) {
        const [, org, name, rev, path] = resolve as unknown as [string, string, string, string, string];
        rec.kind = "resolve";
        rec.repo = `${org}/${name}`;
        rec.file = path.split("/").map(decodeURIComponent).join("/");
        const repo = this.repos.get(rec.repo);
        if (!repo) return this.error(res, 401, "RepoNotFound", "Repository Not Found");
        const commit = this.commitOf(repo, decodeURIComponent(rev));
        if (!commit) return this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
        const file = repo.files.get(rec.file);
        if (!file) return this.error(res, 404, "EntryNotFound", `Entry not found`);
        const etag = file.lfs ? file.sha256 : file.oid;
        res.setHeader("X-Repo-Commit", commit);
        res.setHeader("ETag", `"${file.lfs ? file.oid : etag}"`);
        if (file.lfs) {
          res.setHeader("X-Linked-Etag", `"${file.sha256}"`);
          res.setHeader("X-Linked-Size", String(file.content.length));
        }
        if (file.lfs && this.options.cdn) {
          res.setHeader("Location", `${this.cdnUrl}/lfs/${file.sha256}?file=${encodeURIComponent(file.path)}&repo=${encodeURIComponent(repo.id)}`);
          res.statusCode = 302;
          return void res.end();
        }
        if (file.lfs) res.setHeader("ETag", `"${etag}"`);
        return await this.serveBytes(repo, file, req, res, rec);
      }
      this.error(res, 404, undefined, "Not Found");
    } catch (err) {
      if (!res.headersSent) this.error(res, 500, undefined, String(err));
      else res.destroy();
    }
  }

  private commitOf(repo: ServedRepo, rev: string): string | undefined {
    if (rev === repo.commit) return rev;
    return repo.refs.get(rev);
  }

  private serveRevision(repo: ServedRepo, rev: string, res: ServerResponse): void {
    const commit = this.commitOf(repo, rev);
    if (!commit) return this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    this.json(res, {
      _id: sha1(repo.id).slice(0, 24),
      id: repo.id,
      sha: commit,
      private: false,
      gated: false,
      downloads: 0,
      likes: 0,
      pipeline_tag: "feature-extraction",
      lastModified: "2023-09-12T05:31:09.000Z",
      siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })),
    });
  }

  private entry(repo: ServedRepo, path: string): Record<string, unknown> | undefined {
    const f = repo.files.get(path);
    if (f) {
      const base: Record<string, unknown> = { type: "file", oid: f.oid, size: f.lfs ? lfsPointer({ sha256: f.sha256, size: f.content.length }).length : f.content.length, path };
      if (f.lfs) {
        base.size = f.content.length;
        base.lfs = { oid: f.sha256, size: f.content.length, pointerSize: lfsPointer({ sha256: f.sha256, size: f.content.length }).length };
      }
      return base;
    }
    if ([...repo.files.keys()].some((k) => k.startsWith(path + "/"))) return { type: "directory", oid: sha1(repo.id + path), size: 0, path };
    return undefined;
  }

  private serveTree(repo: ServedRepo, rest: string, url: URL, res: ServerResponse): void {
    const parts = rest.split("/");
    const commit = this.commitOf(repo, decodeURIComponent(parts[0] ?? ""));
    if (!commit) return this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${parts[0]}`);
    const prefix = parts.slice(1).map(decodeURIComponent).join("/");
    const recursive = url.searchParams.get("recursive") === "true";
    const under = [...repo.files.keys()].filter((p) => !prefix || p.startsWith(prefix + "/"));
    if (prefix && !under.length) return this.error(res, 404, "EntryNotFound", `${prefix} does not exist on "${commit}"`);
    const paths = new Set<string>();
    for (const p of under) {
      const restPath = prefix ? p.slice(prefix.length + 1) : p;
      const segs = restPath.split("/");
      for (let i = 1; i <= segs.length; i++) {
        if (!recursive && i > 1) break;
        paths.add([prefix, ...segs.slice(0, i)].filter(Boolean).join("/"));
      }
    }
    let entries = [...paths].sort().map((p) => this.entry(repo, p)!);
    if (this.listingHook) entries = this.listingHook(entries, "tree");
    const cursor = Number(url.searchParams.get("cursor") ?? 0);
    const page = entries.slice(cursor, cursor + this.options.pageSize);
    if (cursor + this.options.pageSize < entries.length) {
      const next = new URL(url.href);
      next.searchParams.set("cursor", String(cursor + this.options.pageSize));
      res.setHeader("Link", `<${next.href}>; rel="next"`);
    }
    this.json(res, page);
  }

  private async servePathsInfo(repo: ServedRepo, rev: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const commit = this.commitOf(repo, rev);
    if (!commit) return this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    const body = await readBody(req);
    let paths: string[];
    if ((req.headers["content-type"] ?? "").includes("json")) paths = (JSON.parse(body) as { paths?: string[] }).paths ?? [];
    else paths = new URLSearchParams(body).getAll("paths");
    let entries = paths.map((p) => this.entry(repo, p)).filter((e): e is Record<string, unknown> => e !== undefined);
    if (this.listingHook) entries = this.listingHook(entries, "paths-info");
    this.json(res, entries);
  }

  private async serveCdn(url: URL, req: IncomingMessage, res: ServerResponse, rec: RequestRecord): Promise<void> {
    rec.kind = "cdn";
    const m = /^\/lfs\/([0-9a-f]{64})$/.exec(url.pathname);
    const repo = this.repos.get(url.searchParams.get("repo") ?? "");
    const file = repo?.files.get(url.searchParams.get("file") ?? "");
    rec.repo = repo?.id;
    rec.file = file?.path;
    if (!m || !repo || !file || file.sha256 !== m[1]) return this.error(res, 404, undefined, "no such object");
    res.setHeader("ETag", `"${file.sha256}"`);
    await this.serveBytes(repo, file, req, res, rec);
  }

  private async applyApiFault(fault: Fault, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    if (fault.kind === "delay") {
      await sleep(fault.ms);
      return res.destroyed;
    }
    if (fault.kind === "status") {
      this.error(res, fault.status, undefined, fault.echoAuth ? `upstream failed for ${req.headers.authorization ?? "anonymous"}` : "Internal Error");
      return true;
    }
    if (fault.kind === "reset") {
      req.socket.destroy();
      return true;
    }
    return false;
  }

  private async serveBytes(repo: ServedRepo, file: ServedFile, req: IncomingMessage, res: ServerResponse, rec: RequestRecord): Promise<void> {
    const fault = this.faults.get(file.path)?.shift();
    const size = file.content.length;
    if (fault?.kind === "delay") {
      await sleep(fault.ms);
      if (req.socket.destroyed) return;
    }
    if (fault?.kind === "status") {
      return this.error(res, fault.status, undefined, fault.echoAuth ? `upstream failed for ${req.headers.authorization ?? "anonymous"}` : "Internal Error");
    }
    let start = 0;
    let end = size - 1;
    const range = req.headers.range;
    res.setHeader("Accept-Ranges", "bytes");
    res.setHeader("Content-Type", "application/octet-stream");
    if (range && fault?.kind !== "ignore-range") {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      if (!m || Number(m[1]) >= size) {
        res.setHeader("Content-Range", `bytes */${size}`);
        return this.error(res, 416, undefined, "Range Not Satisfiable");
      }
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      res.statusCode = 206;
      res.setHeader("Content-Range", `bytes ${start}-${end}/${size}`);
    } else res.statusCode = 200;
    let body = file.content.subarray(start, end + 1);
    if (fault?.kind === "flip") {
      const at = (fault.at ?? Math.floor(size / 2)) - start;
      if (at >= 0 && at < body.length) {
        body = Buffer.from(body);
        body[at] = body[at]! ^ 0xff;
      }
    }
    if (fault?.kind === "truncate") body = body.subarray(0, Math.max(0, fault.at - start));
    res.setHeader("Content-Length", String(body.length));
    if (req.method === "HEAD") return void res.end();
    res.flushHeaders();
    const limit = fault?.kind === "reset" ? Math.max(0, fault.at - start) : body.length;
    const step = fault?.kind === "trickle" ? fault.chunk : 64 * 1024;
    for (let pos = 0; pos < limit; pos += step) {
      const piece = body.subarray(pos, Math.min(pos + step, limit));
      rec.bytes += piece.length;
      const ok = res.write(piece);
      if (fault?.kind === "trickle") await sleep(fault.everyMs);
      else if (!ok) await new Promise((r) => res.once("drain", r));
      if (res.destroyed) return;
    }
    if (fault?.kind === "reset") {
      // Let the bytes leave, then cut the connection mid-body.
      await sleep(20);
      req.socket.destroy();
      return;
    }
    res.end();
    void repo;
  }

  private json(res: ServerResponse, value: unknown): void {
    const body = Buffer.from(JSON.stringify(value));
    res.writeHead(200, { "Content-Type": "application/json; charset=utf-8", "Content-Length": body.length });
    res.end(body);
  }

  private error(res: ServerResponse, status: number, code: string | undefined, message: string): void {
    const body = Buffer.from(JSON.stringify({ error: message }));
    const headers: Record<string, string | number> = { "Content-Type": "application/json; charset=utf-8", "Content-Length": body.length };
    if (code) headers["X-Error-Code"] = code;
    res.writeHead(status, headers);
    res.end(body);
  }
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => {
      data += c;
      if (data.length > 1 << 20) req.destroy();
    });
    req.on("end", () => resolve(data));
    req.on("error", reject);
  });
}

// ---- auditing what a client left in the cache ----

async function walkAll(dir: string): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const full = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walkAll(full)));
    else out.push(full);
  }
  return out;
}

export interface CacheAudit {
  /** Blobs under their final names (no temp suffix). */
  blobs: string[];
  /** Temporary files left in blobs/ (partial downloads kept for resuming). */
  partial: string[];
  /** Snapshot paths (relative to snapshots/<commit>/) and the repo path of the file each holds. */
  pointers: Map<string, string>;
  /** Problems: blobs whose name is not their content's hash, pointers whose bytes differ from the served file, links that are not relative. */
  problems: string[];
}

/**
 * Audits a repo's cache folder the way a skeptic would: every blob under a final name must hash to
 * its name (sha256 or git blob sha1), every snapshot entry must be a relative link whose bytes are
 * exactly the served file's. A corrupt or partial file under a final name shows up in `problems`.
 */
export async function auditRepoCache(storage: string, served: ServedRepo): Promise<CacheAudit> {
  const audit: CacheAudit = { blobs: [], partial: [], pointers: new Map(), problems: [] };
  for (const path of await walkAll(join(storage, "blobs"))) {
    const name = relative(join(storage, "blobs"), path);
    if (name.endsWith(".incomplete") || name.endsWith(".lock")) {
      audit.partial.push(name);
      continue;
    }
    audit.blobs.push(name);
    const content = await readFile(path);
    const sha256 = createHash("sha256").update(content).digest("hex");
    const git = createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex");
    if (name !== sha256 && name !== git) audit.problems.push(`blob ${name} holds bytes hashing to ${sha256} / ${git}`);
  }
  const snapRoot = join(storage, "snapshots");
  for (const path of await walkAll(snapRoot)) {
    const [commit, ...rest] = relative(snapRoot, path).split(sep);
    const repoPath = rest.join("/");
    audit.pointers.set(repoPath, commit!);
    const st = await lstat(path);
    if (!st.isSymbolicLink()) audit.problems.push(`${repoPath} is not a symlink`);
    else if ((await readlink(path)).startsWith("/")) audit.problems.push(`${repoPath} is an absolute link`);
    const real = await realpath(path).catch(() => null);
    if (!real) {
      audit.problems.push(`${repoPath} is a dangling link`);
      continue;
    }
    const served_ = served.files.get(repoPath);
    if (!served_) audit.problems.push(`${repoPath} was never served`);
    else if (!(await readFile(real)).equals(served_.content)) audit.problems.push(`${repoPath} differs from the served file`);
  }
  return audit;
}

/** Every file under `dir` (links not followed) whose bytes contain `needle`. */
export async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const hits: string[] = [];
  for (const path of await walkAll(dir)) {
    const st = await lstat(path);
    const data = st.isSymbolicLink() ? Buffer.from(await readlink(path)) : await readFile(path);
    if (data.includes(Buffer.from(needle)) || path.includes(needle)) hits.push(path);
  }
  return hits;
}

/**
 * What every hub test checks and undoes after each case: the request cap was never hit, and no
 * hook, token requirement, fault or request log leaks into the next case.
 */
export function checkAndReset(server: HubServer, expectNoOverflow: (overflowed: boolean) => void): void {
  expectNoOverflow(server.overflowed);
  server.listingHook = undefined;
  server.requireToken = undefined;
  server.clearFaults();
  server.resetLog();
}
