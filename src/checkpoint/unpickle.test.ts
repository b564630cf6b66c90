import { describe, expect, it } from "vitest";
import {
  PickleDict,
  PickleSet,
  PickleTuple,
  TorchTensor,
  unpickleTorch,
  type PickleValue,
} from "./unpickle.js";
import { UsageError } from "../errors.js";
import {
  CPYTHON_STATE_DICT_PICKLE,
  SHARED_STORAGE_PICKLE,
  hostileProto0Pickle,
  hostileStackGlobalPickle,
  hostileStateDictPickle,
  stateDictPickle,
} from "../../test/helpers/torch-bin-writer.js";

const FILE = "/models/x/pytorch_model.bin";
const hex = (h: string): Uint8Array => Uint8Array.from(h.match(/../g)!.map((b) => parseInt(b, 16)));
const bytes = (...parts: (number | string)[]): Uint8Array =>
  Uint8Array.from(parts.flatMap((p) => (typeof p === "number" ? [p] : [...new TextEncoder().encode(p)])));
const load = (b: Uint8Array, opts: { maxStack?: number; maxMemo?: number } = {}): PickleValue =>
  unpickleTorch(b, { file: FILE, ...opts });

function refusal(b: Uint8Array, opts: { maxStack?: number; maxMemo?: number } = {}): string {
  try {
    load(b, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(2);
    const message = (err as UsageError).message;
    expect(message).not.toMatch(/[\n\r]/);
    expect(message.startsWith(`${FILE}: `)).toBe(true);
    return message;
  }
  throw new Error("expected a UsageError");
}

/** Containers as plain data, so that toEqual compares them exactly. */
function plain(v: PickleValue): unknown {
  if (v instanceof PickleTuple) return { tuple: v.items.map(plain) };
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof PickleDict) return { dict: [...v.entries].map(([k, x]) => [k, plain(x)]) };
  if (v instanceof PickleSet) return { [v.frozen ? "frozenset" : "set"]: v.items.map(plain) };
  if (v instanceof Uint8Array) return { bytes: Array.from(v) };
  if (v instanceof TorchTensor) {
    const { dtype, key, numel } = v.storage;
    return { tensor: { dtype, key, numel, offset: v.storageOffset, shape: v.shape, stride: v.stride } };
  }
  return v;
}

/**
 * CPython 3 `pickle.dumps(obj, protocol=p)` for
 *   [0, 255, 256, 65535, 65536, -1, -2**31, 2**31, 2**40, -2**70, 1.5, -0.25, "héllo ✓", b"ab\x00",
 *    (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), {"k": None, 2: True, "f": False}, {1, 2}, frozenset([3])]
 * covering the text opcodes (0), the binary ones (1–2), BINBYTES (3), FRAME/MEMOIZE/sets (4–5).
 */
