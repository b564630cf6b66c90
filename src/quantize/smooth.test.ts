import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../test/helpers/paths.js";
import { tempDir } from "../../test/helpers/tmp.js";
import { readModelSpec } from "../checkpoint/model-spec.js";
import { writeFixture } from "../fixture/write-fixture.js";
import { exportOnnx } from "../onnx/export.js";
import { OnnxEmbedder } from "../runners/onnx-embedder.js";
import { calibrate, type CalibrationResult } from "./calibrate.js";
import { readOnnxModel } from "./onnx-model-io.js";
import { channelSpread, columnAbsMax, OUTLIER_CHANNEL_RATIO, parseSmoothSetting, smoothingPlan, smoothingScales, weightReader, writeSmoothedModel, type SmoothedInput } from "./smooth.js";

const builtBy = { tool: "bge", version: "test", args: ["export"] };

describe("SmoothQuant arithmetic", () => {
  it("s_j = max|x_j|^α / max|W_j|^(1−α), with SmoothQuant's 1e-5 floor for a dead channel", () => {
    const s = smoothingScales(Float32Array.of(4, 1, 0, 9), Float32Array.of(1, 4, 2, 1), 0.5);
    expect(Array.from(s)).toEqual([2, 0.5, Math.fround(Math.sqrt(1e-5) / Math.sqrt(2)), 3]);
    // α = 0.75 moves more of the range into the weights: 16^0.75 / 2^0.25
    expect(smoothingScales(Float32Array.of(16), Float32Array.of(2), 0.75)[0]).toBeCloseTo(8 / 2 ** 0.25, 5);
    expect(() => smoothingScales(Float32Array.of(1, 2), Float32Array.of(1), 0.5)).toThrow(/2 activation channels but 1 weight columns/);
  });

  it("channel spread is the largest channel over the median one; column absmax spans every reader's rows", () => {
    expect(channelSpread(Float32Array.of(1, 2, 3, 100))).toBe(40);
    expect(channelSpread(Float32Array.of(2, 1, 3))).toBe(1.5);
    expect(channelSpread(Float32Array.of(0, 0, 0))).toBe(1);
    expect(channelSpread(Float32Array.of(0, 0, 5))).toBe(Infinity);
    // Q and K (2×3 each, [out, in]) read one tensor: one max per input column over both.
    const q = { values: Float32Array.of(1, -5, 0, 2, 0, 0), rows: 2, cols: 3 };
    const k = { values: Float32Array.of(0, 1, -7, -3, 0, 0.5), rows: 2, cols: 3 };
    expect(Array.from(columnAbsMax([q, k]))).toEqual([3, 5, 7]);
  });

  it("--smooth takes auto, off or α in (0, 1)", () => {
    expect(parseSmoothSetting("auto")).toBe("auto");
    expect(parseSmoothSetting("off")).toBe("off");
    expect(parseSmoothSetting("0.5")).toBe(0.5);
    expect(parseSmoothSetting(".8")).toBe(0.8);
    for (const bad of ["1", "0", "1.5", "-0.5", "half", "", "0.5x"]) expect(parseSmoothSetting(bad), bad).toBeUndefined();
  });
});

