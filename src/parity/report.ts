import type { VerifyReport } from "./verify.js";
import { fmt } from "./verify.js";

const WORST = 10;

/** How a TensorRT engine ran: the TensorRT and GPU that computed its vectors, and what that cost. */
export interface TrtRunRecord {
  /** TensorRT X.Y.Z of the trtexec that ran the engine. */
  tensorrt: string;
  trtexec: string;
  /** The GPU the runs selected, from trtexec's log (null where the log named none). */
  gpu: string | null;
  compute_capability: string | null;
  /** trtexec processes this verify started for the engine, diagnoses included: each loads the engine once. */
  runs: number;
}

/** One verified candidate as reports show it: the parity result, and for an engine how it ran. */
export type ReportEntry = VerifyReport & { trt?: TrtRunRecord };

function describeRuns(t: TrtRunRecord): string {
  const gpu = t.gpu ? ` on ${t.gpu}${t.compute_capability ? ` (compute capability ${t.compute_capability})` : ""}` : " (trtexec's log named no GPU)";
  return `TensorRT ${t.tensorrt}${gpu} through ${t.trtexec}: ${t.runs} trtexec run${t.runs === 1 ? "" : "s"}`;
}

function pad(s: string, n: number): string {
  return s.length >= n ? s.slice(0, n) : s + " ".repeat(n - s.length);
}

function excerpt(text: string, n = 38): string {
  const t = JSON.stringify(text).slice(1, -1);
  return t.length > n ? t.slice(0, n - 1) + "…" : t;
}

/** The readable table: verdict, summary against the gates, the worst items, and the diagnoses with their fixes. */
export function renderText(report: ReportEntry): string {
  const s = report.summary;
  const t = report.tolerance;
  const lines: string[] = [];
  lines.push(`${report.pass ? "PASS" : "FAIL"}  ${report.candidate.path} (${report.candidate.precision}, ${report.candidate.backend}) vs ${report.golden.path}`);
  if (report.trt) lines.push(`      ${describeRuns(report.trt)}`);
  lines.push(`      golden ${report.golden.model_id}, ${report.golden.items} items by ${report.golden.producer}; max_length ${report.settings.max_length}, instruction ${JSON.stringify(report.settings.query_instruction)}`);
  lines.push("");
  lines.push(`  ${pad("metric", 22)} ${pad("value", 14)} gate`);
  lines.push(`  ${pad("min cosine", 22)} ${pad(fmt(s.min_cosine), 14)} ≥ ${t.min_cosine}`);
  lines.push(`  ${pad("mean cosine", 22)} ${pad(fmt(s.mean_cosine), 14)} ≥ ${t.mean_cosine}`);
  lines.push(`  ${pad("p01 cosine", 22)} ${pad(fmt(s.p01_cosine), 14)}`);
  lines.push(`  ${pad("max abs diff", 22)} ${pad(s.max_abs_diff.toExponential(2), 14)}`);
  lines.push(`  ${pad("max norm diff", 22)} ${pad(s.max_norm_diff.toExponential(2), 14)} ≤ ${t.norm}`);
  lines.push(`  ${pad("non-finite items", 22)} ${pad(String(s.non_finite), 14)} = 0`);
  lines.push(`  ${pad("token mismatches", 22)} ${pad(String(s.token_mismatches), 14)} ≤ ${t.token_mismatches}`);
  lines.push(`  ${pad("batch drift (1-cos)", 22)} ${pad(s.batch_drift.toExponential(2), 14)} ≤ ${t.batch_drift}`);
  if (report.retrieval) {
    const r = report.retrieval;
    lines.push(`  ${pad(`top-${r.k} agreement`, 22)} ${pad(r.topk_agreement.toFixed(4), 14)} ≥ ${t.topk_agreement}   (${r.queries} queries × ${r.passages} passages, min ${r.min_topk_agreement.toFixed(2)}, Spearman ${r.mean_spearman.toFixed(4)})`);
  }
  if (report.fp16_range) {
    const f = report.fp16_range;
    lines.push(`  ${pad("fp16 range", 22)} ${pad(f.skipped ? "skipped" : `${f.overflowing.length}/${f.probed} over`, 14)} = 0   (tensors beyond 65504; ORT CPU computes FP16 in FP32, so each is checked)${f.skipped ? ` — ${f.skipped}` : ""}`);
  }
  if (report.heads?.sparse) {
    const h = report.heads.sparse;
    const t = report.heads.tolerance;
    lines.push(`  ${pad("sparse id mismatches", 22)} ${pad(String(h.id_set_mismatches), 14)} = 0   (ids weighing ≤ ${t.sparse_zero} may differ)`);
    lines.push(`  ${pad("sparse max |Δw|", 22)} ${pad(h.max_weight_diff.toExponential(2), 14)} ≤ ${t.sparse_weight_diff}`);
    lines.push(`  ${pad("lexical score |Δ|", 22)} ${pad(h.lexical_score_diff.toExponential(2), 14)} ≤ ${t.lexical_score_diff}   (of the largest score)`);
    lines.push(`  ${pad("sparse special weight", 22)} ${pad(h.special_weight.toExponential(2), 14)} = 0`);
  }
  if (report.heads?.colbert) {
    const h = report.heads.colbert;
    const t = report.heads.tolerance;
    lines.push(`  ${pad("colbert count diffs", 22)} ${pad(String(h.count_mismatches), 14)} = 0`);
    lines.push(`  ${pad("colbert min token cos", 22)} ${pad(fmt(h.min_token_cosine), 14)} ≥ ${t.colbert_min_cosine}`);
    lines.push(`  ${pad("colbert | ‖v‖ − 1 |", 22)} ${pad(h.max_norm_error.toExponential(2), 14)} ≤ ${t.colbert_norm}`);
    lines.push(`  ${pad("colbert score |Δ|", 22)} ${pad(h.colbert_score_diff.toExponential(2), 14)} ≤ ${t.colbert_score_diff}`);
  }
  if (report.heads?.combined) {
    const c = report.heads.combined;
    lines.push(`  ${pad(`combined top-${c.k}`, 22)} ${pad(c.topk_agreement.toFixed(4), 14)} ≥ ${c.gate}   (dense + 0.3·sparse + ColBERT, ${c.queries} queries × ${c.passages} passages, Spearman ${c.mean_spearman.toFixed(4)})`);
  }
  for (const u of report.heads?.unverified ?? []) lines.push(`  not verified: ${u}`);
  for (const n of report.tolerance_notes.slice(1)) lines.push(`  note: ${n}`);
  lines.push("");
  const worst = [...report.items].sort((a, b) => a.cosine - b.cosine).slice(0, WORST);
  lines.push(`  worst ${worst.length} of ${report.items.length}:`);
  lines.push(`  ${pad("#", 5)} ${pad("kind", 8)} ${pad("cosine", 12)} ${pad("max|Δ|", 10)} ${pad("tokens", 7)} text`);
  for (const it of worst) {
    lines.push(`  ${pad(String(it.index), 5)} ${pad(it.kind, 8)} ${pad(fmt(it.cosine), 12)} ${pad(Number.isFinite(it.max_abs_diff) ? it.max_abs_diff.toExponential(1) : "inf", 10)} ${pad(it.tokens_match ? "same" : "DIFF", 7)} ${excerpt(it.text)}`);
  }
  if (!report.pass) {
    lines.push("");
    lines.push(`  gate failed: ${report.failures.join("; ")}`);
    for (const d of report.diagnoses) lines.push(`  diagnosis [${d.code}]: ${d.message}`);
  } else if (report.diagnoses.length) {
    // A pass can still carry a caveat (settings allowed to differ from the golden's).
    lines.push("");
    for (const d of report.diagnoses) lines.push(`  note [${d.code}]: ${d.message}`);
  }
  return lines.join("\n");
}

