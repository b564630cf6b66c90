import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SHARED_FIXTURES } from "../../test/helpers/paths.js";
import { parseExportProfile, parseExportTimes, percentiles } from "./export-timing.js";

const FIXTURES = join(SHARED_FIXTURES, "trtexec");
const HAVE_FIXTURES = existsSync(FIXTURES);
/** Tests of the real exports run where the shared fixtures are; elsewhere they are skipped, saying why. */
const withFixtures = HAVE_FIXTURES ? it : it.skip;
const MISSING = HAVE_FIXTURES ? "" : ` (skipped: real trtexec exports not found at ${FIXTURES}; the shared fixtures live beside the checkout)`;
const fixture = (name: string) => readFileSync(join(FIXTURES, name), "utf8");

describe("trtexec --exportProfile", () => {
  withFixtures.each([
    ["exportProfile-sample-trt8.5.1.json", 122823, 1],
    ["exportProfile-resnet50-int8-trt8.6.1.json", 6402, undefined],
    ["exportProfile-alexnet-fp16-trt10.json", 14590, undefined],
  ] as const)(`%s: the run count, every layer in order, shares that add up to 100%%${MISSING}`, (name, runs, layers) => {
    const text = fixture(name);
    const p = parseExportProfile(text, name);
    expect(p.runs).toBe(runs);
    // One layer per `"name"` in the file, in the file's order.
    const names = [...text.matchAll(/"name" : "((?:[^"\\]|\\.)*)"/g)].map((m) => JSON.parse(`"${m[1]}"`) as string);
    expect(p.layers.map((l) => l.name)).toEqual(names);
    if (layers !== undefined) expect(p.layers).toHaveLength(layers);
    const share = p.layers.reduce((s, l) => s + l.percentage, 0);
    expect(share).toBeGreaterThan(99.5);
    expect(share).toBeLessThan(100.5);
    for (const l of p.layers) expect(l.timeMs / runs).toBeCloseTo(l.averageMs, 4);
  });

  withFixtures(`the 8.5.1 sample's one layer, field by field${MISSING}`, () => {
    const p = parseExportProfile(fixture("exportProfile-sample-trt8.5.1.json"));
    expect(p.layers).toEqual([{ name: "/conv1/Conv + /act1/Relu", timeMs: 722.819, averageMs: 0.00588505, medianMs: 0.006144, percentage: 100 }]);
    expect(p.averageMs).toBe(0.00588505);
  });

  it("malformed files are exit 4 naming the file and the entry", () => {
    const bad: [string, RegExp][] = [
      ["not json", /p\.json: malformed trtexec --exportProfile JSON/],
      ['{"count": 3}', /expected an array/],
      ['[{"name": "x"}]', /entry 0 should be \{"count": N\}/],
      ['[{"count": 3}]', /the profile lists no layer/],
      ['[{"count": 3}, {"name": "a", "timeMs": -1, "averageMs": 1, "medianMs": 1, "percentage": 1}]', /entry 1 \(a\) has timeMs -1/],
    ];
    for (const [text, message] of bad) {
      expect(() => parseExportProfile(text, "p.json")).toThrowError(message);
      try {
        parseExportProfile(text, "p.json");
      } catch (err) {
        expect((err as { exitCode: number }).exitCode).toBe(4);
      }
    }
  });
});

describe("trtexec --exportTimes", () => {
  withFixtures(`every timed inference, and percentiles that split them as percentiles must${MISSING}`, () => {
    const text = fixture("exportTimes-resnet-fp32-trex-example.json");
    const t = parseExportTimes(text, "times.json");
    expect(t.inferences).toHaveLength((text.match(/"startEnqMs"/g) ?? []).length);
    expect(t.inferences[0]).toMatchObject({ startEnqMs: 16.6644, computeMs: 13.0181, latencyMs: 13.0181, h2dMs: 0, d2hMs: 0 });
    const latencies = t.inferences.map((i) => i.latencyMs);
    for (const [p, v] of [[50, t.latency.p50], [90, t.latency.p90], [99, t.latency.p99]] as const) {
      expect(latencies.filter((x) => x <= v).length / latencies.length).toBeGreaterThanOrEqual(p / 100);
      expect(latencies.filter((x) => x < v).length / latencies.length).toBeLessThan(p / 100);
    }
    expect(t.latency.min).toBe(Math.min(...latencies));
    expect(t.latency.max).toBe(Math.max(...latencies));
    // No transfers in this run (--noDataTransfers): latency is the compute time.
    expect(t.h2d.max).toBe(0);
    expect(t.compute.mean).toBeCloseTo(t.latency.mean, 6);
    // Back to back on one stream: about one inference per mean compute time.
    expect(t.qps).toBeGreaterThan(900 / t.compute.mean);
    expect(t.qps).toBeLessThan(1000 / t.compute.min);
  });

  it("nearest-rank percentiles on a hand-worked list", () => {
    expect(percentiles([5, 1, 4, 2, 3, 10, 9, 8, 7, 6])).toEqual({ min: 1, mean: 5.5, p50: 5, p90: 9, p95: 10, p99: 10, max: 10 });
  });

  it("malformed files are exit 4 naming the file and the entry", () => {
    expect(() => parseExportTimes("[]", "t.json")).toThrowError(/t\.json: .*no inference was timed/);
    expect(() => parseExportTimes('[{"startEnqMs": 1}]', "t.json")).toThrowError(/entry 0 has endEnqMs undefined/);
    expect(() => parseExportTimes("[nan]", "t.json")).toThrowError(/t\.json: malformed trtexec --exportTimes JSON/);
  });
});
