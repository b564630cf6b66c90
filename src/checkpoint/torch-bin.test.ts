import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTorchBin } from "./torch-bin.js";
import { bytesToFloat64, floatToBf16, floatToHalf } from "./dtype.js";
import type { DType } from "./tensor.js";
import {
  CPYTHON_STATE_DICT_PICKLE,
  buildTorchArchive,
  buildZip,
  f32Bytes,
  fromHex,
  hostileProto0Pickle,
  hostileStackGlobalPickle,
  hostileStateDictPickle,
  stateDictPickle,
  writeSharedStorageBin,
  writeSparse,
  writeTorchBin,
  writeTorchBinViews,
  writeTorchBinWithPickle,
  type TorchBinTensor,
} from "../../test/helpers/torch-bin-writer.js";
import { usageError } from "../../test/helpers/usage-error.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bge-torch-bin-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let counter = 0;
const fresh = (name: string): string => join(dir, `${counter++}-${name}`);

function encode(dtype: DType, values: readonly number[]): Uint8Array {
  if (dtype === "F32") return f32Bytes(values);
  const out = new Uint8Array(values.length * 2);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setUint16(i * 2, dtype === "F16" ? floatToHalf(v) : floatToBf16(v), true));
  return out;
}

const tensor = (name: string, dtype: DType, shape: number[], values: number[]): TorchBinTensor => ({
  name,
  dtype,
  shape,
  data: encode(dtype, values),
});

const SAMPLE: TorchBinTensor[] = [
  tensor("embeddings.word_embeddings.weight", "F32", [3, 4], [0.5, -1.25, 3, 1e-8, 7, 8, 9, 10, -0, 1e30, -2.5, 42]),
  tensor("encoder.layer.0.attention.self.query.bias", "F16", [4], [1, -2, 0.333, 65504]),
  tensor("encoder.layer.0.output.dense.weight", "BF16", [2, 2, 2], [1, 2, 3, 4, -5, 6.5, 7, 1e-3]),
  tensor("pooler.dense.bias", "F32", [], [3.75]),
  tensor("empty", "F16", [0, 3], []),
];

async function readAll(path: string): Promise<Record<string, Uint8Array>> {
  const source = await openTorchBin(path);
  try {
    const out: Record<string, Uint8Array> = {};
    for (const info of source.list()) out[info.name] = await source.readBytes(info.name);
    return out;
  } finally {
    await source.close();
  }
}

