import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Two test files at a time: most of a file's time is spent in child processes (the CLI, trtexec
    // doubles, ONNX Runtime) waiting on each other, so two overlap well even on two cores.
    maxWorkers: 2,
  },
});
