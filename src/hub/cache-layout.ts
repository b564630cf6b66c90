import { lstat, mkdir, readFile, realpath, rename, rm, stat, symlink } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { getRepoFolderName } from "@huggingface/hub";
import { UsageError } from "../errors.js";
import { tempPathFor, writeFileAtomic } from "../util/atomic.js";
import { COMMIT_SHA } from "./hub-id.js";

/**
 * The Hugging Face cache layout that huggingface_hub (Python) and @huggingface/hub share:
 * `CACHE/models--ORG--NAME/blobs/<etag>` holds the bytes, `snapshots/<commit>/<path>` is a relative
 * symlink to its blob, `refs/<branch>` holds the commit sha a branch or tag pointed at.
 */
export class RepoCache {
  readonly storage: string;
  readonly blobs: string;

  constructor(
    readonly cacheDir: string,
    readonly repo: string,
  ) {
    this.storage = join(cacheDir, getRepoFolderName({ name: repo, type: "model" }));
    this.blobs = join(this.storage, "blobs");
  }

  snapshotDir(commit: string): string {
    return join(this.storage, "snapshots", commit);
  }

  blobPath(name: string): string {
    return join(this.blobs, name);
  }

  pointerPath(commit: string, path: string): string {
    return join(this.snapshotDir(commit), ...path.split("/"));
  }

  /** The commit a branch or tag pointed at when it was last fetched, if the cache knows it. */
  async readRef(revision: string): Promise<string | undefined> {
    try {
      const sha = (await readFile(join(this.storage, "refs", ...revision.split("/")), "utf8")).trim();
      return COMMIT_SHA.test(sha) ? sha : undefined;
    } catch {
      return undefined;
    }
  }

  /** Written as huggingface_hub writes it: the bare sha, no newline. */
  async writeRef(revision: string, commit: string): Promise<void> {
    const path = join(this.storage, "refs", ...revision.split("/"));
    await mkdir(dirname(path), { recursive: true });
    await this.assertInside(dirname(path), "refs");
    await writeFileAtomic(path, commit);
  }

  /** Creates the cache folders (refs/ too: @huggingface/hub's cache scan requires it). */
  async prepare(commit: string): Promise<void> {
    for (const d of [this.blobs, join(this.storage, "refs"), this.snapshotDir(commit)]) await mkdir(d, { recursive: true });
    await this.assertInside(this.snapshotDir(commit), "snapshot");
  }

  /** Points `snapshots/<commit>/<path>` at `blobs/<blob>` with a relative link, replacing any old link atomically. */
  async link(commit: string, path: string, blob: string): Promise<void> {
    const pointer = this.pointerPath(commit, path);
    await mkdir(dirname(pointer), { recursive: true });
    await this.assertInside(dirname(pointer), path);
    const tmp = tempPathFor(pointer);
    await symlink(relative(dirname(pointer), this.blobPath(blob)), tmp);
    try {
      await rename(tmp, pointer);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** Size of the blob when it exists as a regular file. */
  async blobSize(blob: string): Promise<number | undefined> {
    try {
      const s = await lstat(this.blobPath(blob));
      return s.isFile() ? s.size : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Whether the snapshot already holds `path`: "ok" when it resolves to the expected blob (or, for a
   * copied file as huggingface_hub leaves where links are unsupported, to a file of the expected
   * size), "stale" when it resolves to other bytes, "missing" otherwise. A link that resolves outside
   * the repo's cache folder is refused: nothing bge reads may be redirected elsewhere.
   */
  async inspect(commit: string, path: string, expected?: { size: number; blob: string }): Promise<"ok" | "stale" | "missing"> {
    const pointer = this.pointerPath(commit, path);
    let real: string;
    try {
      await lstat(pointer);
      real = await realpath(pointer);
    } catch {
      return "missing";
    }
    const roots = await this.roots();
    if (!roots.some((r) => real === r || real.startsWith(r + sep))) {
      throw new UsageError(`${pointer} in the hub cache resolves to ${real}, outside ${this.storage}; refusing to use it (remove that link)`);
    }
    const s = await stat(real);
    if (!s.isFile()) return "stale";
    if (!expected) return "ok";
    if (s.size !== expected.size) return "stale";
    const isLink = (await lstat(pointer)).isSymbolicLink();
    return !isLink || real === join(roots[1]!, expected.blob) ? "ok" : "stale";
  }

  /** The real paths under which cache files may live: the repo folder and its blobs folder. */
  private async roots(): Promise<[string, string]> {
    const storage = await realpath(this.storage).catch(() => this.storage);
    const blobs = await realpath(this.blobs).catch(() => join(storage, "blobs"));
    return [storage, blobs];
  }

  private async assertInside(dir: string, what: string): Promise<void> {
    const real = await realpath(dir);
    const [storage] = await this.roots();
    if (real !== storage && !real.startsWith(storage + sep)) {
      throw new UsageError(`the hub cache folder for ${what} (${dir}) resolves to ${real}, outside ${this.storage}; refusing to write there`);
    }
  }
}