describe("smoothing a bge graph", () => {
  let root: string;
  let texts: string[];
  let outliers: string;
  let plain: string;
  let outlierCal: CalibrationResult;
  let plan: SmoothedInput[];

  const artifact = async (name: string, fixture: Partial<Parameters<typeof writeFixture>[0]>) => {
    const modelDir = join(root, `${name}-model`);
    const outDir = join(root, name);
    await writeFixture({ dir: modelDir, seed: 3, ...fixture });
    await exportOnnx({ modelDir, outDir, precisions: ["fp32"], builtBy });
    return outDir;
  };
  const vectors = async (dir: string, model: string) => {
    const spec = await readModelSpec(dir);
    const e = await OnnxEmbedder.load(model, spec, dir, { graphPooling: { pooling: spec.pooling, normalize: spec.normalize } });
    try {
      return (await e.embed(texts, "passage")).embeddings;
    } finally {
      await e.deactivate();
    }
  };

  beforeAll(async () => {
    root = await tempDir("bge-smooth-");
    const peer = JSON.parse(await readFile(join(REPO_ROOT, "test", "data", "peer-texts.json"), "utf8"));
    texts = [...peer.zh.slice(0, 20), ...peer.en.slice(0, 10)];
    outliers = await artifact("outliers", { outliers: true });
    plain = await artifact("plain", {});
    outlierCal = await calibrate({ modelPath: join(outliers, "model.fp32.onnx"), artifactDir: outliers, texts, method: "minmax", channelAbsMax: true, threads: 1 });
    const file = await readOnnxModel(join(outliers, "model.fp32.onnx"));
    plan = await smoothingPlan({ setting: "auto", targets: outlierCal.targets, channelAbsMax: (x) => outlierCal.statistics.get(x)?.channelAbsMax, weight: weightReader(file) });
  }, 120_000);

  it("calibration keeps max|x| per input channel of every linear input, whose largest is the tensor's max|x|", () => {
    const linearInputs = new Set(outlierCal.targets.filter((t) => t.kind === "linear").map((t) => t.activations[0]!));
    expect(linearInputs.size).toBe(2 * 4); // Q/K/V, attention output, FFN up, FFN down per layer
    for (const x of linearInputs) {
      const s = outlierCal.statistics.get(x)!;
      const channels = s.channelAbsMax!;
      expect(channels.length, x).toBeGreaterThan(0);
      expect(Math.max(...channels), x).toBe(Math.max(Math.abs(s.min), Math.abs(s.max)));
    }
    // Attention inputs are not channels of a linear layer.
    const scores = outlierCal.targets.find((t) => t.kind === "attention-scores")!;
    expect(outlierCal.statistics.get(scores.activations[0]!)!.channelAbsMax).toBeUndefined();
  });

  it("auto smooths the linear inputs with outlier channels that smoothing narrows; none on a model without outliers", async () => {
    for (const p of plan) {
      expect(p.spread, p.place).toBeGreaterThanOrEqual(OUTLIER_CHANNEL_RATIO);
      expect(p.smoothedSpread, p.place).toBeLessThan(p.spread);
    }
    // The planted outlier units of the FFN: GELU's output reaches ~1e5 on them, read by weights
    // scaled down. The FFN up-projection reads the outlier dimensions with weights as large as the
    // activations (both carry the outlier on the same channels): smoothing would only widen it.
    const places = plan.map((p) => p.place);
    for (let l = 0; l < 2; l++) {
      expect(places).toContain(`/encoder/layer.${l}/output/dense`);
      expect(places).not.toContain(`/encoder/layer.${l}/intermediate/dense`);
      expect(places).not.toContain(`/encoder/layer.${l}/attention/output/dense`);
    }
    const up = outlierCal.targets.find((t) => t.node === "/encoder/layer.0/intermediate/dense/Gemm")!;
    expect(channelSpread(outlierCal.statistics.get(up.activations[0]!)!.channelAbsMax!)).toBeGreaterThan(OUTLIER_CHANNEL_RATIO);
    // Q, K and V share one smoothing (one tensor, one Mul) wherever their input is smoothed.
    for (const p of plan.filter((x) => x.place.endsWith("/attention/self"))) expect(p.nodes).toHaveLength(3);

    const cal = await calibrate({ modelPath: join(plain, "model.fp32.onnx"), artifactDir: plain, texts, method: "minmax", channelAbsMax: true, threads: 1 });
    const file = await readOnnxModel(join(plain, "model.fp32.onnx"));
    const none = await smoothingPlan({ setting: "auto", targets: cal.targets, channelAbsMax: (x) => cal.statistics.get(x)?.channelAbsMax, weight: weightReader(file) });
    expect(none).toEqual([]);
    // A number smooths every linear input; off smooths nothing.
    const all = await smoothingPlan({ setting: 0.5, targets: cal.targets, channelAbsMax: (x) => cal.statistics.get(x)?.channelAbsMax, weight: weightReader(file) });
    expect(all).toHaveLength(2 * 4);
    expect(await smoothingPlan({ setting: "off", targets: cal.targets, channelAbsMax: () => undefined, weight: weightReader(file) })).toEqual([]);
    await expect(smoothingPlan({ setting: 1.5, targets: cal.targets, channelAbsMax: () => undefined, weight: weightReader(file) })).rejects.toThrow(/--smooth 1.5: expected auto, off, or a migration strength/);
  });

  it("the smoothed graph computes the same vectors, with a Mul by 1/s before each smoothed input, and its outlier channels gone", async () => {
    const out = join(outliers, "smoothed.onnx");
    await writeSmoothedModel(join(outliers, "model.fp32.onnx"), out, plan);
    const file = await readOnnxModel(out);
    const muls = file.graph.node.filter((n) => n.name?.endsWith("/smooth/Mul"));
    expect(muls.map((n) => n.name).sort()).toEqual(plan.map((p) => `${p.place}/smooth/Mul`).sort());
    for (const p of plan) {
      const mul = muls.find((n) => n.name === `${p.place}/smooth/Mul`)!;
      expect(mul.input![0]).toBe(p.tensor);
      // Every reader now takes the smoothed tensor; the residual path still reads the original.
      for (const node of p.nodes) expect(file.graph.node.find((n) => n.name === node)!.input![0]).toBe(mul.output![0]);
    }

    const [a, b] = [await vectors(outliers, join(outliers, "model.fp32.onnx")), await vectors(outliers, out)];
    for (let i = 0; i < a.length; i++) {
      let dot = 0;
      for (let k = 0; k < a[i]!.length; k++) dot += a[i]![k]! * b[i]![k]!;
      expect(dot, texts[i]).toBeGreaterThan(1 - 1e-6);
    }

    // Calibrated again, the smoothed inputs' channel spread is what the plan computed from the first
    // calibration's statistics, and narrower than before.
    const again = await calibrate({ modelPath: out, artifactDir: outliers, texts, method: "minmax", channelAbsMax: true, threads: 1 });
    for (const p of plan) {
      const mul = muls.find((n) => n.name === `${p.place}/smooth/Mul`)!;
      const spread = channelSpread(again.statistics.get(mul.output![0]!)!.channelAbsMax!);
      expect(spread, p.place).toBeLessThan(p.spread);
      expect(spread / p.smoothedSpread, p.place).toBeCloseTo(1, 3);
    }
  });
});