describe("openTorchBin: round trips", () => {
  it("reads F32, F16 and BF16 tensors back byte for byte, in order, with their layout", async () => {
    const path = fresh("sample.bin");
    await writeTorchBin(path, SAMPLE);
    const source = await openTorchBin(path);
    try {
      expect(source.path).toBe(path);
      expect(source.list()).toEqual([
        { name: "embeddings.word_embeddings.weight", dtype: "F32", shape: [3, 4], stride: [4, 1], storageKey: "0", storageOffset: 0 },
        { name: "encoder.layer.0.attention.self.query.bias", dtype: "F16", shape: [4], stride: [1], storageKey: "1", storageOffset: 0 },
        { name: "encoder.layer.0.output.dense.weight", dtype: "BF16", shape: [2, 2, 2], stride: [4, 2, 1], storageKey: "2", storageOffset: 0 },
        { name: "pooler.dense.bias", dtype: "F32", shape: [], stride: [], storageKey: "3", storageOffset: 0 },
        { name: "empty", dtype: "F16", shape: [0, 3], stride: [3, 1], storageKey: "4", storageOffset: 0 },
      ]);
      for (const t of SAMPLE) expect(await source.readBytes(t.name)).toEqual(t.data);
      const word = await source.readBytes("embeddings.word_embeddings.weight");
      expect(Array.from(bytesToFloat64(word, "F32"))).toEqual(Array.from(Float32Array.from([0.5, -1.25, 3, 1e-8, 7, 8, 9, 10, -0, 1e30, -2.5, 42])));
      // Expected values are what Python's struct "<e" and round-to-nearest-even bfloat16 give.
      const half = await source.readBytes("encoder.layer.0.attention.self.query.bias");
      expect(Array.from(bytesToFloat64(half, "F16"))).toEqual([1, -2, 0.3330078125, 65504]);
      const bf16 = await source.readBytes("encoder.layer.0.output.dense.weight");
      expect(Array.from(bytesToFloat64(bf16, "BF16"))).toEqual([1, 2, 3, 4, -5, 6.5, 7, 0.00099945068359375]);
      // Buffers are fresh and 0-offset, so they can be viewed as typed arrays without copying.
      expect(word.byteOffset).toBe(0);
      expect(word.buffer.byteLength).toBe(48);
    } finally {
      await source.close();
    }
  });

  it("list() hands out copies", async () => {
    const path = fresh("copies.bin");
    await writeTorchBin(path, SAMPLE.slice(0, 1));
    const source = await openTorchBin(path);
    try {
      source.list()[0]!.shape.push(99);
      expect(source.list()[0]!.shape).toEqual([3, 4]);
    } finally {
      await source.close();
    }
  });

  it("reads every layout torch has written: ZIP64, another archive name, no byteorder, parameters, deflated data.pkl, nesting", async () => {
    const variants = [
      { zip64: true },
      { archiveName: "pytorch_model", byteorder: null },
      { parameters: true, metadata: false },
      { deflatePickle: true, align: false },
      { wrapKey: "state_dict" },
      { wrapKey: "model" },
    ];
    for (const opts of variants) {
      const path = fresh("variant.bin");
      await writeTorchBin(path, SAMPLE, opts);
      const got = await readAll(path);
      expect(Object.keys(got)).toEqual(SAMPLE.map((t) => t.name));
      for (const t of SAMPLE) expect(got[t.name], JSON.stringify(opts)).toEqual(t.data);
    }
  });

  it("reads a CPython-pickled state dict with a tied weight and a half-precision storage", async () => {
    const path = fresh("cpython.bin");
    const weight = f32Bytes([1, 2, 3, 4, 5, 6]);
    const bias = encode("F16", [0.5, -0.5, 2]);
    await writeFile(path, buildTorchArchive(CPYTHON_STATE_DICT_PICKLE, [{ key: "0", data: weight }, { key: "1", data: bias }]));
    const got = await readAll(path);
    expect(got).toEqual({ "encoder.layer.0.weight": weight, "encoder.layer.0.bias": bias, "tied.weight": weight });
  });

  it("reads tensors that share one storage at different offsets, and a strided view", async () => {
    const path = fresh("shared.bin");
    await writeSharedStorageBin(path);
    const source = await openTorchBin(path);
    try {
      expect(source.list().map(({ name, storageKey, storageOffset, shape, stride }) => ({ name, storageKey, storageOffset, shape, stride }))).toEqual([
        { name: "a", storageKey: "0", storageOffset: 0, shape: [2, 2], stride: [2, 1] },
        { name: "b", storageKey: "0", storageOffset: 4, shape: [3], stride: [1] },
        { name: "t", storageKey: "0", storageOffset: 0, shape: [2, 2], stride: [1, 2] },
      ]);
      expect(await source.readBytes("a")).toEqual(f32Bytes([0, 1, 2, 3]));
      expect(await source.readBytes("b")).toEqual(f32Bytes([4, 5, 6]));
      expect(await source.readBytes("t")).toEqual(f32Bytes([0, 2, 1, 3]));
    } finally {
      await source.close();
    }
  });

  it("gathers expanded (stride 0) and sliced views, and treats size-1 dims as contiguous", async () => {
    const path = fresh("views.bin");
    const storage = { key: "0", dtype: "F32" as const, data: f32Bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]) };
    await writeTorchBinViews(path, [storage], [
      { name: "row_expanded", storage: "0", shape: [3, 2], stride: [0, 1], storageOffset: 2 },
      { name: "column", storage: "0", shape: [3], stride: [4], storageOffset: 1 },
      { name: "size_one", storage: "0", shape: [1, 3], stride: [99, 1], storageOffset: 9 },
      { name: "every_other_row", storage: "0", shape: [2, 4], stride: [8, 1] },
    ]);
    const got = await readAll(path);
    expect(got["row_expanded"]).toEqual(f32Bytes([2, 3, 2, 3, 2, 3]));
    expect(got["column"]).toEqual(f32Bytes([1, 5, 9]));
    expect(got["size_one"]).toEqual(f32Bytes([9, 10, 11]));
    expect(got["every_other_row"]).toEqual(f32Bytes([0, 1, 2, 3, 8, 9, 10, 11]));
  });

  it("reads a checkpoint whose tensor data lies past 4 GiB (sparse ZIP64 file)", async () => {
    const path = fresh("past-4gib.bin");
    const base = 2 ** 32 + 12_345;
    const storages = SAMPLE.map((t, i) => ({ key: String(i), dtype: t.dtype, data: t.data }));
    const pickle = stateDictPickle(SAMPLE.map((t, i) => ({ name: t.name, storage: String(i), shape: t.shape })), storages);
    await writeSparse(path, base, buildTorchArchive(pickle, storages, { zip64: true, baseOffset: base }));
    try {
      const got = await readAll(path);
      for (const t of SAMPLE) expect(got[t.name]).toEqual(t.data);
    } finally {
      await rm(path);
    }
  });
});

