import { UsageError } from "../errors.js";

/**
 * A file name from the hub (a listing, a shard index) that is safe to create under a snapshot folder:
 * relative, forward slashes, no empty, `.` or `..` segment, no drive letter, no control characters.
 * Anything else is refused (exit 2) naming the file: a repo cannot make bge write outside its snapshot.
 */
export function checkRepoFilePath(name: unknown, where: string): string {
  const bad = (why: string): never => {
    throw new UsageError(`${where} names the file ${JSON.stringify(name)}, which ${why}; refusing to write it (the repository or the server is not trustworthy)`);
  };
  if (typeof name !== "string" || name.length === 0) return bad("is not a file name");
  if (name.length > 1024) bad("is too long");
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) bad("contains control characters");
  if (name.includes("\\")) bad("contains a backslash");
  if (name.startsWith("/")) bad("is an absolute path");
  if (/^[a-zA-Z]:/.test(name)) bad("is a drive path");
  const segments = name.split("/");
  if (segments.includes("..")) bad("climbs out of the snapshot with '..'");
  if (segments.some((s) => s === "" || s === ".")) bad("has an empty or '.' path segment");
  return name;
}