const CPYTHON_DATA: Record<number, string> = {
  0: "286c70300a49300a61493235350a61493235360a614936353533350a614936353533360a61492d310a61492d323134373438333634380a614c323134373438333634384c0a614c313039393531313632373737364c0a614c2d313138303539313632303731373431313330333432344c0a6146312e350a61462d302e32350a615668e96c6c6f205c75323731330a70310a61635f636f646563730a656e636f64650a70320a285661625c75303030300a70330a566c6174696e310a70340a7470350a5270360a612874612849310a7470370a612849310a49320a7470380a612849310a49320a49330a7470390a612849310a49320a49330a49340a747031300a6128647031310a566b0a7031320a4e7349320a4930310a7356660a7031330a4930300a7361635f5f6275696c74696e5f5f0a7365740a7031340a28286c7031350a49310a6149320a61747031360a527031370a61635f5f6275696c74696e5f5f0a66726f7a656e7365740a7031380a28286c7031390a49330a61747032300a527032310a612e",
  1: "5d7100284b004bff4d00014dffff4a000001004affffffff4a000000804c323134373438333634384c0a4c313039393531313632373737364c0a4c2d313138303539313632303731373431313330333432344c0a473ff800000000000047bfd0000000000000580a00000068c3a96c6c6f20e29c937101635f636f646563730a656e636f64650a7102285803000000616200710358060000006c6174696e31710474710552710629284b01747107284b014b02747108284b014b024b03747109284b014b024b034b0474710a7d710b2858010000006b710c4e4b024930310a580100000066710d4930300a75635f5f6275696c74696e5f5f0a7365740a710e285d710f284b014b0265747110527111635f5f6275696c74696e5f5f0a66726f7a656e7365740a7112285d71134b0361747114527115652e",
  2: "80025d7100284b004bff4d00014dffff4a000001004affffffff4a000000808a0500000080008a060000000000018a090000000000000000c0473ff800000000000047bfd0000000000000580a00000068c3a96c6c6f20e29c937101635f636f646563730a656e636f64650a71025803000000616200710358060000006c6174696e317104867105527106294b018571074b014b028671084b014b024b03877109284b014b024b034b0474710a7d710b2858010000006b710c4e4b0288580100000066710d8975635f5f6275696c74696e5f5f0a7365740a710e5d710f284b014b0265857110527111635f5f6275696c74696e5f5f0a66726f7a656e7365740a71125d71134b0361857114527115652e",
  3: "80035d7100284b004bff4d00014dffff4a000001004affffffff4a000000808a0500000080008a060000000000018a090000000000000000c0473ff800000000000047bfd0000000000000580a00000068c3a96c6c6f20e29c93710143036162007102294b018571034b014b028671044b014b024b03877105284b014b024b034b047471067d71072858010000006b71084e4b028858010000006671098975636275696c74696e730a7365740a710a5d710b284b014b026585710c52710d636275696c74696e730a66726f7a656e7365740a710e5d710f4b0361857110527111652e",
  4: "80049599000000000000005d94284b004bff4d00014dffff4a000001004affffffff4a000000808a0500000080008a060000000000018a090000000000000000c0473ff800000000000047bfd00000000000008c0a68c3a96c6c6f20e29c9394430361620094294b0185944b014b0286944b014b024b038794284b014b024b034b0474947d94288c016b944e4b02888c01669489758f94284b014b0290284b039194652e",
  5: "80059599000000000000005d94284b004bff4d00014dffff4a000001004affffffff4a000000808a0500000080008a060000000000018a090000000000000000c0473ff800000000000047bfd00000000000008c0a68c3a96c6c6f20e29c9394430361620094294b0185944b014b0286944b014b024b038794284b014b024b034b0474947d94288c016b944e4b02888c01669489758f94284b014b0290284b039194652e",
};

const CPYTHON_DATA_VALUE = [
  0, 255, 256, 65535, 65536, -1, -(2 ** 31), 2 ** 31, 2 ** 40, -(2n ** 70n), 1.5, -0.25, "héllo ✓",
  { bytes: [97, 98, 0] },
  { tuple: [] }, { tuple: [1] }, { tuple: [1, 2] }, { tuple: [1, 2, 3] }, { tuple: [1, 2, 3, 4] },
  { dict: [["k", null], [2, true], ["f", false]] },
  { set: [1, 2] },
  { frozenset: [3] },
];

