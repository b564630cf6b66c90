import { describe, expect, it } from "vitest";
import type { QuantizationRecord } from "../artifacts/manifest.js";
import { diagnoseInt8Layers } from "./int8-diagnosis.js";

const record = (over: Partial<QuantizationRecord> = {}): QuantizationRecord => ({
  method: "minmax",
  corpus_sha256: "0".repeat(64),
  texts: 500,
  tokens: 15000,
  excluded: [],
  tensors: 32,
  amax: { min: 0.2, median: 4, max: 5 },
  calibration_seconds: 4,
  ...over,
});

const layer = (node: string, inputCosine: number, outputCosine: number, quantized = true) => ({ node, layer: Number(/layer\.(\d+)/.exec(node)![1]), kind: "linear" as const, inputCosine, outputCosine, added: 1 - outputCosine / inputCosine, quantized });

describe("diagnoseInt8Layers", () => {
  it("names the layers that add the most drift, worst first, and never one kept in float", () => {
    const report = {
      texts: 4,
      layers: [
        layer("/encoder/layer.0/attention/self/query/Gemm", 1, 0.999),
        layer("/encoder/layer.1/output/dense/Gemm", 0.99, 0.9),
        layer("/encoder/layer.2/intermediate/dense/Gemm", 0.9, 0.85),
        layer("/encoder/layer.3/output/dense/Gemm", 0.85, 0.5),
      ],
    };
    const d = diagnoseInt8Layers(report, record({ excluded: ["/encoder/layer.3/output/dense/Gemm"] }), [30, 40])!;
    expect(d.code).toBe("int8-layers");
    expect(d.message).toMatch(/^INT8 layers that move the vectors most on the failing texts: \/encoder\/layer\.1\/output\/dense \(output cosine 0\.9000, adds 9\.1%\), \/encoder\/layer\.2\/intermediate\/dense/);
    expect(d.message).not.toContain("layer.3");
    expect(d.message).toContain("--exclude /encoder/layer.1/output/dense,/encoder/layer.2/intermediate/dense,/encoder/layer.0/attention/self/query");
    // 35 tokens against a corpus mean of 30: no length hint.
    expect(d.message).not.toContain("calibrate on texts like the failing ones");
  });

  it("never names a layer the int8 graph computes in float, though the record does not list it (model.int8.onnx's attention MatMuls)", () => {
    const report = {
      texts: 3,
      layers: [
        { ...layer("/encoder/layer.3/attention/self/MatMul", 0.98, 0.75, false), kind: "attention-scores" as const },
        layer("/encoder/layer.3/attention/self/query/Gemm", 0.99, 0.97),
      ],
    };
    const d = diagnoseInt8Layers(report, record(), [30])!;
    expect(d.message).toMatch(/: \/encoder\/layer\.3\/attention\/self\/query \(output cosine 0\.9700/);
    expect(d.message).not.toMatch(/attention\/self \(/);
    expect(diagnoseInt8Layers({ texts: 1, layers: [report.layers[0]!] }, record())).toBeUndefined();
  });

  it("says when the failing texts are much shorter than the calibration corpus, and that a small corpus is small", () => {
    const report = { texts: 2, layers: [layer("/encoder/layer.0/output/dense/Gemm", 1, 0.9)] };
    const d = diagnoseInt8Layers(report, record({ texts: 50, tokens: 1500 }), [2, 3])!;
    expect(d.message).toContain("calibrate on texts like the failing ones: they average 2.5 tokens, the calibration corpus 30.0");
    expect(d.message).toContain("calibrate on more texts (50 now");
  });

  it("gives no diagnosis when nothing drifts or the probe was skipped", () => {
    expect(diagnoseInt8Layers({ texts: 1, layers: [layer("/encoder/layer.0/output/dense/Gemm", 1, 1)] }, record())).toBeUndefined();
    expect(diagnoseInt8Layers({ texts: 0, layers: [], skipped: "external data" }, record())).toBeUndefined();
  });
});