export const VERIFY_REPORT_FORMAT = "bge-verify/1";

/**
 * The JSON report (SPEC "Verify report"): one shape whatever the number of candidates, so a CI script
 * does not break when a precision is added — `{format, pass, golden, artifacts: [...]}`, one entry per
 * file verified; per-item rows keep index, cosine, max_abs_diff, tokens_match.
 */
export function reportJson(reports: readonly ReportEntry[]): unknown {
  if (!reports.length) throw new Error("reportJson: no reports");
  const shape = (r: ReportEntry) => ({
    pass: r.pass,
    candidate: r.candidate,
    // TensorRT candidates: version, GPU and trtexec runs; null for ONNX Runtime ones (one shape for all).
    trt: r.trt ?? null,
    tolerance: r.tolerance,
    tolerance_notes: r.tolerance_notes,
    settings: r.settings,
    summary: r.summary,
    retrieval: r.retrieval,
    fp16_range: r.fp16_range,
    heads: r.heads ?? null,
    failures: r.failures,
    items: r.items.map((i) => ({ index: i.index, kind: i.kind, cosine: i.cosine, max_abs_diff: finite(i.max_abs_diff), tokens_match: i.tokens_match, batch_drift: finite(i.batch_drift), norm_diff: finite(i.norm_diff) })),
    diagnoses: r.diagnoses,
    seconds: r.seconds,
  });
  // Every candidate ran against the same golden file.
  return { format: VERIFY_REPORT_FORMAT, pass: reports.every((r) => r.pass), golden: reports[0]!.golden, artifacts: reports.map(shape) };
}

/** JSON has no Infinity: non-finite numbers become null. */
function finite(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}

function xmlEscape(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "");
}

/** JUnit XML: one test case per artifact/precision, failures carrying the gates and diagnoses. */
export function reportJUnit(reports: readonly ReportEntry[]): string {
  const failures = reports.filter((r) => !r.pass).length;
  const time = reports.reduce((s, r) => s + r.seconds, 0);
  const cases = reports.map((r) => {
    const name = `${r.candidate.path} (${r.candidate.precision})`;
    const head = `    <testcase classname="bge.verify" name="${xmlEscape(name)}" time="${r.seconds.toFixed(3)}">`;
    const runs = r.trt ? ` tensorrt=${r.trt.tensorrt} gpu=${JSON.stringify(r.trt.gpu)} compute_capability=${r.trt.compute_capability} trtexec_runs=${r.trt.runs}` : "";
    const props = `      <system-out>${xmlEscape(`backend=${r.candidate.backend}${runs} min_cosine=${r.summary.min_cosine} mean_cosine=${r.summary.mean_cosine} p01_cosine=${r.summary.p01_cosine} max_abs_diff=${r.summary.max_abs_diff} batch_drift=${r.summary.batch_drift} topk_agreement=${r.summary.topk_agreement}`)}</system-out>`;
    if (r.pass) return `${head}\n${props}\n    </testcase>`;
    const msg = r.failures.join("; ");
    const body = [...r.failures, ...r.diagnoses.map((d) => `[${d.code}] ${d.message}`)].join("\n");
    return `${head}\n      <failure message="${xmlEscape(msg)}" type="ParityFailure">${xmlEscape(body)}</failure>\n${props}\n    </testcase>`;
  });
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuites name="bge verify" tests="${reports.length}" failures="${failures}" time="${time.toFixed(3)}">`,
    `  <testsuite name="parity" tests="${reports.length}" failures="${failures}" errors="0" time="${time.toFixed(3)}">`,
    ...cases,
    `  </testsuite>`,
    `</testsuites>`,
    ``,
  ].join("\n");
}
