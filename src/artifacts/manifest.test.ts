import { describe, expect, it } from "vitest";
import { usageError } from "../../test/helpers/usage-error.js";
import { validateManifest, type Manifest } from "./manifest.js";

const SHA = "a".repeat(64);

function manifest(): Manifest {
  return {
    format: "bge-artifact/1",
    created: "2025-01-01T00:00:00.000Z",
    source: { model_id: "BAAI/bge-small-zh-v1.5", revision: null, weights_sha256: SHA, arch: "bert", hidden_size: 512 },
    pooling: "cls",
    normalize: true,
    max_length: 512,
    query_instruction: null,
    files: [{ path: "model.fp32.onnx", role: "onnx-fp32", sha256: SHA, size: 10, built_by: { tool: "bge", version: "0.1.0", args: ["export"] } }],
    parity: { "model.fp32.onnx": { pass: false, golden: "g.json", min_cosine: null as unknown as number, mean_cosine: 0.5, tolerance: 0.99999, checked_at: "x" } },
  };
}

/** The message validateManifest gives after `edit`. */
async function refusal(edit: (m: Record<string, any>) => void): Promise<string> {
  const m = manifest() as unknown as Record<string, any>;
  edit(m);
  return (await usageError(async () => validateManifest(m, "a/manifest.json", "a"))).message;
}

describe("validateManifest", () => {
  it("accepts what export writes (a failed run's NaN cosine is stored as null)", () => {
    expect(validateManifest(manifest(), "a/manifest.json", "a")).toEqual(manifest());
  });

  it("names the field and the value of anything the Manifest type does not allow", async () => {
    expect(await refusal((m) => (m.pooling = "avg"))).toBe('a/manifest.json: field pooling is "avg", expected "cls", "mean" or "none"');
    expect(await refusal((m) => (m.source.hidden_size = 0))).toMatch(/field source\.hidden_size is 0, expected a positive integer/);
    expect(await refusal((m) => (m.source.hidden_size = 1.5))).toMatch(/field source\.hidden_size is 1\.5/);
    expect(await refusal((m) => (m.source.arch = "roberta"))).toMatch(/field source\.arch is "roberta", expected "bert" or "xlm-roberta"/);
    expect(await refusal((m) => (m.source.revision = 7))).toMatch(/field source\.revision is 7/);
    expect(await refusal((m) => (m.source.weights_sha256 = SHA.toUpperCase()))).toMatch(/field source\.weights_sha256 is "A+", expected 64 lowercase hex digits/);
    expect(await refusal((m) => (m.source = "x"))).toMatch(/field source is "x", expected an object/);
    expect(await refusal((m) => (m.normalize = 1))).toMatch(/field normalize is 1, expected true or false/);
    expect(await refusal((m) => (m.max_length = "512"))).toMatch(/field max_length is "512", expected an integer ≥ 2/);
    expect(await refusal((m) => (m.query_instruction = undefined))).toMatch(/field query_instruction is missing, expected a string or null/);
    expect(await refusal((m) => (m.created = 0))).toMatch(/field created is 0/);
    expect(await refusal((m) => (m.files = {}))).toMatch(/field files is \{\}, expected a list of files/);
    expect(await refusal((m) => (m.files[0].role = "engine"))).toMatch(/field files\[0\]\.role is "engine", expected one of onnx-fp32, .*config/);
    expect(await refusal((m) => (m.files[0].sha256 = "x"))).toMatch(/field files\[0\]\.sha256 is "x"/);
    expect(await refusal((m) => (m.files[0].size = "10"))).toMatch(/field files\[0\]\.size is "10", expected a byte count/);
    expect(await refusal((m) => (m.files[0].built_by = { tool: "bge" }))).toMatch(/field files\[0\]\.built_by is \{"tool":"bge"\}/);
    expect(await refusal((m) => (m.files[0].path = "../x.onnx"))).toMatch(/file entry "\.\.\/x\.onnx" points outside the artifact folder/);
    expect(await refusal((m) => (m.files[0].external_data = "/etc/passwd"))).toMatch(/external data "\/etc\/passwd" of model\.fp32\.onnx points outside/);
    expect(await refusal((m) => (m.parity["model.fp32.onnx"].pass = "yes"))).toMatch(/field parity\["model\.fp32\.onnx"\] is/);
    expect(await refusal((m) => (m.format = "bge-artifact/2"))).toMatch(/format is "bge-artifact\/2", expected "bge-artifact\/1"/);
  });
});
