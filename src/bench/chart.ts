import type { BenchReport, BenchRow } from "./report.js";

const W = 640;
const H = 400;
const M = { left: 70, right: 170, top: 40, bottom: 50 };
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** The sequence length the chart shows: 128 when measured, else the grid's longest. */
export function chartSeq(rows: readonly BenchRow[]): number {
  const seqs = [...new Set(rows.filter((r) => r.mode === "synthetic").map((r) => r.seq))];
  return seqs.includes(128) ? 128 : Math.max(...seqs);
}

/**
 * Sequences per second against batch size at one sequence length, hand-written SVG: one solid line
 * per artifact/precision and, dashed in the same colour, the MatMul ceiling measured for it; batch on
 * a log₂ axis, throughput from zero.
 */
export function renderBenchChart(report: BenchReport): string {
  const seq = chartSeq(report.rows);
  const rows = report.rows.filter((r) => r.mode === "synthetic" && r.seq === seq);
  const keys = [...new Set(rows.map((r) => `${r.artifact} ${r.precision}`))];
  const batches = [...new Set(rows.map((r) => r.batch))].sort((a, b) => a - b);
  const yMax = niceMax(Math.max(1, ...rows.flatMap((r) => [r.sequencesPerSecond, r.ceiling?.sequencesPerSecond ?? 0])));
  const lo = Math.log2(batches[0] ?? 1);
  const hi = Math.log2(batches.at(-1) ?? 1);
  const x = (b: number) => M.left + (hi === lo ? (W - M.left - M.right) / 2 : ((Math.log2(b) - lo) / (hi - lo)) * (W - M.left - M.right));
  const y = (v: number) => H - M.bottom - (v / yMax) * (H - M.top - M.bottom);
  const path = (pts: [number, number][]) => pts.map(([b, v], i) => `${i ? "L" : "M"}${x(b).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const out: string[] = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<title>bge bench: sequences/s vs batch at ${seq} tokens</title>`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - 60}" y="22" text-anchor="middle" font-size="14">Sequences/s vs batch (seq ${seq}, ${esc(report.settings.backend)}, ${report.settings.threads} threads)</text>`,
  ];
  // Axes, ticks and labels.
  out.push(`<g class="axes" stroke="#333"><line x1="${M.left}" y1="${H - M.bottom}" x2="${W - M.right}" y2="${H - M.bottom}"/><line x1="${M.left}" y1="${M.top}" x2="${M.left}" y2="${H - M.bottom}"/></g>`);
  for (const b of batches) {
    out.push(`<line x1="${x(b).toFixed(1)}" y1="${H - M.bottom}" x2="${x(b).toFixed(1)}" y2="${H - M.bottom + 5}" stroke="#333"/><text x="${x(b).toFixed(1)}" y="${H - M.bottom + 18}" text-anchor="middle">${b}</text>`);
  }
  for (let i = 0; i <= 5; i++) {
    const v = (yMax * i) / 5;
    out.push(`<line x1="${M.left}" y1="${y(v).toFixed(1)}" x2="${W - M.right}" y2="${y(v).toFixed(1)}" stroke="#eee"/><text x="${M.left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${formatTick(v)}</text>`);
  }
  out.push(`<text class="axis-label" x="${(M.left + W - M.right) / 2}" y="${H - 12}" text-anchor="middle">batch size (sequences per run)</text>`);
  out.push(`<text class="axis-label" transform="rotate(-90)" x="${-(M.top + H - M.bottom) / 2}" y="18" text-anchor="middle">sequences per second</text>`);
  // One series per artifact/precision, its ceiling dashed.
  keys.forEach((key, i) => {
    const color = COLORS[i % COLORS.length]!;
    const mine = rows.filter((r) => `${r.artifact} ${r.precision}` === key).sort((a, b) => a.batch - b.batch);
    const pts = mine.map((r) => [r.batch, r.sequencesPerSecond] as [number, number]);
    out.push(`<g class="series" data-series="${esc(key)}"><path d="${path(pts)}" fill="none" stroke="${color}" stroke-width="2"/>`);
    for (const [b, v] of pts) out.push(`<circle cx="${x(b).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${color}"/>`);
    out.push(`</g>`);
    const ceil = mine.filter((r) => r.ceiling).map((r) => [r.batch, r.ceiling!.sequencesPerSecond] as [number, number]);
    if (ceil.length) out.push(`<path class="ceiling" data-series="${esc(key)}" d="${path(ceil)}" fill="none" stroke="${color}" stroke-width="1" stroke-dasharray="6 4"/>`);
    const ly = M.top + 10 + i * 34;
    out.push(`<line x1="${W - M.right + 12}" y1="${ly}" x2="${W - M.right + 32}" y2="${ly}" stroke="${color}" stroke-width="2"/><text x="${W - M.right + 36}" y="${ly + 4}">${esc(key)}</text>`);
    if (ceil.length) out.push(`<line x1="${W - M.right + 12}" y1="${ly + 14}" x2="${W - M.right + 32}" y2="${ly + 14}" stroke="${color}" stroke-dasharray="6 4"/><text x="${W - M.right + 36}" y="${ly + 18}">MatMul ceiling</text>`);
  });
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

function niceMax(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  return ([1, 2, 2.5, 5, 10].find((m) => m * p >= v) ?? 10) * p;
}

function formatTick(v: number): string {
  return v >= 1000 ? `${(v / 1000).toFixed(v % 1000 === 0 ? 0 : 1)}k` : String(Math.round(v * 10) / 10);
}
