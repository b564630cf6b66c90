import { InvalidArgumentError } from "commander";

/**
 * One strict parser for every numeric and list option. Decimal notation only (no `0x10`, `1e3`,
 * `12abc`, `+5`, blanks), ranges checked, empty values and unknown list members refused; each
 * refusal names the flag, the value given and what is accepted. Commander prints the message on one
 * line and the CLI exits 2.
 */
const INTEGER = /^(0|[1-9][0-9]*)$/;
const DECIMAL = /^(0|[1-9][0-9]*)(\.[0-9]+)?$|^\.[0-9]+$/;

/** Commander prefixes the message with the option and the value given: "option '--x <n>' argument 'v' is invalid." */
function refuse(_flag: string, _value: string, accepted: string): never {
  throw new InvalidArgumentError(`Expected ${accepted}.`);
}

export interface IntegerRange {
  min: number;
  max: number;
}

export function integerOption(flag: string, range: IntegerRange): (value: string) => number {
  const accepted = `a whole number from ${range.min} to ${range.max}, in decimal digits`;
  return (value) => {
    if (!INTEGER.test(value)) refuse(flag, value, accepted);
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < range.min || n > range.max) refuse(flag, value, accepted);
    return n;
  };
}

export interface DecimalRange {
  /** Exclusive lower bound. */
  above: number;
  /** Exclusive upper bound. */
  below: number;
  /** Why the range is what it is, for the message. */
  meaning: string;
}

export function decimalOption(flag: string, range: DecimalRange): (value: string) => number {
  const accepted = `${range.meaning}: a decimal number greater than ${range.above} and less than ${range.below}`;
  return (value) => {
    if (!DECIMAL.test(value)) refuse(flag, value, accepted);
    const n = Number(value);
    if (!(n > range.above && n < range.below)) refuse(flag, value, accepted);
    return n;
  };
}

/** A comma-separated list of known names, each once; order kept. */
export function listOption(flag: string, allowed: readonly string[]): (value: string) => string[] {
  const accepted = `a comma-separated list of ${allowed.join(", ")}`;
  return (value) => {
    const items = value.split(",").map((s) => s.trim());
    if (value.trim() === "" || items.some((s) => s === "")) refuse(flag, value, accepted);
    const unknown = items.filter((s) => !allowed.includes(s));
    if (unknown.length) refuse(flag, value, `${accepted} (unknown: ${unknown.join(", ")})`);
    return [...new Set(items)];
  };
}

/** A shape-profile corner `BxS` (batch × sequence length). */
export function batchSeqOption(flag: string): (value: string) => [number, number] {
  const accepted = `BxS with a batch from 1 to ${LIMITS.batchSize.max} and a sequence length from 1 to ${LIMITS.maxLength.max}, e.g. 8x128`;
  return (value) => {
    const m = /^([1-9][0-9]*)x([1-9][0-9]*)$/.exec(value);
    if (!m) refuse(flag, value, accepted);
    const [b, s] = [Number(m[1]), Number(m[2])];
    if (b > LIMITS.batchSize.max || s > LIMITS.maxLength.max) refuse(flag, value, accepted);
    return [b, s];
  };
}

/** --tolerance: a minimum cosine strictly between 0 and 1. */
export const toleranceOption = (value: string): number => {
  if (value.trim() === "1" || /^1\.0*$/.test(value.trim())) {
    throw new InvalidArgumentError(
      `A minimum cosine of 1 demands bit-identical vectors, which no conversion gives (even fp32 ends near 1 − 1e-7); use e.g. 0.99999 (fp32's default) or 0.9999999.`,
    );
  }
  return decimalOption("--tolerance", { above: 0, below: 1, meaning: "the minimum cosine every text must reach" })(value);
};

/** Limits that keep a value away from absurd sizes that would loop for ever or exhaust memory. */
export const LIMITS = {
  seed: { min: 0, max: 2 ** 32 - 1 },
  shards: { min: 1, max: 1024 },
  maxLength: { min: 2, max: 8192 },
  batchSize: { min: 1, max: 4096 },
  opset: { min: 17, max: 21 },
} as const satisfies Record<string, IntegerRange>;
