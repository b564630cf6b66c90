import { spawn } from "node:child_process";
import { BGE_BIN } from "./paths.js";

export interface BgeRun {
  code: number;
  stdout: string;
  stderr: string;
  /** The process id the run had (files some libraries name after it). */
  pid: number;
}

/** Runs the built CLI (`npm test` builds first) as a subprocess, the way users and CI run it. */
export function runBge(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<BgeRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BGE_BIN, ...args], { cwd: options.cwd, env: { ...process.env, ...options.env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr, pid: child.pid! }));
    child.stdin.end(options.input ?? "");
  });
}

export interface RunningBge {
  pid: number;
  /** Resolves once stderr has shown a line matching `pattern`. */
  waitForStderr(pattern: RegExp): Promise<void>;
  kill(signal: NodeJS.Signals): void;
  done: Promise<BgeRun>;
}

/** Starts the CLI without waiting for it: for signals, locks and other runs that overlap. */
export function startBge(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): RunningBge {
  const child = spawn(process.execPath, [BGE_BIN, ...args], { cwd: options.cwd, env: { ...process.env, ...options.env } });
  let stdout = "";
  let stderr = "";
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => {
    stderr += d;
    for (const w of [...waiters]) {
      if (w.pattern.test(stderr)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  child.stdin.end();
  const done = new Promise<BgeRun>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code: code ?? (signal === "SIGKILL" ? 137 : -1), stdout, stderr, pid: child.pid! }));
  });
  return {
    pid: child.pid!,
    waitForStderr: (pattern) =>
      new Promise((resolve, reject) => {
        if (pattern.test(stderr)) return resolve();
        waiters.push({ pattern, resolve });
        done.then((r) => reject(new Error(`bge exited ${r.code} before printing ${pattern}: ${r.stderr}`)), reject);
      }),
    kill: (signal) => child.kill(signal),
    done,
  };
}
