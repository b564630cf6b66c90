import { createRequire } from "node:module";
import type { Output } from "../cli/output.js";
import { buildEngines, type EnginePrecision, type EngineShapes } from "../trt/build-engine.js";
import { discoverTrtexec, versionString } from "../trt/discover-trtexec.js";
import { checkOutputPaths } from "../util/io-paths.js";

export interface BuildCommandOptions {
  artifact: string;
  precisions: EnginePrecision[];
  trtexec?: string;
  shapes: Partial<EngineShapes>;
  profile?: string;
  int8Source: "qdq" | "calib";
  stronglyTyped: boolean;
  timingCache?: string;
  workspace?: number;
  optLevel?: number;
  argv: string[];
}

const pkg = createRequire(import.meta.url)("../../package.json") as { version: string };

export async function buildCommand(options: BuildCommandOptions, out: Output): Promise<void> {
  // trtexec reads and rewrites the timing cache: it must not be one of the artifact's files.
  await checkOutputPaths(options.timingCache !== undefined ? [{ path: options.timingCache, flag: "--timing-cache", kind: "file" }] : [], [
    { path: options.artifact, what: "artifact folder", kind: "dir" },
  ]);
  const trtexec = await discoverTrtexec({ explicit: options.trtexec });
  out.verbose(`trtexec ${trtexec.path} (TensorRT ${versionString(trtexec)}, found by ${trtexec.source})`);
  const started = Date.now();
  const { written } = await buildEngines({
    artifactDir: options.artifact,
    precisions: options.precisions,
    trtexec,
    shapes: options.shapes,
    ...(options.profile !== undefined ? { profile: options.profile } : {}),
    int8Source: options.int8Source,
    stronglyTyped: options.stronglyTyped,
    timingCache: options.timingCache,
    workspaceMiB: options.workspace,
    optLevel: options.optLevel,
    builtBy: { tool: "bge", version: pkg.version, args: options.argv },
    onStage: (m) => out.info(m),
    onWarn: (m) => out.warn(m),
  });
  const engines = written.filter((f) => f.trt);
  out.info(
    `built ${engines.map((f) => `${f.path} (${(f.size / 1e6).toFixed(1)} MB, ${f.trt!.gpu ?? "GPU not named"}${f.trt!.compute_capability ? `, sm ${f.trt!.compute_capability}` : ""})`).join(", ")} in ${((Date.now() - started) / 1000).toFixed(1)} s with TensorRT ${engines[0]?.trt?.version}`,
  );
  out.result(options.artifact, {
    artifact: options.artifact,
    trtexec: { path: trtexec.path, version: engines[0]?.trt?.version, family: trtexec.family },
    engines: engines.map((f) => ({ path: f.path, role: f.role, sha256: f.sha256, size: f.size, ...f.trt, args: f.built_by?.args })),
  });
}