describe("unpickleTorch: data", () => {
  for (const [protocol, data] of Object.entries(CPYTHON_DATA)) {
    it(`decodes CPython's protocol ${protocol} output exactly`, () => {
      expect(plain(load(hex(data)))).toEqual(CPYTHON_DATA_VALUE);
    });
  }

  it("decodes a CPython-written torch state dict, its tied weight and its _metadata", () => {
    const root = load(CPYTHON_STATE_DICT_PICKLE);
    expect(root).toBeInstanceOf(PickleDict);
    const dict = root as PickleDict;
    expect(dict.ordered).toBe(true);
    expect(plain(dict)).toEqual({
      dict: [
        ["encoder.layer.0.weight", { tensor: { dtype: "F32", key: "0", numel: 6, offset: 0, shape: [2, 3], stride: [3, 1] } }],
        ["encoder.layer.0.bias", { tensor: { dtype: "F16", key: "1", numel: 3, offset: 0, shape: [3], stride: [1] } }],
        ["tied.weight", { tensor: { dtype: "F32", key: "0", numel: 6, offset: 0, shape: [2, 3], stride: [3, 1] } }],
      ],
    });
    expect(plain(dict.state!)).toEqual({
      dict: [["_metadata", { dict: [["", { dict: [["version", 1]] }], ["encoder", { dict: [["version", 1]] }]] }]],
    });
  });

  it("decodes the hand-assembled shared-storage pickle", () => {
    expect(plain(load(SHARED_STORAGE_PICKLE))).toEqual({
      dict: [
        ["a", { tensor: { dtype: "F32", key: "0", numel: 10, offset: 0, shape: [2, 2], stride: [2, 1] } }],
        ["b", { tensor: { dtype: "F32", key: "0", numel: 10, offset: 4, shape: [3], stride: [1] } }],
        ["t", { tensor: { dtype: "F32", key: "0", numel: 10, offset: 0, shape: [2, 2], stride: [1, 2] } }],
      ],
    });
  });

  it("decodes the test writer's pickle, parameters included, with LONG1 sizes", () => {
    const big = 3_000_000_000; // past BININT: written as LONG1
    const root = load(
      stateDictPickle(
        [
          { name: "w", storage: "7", shape: [big], parameter: true },
          { name: "x", storage: "7", shape: [2], storageOffset: 300 },
        ],
        [{ key: "7", dtype: "BF16", data: new Uint8Array(0), numel: big }],
      ),
    );
    expect(plain(root)).toEqual({
      dict: [
        ["w", { tensor: { dtype: "BF16", key: "7", numel: big, offset: 0, shape: [big], stride: [1] } }],
        ["x", { tensor: { dtype: "BF16", key: "7", numel: big, offset: 300, shape: [2], stride: [1] } }],
      ],
    });
    expect(((root as PickleDict).entries.get("w") as TorchTensor).requiresGrad).toBe(true);
  });

  it("accepts _rebuild_from_type_v2 around a tensor and torch.Size for shapes", () => {
    // _rebuild_from_type_v2(_rebuild_tensor_v2, torch.nn.parameter.Parameter,
    //                      (storage, 0, torch.Size((2,)), (1,), False, OrderedDict()), {})
    const proper = bytes(
      0x80, 0x02, "ctorch._tensor\n_rebuild_from_type_v2\n", 0x28,
      "ctorch._utils\n_rebuild_tensor_v2\n", "ctorch.nn.parameter\nParameter\n",
      0x28, 0x28, 0x58, 7, 0, 0, 0, "storage", "ctorch\nHalfStorage\n", 0x58, 1, 0, 0, 0, "5", 0x58, 3, 0, 0, 0, "cpu", 0x4b, 2, 0x74, 0x51,
      0x4b, 0, "ctorch\nSize\n", 0x4b, 2, 0x85, 0x85, 0x52, 0x4b, 1, 0x85, 0x89, "ccollections\nOrderedDict\n", 0x29, 0x52, 0x74,
      0x7d, 0x74, 0x52, 0x2e,
    );
    expect(plain(load(proper))).toEqual({
      tensor: { dtype: "F16", key: "5", numel: 2, offset: 0, shape: [2], stride: [1] },
    });
  });

  it("handles DUP, POP, POP_MARK, PUT/GET, LONG_BINPUT/LONG_BINGET, EMPTY_SET/ADDITEMS", () => {
    // [x, x, x] where x is "a" via DUP, PUT/GET and LONG_BINPUT/LONG_BINGET; junk dropped by POP/POP_MARK.
    const p = bytes(
      0x80, 0x04, 0x5d, 0x28, // EMPTY_LIST MARK
      0x8c, 1, "a", 0x32, // "a" DUP
      0x70, "7\n", 0x67, "7\n", // PUT 7, GET 7
      0x72, 0, 0, 1, 0, 0x6a, 0, 0, 1, 0, // LONG_BINPUT 65536, LONG_BINGET 65536
      0x4e, 0x30, // NONE POP
      0x65, // APPENDS
      0x28, 0x4e, 0x4e, 0x31, // MARK NONE NONE POP_MARK
      0x8f, 0x28, 0x4b, 5, 0x90, 0x61, // EMPTY_SET MARK 5 ADDITEMS APPEND
      0x2e,
    );
    expect(plain(load(p))).toEqual(["a", "a", "a", "a", { set: [5] }]);
  });

  it("decodes protocol 0 STRING escapes", () => {
    const p = bytes("S'a\\'b\\x41\\n\\101'\n.");
    expect(load(p)).toBe("a'bA\nA");
  });
});

