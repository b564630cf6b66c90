import { UsageError } from "../errors.js";

/** A model on the hub: `ORG/NAME`, and the revision asked for (a branch, tag or commit sha). */
export interface HubId {
  repo: string;
  revision?: string;
}

/** huggingface_hub's rule for each half of a repo id: word characters, `-` and `.`, starting and ending with a word character. */
const ID_PART = /^\w(?:[\w.-]*\w)?$/;
const REVISION = /^[\w.][\w./-]*$/;
export const COMMIT_SHA = /^[0-9a-f]{40}$/;

/** True when `text` has the shape of a hub id (`ORG/NAME` or `ORG/NAME@REV`) rather than of a path. */
export function looksLikeHubId(text: string): boolean {
  const at = text.indexOf("@");
  const repo = at < 0 ? text : text.slice(0, at);
  return /^[^/\\.~][^/\\]*\/[^/\\]+$/.test(repo);
}

/** Throws a UsageError unless `repo` is a valid `ORG/NAME`. */
export function checkRepoId(repo: string): string {
  const parts = repo.split("/");
  const ok =
    parts.length === 2 &&
    parts.every((p) => p.length <= 96 && ID_PART.test(p) && !p.includes("--") && !p.includes("..")) &&
    !repo.endsWith(".git");
  if (!ok) {
    throw new UsageError(`${JSON.stringify(repo)} is not a hub model id: use ORG/NAME (letters, digits, '-', '_', '.'; e.g. BAAI/bge-small-zh-v1.5)`);
  }
  return repo;
}

/** Throws a UsageError unless `revision` is a plausible branch, tag or commit name (no `..`, no leading `/`). */
export function checkRevision(revision: string): string {
  const ok = revision.length <= 256 && REVISION.test(revision) && !revision.split("/").some((s) => s === "" || s === "." || s === "..");
  if (!ok) throw new UsageError(`revision ${JSON.stringify(revision)} is not a branch, tag or commit sha (letters, digits, '-', '_', '.', '/'; no '..')`);
  return revision;
}

/**
 * Parses `ORG/NAME` or `ORG/NAME@REV`. `revision` (the --revision flag) may name the revision instead
 * of `@REV`; naming two different ones is refused.
 */
export function parseHubId(text: string, revision?: string): HubId {
  const at = text.indexOf("@");
  const repo = checkRepoId(at < 0 ? text : text.slice(0, at));
  const fromId = at < 0 ? undefined : text.slice(at + 1);
  if (fromId !== undefined && revision !== undefined && fromId !== revision) {
    throw new UsageError(`${text} names revision ${fromId} but --revision says ${revision}: give one`);
  }
  const rev = fromId ?? revision;
  return rev === undefined ? { repo } : { repo, revision: checkRevision(rev) };
}
