import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { link, mkdir, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "./helpers/paths.js";
import { runBge, startBge } from "./helpers/run-bge.js";
import { tempDir } from "./helpers/tmp.js";

// What a user's data must survive: outputs aimed at inputs, wrong values, wrong kinds of paths,
// two writers, killed writers (issue 9). Every case runs the real CLI as a subprocess.

let root: string;
let tiny: string;
let artifact: string;
let golden: string;
let passages: string;
let queries: string;

const sha = async (path: string) => createHash("sha256").update(await readFile(path)).digest("hex");

/** Every file below `dir` with its sha256: proves a refused command changed nothing. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out[join(e.parentPath, e.name)] = await sha(join(e.parentPath, e.name));
  }
  return out;
}

function expectRefused(r: { code: number; stderr: string }, message: string | RegExp) {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  expect(r.stderr).toMatch(message);
}

beforeAll(async () => {
  root = await tempDir("bge-hardening-");
  tiny = join(root, "tiny");
  artifact = join(root, "tiny-onnx");
  golden = join(root, "golden.json");
  passages = join(root, "passages.txt");
  queries = join(root, "queries.txt");
  await writeFile(passages, "hello world\n你好，世界\na third passage\n");
  await writeFile(queries, "hello\n");
  expect((await runBge(["fixture", tiny, "--shape", "tiny", "--seed", "3"])).code).toBe(0);
  expect((await runBge(["golden", tiny, "--texts", passages, "--queries", queries, "-o", golden])).code).toBe(0);
  expect((await runBge(["export", tiny, "-o", artifact, "--quiet"])).code).toBe(0);
});

describe("1. a fresh clone installs offline", () => {
  it("the project, not the environment, skips install scripts; CI sets no variable", async () => {
    const npmrc = await readFile(join(REPO_ROOT, ".npmrc"), "utf8");
    expect(npmrc).toMatch(/^ignore-scripts=true$/m);
    const ci = await readFile(join(REPO_ROOT, ".ci", "run"), "utf8");
    expect(ci).not.toContain("ONNXRUNTIME_NODE_INSTALL");
    // With install scripts skipped nothing builds dist/ during npm ci: the demo builds first.
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
    expect(pkg.scripts.demo).toMatch(/^npm run build && /);
    // The CPU provider ships inside the package: nothing the skipped script would fetch is needed.
    expect(existsSync(join(REPO_ROOT, "node_modules", "onnxruntime-node", "bin", "napi-v6", "linux", "x64", "onnxruntime_binding.node"))).toBe(true);
  });
});

describe("2. no output ever overwrites an input", () => {
  it("golden -o refuses the texts file, the queries file and anything inside the checkpoint", async () => {
    const before = { ...(await snapshot(tiny)), [passages]: await sha(passages), [queries]: await sha(queries) };
    for (const [target, why] of [
      [passages, /is the texts file/],
      [queries, /is the queries file/],
      [join(tiny, "config.json"), /inside the checkpoint folder/],
      [join(tiny, "new.json"), /inside the checkpoint folder/],
    ] as const) {
      expectRefused(await runBge(["golden", tiny, "--texts", passages, "--queries", queries, "-o", target]), why);
    }
    expect({ ...(await snapshot(tiny)), [passages]: await sha(passages), [queries]: await sha(queries) }).toEqual(before);
  });

  it("verify --report/--junit refuse the golden, the manifest, a model, and the same file twice — through symlinks, hard links and ..", async () => {
    const link1 = join(root, "golden-link.json");
    const hard = join(root, "golden-hard.json");
    await symlink(golden, link1);
    await link(golden, hard);
    const before = { ...(await snapshot(artifact)), [golden]: await sha(golden) };
    const cases: [string[], RegExp][] = [
      [["--report", golden], /--report .* is the golden file/],
      [["--junit", link1], /--junit .* is the golden file/],
      [["--report", hard], /--report .* is the golden file/],
      [["--report", join(root, "x", "..", "golden.json")], /is the golden file/],
      [["--report", join(artifact, "manifest.json")], /lies inside the candidate/],
      [["--junit", join(artifact, "model.fp32.onnx")], /lies inside the candidate/],
      [["--report", join(root, "r.json"), "--junit", join(root, "r.json")], /--report and --junit name the same file/],
    ];
    for (const [args, why] of cases) expectRefused(await runBge(["verify", artifact, "--golden", golden, ...args]), why);
    expect({ ...(await snapshot(artifact)), [golden]: await sha(golden) }).toEqual(before);
    // The artifact is still whole: verify passes on it.
    expect((await runBge(["verify", artifact, "--golden", golden, "--quiet"])).code).toBe(0);
  });

  it("export -o refuses the checkpoint folder itself and a folder holding it", async () => {
    const before = await snapshot(tiny);
    expectRefused(await runBge(["export", tiny, "-o", tiny]), /is the checkpoint folder/);
    expectRefused(await runBge(["export", tiny, "-o", root]), /holds the checkpoint folder/);
    expect(await snapshot(tiny)).toEqual(before);
  });
});

describe("3. one strict parser for numbers and lists", () => {
  const refusals: [string[], RegExp][] = [
    [["verify", "A", "--golden", "G", "--tolerance", ""], /--tolerance <cos>' argument '' is invalid\. Expected the minimum cosine/],
    [["verify", "A", "--golden", "G", "--tolerance", "1"], /bit-identical/],
    [["verify", "A", "--golden", "G", "--tolerance", "1e-3"], /--tolerance <cos>' argument '1e-3' is invalid/],
    [["verify", "A", "--golden", "G", "--precision", ""], /--precision <list>' argument '' is invalid\. Expected a comma-separated list of fp32, fp16/],
    [["verify", "A", "--golden", "G", "--precision", "fp32,nonsense"], /unknown: nonsense/],
    [["embed", "M", "x", "--precision", "nonsense"], /--precision <p>' argument 'nonsense' is invalid/],
    [["export", "M", "-o", "D", "--precision", "fp32,,fp16"], /--precision <list>' argument 'fp32,,fp16' is invalid/],
    [["fixture", "D", "--shards", String(2 ** 53)], /--shards <n>' argument '9007199254740992' is invalid\. Expected a whole number from 1 to 1024/],
    [["fixture", "D", "--seed", "0x10"], /'0x10' is invalid/],
    [["embed", "M", "x", "--max-length", "1e3"], /'1e3' is invalid/],
    [["embed", "M", "x", "--batch-size", "12abc"], /'12abc' is invalid/],
    [["export", "M", "-o", "D", "--opset", "16"], /from 17 to 21/],
  ];
  it.each(refusals)("bge %j is exit 2 naming flag, value and what is accepted", async (...args) => {
    const [argv, why] = [args[0], args[1]] as [string[], RegExp];
    const r = await runBge(argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(why);
  });

  it("embed refuses --precision where it would be ignored (the reference backend)", async () => {
    expectRefused(await runBge(["embed", tiny, "x", "--backend", "reference", "--precision", "fp16"]), /--precision.*reference/);
  });
});

describe("4. ordinary mistakes are exit 2 with one line, and leave nothing behind", () => {
  it("paths of the wrong kind, missing folders, empty names and pseudo-filesystems", async () => {
    const file = join(root, "plain.txt");
    await writeFile(file, "x");
    const cases: [string[], RegExp][] = [
      [["golden", tiny, "--texts", passages, "-o", join(file, "g.json")], /a part of this path is a file|is a file, not a folder/],
      [["golden", tiny, "--texts", passages, "-o", ""], /-o: the path is empty/],
      [["golden", tiny, "--texts", passages, "-o", join(root, "missing", "g.json")], /folder .*missing does not exist/],
      [["verify", artifact, "--golden", golden, "--report", root], /--report .* is a folder; give a file name/],
      [["export", tiny, "-o", file], /-o .* is a file; give a folder name/],
      [["export", tiny, "-o", join(file, "sub")], /is a file, not a folder/],
      [["golden", file, "--texts", passages, "-o", join(root, "g2.json")], /is a file; <model> must be a checkpoint folder/],
      [["verify", artifact, "--golden", tiny], /is a folder; the golden file must be a file/],
      [["embed", tiny, "--file", tiny], /is a folder; the texts file must be a file/],
      [["verify", artifact, "--golden", golden, "--report", "/proc/bge-report.json"], /proc pseudo-filesystem/],
      [["export", tiny, "-o", "/sys/bge-out"], /sysfs pseudo-filesystem/],
      [["fixture", "/proc/bge-fixture"], /proc pseudo-filesystem/],
    ];
    for (const [args, why] of cases) expectRefused(await runBge(args), why);
    expect(existsSync(join(root, "g2.json"))).toBe(false);
  });

  it("--report /dev/null and --junit /dev/stdout are written in place: the device node stays a device", async () => {
    const r = await runBge(["verify", artifact, "--golden", golden, "--report", "/dev/null", "--junit", "/dev/stdout", "--quiet"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('<testsuites name="bge verify"');
    expect(statSync("/dev/null").isCharacterDevice()).toBe(true);
  });

  it("a report path that links to a folder is refused; inputs that are devices or FIFOs are refused, not read for ever", async () => {
    const dirLink = join(root, "dir-link");
    await symlink(root, dirLink);
    expectRefused(await runBge(["verify", artifact, "--golden", golden, "--report", dirLink]), /is a folder/);
    const fifo = join(root, "texts.fifo");
    execFileSync("mkfifo", [fifo]);
    expectRefused(await runBge(["embed", tiny, "--file", fifo]), /not a regular file/);
    const zeroWeights = join(root, "zero-weights");
    await mkdir(zeroWeights);
    for (const f of await readdir(tiny)) if (f !== "model.safetensors") execFileSync("cp", ["-r", join(tiny, f), zeroWeights]);
    await symlink("/dev/zero", join(zeroWeights, "model.safetensors"));
    expectRefused(await runBge(["embed", zeroWeights, "hi"]), /model\.safetensors is not a regular file/);
  });

  it("an export that fails half-way leaves no folder and no .onnx behind", async () => {
    const broken = join(root, "broken-late");
    execFileSync("cp", ["-r", tiny, broken]);
    // Read only after both graphs are written: the copy of the config files fails.
    await rm(join(broken, "sentence_bert_config.json"));
    await mkdir(join(broken, "sentence_bert_config.json"));
    const out = join(root, "broken-late-onnx");
    const r = await runBge(["export", broken, "-o", out]);
    expectRefused(r, /sentence_bert_config\.json/);
    expect(existsSync(out)).toBe(false);
  });
});

describe("5. one writer per folder; interrupted writers clean up", () => {
  let zh: string;
  beforeAll(async () => {
    // Big enough (95 MB of fp32 graph) that an export is still running when the test interferes.
    zh = join(root, "zh");
    expect((await runBge(["fixture", zh, "--shape", "bge-small-zh-v1.5", "--seed", "5"])).code).toBe(0);
  }, 120_000);

  it("a second export into a folder being written is exit 2 naming the first one's pid", async () => {
    const out = join(root, "zh-two");
    const first = startBge(["export", zh, "-o", out]);
    await first.waitForStderr(/writing model\.fp32\.onnx/);
    const second = await runBge(["export", zh, "-o", out]);
    expectRefused(second, new RegExp(`being written by bge export \\(pid ${first.pid}`));
    expect((await first.done).code).toBe(0);
    expect(existsSync(join(out, "manifest.json"))).toBe(true);
    expect((await readdir(out)).filter((f) => f.startsWith("."))).toEqual([]);
  });

  it("verify refuses an artifact that an export is writing, naming the writer", async () => {
    const out = join(root, "zh-busy");
    expect((await runBge(["export", zh, "-o", out, "--precision", "fp32", "--quiet"])).code).toBe(0);
    const writer = startBge(["export", zh, "-o", out]);
    await writer.waitForStderr(/writing model\.fp32\.onnx/);
    expectRefused(await runBge(["verify", out, "--golden", golden]), new RegExp(`is being written by bge export \\(pid ${writer.pid}\\); verify it when that has finished`));
    expect((await writer.done).code).toBe(0);
  });

  it.each([
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const)("%s: exit %i, temporary files removed, a folder it created removed; a rerun completes", async (signal, code) => {
    const out = join(root, `zh-${signal}`);
    const run = startBge(["export", zh, "-o", out]);
    await run.waitForStderr(/writing model\.fp32\.onnx/);
    run.kill(signal);
    const r = await run.done;
    expect(r.code).toBe(code);
    expect(r.stderr).toContain(`interrupted (${signal}); temporary files removed`);
    expect(existsSync(out)).toBe(false);
    expect((await runBge(["export", zh, "-o", out, "--quiet"])).code).toBe(0);
  });

  it("SIGKILL: the rerun takes over the dead writer's lock, removes its leftovers and writes what an uninterrupted run writes", async () => {
    const clean = join(root, "zh-clean");
    expect((await runBge(["export", zh, "-o", clean, "--quiet"])).code).toBe(0);
    const out = join(root, "zh-killed");
    const run = startBge(["export", zh, "-o", out]);
    await run.waitForStderr(/writing model\.fp32\.onnx/);
    run.kill("SIGKILL");
    expect((await run.done).code).toBe(137);
    expect((await readdir(out)).some((f) => f.endsWith(".tmp"))).toBe(true);
    const rerun = await runBge(["export", zh, "-o", out]);
    expect(rerun.code).toBe(0);
    expect(rerun.stderr).toMatch(new RegExp(`taking over the lock of an interrupted bge export \\(pid ${run.pid}, no longer running\\)`));
    const names = (await readdir(out, { recursive: true })).sort();
    expect(names).toEqual((await readdir(clean, { recursive: true })).sort());
    for (const f of ["model.fp32.onnx", "model.fp16.onnx", "tokenizer.json"]) expect(await sha(join(out, f))).toBe(await sha(join(clean, f)));
  });

  it("re-exporting other weights with fewer precisions leaves exactly what the new manifest lists", async () => {
    const out = join(root, "zh-reexport");
    expect((await runBge(["export", zh, "-o", out, "--quiet"])).code).toBe(0);
    expect((await runBge(["export", tiny, "-o", out, "--precision", "fp32", "--quiet"])).code).toBe(0);
    const manifest = JSON.parse(await readFile(join(out, "manifest.json"), "utf8")) as { files: { path: string }[] };
    const onDisk = (await readdir(out, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(out.length + 1));
    expect(onDisk.sort()).toEqual([...manifest.files.map((f) => f.path), "manifest.json"].sort());
    expect(onDisk).not.toContain("model.fp16.onnx");
  });
});

describe("6. texts are strict UTF-8", () => {
  it("Latin-1, UTF-16 and binary files are exit 2 naming file, line and byte offset; a BOM is fine", async () => {
    const latin1 = join(root, "latin1.txt");
    await writeFile(latin1, Buffer.concat([Buffer.from("fine\ncaf"), Buffer.from([0xe9]), Buffer.from("\n")]));
    expectRefused(await runBge(["embed", tiny, "--file", latin1]), /latin1\.txt: line 2, byte offset 8: byte 0xe9 is not valid UTF-8/);
    const utf16 = join(root, "utf16.txt");
    await writeFile(utf16, Buffer.from("\ufeffhello\n", "utf16le"));
    expectRefused(await runBge(["golden", tiny, "--texts", utf16, "-o", join(root, "g16.json")]), /utf16\.txt: line 1, byte offset 0: .*UTF-16/);
    const gif = join(root, "image.txt");
    await writeFile(gif, Buffer.from([0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0xff, 0x00]));
    expectRefused(await runBge(["embed", tiny, "--file", gif]), /image\.txt: line 1, byte offset 10: byte 0x80 is not valid UTF-8/);
    const bom = join(root, "bom.txt");
    await writeFile(bom, "\ufeffhello world\n");
    const withBom = await runBge(["embed", tiny, "--file", bom, "--json"]);
    const plain = await runBge(["embed", tiny, "hello world", "--json"]);
    expect(withBom.code).toBe(0);
    expect(JSON.parse(withBom.stdout)).toEqual(JSON.parse(plain.stdout));
  });
});

describe("8. no telemetry, no stray files", () => {
  it("an ONNX Runtime run leaves no /tmp/mat-debug-<pid>.log and nothing under ~/.cache/Microsoft", async () => {
    const home = join(root, "home");
    await mkdir(home);
    // undefined removes the variable from the child's environment, whatever this process has.
    const env = { HOME: home, ORT_DISABLE_TELEMETRY: undefined };
    const r = await runBge(["embed", artifact, "hello", "--json"], { env });
    expect(r.code).toBe(0);
    expect(existsSync(`/tmp/mat-debug-${r.pid}.log`)).toBe(false);
    expect(existsSync(join(home, ".cache", "Microsoft"))).toBe(false);
    // The switch is what keeps it off: with telemetry turned back on, ONNX Runtime writes its log.
    const on = await runBge(["embed", artifact, "hello", "--json"], { env: { ...env, ORT_DISABLE_TELEMETRY: "0" } });
    expect(on.code).toBe(0);
    const wrote = existsSync(`/tmp/mat-debug-${on.pid}.log`);
    await rm(`/tmp/mat-debug-${on.pid}.log`, { force: true });
    await rm(join(home, ".cache"), { recursive: true, force: true });
    // Whether ONNX Runtime writes its log at all depends on the host (CI's sandbox: it did not), so
    // the control is reported, not asserted; what keeps it off is asserted directly below.
    if (!wrote) console.log("control not observable here: ONNX Runtime wrote no /tmp/mat-debug log even with ORT_DISABLE_TELEMETRY=0");
  });

  it("loading the ONNX runner sets ORT_DISABLE_TELEMETRY=1 before onnxruntime-node, and keeps a user's own value", () => {
    const probe = (value: string | undefined) => {
      const env = { ...process.env };
      if (value === undefined) delete env.ORT_DISABLE_TELEMETRY;
      else env.ORT_DISABLE_TELEMETRY = value;
      const ort = pathToFileURL(join(REPO_ROOT, "dist/runners/ort.js")).href;
      const script = `await import(${JSON.stringify(ort)}); console.log(String(process.env.ORT_DISABLE_TELEMETRY));`;
      return { stdout: execFileSync(process.execPath, ["--input-type=module", "-e", script], { env, encoding: "utf8" }) };
    };
    expect(probe(undefined).stdout.trim()).toBe("1");
    expect(probe("0").stdout.trim()).toBe("0");
  });
});