describe("unpickleTorch: refusals", () => {
  it("refuses posix.system in the classic protocol 0 payload, with the exact message", () => {
    expect(refusal(hostileProto0Pickle("posix", "system", "echo pwned > /tmp/x"))).toBe(
      `${FILE}: refusing pickle global posix.system (only tensors are loaded; this file may be malicious)`,
    );
  });

  const HOSTILE: [string, string][] = [
    ["os", "system"],
    ["builtins", "eval"],
    ["builtins", "exec"],
    ["__builtin__", "eval"],
    ["__builtin__", "getattr"],
    ["builtins", "getattr"],
    ["subprocess", "Popen"],
    ["subprocess", "check_output"],
    ["torch", "load"],
    ["torch.serialization", "load"],
    ["numpy.core.multiarray", "_reconstruct"],
    ["collections", "OrderedDict.__class__"],
    ["torch._utils", "_rebuild_qtensor"],
    ["copyreg", "_reconstructor"],
  ];
  for (const [module, name] of HOSTILE) {
    it(`refuses ${module}.${name} via GLOBAL, STACK_GLOBAL and inside a state dict`, () => {
      const expected = `${FILE}: refusing pickle global ${module}.${name} (only tensors are loaded; this file may be malicious)`;
      expect(refusal(hostileProto0Pickle(module, name, "touch /tmp/never"))).toBe(expected);
      expect(refusal(hostileStackGlobalPickle(module, name, "touch /tmp/never"))).toBe(expected);
      expect(refusal(hostileStateDictPickle(module, name, "touch /tmp/never"))).toBe(expected);
    });
  }

  it("refuses a disallowed global even when nothing calls it", () => {
    expect(refusal(bytes("cos\nsystem\n."))).toContain("refusing pickle global os.system");
  });

  it("refuses INST and OBJ forms of a call", () => {
    expect(refusal(bytes("(S'ls'\nios\nsystem\n."))).toContain("refusing pickle global os.system");
    expect(refusal(bytes(0x80, 0x02, "(cposix\nsystem\nS'ls'\no."))).toContain("refusing pickle global posix.system");
  });

  it("refuses calling an allowed but non-callable global", () => {
    expect(refusal(bytes(0x80, 0x02, "ctorch\nFloatStorage\n", 0x4b, 4, 0x85, 0x52, 0x2e))).toContain(
      "refusing to call pickle global torch.FloatStorage",
    );
  });

  it("refuses REDUCE on plain data and persistent ids that are not torch storages", () => {
    expect(refusal(bytes(0x80, 0x02, 0x58, 1, 0, 0, 0, "x", 0x29, 0x52, 0x2e))).toContain("not an allowed global");
    expect(refusal(bytes(0x80, 0x02, 0x58, 1, 0, 0, 0, "x", 0x51, 0x2e))).toContain("persistent id is not a torch storage");
    // A storage key that tries to name another archive entry.
    const key = bytes(
      0x80, 0x02, 0x28, 0x58, 7, 0, 0, 0, "storage", "ctorch\nFloatStorage\n", 0x58, 4, 0, 0, 0, "../x",
      0x58, 3, 0, 0, 0, "cpu", 0x4b, 1, 0x74, 0x51, 0x2e,
    );
    expect(refusal(key)).toContain("storage key is not a simple name");
  });

  it("refuses EXT opcodes, which name globals through the copyreg registry", () => {
    expect(refusal(bytes(0x80, 0x02, 0x82, 1, 0x2e))).toContain("EXT opcodes");
  });

  it("refuses unknown opcodes", () => {
    expect(refusal(bytes(0x80, 0x02, 0xff))).toContain("unknown opcode 0xff");
    expect(refusal(bytes(0x80, 0x02, 0x00))).toContain("unknown opcode 0x00");
    expect(refusal(bytes(0x80, 0x09, 0x4e, 0x2e))).toContain("unsupported pickle protocol 9");
  });

  it("refuses stack and memo abuse", () => {
    expect(refusal(bytes(0x80, 0x02, 0x2e))).toContain("stack underflow");
    expect(refusal(bytes(0x80, 0x02, 0x4e, 0x74, 0x2e))).toContain("MARK expected");
    expect(refusal(bytes(0x80, 0x02, 0x7d, 0x4e, 0x4e, 0x75, 0x2e))).toContain("MARK expected");
    expect(refusal(bytes(0x80, 0x02, 0x28, 0x2e))).toContain("stack underflow"); // STOP with only a MARK
    expect(refusal(bytes(0x80, 0x02, 0x4e, 0x28, 0x61, 0x2e))).toContain("stack underflow"); // APPEND across a MARK
    expect(refusal(bytes(0x80, 0x02, 0x68, 3, 0x2e))).toContain("memo slot 3 is empty");
    expect(refusal(bytes(0x80, 0x02, 0x71, 0, 0x2e))).toContain("stack underflow"); // BINPUT of nothing
    expect(refusal(bytes(0x80, 0x02, 0x4e, 0x61, 0x2e))).toContain("stack underflow");
    expect(refusal(bytes(0x80, 0x02, 0x4e, 0x4e, 0x61, 0x2e))).toContain("APPEND to something that is not a list");
    expect(refusal(bytes(0x80, 0x02, 0x5d, 0x4e, 0x4e, 0x73, 0x2e))).toContain("SETITEM on something that is not a dict");
    expect(refusal(bytes(0x80, 0x02, 0x4e, 0x4e, 0x62, 0x2e))).toContain("BUILD on something other than a dict or tensor");
    expect(refusal(bytes(0x80, 0x02, ...new Array(100).fill(0x4e), 0x2e), { maxStack: 50 })).toContain("stack too deep");
    const memo = [0x80, 0x02, 0x4e];
    for (let i = 0; i < 20; i++) memo.push(0x71, i);
    expect(refusal(Uint8Array.from([...memo, 0x2e]), { maxMemo: 10 })).toContain("memo too large");
  });

  it("refuses truncated pickles", () => {
    expect(refusal(bytes(0x80, 0x02, 0x4e))).toContain("truncated");
    expect(refusal(bytes(0x80, 0x02, 0x58, 100, 0, 0, 0, "short", 0x2e))).toContain("truncated");
    expect(refusal(bytes(0x80, 0x02, 0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f))).toContain("runs past the end");
    expect(refusal(bytes("cos\nsys"))).toContain("missing newline");
  });

  it("refuses malformed tensor arguments", () => {
    const tensor = (size: number[], stride: number[], offset: number): Uint8Array =>
      stateDictPickle([{ name: "w", storage: "0", shape: size, stride, storageOffset: offset }], [{ key: "0", dtype: "F32", data: new Uint8Array(16) }]);
    expect(refusal(tensor([2, 2], [2], 0))).toContain("size has 2 dims but stride has 1");
    expect(refusal(tensor([2], [1], -1))).toContain("storage offset is not a non-negative integer");
  });

  it("keeps a hostile name on one line and short", () => {
    const message = refusal(hostileStackGlobalPickle("os\nINFO all good", "x".repeat(500), "y"));
    expect(message).toContain("os\\x0aINFO all good");
    expect(message.length).toBeLessThan(400);
  });
});
