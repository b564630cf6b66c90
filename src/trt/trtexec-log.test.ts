import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SHARED_FIXTURES } from "../../test/helpers/paths.js";
import { decodeTrtVersionCode, parseTrtexecLog, tailLines } from "./trtexec-log.js";

const LOGS = join(SHARED_FIXTURES, "trtexec");
const HAVE_LOGS = existsSync(LOGS);
const MISSING = `real trtexec logs not found at ${LOGS} (the shared fixtures live beside the checkout)`;
const read = (name: string) => readFileSync(join(LOGS, name), "utf8");

/** What each real log says, read by eye from the file (line numbers in the comments). */
const EXPECTED: Record<
  string,
  {
    version: [number, number, number, number];
    status: "passed" | "failed" | "incomplete";
    gpu?: [string, string | undefined];
    commandStart: string;
    warnings: number;
    errors: number;
    summary?: { qps: number; latencyP99: number; latencyMin: number; gpuMedian: number; gpuP90: number; enqueueMean: number };
  }
> = {
  "trt-8.5.1-run-loadengine-dumpoutput-verbose.log": {
    version: [8, 5, 1, 8501],
    status: "passed",
    gpu: ["NVIDIA GeForce RTX 3080", "8.6"],
    commandStart: "trtexec --loadEngine=sample.engine --verbose --dumpOutput",
    warnings: 0,
    errors: 0,
    // --dumpProfile without --separateProfileRun: no performance summary (the log says so).
  },
  "trt-8.5.2-build-fp16-yolov8seg-elided.log": {
    version: [8, 5, 2, 8502],
    status: "passed",
    gpu: ["NVIDIA GeForce RTX 3090", "8.6"],
    commandStart: "trtexec --onnx=yolov8n-seg-nms.onnx --saveEngine=yolov8-seg-nms.trt --workspace=8192 --fp16 --plugins",
    warnings: 8,
    errors: 0,
    // lines 210-214
    summary: { qps: 196.933, latencyP99: 9.89069, latencyMin: 9.57434, gpuMedian: 4.9054, gpuP90: 4.94385, enqueueMean: 1.45974 },
  },
  "trt-8.6.0-build-dynamic-fp16-verbose.log": {
    version: [8, 6, 0, 8600],
    status: "passed",
    gpu: ["NVIDIA GeForce RTX 3090", "8.6"],
    commandStart: "trtexec --onnx=model.onnx --minShapes=tensor-0:1x1x28x28",
    warnings: 6,
    errors: 0,
  },
  "trt-8.6.1-run-loadengine-int8-export-verbose.log": {
    version: [8, 6, 1, 8601],
    status: "passed",
    gpu: ["NVIDIA GeForce RTX 3080", "8.6"],
    commandStart: "trtexec --verbose --noDataTransfers --useCudaGraph --separateProfileRun",
    warnings: 6,
    errors: 0,
    // lines 1183-1187
    summary: { qps: 3406.14, latencyP99: 0.624634, latencyMin: 0.273193, gpuMedian: 0.275391, gpuP90: 0.276611, enqueueMean: 0.00532762 },
  },
  "trt-10.3.0-build-fp16-yolov8s.log": {
    version: [10, 3, 0, 100300],
    status: "passed",
    gpu: ["Orin", "8.7"],
    commandStart: "/usr/src/tensorrt/bin/trtexec --device=0 --onnx=yolov8s.onnx",
    warnings: 2,
    errors: 0,
    // lines 197-201
    summary: { qps: 155.94, latencyP99: 8.08698, latencyMin: 6.61426, gpuMedian: 6.27271, gpuP90: 7.17841, enqueueMean: 3.15819 },
  },
  "trt-10.3.0-failed-parser-dynamic-shapes-tail.log": {
    version: [10, 3, 0, 100300],
    status: "failed",
    // a pasted tail: no device section at all
    commandStart: "trtexec --onnx=data/mobile_sam_mask_decoder.onnx",
    warnings: 0,
    errors: 9,
  },
  "trt-10.14.1-build-default-shapes-inference.log": {
    version: [10, 14, 1, 101401],
    status: "passed",
    gpu: ["NVIDIA RTX 6000 Ada Generation", "8.9"],
    commandStart: "trtexec --onnx=/cookbook/00-Data/model/model-trained.onnx",
    warnings: 4,
    errors: 0,
    // lines 564-568
    summary: { qps: 23188.6, latencyP99: 0.046875, latencyMin: 0.0333252, gpuMedian: 0.0285645, gpuP90: 0.0297241, enqueueMean: 0.0228688 },
  },
  "trt-10.14.1-build-dynamic-fp16-verbose.log": {
    version: [10, 14, 1, 101401],
    status: "passed",
    gpu: ["NVIDIA RTX 6000 Ada Generation", "8.9"],
    commandStart: "trtexec --onnx=/cookbook/00-Data/model/model-trained.onnx --saveEngine=model-trained.trt",
    warnings: 10,
    errors: 0,
  },
  "trt-10.16.0-failed-parser-plugin-not-found.log": {
    version: [10, 16, 0, 101600],
    status: "failed",
    gpu: ["NVIDIA RTX 6000 Ada Generation", "8.9"],
    commandStart: "trtexec --onnx=/cookbook/00-Data/model/model-addscalar.onnx --plugins=./AddScalarPlugin.so",
    warnings: 1,
    errors: 8,
  },
  "trt-10.16.1-run-loadengine-dumpprofile-export.log": {
    version: [10, 16, 1, 101601],
    status: "passed",
    gpu: ["NVIDIA H100 PCIe", "9.0"],
    commandStart: "trtexec --loadEngine=./model-trained.trt --dumpProfile",
    warnings: 1,
    errors: 0,
  },
  "trt-10.16.1-run-loadengine-shapes-verbose.log": {
    version: [10, 16, 1, 101601],
    status: "passed",
    gpu: ["NVIDIA H100 PCIe", "9.0"],
    commandStart: "trtexec --loadEngine=model-trained.trt --shapes=x:4x1x28x28",
    warnings: 0,
    errors: 0,
    // lines 545-549
    summary: { qps: 24896.9, latencyP99: 0.0390625, latencyMin: 0.0383301, gpuMedian: 0.0388184, gpuP90: 0.0388489, enqueueMean: 0.00197413 },
  },
  "trt-11.0.0-build-stronglytyped-and-unknown-options.log": {
    version: [11, 0, 0, 110000],
    // a PASSED strongly typed build followed by four runs that rejected removed flags
    status: "failed",
    gpu: ["NVIDIA B200", "10.0"],
    commandStart: "trtexec --onnx=/work/trt-samples-for-hackathon-cn-wili/cookbook/00-Data/model/model-trained.onnx --stronglyTyped",
    warnings: 2,
    errors: 4,
  },
};

