import { UsageError } from "../errors.js";
import type { CalibrationMethod } from "./calibrate.js";

/**
 * TensorRT's calibration cache (FACTS.md, TensorRT/trtexec): the text `--calib` reads on the implicit
 * INT8 path of TensorRT 8.6 and 10.x. First line `TRT-<getVersion()>-<algorithm>`, then one line per
 * tensor, `name: <hex>`, hex being the big-endian bits of the float32 scale amax/127 in lowercase.
 * TensorRT refuses a cache whose header names another version or another algorithm, so both are
 * written exactly.
 */
export interface CalibrationCacheOptions {
  /** The TensorRT that will read the cache: "8.6.1", "10.3.0", or its getVersion() number "8601". */
  trtVersion: string;
  method: CalibrationMethod;
}

export interface ParsedCalibrationCache {
  /** getVersion() number from the header (8601, 100300). */
  version: number;
  /** EntropyCalibration2, MinMaxCalibration, … as written. */
  algorithm: string;
  /** Per tensor, the float32 scale (amax = scale × 127). */
  scales: Map<string, number>;
}

/**
 * TensorRT's getVersion() number: major·1000 + minor·100 + patch up to 8.x (8.6.1 → 8601), and
 * major·10000 + minor·100 + patch from 10.x on (10.3.0 → 100300, 10.16.0 → 101600), as trtexec
 * prints it.
 */
export function trtVersionNumber(version: string): number {
  if (/^\d+$/.test(version)) return Number(version);
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*$/.exec(version.trim());
  if (!m) throw new UsageError(`TensorRT version ${JSON.stringify(version)}: expected MAJOR.MINOR.PATCH (8.6.1) or its number (8601)`);
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  const minorLimit = major >= 10 ? 99 : 9;
  if (minor > minorLimit || patch > 99) throw new UsageError(`TensorRT version ${version}: minor must be ≤ ${minorLimit} and patch ≤ 99 to encode it as TensorRT does`);
  return major >= 10 ? major * 10000 + minor * 100 + patch : major * 1000 + minor * 100 + patch;
}

/** TensorRT's algorithm name: entropy is EntropyCalibration2; min-max and percentile ranges are plain ranges. */
function algorithmName(method: CalibrationMethod): string {
  return method === "entropy" ? "EntropyCalibration2" : "MinMaxCalibration";
}

/** The big-endian bits of `value` rounded to float32, as 8 lowercase hex digits. */
export function float32Hex(value: number): string {
  const view = new DataView(new ArrayBuffer(4));
  view.setFloat32(0, value, false);
  return view.getUint32(0, false).toString(16).padStart(8, "0");
}

export function writeCalibrationCache(amax: ReadonlyMap<string, number>, options: CalibrationCacheOptions): string {
  const lines = [`TRT-${trtVersionNumber(options.trtVersion)}-${algorithmName(options.method)}`];
  for (const [name, a] of amax) {
    if (/[\r\n]/.test(name) || name === "") throw new UsageError(`tensor name ${JSON.stringify(name)} cannot be written to a calibration cache`);
    // A zero or non-finite scale makes TensorRT's int8 tensor meaningless: refuse, naming the tensor.
    if (!(Number.isFinite(a) && a > 0)) throw new UsageError(`tensor ${name}: amax ${a} is not a finite positive number`);
    lines.push(`${name}: ${float32Hex(a / 127)}`);
  }
  return `${lines.join("\n")}\n`;
}

export function parseCalibrationCache(text: string): ParsedCalibrationCache {
  const lines = text.split(/\r?\n/);
  while (lines.length && lines.at(-1) === "") lines.pop();
  const header = /^TRT-(\d+)-(\w+)$/.exec(lines[0] ?? "");
  if (!header) throw new UsageError(`not a TensorRT calibration cache: first line ${JSON.stringify(lines[0] ?? "")} is not TRT-<version>-<algorithm>`);
  const scales = new Map<string, number>();
  const view = new DataView(new ArrayBuffer(4));
  lines.slice(1).forEach((line, k) => {
    // Names may hold spaces or colons ("(Unnamed Layer* 8) [Constant]_output"): the scale follows the last ": ".
    const at = line.lastIndexOf(": ");
    const hex = at < 0 ? "" : line.slice(at + 2);
    if (at <= 0 || !/^[0-9a-fA-F]{1,8}$/.test(hex)) throw new UsageError(`calibration cache line ${k + 2}: ${JSON.stringify(line)} is not "name: <hex float32>"`);
    view.setUint32(0, parseInt(hex, 16), false);
    scales.set(line.slice(0, at), view.getFloat32(0, false));
  });
  return { version: Number(header[1]), algorithm: header[2]!, scales };
}
