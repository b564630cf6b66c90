import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { decimalOption, integerOption, listOption, toleranceOption } from "./options.js";

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    return (err as Error).message;
  }
  throw new Error("expected a refusal");
}

describe("strict option parsers", () => {
  const int = integerOption("--shards", { min: 1, max: 1024 });

  it("reads plain decimal integers inside the range", () => {
    expect(int("1")).toBe(1);
    expect(int("1024")).toBe(1024);
  });

  it("refuses hex, exponents, trailing junk, signs, blanks and out-of-range values, naming flag and value", () => {
    for (const v of ["0x10", "1e3", "12abc", "+5", "-1", " 4", "4 ", "", "3.0", "0", "1025", String(2 ** 53), "007"]) {
      expect(refusal(() => int(v))).toBe("Expected a whole number from 1 to 1024, in decimal digits.");
    }
  });

  it("reads decimals in an open range and refuses the rest", () => {
    const d = decimalOption("--x", { above: 0, below: 1, meaning: "a fraction" });
    expect(d("0.5")).toBe(0.5);
    expect(d(".25")).toBe(0.25);
    for (const v of ["", "0", "1", "1e-3", "0x1", "nan", "Infinity", "0.5.1", "-0.5", "1.5"]) expect(refusal(() => d(v))).toBe("Expected a fraction: a decimal number greater than 0 and less than 1.");
  });

  it("--tolerance: empty is refused (it used to become a gate of 0), 1 is explained", () => {
    expect(toleranceOption("0.999")).toBe(0.999);
    expect(refusal(() => toleranceOption(""))).toContain("minimum cosine");
    expect(refusal(() => toleranceOption("0"))).toContain("greater than 0");
    expect(refusal(() => toleranceOption("1"))).toContain("bit-identical");
    expect(refusal(() => toleranceOption("1.00"))).toContain("bit-identical");
  });

  it("lists: known members only, no empty members, duplicates folded", () => {
    const l = listOption("--precision", ["fp32", "fp16"]);
    expect(l("fp16,fp32,fp16")).toEqual(["fp16", "fp32"]);
    expect(refusal(() => l(""))).toContain("comma-separated list of fp32, fp16");
    expect(refusal(() => l("fp32,"))).toContain("comma-separated list of fp32, fp16");
    expect(refusal(() => l("fp32,nonsense"))).toContain("unknown: nonsense");
  });
});
