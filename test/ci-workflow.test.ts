/**
 * .github/workflows/engines.yml is an example users copy: it must parse, run every bundled pipeline,
 * publish JUnit, upload artifacts only past the gate, and call only commands and options that bge has.
 */
import { existsSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import type { Command } from "commander";
import { parse } from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { bundledPipelines, loadPipelineFor } from "../src/artifacts/pipeline.js";
import { buildProgram } from "../src/cli/main.js";
import { REPO_ROOT } from "./helpers/paths.js";

const WORKFLOW = join(REPO_ROOT, ".github", "workflows", "engines.yml");

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  if?: string;
  with?: Record<string, unknown>;
}
interface Job {
  "runs-on": string | string[];
  strategy?: { matrix?: { pipeline?: string[] } };
  env?: Record<string, string>;
  steps: Step[];
}

const workflow = parse(readFileSync(WORKFLOW, "utf8")) as { on: Record<string, unknown>; permissions: Record<string, string>; jobs: Record<string, Job> };

/** A `bge …` invocation in a run step, with `${{ matrix.pipeline }}` and `$VAR`s left as written. */
interface Invocation {
  job: string;
  command: string;
  args: string[];
}

function invocations(job: string, step: Step): Invocation[] {
  if (!step.run) return [];
  const out: Invocation[] = [];
  // Folded (>-) scalars arrive as one line; literal ones may hold several commands.
  for (const line of step.run.split(/\n|&&|;/)) {
    const m = /(?:^|\s)(?:npx(?:\s+--?[\w-]+)*\s+)?bge\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    // `${{ … }}` holds spaces: set each aside while splitting into words, then put it back.
    const exprs: string[] = [];
    const masked = m[1]!.replace(/\$\{\{.*?\}\}/g, (e) => `\u0000${exprs.push(e) - 1}\u0000`);
    const words = (masked.match(/"[^"]*"|'[^']*'|\S+/g) ?? []).map((w) => w.replace(/\u0000(\d+)\u0000/g, (_, i: string) => exprs[Number(i)]!));
    out.push({ job, command: words[0]!, args: words.slice(1) });
  }
  return out;
}

function allInvocations(): Invocation[] {
  return Object.entries(workflow.jobs).flatMap(([name, job]) => job.steps.flatMap((s) => invocations(name, s)));
}

/** The value after `flag` in an invocation. */
function flagValue(inv: Invocation, flag: string): string | undefined {
  const i = inv.args.indexOf(flag);
  return i >= 0 ? inv.args[i + 1] : undefined;
}

function stepUsing(job: Job, action: RegExp): Step[] {
  return job.steps.filter((s) => s.uses && action.test(s.uses));
}

/** What in these invocations the CLI would refuse: an unknown command, an option the command lacks. */
function cliProblems(invs: Invocation[]): string[] {
  const program = buildProgram();
  const flagsOf = (cmd: Command) => cmd.options.flatMap((o) => [o.long, o.short]).filter((f): f is string => Boolean(f));
  const globals = flagsOf(program);
  const problems: string[] = [];
  for (const inv of invs) {
    const cmd = program.commands.find((c) => c.name() === inv.command);
    if (!cmd) {
      problems.push(`${inv.job}: bge ${inv.command} is not a command of bge (${program.commands.map((c) => c.name()).join(", ")})`);
      continue;
    }
    const known = [...flagsOf(cmd), ...globals, "-h", "--help"];
    for (const arg of inv.args.filter((a) => a.startsWith("-"))) {
      const flag = arg.split("=")[0]!;
      if (!known.includes(flag)) problems.push(`${inv.job}: bge ${inv.command} has no option ${flag}`);
    }
  }
  return problems;
}

describe("engines.yml", () => {
  let pipelines: string[];
  beforeAll(async () => {
    pipelines = (await bundledPipelines()).map((f) => basename(f, ".json"));
  });

  it("runs on pushes, pull requests and by hand, with read access and the right to publish checks", () => {
    expect(Object.keys(workflow.on)).toEqual(expect.arrayContaining(["push", "pull_request", "workflow_dispatch"]));
    expect(workflow.permissions).toEqual({ contents: "read", checks: "write" });
  });

  it("a CPU job for the ONNX artifacts and a GPU job for TensorRT engines, each a matrix over every bundled pipeline", () => {
    expect(Object.keys(workflow.jobs).sort()).toEqual(["engines", "onnx"]);
    expect(workflow.jobs.onnx!["runs-on"]).toBe("ubuntu-latest");
    expect(workflow.jobs.engines!["runs-on"]).toEqual(["self-hosted", "gpu", "tensorrt"]);
    for (const job of Object.values(workflow.jobs)) expect(job.strategy?.matrix?.pipeline).toEqual(pipelines);
  });

  it("every action is a well-known one pinned to a version", () => {
    for (const job of Object.values(workflow.jobs)) {
      for (const s of job.steps.filter((s) => s.uses)) expect(s.uses).toMatch(/^(actions\/(checkout|setup-node|cache|upload-artifact)|mikepenz\/action-junit-report)@v\d+$/);
    }
  });

  for (const jobName of ["onnx", "engines"]) {
    describe(`job ${jobName}`, () => {
      const job = workflow.jobs[jobName]!;
      const runs = () => job.steps.map((s) => s.run).filter(Boolean);
      const convert = () => invocations(jobName, job.steps.find((s) => invocations(jobName, s).some((i) => i.command === "convert"))!)[0]!;

      it("installs from the lock file on Node 20 and builds before running bge", () => {
        expect(stepUsing(job, /^actions\/checkout@/)).toHaveLength(1);
        expect(stepUsing(job, /^actions\/setup-node@/)[0]!.with).toMatchObject({ "node-version": 20 });
        const order = runs();
        expect(order.indexOf("npm ci")).toBeGreaterThanOrEqual(0);
        expect(order.indexOf("npm run build")).toBeGreaterThan(order.indexOf("npm ci"));
        const convertAt = job.steps.findIndex((s) => invocations(jobName, s).length > 0);
        expect(convertAt).toBeGreaterThan(job.steps.findIndex((s) => s.run === "npm run build"));
      });

      it("converts each matrix model with its own pipeline file, writing JUnit and the JSON report beside the artifact folder", async () => {
        const c = convert();
        expect(c.args[0]).toBe("BAAI/${{ matrix.pipeline }}");
        expect(flagValue(c, "--pipeline")).toBe("pipelines/${{ matrix.pipeline }}.json");
        for (const p of job.strategy!.matrix!.pipeline!) {
          expect(existsSync(join(REPO_ROOT, "pipelines", `${p}.json`))).toBe(true);
          expect((await loadPipelineFor(`BAAI/${p}`))?.model).toBe(`BAAI/${p}`);
        }
        const out = flagValue(c, "-o")!;
        for (const f of [flagValue(c, "--junit")!, flagValue(c, "--report")!]) {
          expect(f).toBeDefined();
          expect(f.startsWith(`${out}/`), `${f} would land inside the artifact folder ${out}`).toBe(false);
        }
      });

      it("publishes the JUnit file whether the gate passed or failed", () => {
        const [publish] = stepUsing(job, /^mikepenz\/action-junit-report@/);
        expect(publish?.if).toBe("success() || failure()");
        expect(publish?.with?.report_paths).toBe(flagValue(convert(), "--junit"));
      });

      it("uploads the report always and the artifact folder only when the gate passed", () => {
        const uploads = stepUsing(job, /^actions\/upload-artifact@v4$/);
        const c = convert();
        const report = uploads.find((u) => String(u.with?.path).includes(flagValue(c, "--report")!));
        expect(report?.if).toBe("always()");
        const artifact = uploads.find((u) => u.with?.path === flagValue(c, "-o"));
        expect(artifact?.if).toBe("success()");
        expect(artifact?.with?.["if-no-files-found"]).toBe("error");
        // Each upload is named per job and pipeline: matrix legs must not collide.
        for (const u of uploads) expect(String(u.with?.name)).toMatch(new RegExp(`${jobName}-\\$\\{\\{ matrix\\.pipeline \\}\\}$`));
      });
    });
  }

  it("the engine job names trtexec, so that a runner without TensorRT fails instead of skipping the engines", () => {
    const c = allInvocations().find((i) => i.job === "engines" && i.command === "convert")!;
    expect(flagValue(c, "--trtexec")).toBe('"$TRTEXEC"');
    expect(workflow.jobs.engines!.env?.TRTEXEC).toMatch(/\/trtexec$/);
    expect(allInvocations().find((i) => i.job === "onnx" && i.command === "convert")!.args).not.toContain("--trtexec");
  });

  it("every bge command it runs exists in the CLI, with every option it passes", () => {
    expect(allInvocations().length).toBeGreaterThanOrEqual(2);
    expect(cliProblems(allInvocations())).toEqual([]);
  });

  it("(the check itself) refuses an unknown command or option and accepts global ones", () => {
    const inv = (command: string, ...args: string[]): Invocation => ({ job: "t", command, args });
    expect(cliProblems([inv("verify", "out", "--golden", "g.json", "--junit", "j.xml", "--report=r.json", "--pipeline", "p.json", "--json", "-q")])).toEqual([]);
    expect(cliProblems([inv("verify", "out", "--golden", "g", "--bogus"), inv("nope")])).toEqual([
      "t: bge verify has no option --bogus",
      expect.stringMatching(/^t: bge nope is not a command of bge \(.*verify.*\)$/),
    ]);
  });
});
