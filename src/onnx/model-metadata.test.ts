import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import { readOnnxMetadata } from "./model-metadata.js";
import { ModelProto } from "./proto.js";

describe("readOnnxMetadata", () => {
  it("reads metadata_props around a graph it skips, wherever they lie", async () => {
    const dir = await tempDir("bge-meta-");
    const path = join(dir, "m.onnx");
    // A graph large enough that its length needs a multi-byte varint, with metadata on both sides of it.
    const graph = { name: "g", initializer: [{ name: "w", dims: [4096], dataType: 1, rawData: new Uint8Array(16384) }] };
    const head = ModelProto.encode(ModelProto.fromObject({ irVersion: 8, producerName: "bge", metadataProps: [{ key: "pooling", value: "cls" }] })).finish();
    const body = ModelProto.encode(ModelProto.fromObject({ graph, opsetImport: [{ domain: "", version: 17 }], metadataProps: [{ key: "normalize", value: "true" }] })).finish();
    await writeFile(path, Buffer.concat([head, body]));
    expect(await readOnnxMetadata(path)).toEqual({ pooling: "cls", normalize: "true" });
  });

  it("gives an empty record for a model without metadata and undefined for bytes that are not protobuf", async () => {
    const dir = await tempDir("bge-meta-");
    await writeFile(join(dir, "plain.onnx"), ModelProto.encode(ModelProto.fromObject({ irVersion: 8, graph: { name: "g" } })).finish());
    expect(await readOnnxMetadata(join(dir, "plain.onnx"))).toEqual({});
    await writeFile(join(dir, "junk.onnx"), Buffer.from([0x0f, 0xff, 0xff]));
    expect(await readOnnxMetadata(join(dir, "junk.onnx"))).toBeUndefined();
  });
});