/*
 * Real files written by torch 1.13.1 (Debian's python3-torch), so the reader is checked against
 * torch.save itself and not only against the test writer: ZIP64 end records, data descriptors
 * (flag bit 3) with zeroed local sizes, the archive named after the file stem, no byteorder record.
 *
 *   m = Embedding(5, 4) as emb, Linear(4, 3) as lin, buffer position_ids = arange(6).expand(1, -1)
 *   sd = m.state_dict(); sd["half.weight"] = randn(2, 3).half(); sd["bf16.weight"] = randn(3).bfloat16()
 *   base = arange(10.); sd["view.a"] = base[0:4].view(2, 2); sd["view.b"] = base[4:7]
 *   sd["view.t"] = base[0:4].view(2, 2).t(); sd["tied.weight"] = sd["emb.weight"]; sd["scalar"] = tensor(2.5)
 *   torch.save(sd, "small.bin"); torch.save({"state_dict": m.state_dict(), "epoch": 3}, "wrapped.bin")
 *
 * The expected bytes are `t.contiguous().view(torch.uint8)` as torch printed them.
 */
const REAL_TORCH_SMALL = fromHex(
  "504b0304000008080000000000000000000000000000000000000e001400736d616c6c2f646174612e706b6c464210005a5a5a5a5a5a5a5a5a5a5a5a" +
  "5a5a5a5a800263636f6c6c656374696f6e730a4f726465726564446963740a71002952710128580c000000706f736974696f6e5f696473710263746f" +
  "7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a71032828580700000073746f72616765710463746f7263680a4c6f6e6753" +
  "746f726167650a71055801000000307106580300000063707571074b06747108514b004b014b068671094b064b0186710a8968002952710b74710c52" +
  "710d580a000000656d622e776569676874710e68032828680463746f7263680a466c6f617453746f726167650a710f580100000031711068074b1474" +
  "7111514b004b054b048671124b044b0186711389680029527114747115527116580a0000006c696e2e7765696768747117680328286804680f580100" +
  "000032711868074b0c747119514b004b034b0486711a4b044b0186711b8968002952711c74711d52711e58080000006c696e2e62696173711f680328" +
  "286804680f580100000033712068074b03747121514b004b038571224b0185712389680029527124747125527126580b00000068616c662e77656967" +
  "6874712768032828680463746f7263680a48616c6653746f726167650a7128580100000034712968074b0674712a514b004b024b0386712b4b034b01" +
  "86712c8968002952712d74712e52712f580b000000626631362e776569676874713068032828680463746f7263680a42466c6f6174313653746f7261" +
  "67650a7131580100000035713268074b03747133514b004b038571344b01857135896800295271367471375271385806000000766965772e61713968" +
  "0328286804680f580100000036713a68074b0a74713b514b004b024b0286713c4b024b0186713d8968002952713e74713f5271405806000000766965" +
  "772e627141680328286804680f683a68074b0a747142514b044b038571434b01857144896800295271457471465271475806000000766965772e7471" +
  "48680328286804680f683a68074b0a747149514b004b024b0286714a4b014b0286714b8968002952714c74714d52714e580b000000746965642e7765" +
  "69676874714f681658060000007363616c61727150680328286804680f580100000037715168074b01747152514b0029298968002952715374715452" +
  "7155757d715658090000005f6d65746164617461715768002952715828580000000071597d715a580700000076657273696f6e715b4b017358030000" +
  "00656d62715c7d715d685b4b017358030000006c696e715e7d715f685b4b01737573622e504b070800525951a4030000a4030000504b030400000808" +
  "0000000000000000000000000000000000000c002200736d616c6c2f646174612f3046421e005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" +
  "5a5a5a5a5a5a5a5a000000000000000001000000000000000200000000000000030000000000000004000000000000000500000000000000504b0708" +
  "0cc7c6a13000000030000000504b0304000008080000000000000000000000000000000000000c001600736d616c6c2f646174612f31464212005a5a" +
  "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a851b90bf8a8093bfd64b80be5d25debe8b4d193f5b0dc7bfcac6aebe4e2fed3f55aaef3e5f7f21bedbc9b83f" +
  "a137883ec0d6b13f000dcb3f9c40723f33fb57bf308c6e3f3727a13f9a5100403a1b5c3d504b070875e80b8e5000000050000000504b030400000808" +
  "0000000000000000000000000000000000000c003600736d616c6c2f646174612f32464232005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" +
  "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a047095be9e0edc3ebc76643e0027783e406ad73c3a3f83bec03ead3d9e06efbe" +
  "1afab8bec6f983be2685a13e2619963e504b07084a7d358d3000000030000000504b0304000008080000000000000000000000000000000000000c00" +
  "1600736d616c6c2f646174612f33464212005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5ac81163be20cb93bc40baa33e504b0708532e4c960c000000" +
  "0c000000504b0304000008080000000000000000000000000000000000000c003a00736d616c6c2f646174612f34464236005a5a5a5a5a5a5a5a5a5a" +
  "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5aef3cddb142bdc2be033d70b8504b0708" +
  "552a1a9b0c0000000c000000504b0304000008080000000000000000000000000000000000000c003a00736d616c6c2f646174612f35464236005a5a" +
  "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a9b3e913fdc3f504b" +
  "070886c252690600000006000000504b0304000008080000000000000000000000000000000000000c004000736d616c6c2f646174612f3646423c00" +
  "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" +
  "000000000000803f0000004000004040000080400000a0400000c0400000e0400000004100001041504b070869e7a5e62800000028000000504b0304" +
  "000008080000000000000000000000000000000000000c001e00736d616c6c2f646174612f3746421a005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" +
  "5a5a5a5a5a5a5a5a00002040504b07082eba1cc20400000004000000504b0304000008080000000000000000000000000000000000000d004100736d" +
  "616c6c2f76657273696f6e46423d005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" +
  "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a330a504b0708d19e67550200000002000000504b010200000000080800000000000000525951a4030000a403" +
  "00000e0000000000000000000000000000000000736d616c6c2f646174612e706b6c504b01020000000008080000000000000cc7c6a1300000003000" +
  "00000c00000000000000000000000000f4030000736d616c6c2f646174612f30504b010200000000080800000000000075e80b8e5000000050000000" +
  "0c0000000000000000000000000080040000736d616c6c2f646174612f31504b01020000000008080000000000004a7d358d30000000300000000c00" +
  "00000000000000000000000020050000736d616c6c2f646174612f32504b0102000000000808000000000000532e4c960c0000000c0000000c000000" +
  "00000000000000000000c0050000736d616c6c2f646174612f33504b0102000000000808000000000000552a1a9b0c0000000c0000000c0000000000" +
  "00000000000000001c060000736d616c6c2f646174612f34504b010200000000080800000000000086c2526906000000060000000c00000000000000" +
  "0000000000009c060000736d616c6c2f646174612f35504b010200000000080800000000000069e7a5e628000000280000000c000000000000000000" +
  "0000000016070000736d616c6c2f646174612f36504b01020000000008080000000000002eba1cc204000000040000000c0000000000000000000000" +
  "0000b8070000736d616c6c2f646174612f37504b0102000000000808000000000000d19e675502000000020000000d00000000000000000000000000" +
  "14080000736d616c6c2f76657273696f6e504b06062c000000000000001e032d0000000000000000000a000000000000000a00000000000000470200" +
  "00000000009208000000000000504b060700000000d90a00000000000001000000504b0506000000000a000a0047020000920800000000",
);

