import { constants, fstatSync, type Stats } from "node:fs";
import { access, realpath, stat, statfs } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { UsageError } from "../errors.js";

/** What a command reads: a file (golden, texts, pipeline) or a folder (checkpoint, artifact). */
export interface InputPath {
  path: string;
  what: string;
  kind: "file" | "dir";
}

/** What a command writes, named by the flag that chose it. */
export interface OutputPath {
  path: string;
  flag: string;
  kind: "file" | "dir";
}

/** Kernel filesystems that look like folders but are not storage: writes there fail or never end. */
const PSEUDO_FILESYSTEMS: Record<number, string> = {
  0x9fa0: "proc",
  0x62656572: "sysfs",
  0x27e0eb: "cgroup",
  0x63677270: "cgroup2",
  0x64626720: "debugfs",
  0x74726163: "tracefs",
  0x73636673: "securityfs",
  0xcafe4a11: "bpf",
  0x6165676c: "pstore",
  0x42494e4d: "binfmt_misc",
  0x1cd1: "devpts",
  0xde5e81e4: "efivarfs",
  0x19800202: "mqueue",
};

interface ResolvedOutput extends OutputPath {
  /** The real path the command will write (symlinks and `..` resolved). */
  real: string;
  /** The existing file or folder at that path, if any. */
  existing?: Stats;
}

/**
 * Which of this process's stdout (1) or stderr (2) a path is, when it is one (`/dev/stdout` where
 * stdout is a socket, as under a Node parent): such a path cannot be opened, only written through.
 */
export function standardStream(s: Stats): 1 | 2 | undefined {
  for (const fd of [1, 2] as const) {
    try {
      const f = fstatSync(fd);
      if (f.dev === s.dev && f.ino === s.ino) return fd;
    } catch {
      // closed descriptor
    }
  }
  return undefined;
}

function describeErrno(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code ?? String((err as Error).message ?? err);
}

async function statOrUndefined(path: string, label = path): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    if (code === "ENOTDIR") throw new UsageError(`${label}: a part of this path is a file, not a folder`);
    if (code === "ELOOP") throw new UsageError(`${label}: too many levels of symbolic links`);
    throw new UsageError(`${label}: cannot be checked (${describeErrno(err)})`);
  }
}

/** Resolves an output path to the real path it will be written at, checking the folder it lands in. */
async function resolveOutput(out: OutputPath): Promise<ResolvedOutput> {
  const label = `${out.flag} ${out.path}`;
  if (out.path.trim() === "") throw new UsageError(`${out.flag}: the path is empty; give a ${out.kind === "dir" ? "folder" : "file"} name`);
  const abs = resolve(out.path);
  const existing = await statOrUndefined(abs, label);
  if (existing) {
    if (out.kind === "file" && existing.isDirectory()) throw new UsageError(`${label} is a folder; give a file name`);
    if (out.kind === "dir" && !existing.isDirectory()) throw new UsageError(`${label} is a file; give a folder name (new or empty, or an artifact folder)`);
    if (out.kind === "file" && (existing.isCharacterDevice() || existing.isFIFO() || standardStream(existing) !== undefined)) {
      // /dev/null, /dev/stdout, a pipe: written in place, never renamed over.
      return { ...out, real: await realpath(abs).catch(() => abs), existing };
    }
    if (out.kind === "file" && !existing.isFile()) throw new UsageError(`${label} is not a regular file (a socket or device); give a file name`);
    await checkStorage(abs, label);
    await checkWritable(out.kind === "dir" ? abs : dirname(abs), label);
    return { ...out, real: await realpath(abs), existing };
  }
  // New path: the folder it lands in must exist (a file) or be creatable (a folder).
  let ancestor = dirname(abs);
  const missing: string[] = [basename(abs)];
  for (;;) {
    const s = await statOrUndefined(ancestor, label);
    if (s) {
      if (!s.isDirectory()) throw new UsageError(`${label}: ${ancestor} is a file, not a folder`);
      break;
    }
    if (out.kind === "file") throw new UsageError(`${label}: folder ${ancestor} does not exist; create it first`);
    missing.unshift(basename(ancestor));
    const up = dirname(ancestor);
    if (up === ancestor) break;
    ancestor = up;
  }
  await checkStorage(ancestor, label);
  await checkWritable(ancestor, label);
  return { ...out, real: join(await realpath(ancestor), ...missing) };
}

