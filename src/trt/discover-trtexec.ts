import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { randomBytes } from "node:crypto";
import { access, readFile, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, isAbsolute, join, resolve } from "node:path";
import { ToolFailedError, ToolMissingError } from "../errors.js";
import { encodeTrtVersionCode, parseTrtexecLog, tailLines, type TrtVersion } from "./trtexec-log.js";

/** The TensorRT version families bge has a dialect for; their flags differ (FACTS.md). */
export type TrtFamily = "8.6" | "10" | "11";

export interface TrtexecInfo {
  /** Absolute path of the binary as found (not resolved through symlinks: that is what the user named). */
  path: string;
  version: TrtVersion;
  family: TrtFamily;
  /** Where it was found, for messages and the manifest. */
  source: "--trtexec" | "$TRTEXEC" | "PATH" | "default";
}

export interface DiscoverTrtexecOptions {
  /** `--trtexec PATH`; when given, nothing else is tried. */
  explicit?: string;
  /** @default process.env — `$TRTEXEC` and `$PATH` are read here, and the version probe runs with it. */
  env?: NodeJS.ProcessEnv;
  /** @default env.PATH */
  searchPath?: string;
  /** Tried after PATH. @default ["/usr/src/tensorrt/bin/trtexec"] (where NVIDIA's containers put it) */
  fallbackPaths?: string[];
  /** How long the version probe may take. @default 30000 */
  timeoutMs?: number;
  /**
   * A JSON file remembering versions across processes, keyed by realpath+mtime+size; `false` turns it
   * off. @default `bge-trtexec-versions-<uid>.json` under os.tmpdir()
   */
  cacheFile?: string | false;
}

export const DEFAULT_TRTEXEC_PATHS = ["/usr/src/tensorrt/bin/trtexec"];
const SUPPORTED = "TensorRT 8.6, 10.x and 11.x";
const HOW_TO_GET =
  "use the NVIDIA TensorRT container nvcr.io/nvidia/tensorrt:<tag>-py3, or put the TensorRT tarball's bin/ on PATH " +
  "(and its lib/ on LD_LIBRARY_PATH), or pass --trtexec PATH";

// The probe costs a process start and a shared-library load (seconds for TensorRT 10+); one per
// binary per process is enough. Keyed on identity, so a reinstalled binary is probed again.
const memoryCache = new Map<string, TrtVersion>();

/**
 * Finds trtexec and reads its TensorRT version from its own output. Order: `explicit`, `$TRTEXEC`,
 * each PATH entry, `fallbackPaths`. An explicit or `$TRTEXEC` path that is not a usable executable is
 * an error rather than a reason to fall through: the user chose that binary, and silently running
 * another one would build an engine with a TensorRT they did not ask for.
 *
 * @throws ToolMissingError (exit 3) when none is found, or the one found is not a supported version
 * @throws ToolFailedError (exit 4) when the binary runs but does not say which TensorRT it is
 */
/** TensorRT's version as it prints it: X.Y.Z. */
export function versionString(trtexec: Pick<TrtexecInfo, "version">): string {
  const v = trtexec.version;
  return `${v.major}.${v.minor}.${v.patch}`;
}

export async function discoverTrtexec(options: DiscoverTrtexecOptions = {}): Promise<TrtexecInfo> {
  const env = options.env ?? process.env;
  const chosen = options.explicit !== undefined && options.explicit !== ""
    ? { path: options.explicit, source: "--trtexec" as const }
    : env.TRTEXEC
      ? { path: env.TRTEXEC, source: "$TRTEXEC" as const }
      : undefined;

  let found: { path: string; source: TrtexecInfo["source"] } | undefined;
  if (chosen) {
    const path = resolve(chosen.path);
    const problem = await notExecutable(path);
    if (problem) throw new ToolMissingError(`${chosen.source} ${chosen.path}: ${problem}; give the trtexec binary itself, or ${HOW_TO_GET}`);
    found = { path, source: chosen.source };
  } else {
    const searchPath = options.searchPath ?? env.PATH ?? "";
    // An empty PATH entry means "the current folder" to a shell; running ./trtexec from wherever bge
    // happens to run is a surprise nobody wants, so empty entries are skipped.
    const dirs = searchPath.split(delimiter).filter((d) => d !== "");
    for (const dir of dirs) {
      const path = resolve(dir, "trtexec");
      if (!(await notExecutable(path))) {
        found = { path, source: "PATH" };
        break;
      }
    }
    if (!found) {
      for (const candidate of options.fallbackPaths ?? DEFAULT_TRTEXEC_PATHS) {
        const path = resolve(candidate);
        if (!(await notExecutable(path))) {
          found = { path, source: "default" };
          break;
        }
      }
    }
    if (!found) {
      const fallbacks = (options.fallbackPaths ?? DEFAULT_TRTEXEC_PATHS).join(", ") || "(none)";
      throw new ToolMissingError(
        `trtexec not found (looked at --trtexec: not given, $TRTEXEC: unset, PATH: ${searchPath || "(empty)"}, then ${fallbacks}); ${HOW_TO_GET}`,
      );
    }
  }

  const version = await trtexecVersion(found.path, env, options.timeoutMs ?? 30_000, options.cacheFile ?? defaultCacheFile());
  const family = trtFamily(version);
  if (!family) {
    const v = versionString({ version });
    throw new ToolMissingError(
      `${found.path} (from ${found.source}) is TensorRT ${v}; bge supports ${SUPPORTED} — point --trtexec or $TRTEXEC at a supported trtexec, or ${HOW_TO_GET}`,
    );
  }
  return { path: found.path, version, family, source: found.source };
}

