import { mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { canonicalJson, codeIdentity, hashFolderFiles, stageKey } from "./stage-key.js";

const SHA_OF_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

describe("stage keys", () => {
  it("canonical JSON sorts keys at every depth and drops undefined", () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: undefined, x: null }], c: "é" } })).toBe('{"a":{"c":"é","d":[2,{"x":null,"z":1}]},"b":1}');
    expect(stageKey("export-fp32", { a: "1", b: "2" }, { opset: 17 })).toBe(stageKey("export-fp32", { b: "2", a: "1" }, { opset: 17, unset: undefined }));
    expect(stageKey("export-fp32", { a: "1" }, { opset: 17 })).not.toBe(stageKey("export-fp16", { a: "1" }, { opset: 17 }));
    expect(stageKey("export-fp32", { a: "1" }, { opset: 17 })).not.toBe(stageKey("export-fp32", { a: "1" }, { opset: 18 }));
  });

  it("a checkpoint's files by content: sub-folders and symlinked blobs in, hidden files and the hub's onnx/ out", async () => {
    const dir = await tempDir("bge-stage-key-");
    await writeFile(join(dir, "blob"), "abc");
    await mkdir(join(dir, "snap", "1_Pooling"), { recursive: true });
    await mkdir(join(dir, "snap", "onnx"));
    await writeFile(join(dir, "snap", "1_Pooling", "config.json"), "abc");
    await writeFile(join(dir, "snap", "onnx", "model.onnx"), "x");
    await writeFile(join(dir, "snap", ".bge.lock"), "x");
    await symlink(join(dir, "blob"), join(dir, "snap", "model.safetensors"));
    expect(await hashFolderFiles(join(dir, "snap"))).toEqual({ "1_Pooling/config.json": SHA_OF_ABC, "model.safetensors": SHA_OF_ABC });
  });

  it("the code identity changes with any compiled module, not with other files", async () => {
    const dir = await tempDir("bge-code-id-");
    await mkdir(join(dir, "onnx"));
    await writeFile(join(dir, "onnx", "export.js"), "export const a = 1;\n");
    await writeFile(join(dir, "onnx", "export.d.ts"), "export declare const a: number;\n");
    const first = await codeIdentity(dir);
    await writeFile(join(dir, "onnx", "export.d.ts"), "export declare const a: 1;\n");
    expect(await codeIdentity(dir)).toBe(first);
    await writeFile(join(dir, "onnx", "export.js"), "export const a = 2;\n");
    expect(await codeIdentity(dir)).not.toBe(first);
  });
});