const REAL_TORCH_WRAPPED = fromHex(
  "504b03040000080800000000000000000000000000000000000010001200777261707065642f646174612e706b6c46420e005a5a5a5a5a5a5a5a5a5a" +
  "5a5a5a5a80027d710028580a00000073746174655f64696374710163636f6c6c656374696f6e730a4f726465726564446963740a7102295271032858" +
  "0c000000706f736974696f6e5f696473710463746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a710528285807000000" +
  "73746f72616765710663746f7263680a4c6f6e6753746f726167650a71075801000000307108580300000063707571094b0674710a514b004b014b06" +
  "86710b4b064b0186710c8968022952710d74710e52710f580a000000656d622e776569676874711068052828680663746f7263680a466c6f61745374" +
  "6f726167650a7111580100000031711268094b14747113514b004b054b048671144b044b0186711589680229527116747117527118580a0000006c69" +
  "6e2e77656967687471196805282868066811580100000032711a68094b0c74711b514b004b034b0486711c4b044b0186711d8968022952711e74711f" +
  "52712058080000006c696e2e6269617371216805282868066811580100000033712268094b03747123514b004b038571244b01857125896802295271" +
  "26747127527128757d712958090000005f6d65746164617461712a68022952712b285800000000712c7d712d580700000076657273696f6e712e4b01" +
  "735803000000656d62712f7d7130682e4b017358030000006c696e71317d7132682e4b0173757362580500000065706f636871334b03752e504b0708" +
  "518d40531402000014020000504b0304000008080000000000000000000000000000000000000e003000777261707065642f646174612f3046422c00" +
  "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a00000000000000000100000000000000" +
  "0200000000000000030000000000000004000000000000000500000000000000504b07080cc7c6a13000000030000000504b03040000080800000000" +
  "00000000000000000000000000000e001400777261707065642f646174612f31464210005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a851b90bf8a8093bf" +
  "d64b80be5d25debe8b4d193f5b0dc7bfcac6aebe4e2fed3f55aaef3e5f7f21bedbc9b83fa137883ec0d6b13f000dcb3f9c40723f33fb57bf308c6e3f" +
  "3727a13f9a5100403a1b5c3d504b070875e80b8e5000000050000000504b0304000008080000000000000000000000000000000000000e0034007772" +
  "61707065642f646174612f32464230005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" +
  "5a5a5a5a047095be9e0edc3ebc76643e0027783e406ad73c3a3f83bec03ead3d9e06efbe1afab8bec6f983be2685a13e2619963e504b07084a7d358d" +
  "3000000030000000504b0304000008080000000000000000000000000000000000000e001400777261707065642f646174612f33464210005a5a5a5a" +
  "5a5a5a5a5a5a5a5a5a5a5a5ac81163be20cb93bc40baa33e504b0708532e4c960c0000000c000000504b030400000808000000000000000000000000" +
  "0000000000000f003700777261707065642f76657273696f6e464233005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" +
  "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a330a504b0708d19e67550200000002000000504b0102000000000808000000000000518d40531402" +
  "000014020000100000000000000000000000000000000000777261707065642f646174612e706b6c504b01020000000008080000000000000cc7c6a1" +
  "30000000300000000e0000000000000000000000000064020000777261707065642f646174612f30504b010200000000080800000000000075e80b8e" +
  "50000000500000000e0000000000000000000000000000030000777261707065642f646174612f31504b01020000000008080000000000004a7d358d" +
  "30000000300000000e00000000000000000000000000a0030000777261707065642f646174612f32504b0102000000000808000000000000532e4c96" +
  "0c0000000c0000000e0000000000000000000000000040040000777261707065642f646174612f33504b0102000000000808000000000000d19e6755" +
  "02000000020000000f000000000000000000000000009c040000777261707065642f76657273696f6e504b06062c000000000000001e032d00000000" +
  "0000000000060000000000000006000000000000006b010000000000001205000000000000504b0607000000007d0600000000000001000000504b05" +
  "0600000000060006006b010000120500000000",
);