/** The dialect family of a TensorRT version, or undefined for one bge has no dialect for. */
export function trtFamily(version: Pick<TrtVersion, "major" | "minor">): TrtFamily | undefined {
  if (version.major === 8 && version.minor === 6) return "8.6";
  if (version.major === 10) return "10";
  if (version.major === 11) return "11";
  return undefined;
}

/** Drops the in-process version cache (tests; a long-lived process that swapped binaries in place). */
export function forgetTrtexecVersions(): void {
  memoryCache.clear();
}

/** Why `path` cannot be run as trtexec, or undefined when it can. */
async function notExecutable(path: string): Promise<string | undefined> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === "ENOENT" || code === "ENOTDIR" ? "no such file" : `cannot read it (${code})`;
  }
  if (info.isDirectory()) return "is a folder, not the trtexec binary";
  if (!info.isFile()) return "is not a regular file";
  try {
    await access(path, constants.X_OK);
  } catch {
    return "is not executable (chmod +x it, or check the mount's noexec)";
  }
  return undefined;
}

async function trtexecVersion(path: string, env: NodeJS.ProcessEnv, timeoutMs: number, cacheFile: string | false): Promise<TrtVersion> {
  const info = await stat(path);
  const key = `${await realpath(path)}|${info.mtimeMs}|${info.size}`;
  const remembered = memoryCache.get(key) ?? (cacheFile ? await readCached(cacheFile, key) : undefined);
  if (remembered) {
    memoryCache.set(key, remembered);
    return remembered;
  }

  // `--help` prints the `&&&& RUNNING … [TensorRT vNNNN]` banner before anything needs a GPU; a bare
  // run prints it too (then fails for want of a model), which covers a build whose --help differs.
  let last: ProbeResult | undefined;
  for (const args of [["--help"], []]) {
    last = await probe(path, args, env, timeoutMs);
    const version = versionFrom(last.output);
    if (version) {
      memoryCache.set(key, version);
      if (cacheFile) await writeCached(cacheFile, key, version);
      return version;
    }
    if (last.failure) break;
  }
  const why = last?.failure ?? `its output has no [TensorRT vNNNN] banner or "TensorRT version:" line (exit ${last?.exitCode})`;
  const tail = last ? tailLines(last.output, 5) : "";
  throw new ToolFailedError(`${path} did not say which TensorRT it is: ${why}${tail ? `; last output:\n${tail}` : ""}`);
}

interface ProbeResult {
  output: string;
  exitCode: number | string | null;
  /** Set when the process could not run or was killed, as opposed to exiting non-zero. */
  failure?: string;
}

/** Runs the binary directly (never through a shell, so no quoting of its path can go wrong). */
function probe(path: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((done) => {
    execFile(
      path,
      args,
      { env, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024, windowsHide: true, encoding: "utf8" },
      (err, stdout, stderr) => {
        const output = `${stdout}${stderr ? `\n${stderr}` : ""}`;
        if (!err) return done({ output, exitCode: 0 });
        const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null; code?: number | string };
        if (e.killed && e.signal) {
          return done({ output, exitCode: null, failure: `\`${[path, ...args].join(" ")}\` did not finish within ${timeoutMs} ms` });
        }
        if (typeof e.code === "string") {
          return done({ output, exitCode: e.code, failure: `could not run it (${e.code})` });
        }
        if (e.signal) return done({ output, exitCode: null, failure: `it was killed by ${e.signal}` });
        done({ output, exitCode: e.code ?? null });
      },
    );
  });
}

function versionFrom(output: string): TrtVersion | undefined {
  const parsed = parseTrtexecLog(output).version;
  if (parsed) return parsed;
  // The parser wants the `[I]` tag; a wrapper script may print the bare line.
  const m = /TensorRT version:\s*(\d+)\.(\d+)\.(\d+)/.exec(output);
  if (!m) return undefined;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return { major, minor, patch, code: encodeTrtVersionCode(major, minor, patch) };
}

function defaultCacheFile(): string {
  // Per user: a shared name in /tmp could be planted by another user to lie about versions.
  const uid = typeof process.getuid === "function" ? process.getuid() : "user";
  return join(tmpdir(), `bge-trtexec-versions-${uid}.json`);
}

type CacheFile = { entries: Record<string, TrtVersion> };

/** The file cache is an optimisation: anything odd about it reads as "not cached". */
async function readCached(file: string, key: string): Promise<TrtVersion | undefined> {
  try {
    if (!isAbsolute(file)) return undefined;
    const info = await stat(file);
    if (typeof process.getuid === "function" && info.uid !== process.getuid()) return undefined;
    const data = JSON.parse(await readFile(file, "utf8")) as CacheFile;
    const v = data?.entries?.[key];
    if (v && [v.major, v.minor, v.patch, v.code].every((n) => Number.isInteger(n))) {
      return { major: v.major, minor: v.minor, patch: v.patch, code: v.code };
    }
  } catch {
    // absent, unreadable or malformed: probe again
  }
  return undefined;
}

async function writeCached(file: string, key: string, version: TrtVersion): Promise<void> {
  try {
    let entries: Record<string, TrtVersion> = {};
    try {
      entries = (JSON.parse(await readFile(file, "utf8")) as CacheFile).entries ?? {};
    } catch {
      // start afresh
    }
    delete entries[key];
    entries[key] = version;
    // Keep the newest few: a cache of binaries long replaced helps no one.
    const kept = Object.fromEntries(Object.entries(entries).slice(-32));
    // Through a temporary name so a concurrent reader never sees half a file; "wx" refuses a name
    // someone planted in the shared tmpdir (a symlink would otherwise be followed).
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify({ entries: kept }), { mode: 0o600, flag: "wx" });
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw err;
    }
  } catch {
    // a read-only tmpdir costs a probe next time, nothing more
  }
}
