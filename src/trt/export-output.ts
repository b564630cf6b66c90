import { readFile } from "node:fs/promises";
import { ToolFailedError } from "../errors.js";

/** One output tensor from `trtexec --exportOutput`. */
export interface ExportedTensor {
  /** From `"dimensions": "2x384"`; a scalar (empty string) is `[]`. */
  dims: number[];
  /** Row-major, as trtexec printed them (about 6 significant digits); NaN/±Infinity kept. */
  values: Float32Array;
}

// Outside string literals only: a tensor named "financial_nan" or "info" must come through untouched.
// Each string literal is matched whole (escapes included) and put back as it was. MSVC builds print
// `-nan(ind)`, hence the optional parenthesised suffix.
const BARE_NON_FINITE = /"(?:[^"\\]|\\.)*"|([-+]?)\b(nan|inf(?:inity)?)\b(?:\([a-z]*\))?/gi;
// Stands for NaN after JSON.parse; a number cannot, and a string in `values` is an error otherwise.
const NAN_MARK = "nan";

/**
 * Parses the JSON that `trtexec --exportOutput=F` writes:
 * `[{"name": …, "dimensions": "2x384", "values": [ … ]}, …]`. trtexec prints non-finite floats with
 * iostreams as bare `nan`, `-nan`, `inf`, `-inf`, which is not JSON, so those tokens are rewritten
 * before JSON.parse. Output order is unspecified, so the result is keyed on the tensor name.
 *
 * @param source the file name, for the error message
 * @throws ToolFailedError (exit 4) naming `source` and what is wrong, for anything that is not such a file
 */
export function parseExportOutput(text: string, source = "trtexec --exportOutput file"): Map<string, ExportedTensor> {
  const fail = (problem: string): never => {
    throw new ToolFailedError(`${source}: malformed trtexec --exportOutput JSON: ${problem}`);
  };
  const jsonText = /nan|inf/i.test(text)
    ? text.replace(BARE_NON_FINITE, (match: string, sign: string | undefined, word: string | undefined) => {
        if (word === undefined) return match;
        if (word.toLowerCase() === "nan") return JSON.stringify(NAN_MARK);
        // 1e999 overflows to ±Infinity in JSON.parse, which is exactly what `inf` means.
        return sign === "-" ? "-1e999" : "1e999";
      })
    : text;

  let parsed: unknown;
  try {
    parsed = JSON.parse(jsonText);
  } catch (err) {
    return fail(`not JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(parsed)) return fail(`expected an array of output tensors, found ${describe(parsed)}`);

  const tensors = new Map<string, ExportedTensor>();
  parsed.forEach((entry: unknown, index) => {
    const where = `entry ${index}`;
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      return fail(`${where} is ${describe(entry)}, expected an object with name, dimensions and values`);
    }
    const { name, dimensions, values } = entry as Record<string, unknown>;
    if (typeof name !== "string" || name === "") return fail(`${where} has no "name" string`);
    const at = `${where} ("${name}")`;
    if (tensors.has(name)) return fail(`${at}: the tensor name appears twice`);
    if (typeof dimensions !== "string") return fail(`${at}: "dimensions" is ${describe(dimensions)}, expected a string like "2x384"`);
    const dimText = dimensions.trim();
    if (!/^(\d+(\s*x\s*\d+)*)?$/.test(dimText)) return fail(`${at}: "dimensions" "${dimensions}" is not of the form 2x384`);
    const dims = dimText === "" ? [] : dimText.split("x").map((d) => Number(d.trim()));
    if (!Array.isArray(values)) return fail(`${at}: "values" is ${describe(values)}, expected an array`);
    const count = dims.reduce((a, b) => a * b, 1);
    if (values.length !== count) {
      return fail(`${at}: ${values.length} values for dimensions ${dimensions} (${count} expected)`);
    }
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      const v = values[i];
      if (typeof v === "number") out[i] = v;
      else if (v === NAN_MARK) out[i] = NaN;
      else return fail(`${at}: value ${i} is ${describe(v)}, expected a number`);
    }
    tensors.set(name, { dims, values: out });
  });
  return tensors;
}

/** Reads and parses an `--exportOutput` file; a missing file is a tool failure too (trtexec did not write it). */
export async function readExportOutput(path: string): Promise<Map<string, ExportedTensor>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new ToolFailedError(`${path}: trtexec did not write its --exportOutput file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseExportOutput(text, path);
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return `the string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value)}`;
  if (value === undefined) return "missing";
  return typeof value === "object" ? "an object" : `${typeof value} ${String(value)}`;
}