const REAL_TORCH_SMALL_TENSORS: [string, DType, number[], number[], number, string][] = [
  ["position_ids", "I64", [1, 6], [6, 1], 0, "000000000000000001000000000000000200000000000000030000000000000004000000000000000500000000000000"],
  ["emb.weight", "F32", [5, 4], [4, 1], 0, "851b90bf8a8093bfd64b80be5d25debe8b4d193f5b0dc7bfcac6aebe4e2fed3f55aaef3e5f7f21bedbc9b83fa137883ec0d6b13f000dcb3f9c40723f33fb57bf308c6e3f3727a13f9a5100403a1b5c3d"],
  ["lin.weight", "F32", [3, 4], [4, 1], 0, "047095be9e0edc3ebc76643e0027783e406ad73c3a3f83bec03ead3d9e06efbe1afab8bec6f983be2685a13e2619963e"],
  ["lin.bias", "F32", [3], [1], 0, "c81163be20cb93bc40baa33e"],
  ["half.weight", "F16", [2, 3], [3, 1], 0, "ef3cddb142bdc2be033d70b8"],
  ["bf16.weight", "BF16", [3], [1], 0, "9b3e913fdc3f"],
  ["view.a", "F32", [2, 2], [2, 1], 0, "000000000000803f0000004000004040"],
  ["view.b", "F32", [3], [1], 4, "000080400000a0400000c040"],
  ["view.t", "F32", [2, 2], [1, 2], 0, "00000000000000400000803f00004040"],
  ["tied.weight", "F32", [5, 4], [4, 1], 0, "851b90bf8a8093bfd64b80be5d25debe8b4d193f5b0dc7bfcac6aebe4e2fed3f55aaef3e5f7f21bedbc9b83fa137883ec0d6b13f000dcb3f9c40723f33fb57bf308c6e3f3727a13f9a5100403a1b5c3d"],
  ["scalar", "F32", [], [], 0, "00002040"],
];

