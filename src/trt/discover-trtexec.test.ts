import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { ToolFailedError, ToolMissingError } from "../errors.js";
import { SHARED_FIXTURES } from "../../test/helpers/paths.js";
import { tempDir } from "../../test/helpers/tmp.js";
import { DEFAULT_TRTEXEC_PATHS, discoverTrtexec, forgetTrtexecVersions, trtFamily, type DiscoverTrtexecOptions } from "./discover-trtexec.js";

const LOGS = join(SHARED_FIXTURES, "trtexec");
const HAVE_LOGS = existsSync(LOGS);

/** The real `&&&& RUNNING` banner of a fixture log, as that trtexec printed it. */
function bannerOf(log: string): string {
  return readFileSync(join(LOGS, log), "utf8").split("\n").find((l) => l.startsWith("&&&& RUNNING"))!;
}

// Hand-typed banners for when the shared fixtures are absent; they are the same bytes as the logs' first lines.
const BANNERS = HAVE_LOGS
  ? {
      "8.5.1": bannerOf("trt-8.5.1-run-loadengine-dumpoutput-verbose.log"),
      "8.6.1": bannerOf("trt-8.6.1-run-loadengine-int8-export-verbose.log"),
      "10.16.0": bannerOf("trt-10.16.0-failed-parser-plugin-not-found.log"),
      "11.0.0": bannerOf("trt-11.0.0-build-stronglytyped-and-unknown-options.log"),
    }
  : {
      "8.5.1": "&&&& RUNNING TensorRT.trtexec [TensorRT v8501] # trtexec --loadEngine=sample.engine",
      "8.6.1": "&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec --verbose",
      "10.16.0": "&&&& RUNNING TensorRT.trtexec [TensorRT v101600] [b72] # trtexec --onnx=/cookbook/00-Data/model/model-addscalar.onnx",
      "11.0.0": "&&&& RUNNING TensorRT.trtexec [TensorRT v110000] [b114] # trtexec --stronglyTyped",
    };

const root = await tempDir("bge-discover-");
let n = 0;

/** A fresh folder per test, so lookups never see another test's fakes. */
async function freshDir(): Promise<string> {
  const dir = join(root, `t${n++}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

/**
 * A fake trtexec: prints `lines` (single-quoted for sh), records each run in `<file>.runs`, exits `exit`.
 * Returns its path.
 */
async function fakeTrtexec(dir: string, lines: string[], { exit = 0, name = "trtexec", mode = 0o755 } = {}): Promise<string> {
  const path = join(dir, name);
  const echo = lines.map((l) => `printf '%s\\n' '${l.replace(/'/g, `'\\''`)}'`).join("\n");
  await writeFile(path, `#!/bin/sh\necho "$*" >> '${path}.runs'\n${echo}\nexit ${exit}\n`);
  await chmod(path, mode);
  return path;
}

/** The argument lines of each run so far ("" for a run without arguments). */
const runs = async (fake: string) => (await readFile(`${fake}.runs`, "utf8").catch(() => "")).split("\n").slice(0, -1);

