import { describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
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

describe("probeFp16Range on small graphs", () => {
  /** x (float32) → Cast fp16 → Mul by 2 (fp16) → [ReduceSum to a scalar] → Cast fp32 → y */
  async function graph(scalar: boolean): Promise<string> {
    const { GraphBuilder, int } = await import("../onnx/graph-builder.js");
    const { writeOnnxModel } = await import("../onnx/write-model.js");
    const { floatToHalf } = await import("../checkpoint/dtype.js");
    const { join } = await import("node:path");
    const g = new GraphBuilder("g");
    const x = g.input("x", OnnxType.FLOAT, [2, 3]);
    const h = g.op("Cast", "/cast", [x], { to: int(OnnxType.FLOAT16) });
    const two = g.initializer("two", OnnxType.FLOAT16, [], () => new Uint8Array(new Uint16Array([floatToHalf(2)]).buffer));
    let m = g.op("Mul", "/mul", [h, two]);
    if (scalar) m = g.op("ReduceSum", "/sum", [m], { keepdims: int(0) });
    g.output(g.op("Cast", "/out", [m], { to: int(OnnxType.FLOAT) }), OnnxType.FLOAT, scalar ? [] : [2, 3]);
    const path = join(await tempDir("bge-fp16-probe-"), "m.onnx");
    await writeOnnxModel(path, g, { opset: 17, producerName: "t", producerVersion: "0" });
    return path;
  }
  const feed = async (values: number[]) => {
    const ort = await import("onnxruntime-node");
    return { x: new ort.Tensor("float32", Float32Array.from(values), [2, 3]) };
  };

  it("finds values that leave FP16's range though ORT's CPU result stays finite, and passes a graph that fits", async () => {
    const { probeFp16Range } = await import("./fp16-range.js");
    const path = await graph(false);
    const over = await probeFp16Range(path, [await feed([40000, 1, 1, 1, 1, 1])]);
    expect(over.overflowing.map((o) => o.tensor)).toEqual(["/mul_output_0"]);
    const fits = await probeFp16Range(path, [await feed([30000, 1, 1, 1, 1, 1])]);
    expect(fits).toMatchObject({ probed: 2, overflowing: [] });
  });

  it("falls back to whole tensors where the per-row reduction cannot apply (a scalar FP16 tensor)", async () => {
    const { probeFp16Range } = await import("./fp16-range.js");
    const path = await graph(true);
    const over = await probeFp16Range(path, [await feed([20000, 20000, 1, 1, 1, 1])]);
    expect(over.overflowing.map((o) => o.tensor)).toEqual(["/sum_output_0"]);
  });
});