describe("openTorchBin: files written by torch.save", () => {
  it("reads torch 1.13's own file: dtypes, layouts, shared storages, views, byte for byte", async () => {
    const path = fresh("small.bin");
    await writeFile(path, REAL_TORCH_SMALL);
    const source = await openTorchBin(path);
    try {
      const list = source.list();
      expect(list.map(({ name, dtype, shape, stride, storageOffset }) => [name, dtype, shape, stride, storageOffset])).toEqual(
        REAL_TORCH_SMALL_TENSORS.map(([name, dtype, shape, stride, offset]) => [name, dtype, shape, stride, offset]),
      );
      const key = (name: string): string => list.find((t) => t.name === name)!.storageKey;
      expect(key("tied.weight")).toBe(key("emb.weight"));
      expect(new Set([key("view.a"), key("view.b"), key("view.t")]).size).toBe(1);
      for (const [name, , , , , hex] of REAL_TORCH_SMALL_TENSORS) {
        expect(Buffer.from(await source.readBytes(name)).toString("hex"), name).toBe(hex);
      }
    } finally {
      await source.close();
    }
  });

  it("finds the weights in torch 1.13's {state_dict, epoch} file", async () => {
    const path = fresh("wrapped.bin");
    await writeFile(path, REAL_TORCH_WRAPPED);
    const got = await readAll(path);
    expect(Object.keys(got)).toEqual(["position_ids", "emb.weight", "lin.weight", "lin.bias"]);
    for (const [name, , , , , hex] of REAL_TORCH_SMALL_TENSORS.slice(0, 4)) {
      expect(Buffer.from(got[name]!).toString("hex"), name).toBe(hex);
    }
  });
});

