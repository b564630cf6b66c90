import { describe, expect, it } from "vitest";
import { OnnxType } from "../onnx/proto.js";
import { inferElementTypes, textOverflows } from "./fp16-range.js";

describe("FP16 range probe helpers", () => {
  it("flags exactly the inf/NaN halves, in either half of a 32-bit word and in a trailing odd element", () => {
    const isInfNan = (h: number) => (h & 0x7c00) === 0x7c00;
    const pair = new Uint16Array(2);
    const words = new Uint32Array(pair.buffer);
    for (let h = 0; h < 0x10000; h++) {
      for (const pos of [0, 1]) {
        pair[pos] = h;
        pair[1 - pos] = 0x3c00; // 1.0
        expect(textOverflows(pair, words, 0, 2)).toBe(isInfNan(h));
      }
    }
    const odd = Uint16Array.from([0x3c00, 0x3c00, 0x7c00]);
    expect(textOverflows(odd, new Uint32Array(odd.buffer, 0, 1), 0, 3)).toBe(true);
    expect(textOverflows(odd, new Uint32Array(odd.buffer, 0, 1), 0, 2)).toBe(false);
  });

  it("infers element types through casts, shape ops and comparisons", () => {
    const types = inferElementTypes({
      input: [{ name: "x", type: { tensorType: { elemType: OnnxType.FLOAT } } }],
      initializer: [{ name: "w", dataType: OnnxType.FLOAT16 }],
      node: [
        { opType: "Cast", input: ["x"], output: ["h"], attribute: [{ name: "to", i: OnnxType.FLOAT16 }] },
        { opType: "MatMul", input: ["h", "w"], output: ["m"] },
        { opType: "Shape", input: ["m"], output: ["s"] },
        { opType: "Equal", input: ["s", "s"], output: ["e"] },
        { opType: "Where", input: ["e", "m", "m"], output: ["y"] },
      ],
    });
    expect(Object.fromEntries(types)).toEqual({ x: OnnxType.FLOAT, w: OnnxType.FLOAT16, h: OnnxType.FLOAT16, m: OnnxType.FLOAT16, s: OnnxType.INT64, e: OnnxType.BOOL, y: OnnxType.FLOAT16 });
  });
});
