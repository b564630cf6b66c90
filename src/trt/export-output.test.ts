import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ToolFailedError } from "../errors.js";
import { SHARED_FIXTURES } from "../../test/helpers/paths.js";
import { tempDir } from "../../test/helpers/tmp.js";
import { parseExportOutput, readExportOutput } from "./export-output.js";

const SAMPLE = join(SHARED_FIXTURES, "trtexec", "exportOutput-sample.json");
const HAVE_SAMPLE = existsSync(SAMPLE);

function failure(fn: () => unknown): ToolFailedError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ToolFailedError);
    expect((err as ToolFailedError).exitCode).toBe(4);
    return err as ToolFailedError;
  }
  throw new Error("expected a ToolFailedError");
}

describe.skipIf(!HAVE_SAMPLE)(
  `parseExportOutput on the real 8.5.1 export${HAVE_SAMPLE ? "" : ` (skipped: ${SAMPLE} not found; the shared fixtures live beside the checkout)`}`,
  () => {
    it("reads output0 1x16x3x3 with its 144 values", async () => {
      const tensors = await readExportOutput(SAMPLE);
      expect([...tensors.keys()]).toEqual(["output0"]);
      const t = tensors.get("output0")!;
      expect(t.dims).toEqual([1, 16, 3, 3]);
      expect(t.values).toHaveLength(144);
      // the file's first values: 0, 0.343867, 0.280038, 0.0781097
      expect(t.values[0]).toBe(0);
      expect(t.values[1]).toBe(Math.fround(0.343867));
      expect(t.values[3]).toBe(Math.fround(0.0781097));
      expect(t.values[13]).toBe(Math.fround(0.637493));
    });

    it("gives the same tensor after the fixture's keys are shuffled and bare nan/inf are spliced in", () => {
      const text = readFileSync(SAMPLE, "utf8");
      const original = parseExportOutput(text).get("output0")!;
      const [{ name, dimensions, values }] = JSON.parse(text) as { name: string; dimensions: string; values: number[] }[];
      const spliced = values.map((v, i) => (i === 1 ? "-nan" : i === 2 ? "inf" : String(v)));
      const shuffled = `[ { "values" : [ ${spliced.join(", ")} ], "name" : "${name}", "dimensions" : "${dimensions}" } ]`;
      const t = parseExportOutput(shuffled).get("output0")!;
      expect(t.dims).toEqual(original.dims);
      expect(Number.isNaN(t.values[1])).toBe(true);
      expect(t.values[2]).toBe(Infinity);
      expect(Array.from(t.values.slice(3))).toEqual(Array.from(original.values.slice(3)));
    });
  },
);

describe("parseExportOutput on hand-written files", () => {
  it("reads bare nan, -nan, inf, -inf and MSVC's -nan(ind), in trtexec's own layout", () => {
    const text = [
      "[",
      '  { "name" : "sentence_embedding"',
      '  , "dimensions" : "2x3"',
      "  , \"values\" : [ nan, -nan, inf, -inf, -nan(ind), 1.5e-07 ]",
      "  }",
      "]",
    ].join("\n");
    const t = parseExportOutput(text).get("sentence_embedding")!;
    expect(t.dims).toEqual([2, 3]);
    const v = Array.from(t.values);
    expect(Number.isNaN(v[0]) && Number.isNaN(v[1]) && Number.isNaN(v[4])).toBe(true);
    expect(v[2]).toBe(Infinity);
    expect(v[3]).toBe(-Infinity);
    expect(v[5]).toBe(Math.fround(1.5e-7));
  });

  it("leaves names containing nan/inf letters untouched, escapes included, and keys on name", () => {
    const text = JSON.stringify([
      { dimensions: "1", values: [1], name: "nan" },
      { values: [2, 3], name: 'info "inf" -nan', dimensions: "2" },
      { name: "banana_infinity\\", dimensions: "1x1", values: [4] },
    ]).replace("[2,3]", "[inf,nan]");
    const tensors = parseExportOutput(text);
    expect([...tensors.keys()]).toEqual(["nan", 'info "inf" -nan', "banana_infinity\\"]);
    expect(Array.from(tensors.get("nan")!.values)).toEqual([1]);
    const second = Array.from(tensors.get('info "inf" -nan')!.values);
    expect(second[0]).toBe(Infinity);
    expect(Number.isNaN(second[1])).toBe(true);
    expect(tensors.get("banana_infinity\\")!.dims).toEqual([1, 1]);
  });

  it("reads two outputs in either order", () => {
    const a = { name: "last_hidden_state", dimensions: "1x2x2", values: [1, 2, 3, 4] };
    const b = { name: "sentence_embedding", dimensions: "1x2", values: [0.6, 0.8] };
    for (const order of [[a, b], [b, a]]) {
      const tensors = parseExportOutput(JSON.stringify(order));
      expect(tensors.get("last_hidden_state")!.dims).toEqual([1, 2, 2]);
      expect(Array.from(tensors.get("sentence_embedding")!.values)).toEqual([Math.fround(0.6), Math.fround(0.8)]);
    }
  });

  it("reads a scalar (empty dimensions)", () => {
    expect(parseExportOutput('[{"name":"s","dimensions":"","values":[7]}]').get("s")).toEqual({ dims: [], values: new Float32Array([7]) });
  });

  it.each([
    ["a truncated file", '[{"name":"x","dimensions":"2","values":[1,', /out\.json: malformed trtexec --exportOutput JSON: not JSON/],
    ["an object instead of an array", '{"name":"x"}', /expected an array of output tensors, found an object/],
    ["a missing name", '[{"dimensions":"1","values":[1]}]', /entry 0 has no "name" string/],
    ["a duplicate name", '[{"name":"x","dimensions":"1","values":[1]},{"name":"x","dimensions":"1","values":[2]}]', /entry 1 \("x"\): the tensor name appears twice/],
    ["bad dimensions", '[{"name":"x","dimensions":"2x-1","values":[1,2]}]', /"dimensions" "2x-1" is not of the form 2x384/],
    ["numeric dimensions", '[{"name":"x","dimensions":2,"values":[1,2]}]', /"dimensions" is number 2/],
    ["a count that disagrees with the dimensions", '[{"name":"x","dimensions":"2x3","values":[1,2,3,4,5]}]', /5 values for dimensions 2x3 \(6 expected\)/],
    ["a non-number value", '[{"name":"x","dimensions":"2","values":[1,"a"]}]', /value 1 is the string "a", expected a number/],
    ["a bare word that is not nan/inf", '[{"name":"x","dimensions":"1","values":[nano]}]', /not JSON/],
  ])("rejects %s with exit 4, naming the file and the problem", (_what, text, message) => {
    const err = failure(() => parseExportOutput(text, "/tmp/run/out.json"));
    expect(err.message).toMatch(/^\/tmp\/run\/out\.json: /);
    expect(err.message).toMatch(message);
  });

  it("readExportOutput: a file trtexec never wrote is a tool failure naming it", async () => {
    const dir = await tempDir();
    const missing = join(dir, "missing.json");
    await expect(readExportOutput(missing)).rejects.toThrow(ToolFailedError);
    await expect(readExportOutput(missing)).rejects.toThrow(`${missing}: trtexec did not write its --exportOutput file (ENOENT)`);
    const bad = join(dir, "bad.json");
    await writeFile(bad, "[ { \"name\" : \"x\" , \"dimensions\" : \"1\" , \"values\" : [ 1.0.0 ] } ]");
    await expect(readExportOutput(bad)).rejects.toThrow(`${bad}: malformed trtexec --exportOutput JSON: not JSON`);
  });
});
