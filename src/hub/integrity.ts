import { createHash, type Hash } from "node:crypto";
import { ToolFailedError } from "../errors.js";

/** A repo file as the hub lists it (tree or paths-info). */
export interface RepoFileEntry {
  path: string;
  type: string;
  size: number;
  /** Git blob sha1 (of the LFS pointer for LFS files). */
  oid?: string;
  lfs?: { oid: string; size: number };
}

/**
 * What a file's bytes must hash to. LFS files: sha256 of the content (`lfs.oid`), also the name the
 * Hugging Face cache gives the blob. Others: the git blob sha1, `sha1("blob " + size + "\0" + content)`,
 * which is the file's `oid` and its ETag, the blob name there.
 */
export interface ExpectedContent {
  size: number;
  algorithm: "sha256" | "git-sha1";
  digest: string;
}

export function expectedContent(entry: RepoFileEntry): ExpectedContent {
  if (entry.lfs) {
    if (!/^[0-9a-f]{64}$/.test(entry.lfs.oid) || !Number.isSafeInteger(entry.lfs.size) || entry.lfs.size < 0) {
      throw new ToolFailedError(`the hub lists ${entry.path} with a malformed LFS oid or size`);
    }
    return { size: entry.lfs.size, algorithm: "sha256", digest: entry.lfs.oid };
  }
  if (!entry.oid || !/^[0-9a-f]{40}$/.test(entry.oid) || !Number.isSafeInteger(entry.size) || entry.size < 0) {
    throw new ToolFailedError(`the hub lists ${entry.path} without a git oid or size: its bytes could not be verified`);
  }
  return { size: entry.size, algorithm: "git-sha1", digest: entry.oid };
}

/** The name of the file's blob in the cache (huggingface_hub names blobs by ETag, which is this digest). */
export function blobName(expected: ExpectedContent): string {
  return expected.digest;
}

/** Hashes content as it streams in; `digest()` gives what `expectedContent` compares against. */
export class ContentHasher {
  private hash: Hash;
  constructor(private readonly expected: ExpectedContent) {
    this.hash = ContentHasher.fresh(expected);
  }

  private static fresh(expected: ExpectedContent): Hash {
    if (expected.algorithm === "sha256") return createHash("sha256");
    return createHash("sha1").update(`blob ${expected.size}\0`);
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }

  /** Starts over (after a server ignored a Range request or a verification failed). */
  reset(): void {
    this.hash = ContentHasher.fresh(this.expected);
  }

  digest(): string {
    return this.hash.digest("hex");
  }
}

/** The git blob sha1 of whole content (tests and small files). */
export function gitBlobSha1(content: Uint8Array): string {
  return createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex");
}