describe("openTorchBin: hostile pickles", () => {
  const cases: [string, (marker: string) => Uint8Array][] = [
    ["os.system (protocol 0 GLOBAL)", (m) => hostileProto0Pickle("os", "system", `touch ${m}`)],
    ["posix.system (protocol 0 GLOBAL)", (m) => hostileProto0Pickle("posix", "system", `touch ${m}`)],
    ["os.system (STACK_GLOBAL)", (m) => hostileStackGlobalPickle("os", "system", `touch ${m}`)],
    ["os.system (inside a valid state dict)", (m) => hostileStateDictPickle("os", "system", `touch ${m}`)],
    ["builtins.eval", (m) => hostileStateDictPickle("builtins", "eval", `open(${JSON.stringify(m)}, "w")`)],
    ["builtins.exec", (m) => hostileStackGlobalPickle("builtins", "exec", `open(${JSON.stringify(m)}, "w")`)],
    ["subprocess.Popen", (m) => hostileProto0Pickle("subprocess", "Popen", `touch ${m}`)],
    ["__builtin__.getattr", (m) => hostileProto0Pickle("__builtin__", "getattr", m)],
  ];
  for (const [label, pickle] of cases) {
    it(`refuses ${label}: exit code 2, one line, nothing run`, async () => {
      const path = fresh("hostile.bin");
      const marker = fresh("pwned");
      await writeTorchBinWithPickle(path, pickle(marker));
      const e = await usageError(() => openTorchBin(path));
      const global = label.split(" ")[0];
      expect(e.message).toBe(`${path}: refusing pickle global ${global} (only tensors are loaded; this file may be malicious)`);
      expect(existsSync(marker)).toBe(false);
    });
  }

  it("refuses an unknown opcode in data.pkl", async () => {
    const path = fresh("opcode.bin");
    await writeTorchBinWithPickle(path, Uint8Array.of(0x80, 0x02, 0x7d, 0xfe, 0x2e));
    expect((await usageError(() => openTorchBin(path))).message).toBe(
      `${path}: unreadable pickle in data.pkl at byte 3 (unknown opcode 0xfe); the checkpoint is corrupt or not a torch state dict`,
    );
  });
});

