import type { QuantizationRecord } from "../artifacts/manifest.js";
import type { LayerDriftReport } from "../quantize/layer-drift.js";
import type { Diagnosis } from "./diagnose.js";

/** Layers named in a diagnosis: the worst few, and only those that add a visible share of the drift. */
const NAMED = 3;
const VISIBLE = 1e-4;

/**
 * Turns a per-layer int8-vs-fp32 comparison into the diagnosis a user can act on: which quantised
 * layers add the most drift, and the remedy that applies — another calibration method, those layers
 * kept in float (`--exclude`), or a bigger corpus.
 */
export function diagnoseInt8Layers(report: LayerDriftReport, record: QuantizationRecord | undefined, failingLengths: readonly number[] = []): Diagnosis | undefined {
  if (report.skipped || !report.layers.length) return undefined;
  // Layers kept in float are not INT8's doing, even where upstream drift grows through them: those
  // the record lists, and those the graph itself computes in float (model.int8.onnx's attention MatMuls).
  const inFloat = new Set(record?.excluded ?? []);
  const worst = [...report.layers].filter((l) => !inFloat.has(l.node) && l.quantized !== false).sort((a, b) => b.added - a.added).filter((l) => l.added > VISIBLE).slice(0, NAMED);
  if (!worst.length) return undefined;
  const places = worst.map((l) => l.node.replace(/\/(Gemm|MatMul(_1)?)$/, ""));
  const named = worst.map((l, i) => `${places[i]} (output cosine ${l.outputCosine.toFixed(4)}, adds ${(l.added * 100).toPrecision(2)}%)`).join(", ");
  const remedies: string[] = [];
  // Ranges calibrated on long passages miss what short texts (queries, titles) do.
  const failingMean = failingLengths.length ? failingLengths.reduce((a, b) => a + b, 0) / failingLengths.length : 0;
  const corpusMean = record && record.texts ? record.tokens / record.texts : 0;
  if (failingMean && corpusMean && failingMean < corpusMean / 2) {
    remedies.push(`calibrate on texts like the failing ones: they average ${failingMean.toFixed(1)} tokens, the calibration corpus ${corpusMean.toFixed(1)} (add queries and short texts)`);
  }
  if (record?.method === "minmax") remedies.push("calibrate with --method entropy or percentile (minmax lets one outlier set the range)");
  else if (record) remedies.push(`try another --method than ${record.method}`);
  remedies.push(`keep ${worst.length > 1 ? "these layers" : "this layer"} in float with --exclude ${places.join(",")}`);
  if (record && record.texts < 200) remedies.push(`calibrate on more texts (${record.texts} now; a few hundred representative ones)`);
  return {
    code: "int8-layers",
    message: `INT8 layers that move the vectors most on the failing texts: ${named}; ${remedies.join("; or ")}`,
  };
}