describe.skipIf(!HAVE_LOGS)(`parseTrtexecLog on the real logs${HAVE_LOGS ? "" : ` (skipped: ${MISSING})`}`, () => {
  it("has an expectation for every log in the fixtures folder", () => {
    const logs = readdirSync(LOGS).filter((f) => f.endsWith(".log")).sort();
    expect(logs).toEqual(Object.keys(EXPECTED).sort());
  });

  for (const [name, want] of Object.entries(EXPECTED)) {
    it(name, () => {
      const log = parseTrtexecLog(read(name));
      const [major, minor, patch, code] = want.version;
      expect(log.version).toEqual({ major, minor, patch, code });
      expect(log.status).toBe(want.status);
      expect(log.command?.startsWith(want.commandStart)).toBe(true);
      expect(log.warnings).toBe(want.warnings);
      expect(log.errors).toHaveLength(want.errors);
      if (want.gpu) expect(log.gpu).toEqual({ name: want.gpu[0], computeCapability: want.gpu[1] });
      else expect(log.gpu).toBeUndefined();
      if (!want.summary) {
        expect(log.summary).toBeUndefined();
        return;
      }
      const s = log.summary!;
      expect(s.throughputQps).toBe(want.summary.qps);
      expect(s.latencyMs.p99).toBe(want.summary.latencyP99);
      expect(s.latencyMs.min).toBe(want.summary.latencyMin);
      expect(s.gpuComputeMs.median).toBe(want.summary.gpuMedian);
      expect(s.gpuComputeMs.p90).toBe(want.summary.gpuP90);
      expect(s.enqueueMs?.mean).toBe(want.summary.enqueueMean);
    });
  }

  it("reads the whole 10.14.1 summary, transfers and totals included", () => {
    const s = parseTrtexecLog(read("trt-10.14.1-build-default-shapes-inference.log")).summary!;
    expect(s.latencyMs).toEqual({
      min: 0.0333252,
      max: 0.26416,
      mean: 0.0385501,
      median: 0.0383301,
      p90: 0.0395508,
      p95: 0.0400391,
      p99: 0.046875,
      percentiles: { "90": 0.0395508, "95": 0.0400391, "99": 0.046875 },
    });
    expect(s.h2dMs?.max).toBe(0.140869);
    expect(s.d2hMs?.p95).toBe(0.00634766);
    expect(s.totalHostWalltimeS).toBe(3.00014);
    expect(s.totalGpuComputeS).toBe(2.00097);
  });

  it("ignores the [V] metric explanations that repeat the metric names", () => {
    const s = parseTrtexecLog(read("trt-10.16.1-run-loadengine-shapes-verbose.log")).summary!;
    expect(s.h2dMs).toMatchObject({ min: 0, max: 0, mean: 0, median: 0, p99: 0 });
    expect(s.totalGpuComputeS).toBe(2.89541);
  });

  it("keeps the parser errors of the plugin-not-found run, and the tail shows the cause", () => {
    const log = parseTrtexecLog(read("trt-10.16.0-failed-parser-plugin-not-found.log"));
    expect(log.errors.slice(-4)).toEqual([
      "Failed to parse onnx file",
      "Parsing model failed",
      "Failed to create engine from model or file.",
      "Engine set up failed",
    ]);
    expect(log.errors[0]).toBe('[TRT] ModelImporter.cpp:138: While parsing node number 0 [AddScalar -> "CustomOpModel-V-0-AddScalar-0"]:');
    const tail = log.tail(8);
    expect(tail).toContain("Plugin not found, are the plugin name, version, and namespace correct?");
    expect(tail.split("\n").at(-1)).toMatch(/^&&&& FAILED TensorRT\.trtexec \[TensorRT v101600\]/);
  });

  it("reads a pasted tail whose first error line has no timestamp", () => {
    const log = parseTrtexecLog(read("trt-10.3.0-failed-parser-dynamic-shapes-tail.log"));
    expect(log.errors[0]).toBe(
      "Error[4]: ITensor::getDimensions: Error Code 4: Internal Error (/OneHot: an IIOneHotLayer cannot be used to compute a shape tensor)",
    );
    // The command comes from the FAILED line: there is no RUNNING line in a pasted tail.
    expect(log.command).toBe(
      "trtexec --onnx=data/mobile_sam_mask_decoder.onnx --saveEngine=data/mobile_sam_mask_decoder.engine --minShapes=point_coords:1x1x2,point_labels:1x1 --optShapes=point_coords:1x1x2,point_labels:1x1 --maxShapes=point_coords:1x10x2,point_labels:1x10",
    );
  });

  it("names the options 11.0 rejected", () => {
    const log = parseTrtexecLog(read("trt-11.0.0-build-stronglytyped-and-unknown-options.log"));
    expect(log.unknownOptions).toEqual(["--fp16", "--int8", "--best", "--precisionConstraints"]);
    expect(log.errors[3]).toBe("Unknown option: --precisionConstraints obey");
  });

  it("finds the RUNNING line behind a shell prompt (8.5.2 log starts with the typed command)", () => {
    const text = read("trt-8.5.2-build-fp16-yolov8seg-elided.log");
    expect(text.startsWith("root@")).toBe(true);
    expect(parseTrtexecLog(text).command).toBe(
      "trtexec --onnx=yolov8n-seg-nms.onnx --saveEngine=yolov8-seg-nms.trt --workspace=8192 --fp16 --plugins",
    );
  });

  it("a log cut before its closing marker is incomplete", () => {
    const text = read("trt-10.14.1-build-default-shapes-inference.log").split("\n").slice(0, 300).join("\n");
    const log = parseTrtexecLog(text);
    expect(log.status).toBe("incomplete");
    expect(log.summary).toBeUndefined();
    expect(log.version?.code).toBe(101401);
  });
});