describe("openTorchBin: damaged or unsuitable files", () => {
  it("refuses a truncated file", async () => {
    const path = fresh("truncated.bin");
    await writeTorchBin(path, SAMPLE);
    const size = (await readFile(path)).length;
    await truncate(path, size - 40);
    const e = await usageError(() => openTorchBin(path));
    expect(e.message).toContain(path);
    expect(e.message).toContain("corrupt or truncated zip");
  });

  it("refuses an EOCD that points past the end", async () => {
    const path = fresh("eocd.bin");
    await writeTorchBin(path, SAMPLE);
    const bytes = new Uint8Array(await readFile(path));
    new DataView(bytes.buffer).setUint32(bytes.length - 22 + 16, bytes.length * 2, true);
    await writeFile(path, bytes);
    expect((await usageError(() => openTorchBin(path))).message).toContain("runs past the end");
  });

  it("refuses a tensor whose shape needs more elements than its storage holds", async () => {
    const path = fresh("short-storage.bin");
    await writeTorchBin(path, [{ name: "w", dtype: "F32", shape: [4, 4], data: f32Bytes([1, 2, 3, 4, 5, 6, 7, 8]) }]);
    expect((await usageError(() => openTorchBin(path))).message).toBe(
      `${path}: tensor w (shape [4, 4], offset 0) needs 16 elements but storage 0 holds 8; the file is corrupt — download it again`,
    );
  });

  it("refuses a view that starts inside the storage but runs past it", async () => {
    const path = fresh("offset-overrun.bin");
    await writeTorchBinViews(path, [{ key: "0", dtype: "F16", data: encode("F16", [1, 2, 3, 4]) }], [
      { name: "tail", storage: "0", shape: [2], storageOffset: 3 },
    ]);
    expect((await usageError(() => openTorchBin(path))).message).toContain("needs 5 elements but storage 0 holds 4");
  });

  it("refuses a storage entry shorter than its declared element count", async () => {
    const path = fresh("short-entry.bin");
    await writeTorchBinViews(path, [{ key: "0", dtype: "BF16", data: encode("BF16", [1, 2, 3]), numel: 8 }], [
      { name: "w", storage: "0", shape: [8] },
    ]);
    expect((await usageError(() => openTorchBin(path))).message).toBe(
      `${path}: storage 0 holds 6 bytes but declares 8 BF16 elements (16 bytes); the file is corrupt or truncated — download it again`,
    );
  });

  it("refuses a missing storage entry", async () => {
    const path = fresh("missing-storage.bin");
    const pickle = stateDictPickle([{ name: "w", storage: "3", shape: [1] }], [{ key: "3", dtype: "F32", data: f32Bytes([1]) }]);
    await writeFile(path, buildTorchArchive(pickle, [{ key: "0", data: f32Bytes([1]) }]));
    expect((await usageError(() => openTorchBin(path))).message).toContain("storage 3 is missing from the archive");
  });

  it("refuses compressed tensor data", async () => {
    const path = fresh("deflated-storage.bin");
    const pickle = stateDictPickle([{ name: "w", storage: "0", shape: [64] }], [{ key: "0", dtype: "F32", data: new Uint8Array(256) }]);
    await writeFile(path, buildZip([
      { name: "archive/data.pkl", data: pickle },
      { name: "archive/data/0", data: new Uint8Array(256), method: 8 },
    ]));
    expect((await usageError(() => openTorchBin(path))).message).toContain("storage 0 is compressed (zip method 8)");
  });

  it("detects corrupted tensor bytes through the CRC", async () => {
    const path = fresh("bitrot.bin");
    await writeTorchBin(path, SAMPLE.slice(0, 1));
    const bytes = new Uint8Array(await readFile(path));
    const word = SAMPLE[0]!.data;
    const at = Buffer.from(bytes).indexOf(Buffer.from(word));
    expect(at).toBeGreaterThan(0);
    bytes[at + 5] ^= 0x40;
    await writeFile(path, bytes);
    const source = await openTorchBin(path);
    try {
      const e = await usageError(() => source.readBytes("embeddings.word_embeddings.weight"));
      expect(e.message).toContain("CRC mismatch in zip entry archive/data/0");
    } finally {
      await source.close();
    }
  });

  it("refuses big-endian archives", async () => {
    const path = fresh("big-endian.bin");
    await writeTorchBin(path, SAMPLE, { byteorder: "big" });
    expect((await usageError(() => openTorchBin(path))).message).toContain("stored big-endian");
  });

  it("refuses zips that are not torch.save checkpoints", async () => {
    const plain = fresh("plain.zip");
    await writeFile(plain, buildZip([{ name: "readme.txt", data: new TextEncoder().encode("hi") }]));
    expect((await usageError(() => openTorchBin(plain))).message).toContain("without <archive>/data.pkl");
    const script = fresh("script.pt");
    await writeFile(script, buildZip([
      { name: "m/data.pkl", data: hostileProto0Pickle("__torch__.MyModule", "MyModule", "") },
      { name: "m/constants.pkl", data: Uint8Array.of(0x80, 0x02, 0x29, 0x2e) },
      { name: "m/code/__torch__.py", data: new TextEncoder().encode("class MyModule: ...") },
    ]));
    expect((await usageError(() => openTorchBin(script))).message).toContain("TorchScript archive");
  });

  it("refuses a pickle that is not a state dict, or one without tensors", async () => {
    const list = fresh("list.bin");
    await writeTorchBinWithPickle(list, Uint8Array.of(0x80, 0x02, 0x5d, 0x2e));
    expect((await usageError(() => openTorchBin(list))).message).toContain("data.pkl holds a list, not a state dict");
    const empty = fresh("empty.bin");
    await writeTorchBin(empty, []);
    expect((await usageError(() => openTorchBin(empty))).message).toContain("found no tensors");
  });

  it("refuses an unknown tensor name and reads after close", async () => {
    const path = fresh("names.bin");
    await writeTorchBin(path, SAMPLE.slice(0, 1));
    const source = await openTorchBin(path);
    expect((await usageError(() => source.readBytes("nope"))).message).toBe(`${path}: no tensor named nope`);
    await source.close();
    expect((await usageError(() => source.readBytes("embeddings.word_embeddings.weight"))).message).toContain("already closed");
  });
});
