import type { QuantTarget } from "./targets.js";

/**
 * Where the token positions are in a calibrated tensor of a bge encoder graph, so that padding can
 * be left out of its statistics (a padded batch must calibrate like its texts run one by one):
 * - linear inputs are flat `[B·S, K]` (or `[B, S, K]`): rows are tokens;
 * - attention-scores: Q is `[B, heads, S, d]` (positions on axis 2), Kᵀ is `[B, heads, d, S]` (axis 3);
 * - attention-context: the probabilities are `[B, heads, S, S]` (query rows and key columns: padded
 *   keys get probability ≈ 0, which would pile up in bin 0), V is `[B, heads, S, d]` (axis 2).
 */
/** rank4: whether axis 2 and axis 3 (of [B, heads, ·, ·]) run over token positions. */
export type TokenLayout = { kind: "rows" } | { kind: "rank4"; axis2: boolean; axis3: boolean };

export function tokenLayout(target: Pick<QuantTarget, "kind">, input: number): TokenLayout {
  if (target.kind === "linear") return { kind: "rows" };
  if (target.kind === "attention-scores") return input === 0 ? { kind: "rank4", axis2: true, axis3: false } : { kind: "rank4", axis2: false, axis3: true };
  return input === 0 ? { kind: "rank4", axis2: true, axis3: true } : { kind: "rank4", axis2: true, axis3: false };
}

/**
 * Calls `run(from, to)` for each contiguous stretch of `data` that belongs to real tokens of a batch
 * of `lengths.length` texts padded to `seq` positions (right padding, as FlagModel pads). Throws when
 * the tensor's shape does not fit the layout: statistics of a misread tensor would be silently wrong.
 */
export function forEachTokenRun(name: string, dims: readonly number[], layout: TokenLayout, lengths: readonly number[], seq: number, run: (from: number, to: number) => void): void {
  const B = lengths.length;
  const shape = () => `[${dims.join(", ")}]`;
  if (layout.kind === "rows") {
    const flat = dims.length === 2 && dims[0] === B * seq;
    const split = dims.length === 3 && dims[0] === B && dims[1] === seq;
    if (!flat && !split) throw new Error(`${name}: shape ${shape()} is not [batch·seq, K] or [batch, seq, K] for batch ${B}, seq ${seq}`);
    const width = dims.at(-1)!;
    lengths.forEach((len, b) => run(b * seq * width, (b * seq + len) * width));
    return;
  }
  const [b0, heads, rows, cols] = dims as [number, number, number, number];
  if (dims.length !== 4 || b0 !== B || (layout.axis2 && rows !== seq) || (layout.axis3 && cols !== seq)) {
    throw new Error(`${name}: shape ${shape()} does not have batch ${B} and seq ${seq} where an attention input has them`);
  }
  lengths.forEach((len, b) => {
    const keep = layout.axis3 ? len : cols;
    const rowCount = layout.axis2 ? len : rows;
    for (let h = 0; h < heads; h++) {
      const base = (b * heads + h) * rows * cols;
      if (keep === cols) run(base, base + rowCount * cols); // whole rows: one stretch
      else for (let r = 0; r < rowCount; r++) run(base + r * cols, base + r * cols + keep);
    }
  });
}