/** Options isolated from this machine: no real PATH, no /usr/src/tensorrt, no file cache. */
function isolated(extra: DiscoverTrtexecOptions = {}): DiscoverTrtexecOptions {
  return { env: { PATH: "/nonexistent-bge" }, searchPath: "", fallbackPaths: [], cacheFile: false, ...extra };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

beforeEach(() => forgetTrtexecVersions());

describe("discoverTrtexec: versions", () => {
  it.each([
    ["8.6.1", { major: 8, minor: 6, patch: 1, code: 8601 }, "8.6"],
    ["10.16.0", { major: 10, minor: 16, patch: 0, code: 101600 }, "10"],
    ["11.0.0", { major: 11, minor: 0, patch: 0, code: 110000 }, "11"],
  ] as const)("reads TensorRT %s from the banner of its --help run", async (v, version, family) => {
    const fake = await fakeTrtexec(await freshDir(), [BANNERS[v], "=== Model Options ==="]);
    const info = await discoverTrtexec(isolated({ explicit: fake }));
    expect(info).toEqual({ path: fake, version, family, source: "--trtexec" });
    expect(await runs(fake)).toEqual(["--help"]);
  });

  it("accepts a banner from a run that exits 1 (a bare run fails for want of a model)", async () => {
    const fake = await fakeTrtexec(await freshDir(), [BANNERS["10.16.0"], "[E] Model missing or format not recognized"], { exit: 1 });
    expect((await discoverTrtexec(isolated({ explicit: fake }))).version.code).toBe(101600);
  });

  it("reads a bare `TensorRT version: X.Y.Z` line, trying a run without arguments when --help says nothing", async () => {
    const dir = await freshDir();
    const path = join(dir, "trtexec");
    await writeFile(path, `#!/bin/sh\necho "$*" >> '${path}.runs'\n[ "$1" = --help ] && exit 2\necho 'TensorRT version: 10.16.0'\nexit 1\n`);
    await chmod(path, 0o755);
    const info = await discoverTrtexec(isolated({ explicit: path }));
    expect(info.version).toEqual({ major: 10, minor: 16, patch: 0, code: 101600 });
    expect(await runs(path)).toEqual(["--help", ""]);
  });

  it("refuses TensorRT 8.5 with exit 3, naming the supported versions", async () => {
    const fake = await fakeTrtexec(await freshDir(), [BANNERS["8.5.1"]]);
    const err = await rejection(discoverTrtexec(isolated({ explicit: fake })));
    expect(err).toBeInstanceOf(ToolMissingError);
    expect((err as ToolMissingError).exitCode).toBe(3);
    expect(err.message).toContain(`${fake} (from --trtexec) is TensorRT 8.5.1; bge supports TensorRT 8.6, 10.x and 11.x`);
  });

  it("a binary that never names a TensorRT version is a tool failure (exit 4) showing its output", async () => {
    const fake = await fakeTrtexec(await freshDir(), ["hello from something else"], { exit: 0 });
    const err = await rejection(discoverTrtexec(isolated({ explicit: fake })));
    expect(err).toBeInstanceOf(ToolFailedError);
    expect(err.message).toContain(`${fake} did not say which TensorRT it is`);
    expect(err.message).toContain("hello from something else");
  });

  it("a binary that hangs is killed after the timeout (exit 4)", async () => {
    const dir = await freshDir();
    const path = join(dir, "trtexec");
    // A shell busy loop: the probe's env has no usable PATH, so not even `sleep` can be looked up.
    await writeFile(path, "#!/bin/sh\nwhile :; do :; done\n");
    await chmod(path, 0o755);
    const started = Date.now();
    const err = await rejection(discoverTrtexec(isolated({ explicit: path, timeoutMs: 300 })));
    expect(err).toBeInstanceOf(ToolFailedError);
    expect(err.message).toContain("did not finish within 300 ms");
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("maps versions to families", () => {
    expect(trtFamily({ major: 8, minor: 6 })).toBe("8.6");
    expect(trtFamily({ major: 8, minor: 5 })).toBeUndefined();
    expect(trtFamily({ major: 9, minor: 2 })).toBeUndefined();
    expect(trtFamily({ major: 10, minor: 3 })).toBe("10");
    expect(trtFamily({ major: 11, minor: 0 })).toBe("11");
    expect(trtFamily({ major: 12, minor: 0 })).toBeUndefined();
  });
});

describe("discoverTrtexec: lookup order", () => {
  it("--trtexec beats $TRTEXEC, which beats PATH, which beats the default location", async () => {
    const [a, b, c, d] = await Promise.all([freshDir(), freshDir(), freshDir(), freshDir()]);
    const explicit = await fakeTrtexec(a, [BANNERS["11.0.0"]], { name: "my-trtexec" });
    const fromEnv = await fakeTrtexec(b, [BANNERS["10.16.0"]]);
    const onPath = await fakeTrtexec(c, [BANNERS["8.6.1"]]);
    const fallback = await fakeTrtexec(d, [BANNERS["10.16.0"]]);
    const base = { searchPath: c, fallbackPaths: [fallback], cacheFile: false as const };
    const env = { TRTEXEC: fromEnv, PATH: c };

    expect(await discoverTrtexec({ ...base, env, explicit })).toMatchObject({ path: explicit, source: "--trtexec", family: "11" });
    expect(await discoverTrtexec({ ...base, env })).toMatchObject({ path: fromEnv, source: "$TRTEXEC", family: "10" });
    expect(await discoverTrtexec({ ...base, env: { PATH: c } })).toMatchObject({ path: onPath, source: "PATH", family: "8.6" });
    expect(await discoverTrtexec({ ...base, env: {}, searchPath: "" })).toMatchObject({ path: fallback, source: "default" });
  });

  it("reads PATH from env when searchPath is not given, and takes the first folder that has one", async () => {
    const [empty, first, second] = await Promise.all([freshDir(), freshDir(), freshDir()]);
    const one = await fakeTrtexec(first, [BANNERS["10.16.0"]]);
    const two = await fakeTrtexec(second, [BANNERS["11.0.0"]]);
    const info = await discoverTrtexec({ env: { PATH: ["", empty, first, second].join(":") }, fallbackPaths: [], cacheFile: false });
    expect(info.path).toBe(one);
    expect(await runs(two)).toEqual([]);
  });

  it("on PATH, skips a non-executable file and a folder named trtexec", async () => {
    const [noexec, folder, good] = await Promise.all([freshDir(), freshDir(), freshDir()]);
    await fakeTrtexec(noexec, [BANNERS["11.0.0"]], { mode: 0o644 });
    await mkdir(join(folder, "trtexec"));
    const fake = await fakeTrtexec(good, [BANNERS["8.6.1"]]);
    const info = await discoverTrtexec(isolated({ searchPath: [noexec, folder, good].join(":") }));
    expect(info).toMatchObject({ path: fake, family: "8.6", source: "PATH" });
  });

  it("an explicit non-executable file is refused (exit 3), not skipped in favour of another trtexec", async () => {
    const [bad, good] = await Promise.all([freshDir(), freshDir()]);
    const noexec = await fakeTrtexec(bad, [BANNERS["11.0.0"]], { mode: 0o644 });
    await fakeTrtexec(good, [BANNERS["8.6.1"]]);
    const err = await rejection(discoverTrtexec(isolated({ explicit: noexec, searchPath: good })));
    expect(err).toBeInstanceOf(ToolMissingError);
    expect(err.message).toMatch(new RegExp(`^--trtexec ${noexec}: is not executable`));
  });

  it("$TRTEXEC pointing at a folder is refused, saying it is a folder", async () => {
    const dir = await freshDir();
    const err = await rejection(discoverTrtexec(isolated({ env: { TRTEXEC: dir } })));
    expect(err).toBeInstanceOf(ToolMissingError);
    expect(err.message).toContain(`$TRTEXEC ${dir}: is a folder, not the trtexec binary`);
  });

  it("an explicit path that does not exist is refused", async () => {
    const missing = join(await freshDir(), "nope", "trtexec");
    const err = await rejection(discoverTrtexec(isolated({ explicit: missing })));
    expect(err).toBeInstanceOf(ToolMissingError);
    expect(err.message).toContain(`--trtexec ${missing}: no such file`);
  });

  it("none anywhere: exit 3 with one line naming where it looked and how to get trtexec", async () => {
    const [p1, p2] = await Promise.all([freshDir(), freshDir()]);
    const fallback = join(p2, "usr-src-tensorrt-bin-trtexec");
    const err = await rejection(discoverTrtexec({ env: { PATH: `${p1}:${p2}` }, fallbackPaths: [fallback], cacheFile: false }));
    expect(err).toBeInstanceOf(ToolMissingError);
    expect((err as ToolMissingError).exitCode).toBe(3);
    expect(err.message).not.toContain("\n");
    expect(err.message).toContain(`$TRTEXEC: unset, PATH: ${p1}:${p2}, then ${fallback}`);
    expect(err.message).toContain("nvcr.io/nvidia/tensorrt:<tag>-py3");
    expect(err.message).toContain("TensorRT tarball's bin/ on PATH");
    expect(err.message).toContain("--trtexec PATH");
  });

  it("falls back to /usr/src/tensorrt/bin/trtexec, where NVIDIA's containers put it", () => {
    expect(DEFAULT_TRTEXEC_PATHS).toEqual(["/usr/src/tensorrt/bin/trtexec"]);
  });
});

describe("discoverTrtexec: version cache", () => {
  it("probes a binary once per process, and again when the binary changes", async () => {
    const dir = await freshDir();
    const fake = await fakeTrtexec(dir, [BANNERS["10.16.0"]]);
    await discoverTrtexec(isolated({ explicit: fake }));
    const second = await discoverTrtexec(isolated({ explicit: fake }));
    expect(second.family).toBe("10");
    expect(await runs(fake)).toHaveLength(1);

    // Same path, new binary (an upgrade in place): size and mtime change, so it is probed again.
    await fakeTrtexec(dir, [BANNERS["11.0.0"], "=== Model Options (11) ==="]);
    const upgraded = await discoverTrtexec(isolated({ explicit: fake }));
    expect(upgraded.family).toBe("11");
    expect(await runs(fake)).toHaveLength(2);
  });

  it("remembers versions across processes in the cache file, keyed by realpath+mtime+size", async () => {
    const dir = await freshDir();
    const fake = await fakeTrtexec(dir, [BANNERS["8.6.1"]]);
    const cacheFile = join(dir, "versions.json");
    await discoverTrtexec(isolated({ explicit: fake, cacheFile }));
    const saved = JSON.parse(await readFile(cacheFile, "utf8")) as { entries: Record<string, unknown> };
    const [key] = Object.keys(saved.entries);
    expect(key.startsWith(`${fake}|`)).toBe(true);
    expect(saved.entries[key]).toEqual({ major: 8, minor: 6, patch: 1, code: 8601 });

    forgetTrtexecVersions(); // as a new process would start
    expect((await discoverTrtexec(isolated({ explicit: fake, cacheFile }))).version.code).toBe(8601);
    expect(await runs(fake)).toHaveLength(1);

    // A corrupt cache file is ignored, not trusted and not fatal.
    forgetTrtexecVersions();
    await writeFile(cacheFile, "{not json");
    expect((await discoverTrtexec(isolated({ explicit: fake, cacheFile }))).family).toBe("8.6");
    expect(await runs(fake)).toHaveLength(2);
  });
});
