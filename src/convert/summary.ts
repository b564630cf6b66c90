import type { ConvertResult, SummaryRow } from "./convert.js";
import { reportJson } from "../parity/report.js";

const pad = (s: string, n: number) => (s.length >= n ? s : s + " ".repeat(n - s.length));
const padLeft = (s: string, n: number) => (s.length >= n ? s : " ".repeat(n - s.length) + s);
const cos = (v: number) => (Number.isFinite(v) ? v.toFixed(7) : String(v));

function size(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

/** The table convert ends with: one row per verified artifact, then the engines line and the verdict. */
export function renderSummary(result: ConvertResult): string {
  const head = ["artifact", "size", "backend", "min cos", "mean cos", "top-k", "gate", "time"];
  const cells = result.rows.map((r: SummaryRow) => [
    r.path,
    size(r.size),
    r.backend,
    cos(r.min_cosine),
    cos(r.mean_cosine),
    r.topk_agreement === null ? "-" : r.topk_agreement.toFixed(3),
    r.pass ? "PASS" : "FAIL",
    r.reused ? "reused" : `${r.seconds.toFixed(1)} s`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const right = new Set([1, 3, 4, 5, 7]);
  const line = (c: string[]) => "  " + c.map((x, i) => (right.has(i) ? padLeft(x, widths[i]!) : pad(x, widths[i]!))).join("  ");
  const out = [line(head), "  " + widths.map((w) => "─".repeat(w)).join("  "), ...cells.map(line)];
  for (const r of result.rows.filter((x) => !x.pass)) {
    out.push(`  ${r.path}: ${r.failures.join("; ")}`);
    for (const d of r.diagnoses) out.push(`    diagnosis [${d.code}]: ${d.message}`);
  }
  const e = result.engines;
  out.push("");
  // The full search list was printed when the stage was skipped; the table keeps the first clause.
  if (e.trtexec === null) out.push(`  TensorRT engines: skipped — ${(e.skipped_reason ?? "").replace(/ \(looked at[\s\S]*$/, "")} (give --trtexec PATH on a machine with TensorRT)`);
  else out.push(`  TensorRT engines (TensorRT ${e.trtexec.version}): ${e.built.length ? e.built.join(", ") : "none asked for"}`);
  const ran = result.stages.filter((s) => s.status === "ran").map((s) => s.stage);
  out.push(`  stages run: ${ran.length ? ran.join(", ") : "none (everything was up to date)"}; golden ${result.goldenPath}`);
  out.push(`  ${result.pass ? "PASS" : "FAIL"}: ${result.rows.filter((r) => r.pass).length} of ${result.rows.length} artifacts within tolerance (${result.seconds.toFixed(1)} s)`);
  return out.join("\n");
}

/** `--json` and `--report`: the summary rows, the stages, and this run's full verify reports. */
export function convertJson(result: ConvertResult): unknown {
  return {
    format: "bge-convert/1",
    pass: result.pass,
    artifact: result.outDir,
    model: result.modelId,
    golden: result.goldenPath,
    seconds: result.seconds,
    stages: result.stages,
    engines: result.engines,
    artifacts: result.rows,
    verify: result.reports.length ? reportJson(result.reports) : null,
  };
}