async function checkStorage(path: string, label: string): Promise<void> {
  const fs = await statfs(path).catch(() => undefined);
  const kind = fs ? PSEUDO_FILESYSTEMS[Number(fs.type)] : undefined;
  if (kind) throw new UsageError(`${label} is on the ${kind} pseudo-filesystem, which holds no files; choose a folder on a disk`);
}

async function checkWritable(dir: string, label: string): Promise<void> {
  try {
    await access(dir, constants.W_OK);
  } catch (err) {
    throw new UsageError(`${label}: cannot write in ${dir} (${describeErrno(err)})`);
  }
}

function inside(child: string, parent: string): boolean {
  const rel = relative(parent, child);
  return rel === "" || (rel !== ".." && !rel.startsWith(".." + sep) && !isAbsolute(rel));
}

/**
 * The rule for every command (SPEC.md): an output that is, or resolves to (symlink, hard link,
 * `..`), one of the command's inputs, or lies inside an input folder, is refused before anything is
 * written; so are two outputs that are the same file, and outputs that cannot be written (a missing
 * or read-only folder, a folder where a file is wanted, a pseudo-filesystem).
 */
export async function checkOutputPaths(outputs: OutputPath[], inputs: InputPath[]): Promise<void> {
  const resolved: ResolvedOutput[] = [];
  for (const out of outputs) resolved.push(await resolveOutput(out));
  const realInputs: (InputPath & { real: string; stats?: Stats })[] = [];
  for (const input of inputs) {
    if (input.path === "-") continue;
    const stats = await stat(input.path).catch(() => undefined);
    if (!stats) continue; // reported as a missing input by the reader, with its own words
    realInputs.push({ ...input, real: await realpath(input.path), stats });
  }
  for (const out of resolved) {
    const label = `${out.flag} ${out.path}`;
    const special = out.existing && (out.existing.isCharacterDevice() || out.existing.isFIFO() || standardStream(out.existing) !== undefined);
    if (special) continue;
    for (const input of realInputs) {
      const sameInode = out.existing && input.stats && out.existing.dev === input.stats.dev && out.existing.ino === input.stats.ino;
      if (sameInode || out.real === input.real) throw new UsageError(`${label} is the ${input.what} ${input.path}: refusing to write over an input`);
      if (input.kind === "dir" && inside(out.real, input.real)) {
        throw new UsageError(`${label} lies inside the ${input.what} ${input.path}: refusing to write into an input; choose a path outside it`);
      }
      if (out.kind === "dir" && inside(input.real, out.real)) {
        throw new UsageError(`${label} holds the ${input.what} ${input.path}: refusing to write into a folder that holds an input; choose another folder`);
      }
    }
  }
  for (let i = 0; i < resolved.length; i++) {
    for (let j = i + 1; j < resolved.length; j++) {
      const a = resolved[i]!;
      const b = resolved[j]!;
      const sameInode = a.existing && b.existing && a.existing.dev === b.existing.dev && a.existing.ino === b.existing.ino && a.existing.isFile();
      if (a.real === b.real && !(a.existing?.isCharacterDevice() || a.existing?.isFIFO())) {
        throw new UsageError(`${a.flag} and ${b.flag} name the same file ${a.path}: give each its own path`);
      }
      if (sameInode) throw new UsageError(`${a.flag} ${a.path} and ${b.flag} ${b.path} are the same file (hard links): give each its own path`);
    }
  }
}

/**
 * An input file must be a regular file: a device (`/dev/zero`), a FIFO or a folder given where a
 * file is expected would be read forever or fail deep inside a reader.
 */
export async function assertInputFile(path: string, what: string): Promise<Stats> {
  let s: Stats;
  try {
    s = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UsageError(`${path}: no such file (the ${what})`);
    if (code === "ENOTDIR") throw new UsageError(`${path}: a part of this path is a file, not a folder`);
    throw new UsageError(`${path}: cannot read ${what} (${describeErrno(err)})`);
  }
  if (s.isDirectory()) throw new UsageError(`${path} is a folder; the ${what} must be a file`);
  if (!s.isFile()) throw new UsageError(`${path} is not a regular file (a device, pipe or socket); the ${what} must be a regular file`);
  return s;
}
