import "./ort-telemetry.js";
import * as ort from "onnxruntime-node";
import { UsageError } from "../errors.js";

/** The one import of onnxruntime-node, behind the telemetry switch. */
export { ort };

const PROVIDERS = ["cpu", "cuda"] as const;
export type ExecutionProvider = (typeof PROVIDERS)[number];

/**
 * Execution providers from BGE_EXECUTION_PROVIDERS (comma-separated, in order of preference; default
 * cpu, the reference runner). `cuda` needs onnxruntime-node's CUDA libraries, which its install
 * script fetches outside the npm registry and which this project skips by default (README).
 */
export function executionProviders(env: NodeJS.ProcessEnv = process.env): ExecutionProvider[] {
  const raw = env.BGE_EXECUTION_PROVIDERS;
  if (raw === undefined) return ["cpu"];
  const items = raw.split(",").map((s) => s.trim());
  const bad = items.filter((s) => !(PROVIDERS as readonly string[]).includes(s));
  if (raw.trim() === "" || bad.length) {
    throw new UsageError(`BGE_EXECUTION_PROVIDERS=${JSON.stringify(raw)}: expected a comma-separated list of ${PROVIDERS.join(", ")}${bad.length ? ` (unknown: ${bad.join(", ")})` : ""}`);
  }
  return [...new Set(items)] as ExecutionProvider[];
}

/** How a report names the runtime: onnxruntime-cpu, or onnxruntime-cuda when CUDA comes first. */
export function backendName(providers: readonly ExecutionProvider[]): string {
  return `onnxruntime-${providers[0] ?? "cpu"}`;
}