describe("parseTrtexecLog on hand-written variants", () => {
  it("reads scientific notation, seconds and microseconds, and an extra percentile", () => {
    const log = parseTrtexecLog(
      [
        "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=e.plan",
        "[I] Throughput: 1.5e+04 qps",
        "[I] Latency: min = 3.2e-02 ms, max = 1E-1 ms, mean = 5e-2 ms, median = 4.5e-02 ms, percentile(90%) = 6e-2 ms, percentile(99.9%) = 9e-2 ms",
        "[I] GPU Compute Time: min = 30 us, max = 0.0001 s, mean = 0.05 ms, median = 0.04 ms, percentile(99%) = 0.09 ms",
        "[I] Total Host Walltime: 3000.5 ms",
        "&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=e.plan",
      ].join("\n"),
    );
    expect(log.status).toBe("passed");
    const s = log.summary!;
    expect(s.throughputQps).toBe(15000);
    expect(s.latencyMs).toEqual({ min: 0.032, max: 0.1, mean: 0.05, median: 0.045, p90: 0.06, percentiles: { "90": 0.06, "99.9": 0.09 } });
    expect(s.gpuComputeMs.min).toBeCloseTo(0.03, 12);
    expect(s.gpuComputeMs.max).toBeCloseTo(0.1, 12);
    expect(s.gpuComputeMs.p99).toBe(0.09);
    expect(s.totalHostWalltimeS).toBeCloseTo(3.0005, 12);
    expect(s.enqueueMs).toBeUndefined();
  });

  it("reads the 7.x/8.0 `percentile: X ms at 99%` form", () => {
    const log = parseTrtexecLog(
      [
        "[I] Throughput: 100 qps",
        "[I] Host Latency: min = 1 ms, max = 3 ms, mean = 2 ms, median = 2 ms, percentile: 2.9 ms at 99%",
        "[I] GPU Compute: min = 0.5 ms, max = 2 ms, mean = 1 ms, median = 1 ms, percentile: 1.9 ms at 99%",
      ].join("\n"),
    );
    expect(log.summary?.latencyMs.p99).toBe(2.9);
    expect(log.summary?.gpuComputeMs.p99).toBe(1.9);
    expect(log.status).toBe("incomplete");
  });

  it("takes the GPU name from the device table when there is no Selected Device line", () => {
    const log = parseTrtexecLog(
      [
        "[01/01/2026-00:00:00] [I] Device: 1",
        "[01/01/2026-00:00:00] [I] === Device Information ===",
        '[01/01/2026-00:00:00] [I] Available Devices: ',
        '[01/01/2026-00:00:00] [I]   Device 0: "NVIDIA A100-SXM4-80GB" UUID: GPU-a',
        '[01/01/2026-00:00:00] [I]   Device 1: "NVIDIA L4" UUID: GPU-b',
        "[01/01/2026-00:00:00] [I] Compute Capability: 8.9",
      ].join("\n"),
    );
    expect(log.gpu).toEqual({ name: "NVIDIA L4", computeCapability: "8.9" });
  });

  it("decodes both banner encodings", () => {
    expect(decodeTrtVersionCode(8601)).toEqual({ major: 8, minor: 6, patch: 1, code: 8601 });
    expect(decodeTrtVersionCode(9200)).toEqual({ major: 9, minor: 2, patch: 0, code: 9200 });
    expect(decodeTrtVersionCode(101600)).toEqual({ major: 10, minor: 16, patch: 0, code: 101600 });
    expect(decodeTrtVersionCode(110000)).toEqual({ major: 11, minor: 0, patch: 0, code: 110000 });
  });

  it("an empty or unrelated text parses to nothing, without throwing", () => {
    const log = parseTrtexecLog("bash: trtexec: command not found\n");
    expect(log).toMatchObject({ status: "incomplete", errors: [], warnings: 0, unknownOptions: [] });
    expect(log.version).toBeUndefined();
    expect(log.gpu).toBeUndefined();
    expect(parseTrtexecLog("").status).toBe("incomplete");
  });

  it("tail keeps the last non-empty lines", () => {
    expect(tailLines("a\n\nb\nc\n\n", 2)).toBe("b\nc");
    expect(parseTrtexecLog("x\ny").tail(5)).toBe("x\ny");
  });
});
