import { PROFILE_NAME, PROFILE_NAME_RULE, type ArtifactFile, type EngineRecord } from "../artifacts/manifest.js";
import { UsageError } from "../errors.js";
import { versionString, type TrtexecInfo } from "./discover-trtexec.js";

/**
 * What an engine is bound to: the TensorRT that serialized it and the GPU it was built for (the
 * manifest's `trt` record, from the build's own log).
 */
export interface EngineBinding {
  /** TensorRT X.Y.Z that built the engine. */
  version: string;
  /** The GPU's name as trtexec printed it, or null where the build log named none. */
  gpu: string | null;
  computeCapability: string | null;
  /** The command that rebuilds this engine, for messages. @default "bge build ARTIFACT" */
  rebuild?: string;
}

/** The GPU a trtexec run selected, from its log. */
export interface DeviceSeen {
  name: string;
  computeCapability?: string;
}

/**
 * A serialized engine loads only in the TensorRT that wrote it: the runtime compares the plan's
 * version with its own and refuses any other (engines built with `--versionCompatible` aside, which
 * bge build does not make). Which parts must agree is TensorRT's business and has changed between
 * releases, so the safe rule is the whole major.minor.patch.
 *
 * @throws UsageError (exit 2) naming both versions and the remedy
 */
export function checkEngineVersion(engine: string, binding: EngineBinding, trtexec: Pick<TrtexecInfo, "version" | "path" | "source">): void {
  const running = versionString(trtexec);
  if (binding.version === running) return;
  throw new UsageError(
    `${engine} was built with TensorRT ${binding.version} but ${trtexec.path} (from ${trtexec.source}) is TensorRT ${running}: ` +
      `an engine runs only in the exact TensorRT version (major.minor.patch) that built it; ` +
      `rebuild it on this machine with ${binding.rebuild ?? "bge build ARTIFACT"}, or point --trtexec (or $TRTEXEC) at TensorRT ${binding.version}`,
  );
}

/**
 * An engine holds kernels chosen for one GPU model: on another compute capability TensorRT cannot
 * run it, and on another model of the same capability NVIDIA does not support it ("likely to affect
 * performance or even cause errors"). Either difference is refused; a side the logs did not name
 * is not compared.
 *
 * @throws UsageError (exit 2) naming both GPUs and the remedy
 */
export function checkEngineDevice(engine: string, binding: EngineBinding, seen: DeviceSeen): void {
  const ccDiffers = binding.computeCapability !== null && seen.computeCapability !== undefined && binding.computeCapability !== seen.computeCapability;
  const nameDiffers = binding.gpu !== null && binding.gpu.trim() !== seen.name.trim();
  if (!ccDiffers && !nameDiffers) return;
  const show = (name: string | null, cc: string | null | undefined) => `${name ?? "an unnamed GPU"}${cc ? ` (compute capability ${cc})` : ""}`;
  throw new UsageError(
    `${engine} was built on ${show(binding.gpu, binding.computeCapability)} but trtexec runs it on ${show(seen.name, seen.computeCapability)}: ` +
      `an engine is bound to the GPU model that built it; rebuild it on this machine with ${binding.rebuild ?? "bge build ARTIFACT"}`,
  );
}

/**
 * The `trt` record of an engine entry, checked field by field: the runner trusts its profile, inputs,
 * outputs and version, so a malformed one is exit 2 naming the field, never a run with made-up shapes.
 */
export function engineRecordOf(file: ArtifactFile, manifestPath: string, index: number): EngineRecord {
  const at = `files[${index}].trt`;
  const bad = (field: string, value: unknown, expected: string) =>
    new UsageError(`${manifestPath}: field ${at}${field} of ${file.path} is ${value === undefined ? "missing" : JSON.stringify(value)}, expected ${expected}`);
  const t = file.trt as unknown;
  if (typeof t !== "object" || t === null || Array.isArray(t)) {
    throw new UsageError(`${manifestPath}: ${file.path} (${file.role}) has no trt record (TensorRT version, GPU, shapes); rebuild it with bge build`);
  }
  const r = t as Record<string, unknown>;
  if (typeof r.version !== "string" || !/^\d+\.\d+\.\d+$/.test(r.version)) throw bad(".version", r.version, "a TensorRT version X.Y.Z");
  if (r.gpu !== null && typeof r.gpu !== "string") throw bad(".gpu", r.gpu, "a GPU name or null");
  if (r.compute_capability !== null && (typeof r.compute_capability !== "string" || !/^\d+\.\d+$/.test(r.compute_capability))) {
    throw bad(".compute_capability", r.compute_capability, 'a compute capability "X.Y" or null');
  }
  const shapes = r.shapes as Record<string, unknown> | undefined;
  const corner = (v: unknown) => Array.isArray(v) && v.length === 2 && v.every((n) => Number.isSafeInteger(n) && (n as number) >= 1);
  if (typeof shapes !== "object" || shapes === null) throw bad(".shapes", shapes, "{min, opt, max} of [batch, sequence]");
  for (const k of ["min", "opt", "max"]) {
    if (!corner(shapes[k])) throw bad(`.shapes.${k}`, shapes[k], "[batch, sequence] of positive integers");
  }
  const names = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === "string" && s !== "");
  if (!names(r.inputs)) throw bad(".inputs", r.inputs, "a list of input names");
  if (!names(r.outputs)) throw bad(".outputs", r.outputs, "a list of output names");
  if (r.profile !== undefined && !(typeof r.profile === "string" && PROFILE_NAME.test(r.profile))) throw bad(".profile", r.profile, PROFILE_NAME_RULE);
  return file.trt!;
}
