import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { BgeError, EXIT_INTERNAL, ToolFailedError } from "../errors.js";
import { downloadCommand } from "../commands/download.js";
import { embedCommand } from "../commands/embed.js";
import { exportCommand } from "../commands/export.js";
import { fixtureCommand } from "../commands/fixture.js";
import { goldenCommand } from "../commands/golden.js";
import { tokenizeCommand } from "../commands/tokenize.js";
import { verifyCommand } from "../commands/verify.js";
import { benchCommand } from "../commands/bench.js";
import { SHAPE_NAMES } from "../fixture/shapes.js";
import { ONNX_PRECISIONS } from "../artifacts/manifest.js";
import { batchSeqOption, decimalOption, integerOption, LIMITS, listOption, toleranceOption } from "./options.js";
import { buildCommand } from "../commands/build.js";
import { convertCommand, DEFAULT_MODEL } from "../commands/convert.js";
import { CONVERT_PRECISIONS } from "../convert/convert.js";
import { ENGINE_PRECISIONS } from "../trt/build-engine.js";
import { quantizeCommand } from "../commands/quantize.js";
import { CALIBRATION_METHODS } from "../quantize/calibrate.js";
import { DYNAMIC_ACTIVATIONS } from "../quantize/dynamic-graph.js";
import { INT8_PRECISIONS } from "../quantize/quantize-artifact.js";
import { parseSmoothSetting, type SmoothSetting } from "../quantize/smooth.js";
import { createOutput, type Output, type OutputOptions } from "./output.js";
import { runInterruptCleanup } from "../util/interrupt.js";

/** Precisions each command knows today; a list option refuses anything else by name. */
const EXPORT_PRECISIONS = ["fp32", "fp16"] as const;
const VERIFY_PRECISIONS = ONNX_PRECISIONS;
const EMBED_PRECISIONS = ONNX_PRECISIONS;

function outputFor(cmd: Command): Output {
  return createOutput(cmd.optsWithGlobals<OutputOptions>());
}

const instructionOption = () =>
  new Option("--instruction <text>", "query instruction to use instead of the one known for the model id");
const noInstructionOption = () => new Option("--no-instruction", "embed queries without any instruction");

/** `--instruction X` → X, `--no-instruction` → null, neither → undefined (the model's known one). */
function instructionFrom(opts: { instruction?: string | boolean }): string | null | undefined {
  if (opts.instruction === false) return null;
  return typeof opts.instruction === "string" ? opts.instruction : undefined;
}

/** A comma-separated list of whole numbers, each checked like integerOption; duplicates dropped, order kept. */
function integerListOption(flag: string, range: { min: number; max: number }): (value: string) => number[] {
  const one = integerOption(flag, range);
  return (value) => {
    const items = value.split(",").map((s) => s.trim());
    if (value.trim() === "" || items.some((s) => s === "")) throw new InvalidArgumentError(`Expected a comma-separated list of whole numbers from ${range.min} to ${range.max}.`);
    return [...new Set(items.map(one))];
  };
}

/** The whole command table. Each action only maps parsed options onto a command function. */
export function buildProgram(): Command {
  const program = new Command("bge")
    .description("Convert BGE embedding models to ONNX and TensorRT, and prove parity with FlagEmbedding's FlagModel.")
    .option("--json", "machine-readable result on stdout (human text goes to stderr)")
    .option("-q, --quiet", "print nothing but the result and errors")
    .option("-v, --verbose", "print more detail")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();

  program
    .command("fixture")
    .description("write a synthetic checkpoint in the exact hub layout, with seeded random weights")
    .argument("<dir>", "output folder")
    .addOption(new Option("--arch <arch>", "architecture").choices(["bert", "xlm-roberta"]))
    .addOption(new Option("--shape <shape>", "tiny or the shape of a BGE model").choices(SHAPE_NAMES).default("tiny"))
    .option("--seed <n>", "random seed", integerOption("--seed", LIMITS.seed), 0)
    .option("--outliers", "plant hidden dimensions with huge activations (breaks FP16 and naive INT8, as in real BERTs)", false)
    .option("--tokenizer <dir>", "use the real tokenizer files in this folder instead of a generated tokenizer")
    .addOption(new Option("--dtype <dtype>", "weight type").choices(["F32", "F16", "BF16"]).default("F32"))
    .option("--shards <n>", "write the weights as N safetensors shards with an index", integerOption("--shards", LIMITS.shards), 1)
    .option("--force", "replace a checkpoint already in <dir>", false)
    .addHelpText("after", "\nExample:\n  bge fixture /tmp/tiny --shape tiny --seed 1\n  bge fixture /tmp/zh --shape bge-small-zh-v1.5 --tokenizer ../shared/fixtures/tokenizers/bge-small-zh-v1.5")
    .action(async (dir: string, opts, cmd: Command) => {
      await fixtureCommand({ dir, ...opts }, outputFor(cmd));
    });

  program
    .command("download")
    .description("fetch a hub model's config, tokenizer and weights into the Hugging Face cache; prints the snapshot folder")
    .argument("<model>", "hub id: ORG/NAME or ORG/NAME@REVISION")
    .option("--revision <rev>", "branch, tag or commit sha (default main)")
    .option("--cache-dir <dir>", "hub cache folder (default HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)")
    .option("--endpoint <url>", "hub URL (default HF_ENDPOINT, else https://huggingface.co)")
    .option("--offline", "use the cache only, as HF_HUB_OFFLINE=1 does (exit 3 naming what is missing)", false)
    .addOption(new Option("--include <folder>", "also fetch this repo folder").choices(["onnx"]))
    .addHelpText("after", "\nExample:\n  bge download BAAI/bge-small-zh-v1.5\n  HF_HUB_OFFLINE=1 bge download BAAI/bge-small-zh-v1.5@main --json")
    .action(async (model: string, opts, cmd: Command) => {
      const globals = cmd.optsWithGlobals<OutputOptions>();
      await downloadCommand(
        { model, revision: opts.revision, cacheDir: opts.cacheDir, endpoint: opts.endpoint, offline: opts.offline, include: opts.include ? [opts.include] : [], quiet: globals.quiet },
        outputFor(cmd),
      );
    });

  program
    .command("tokenize")
    .description("print FlagModel's input_ids, attention_mask and token_type_ids for each text, one JSON line per text")
    .argument("<model>", "checkpoint folder")
    .argument("[text...]", "texts to tokenise")
    .option("--file <file>", "read texts from a file (.json array, .jsonl, or one per line; - for stdin)")
    .option("--max-length <n>", "truncate to N tokens including [CLS] and [SEP] (default 512)", integerOption("--max-length", LIMITS.maxLength))
    .option("--query", "prepend the model's query instruction", false)
    .addOption(instructionOption())
    .addOption(noInstructionOption())
    .addHelpText("after", '\nExample:\n  bge tokenize ./bge-small-zh-v1.5 "你好" --query')
    .action(async (model: string, texts: string[], opts, cmd: Command) => {
      await tokenizeCommand({ model, texts, file: opts.file, maxLength: opts.maxLength, query: opts.query, instruction: instructionFrom(opts) }, outputFor(cmd));
    });

  program
    .command("embed")
    .description("print one pooled, normalised vector per text, in input order")
    .argument("<model>", "checkpoint folder, artifact folder (bge export), .onnx file or engine (.plan in its artifact folder)")
    .argument("[text...]", "texts to embed")
    .option("--file <file>", "read texts from a file (.json array, .jsonl, or one per line; - for stdin)")
    .addOption(new Option("--backend <backend>", "what computes the vectors (default: reference for a checkpoint, onnx for an artifact or .onnx, trt for an engine); trt runs an artifact's TensorRT engine through trtexec").choices(["reference", "onnx", "trt"]))
    .addOption(new Option("--precision <p>", "which model (or with --backend trt, which engine: fp16, int8, fp32) of an artifact folder, or which tolerances an .onnx file gets").choices(EMBED_PRECISIONS))
    .option("--trtexec <path>", "--backend trt: the trtexec to use (default: $TRTEXEC, then PATH, then /usr/src/tensorrt/bin/trtexec)")
    .option("--query", "embed as queries (the model's instruction is prepended)", false)
    .addOption(new Option("--pooling <mode>", "override the model's pooling").choices(["cls", "mean"]))
    .option("--no-normalize", "skip L2 normalisation")
    .option("--max-length <n>", "truncate to N tokens (default 512)", integerOption("--max-length", LIMITS.maxLength))
    .option("--batch-size <n>", "texts per batch", integerOption("--batch-size", LIMITS.batchSize), 32)
    .addOption(instructionOption())
    .addOption(noInstructionOption())
    .option("--output <heads>", "bge-m3: which heads to print, comma-separated from dense, sparse, colbert (sparse: token id → weight; colbert: one vector per token)")
    .addHelpText("after", "\nExample:\n  bge embed /tmp/t 你好 hello --backend reference --json\n  bge embed /tmp/t-onnx 你好 --precision fp16\n  bge embed /tmp/t-onnx 你好 --backend trt --precision fp16\n  bge embed /tmp/m3 你好 --output dense,sparse,colbert --json")
    .action(async (model: string, texts: string[], opts, cmd: Command) => {
      await embedCommand(
        {
          model,
          texts,
          file: opts.file,
          backend: opts.backend,
          precision: opts.precision,
          query: opts.query,
          pooling: opts.pooling,
          normalize: opts.normalize,
          maxLength: opts.maxLength,
          batchSize: opts.batchSize,
          instruction: instructionFrom(opts),
          trtexec: opts.trtexec,
          output: opts.output,
        },
        outputFor(cmd),
      );
    });

  program
    .command("export")
    .description("write the model as ONNX graphs (pooling and normalisation inside) in a self-contained artifact folder")
    .argument("<model>", "checkpoint folder")
    .requiredOption("-o, --output <dir>", "artifact folder to write")
    .option("--precision <list>", `comma-separated: ${EXPORT_PRECISIONS.join(", ")}`, listOption("--precision", EXPORT_PRECISIONS), [...EXPORT_PRECISIONS])
    .option("--opset <n>", "ONNX opset (17 loads in TensorRT 8.6, 10 and 11)", integerOption("--opset", LIMITS.opset), 17)
    .addOption(new Option("--pooling <mode>", "auto reads 1_Pooling/config.json; none exports last_hidden_state only").choices(["auto", "cls", "mean", "none"]).default("auto"))
    .option("--max-length <n>", "max_length recorded for runners (default 512)", integerOption("--max-length", LIMITS.maxLength))
    .addOption(new Option("--external-data <when>", "weights in <model>.onnx.data: auto (above 1.8 GB), always, never").choices(["auto", "always", "never"]).default("auto"))
    .option("--no-normalize", "leave L2 normalisation out of the graph (FlagModel normalises)")
    .option("--heads <list>", "bge-m3: the heads the graphs carry, comma-separated from dense, sparse, colbert (default: every head the checkpoint has)")
    .addOption(instructionOption())
    .addOption(noInstructionOption())
    .addHelpText("after", "\nExample:\n  bge export /tmp/t -o /tmp/t-onnx --precision fp32,fp16")
    .action(async (model: string, opts, cmd: Command) => {
      const externalData = opts.externalData === "auto" ? "auto" : opts.externalData === "always";
      await exportCommand(
        {
          model,
          output: opts.output,
          precisions: opts.precision,
          opset: opts.opset,
          pooling: opts.pooling,
          maxLength: opts.maxLength,
          externalData,
          normalize: opts.normalize,
          instruction: instructionFrom(opts),
          heads: opts.heads,
          argv: process.argv.slice(2),
        },
        outputFor(cmd),
      );
    });

  program
    .command("verify")
    .description("the parity gate: compare an artifact's vectors with a golden file; exit 0 pass, 1 fail")
    .argument("<candidate>", "artifact folder (every ONNX in it, or with --backend trt every engine), an .onnx file, or an engine (.plan in its artifact folder)")
    .requiredOption("--golden <file>", "bge-golden/1 file (bge golden)")
    .option("--tolerance <cos>", "minimum cosine over every text, between 0 and 1 (default per precision: fp32 0.99999, fp16 0.999, int8 0.98)", toleranceOption)
    .option("--precision <list>", `only these precisions of an artifact folder (${VERIFY_PRECISIONS.join(", ")}; engines: fp16, int8, fp32); for an .onnx file, which tolerances apply`, listOption("--precision", VERIFY_PRECISIONS))
    .addOption(new Option("--backend <backend>", "onnx: the artifact's ONNX models on ONNX Runtime; trt: its TensorRT engines (bge build) through trtexec (default: onnx, trt for an engine file)").choices(["onnx", "trt"]))
    .option("--trtexec <path>", "--backend trt: the trtexec to use (default: $TRTEXEC, then PATH, then /usr/src/tensorrt/bin/trtexec)")
    .option("--report <file>", "write the JSON report here")
    .option("--junit <file>", "write a JUnit XML report here (one test case per artifact)")
    .option("--pipeline <file>", "take tolerances from a pipeline file (pipelines/*.json)")
    .option("--batch-size <n>", "texts per batch", integerOption("--batch-size", LIMITS.batchSize), 32)
    .option("--max-length <n>", "runtime max_length (default: the artifact's)", integerOption("--max-length", LIMITS.maxLength))
    .option("--model-id <id>", "the candidate's model id, where it cannot be read from a manifest")
    .option("--allow-settings-mismatch", "run although the golden was made with other pooling, normalize, max_length or query instruction than the candidate runs with (reported as a settings diagnosis)", false)
    .addOption(instructionOption())
    .addOption(noInstructionOption())
    .addHelpText("after", "\nExample:\n  bge verify /tmp/t-onnx --golden golden/tiny.json --junit parity.xml\n  bge verify /tmp/t-onnx --golden golden/tiny.json --backend trt --precision fp16,int8")
    .action(async (candidate: string, opts, cmd: Command) => {
      await verifyCommand(
        {
          candidate,
          golden: opts.golden,
          tolerance: opts.tolerance,
          precision: opts.precision,
          report: opts.report,
          junit: opts.junit,
          pipeline: opts.pipeline,
          batchSize: opts.batchSize,
          maxLength: opts.maxLength,
          instruction: instructionFrom(opts),
          modelId: opts.modelId,
          allowSettingsMismatch: opts.allowSettingsMismatch,
          backend: opts.backend,
          trtexec: opts.trtexec,
        },
        outputFor(cmd),
      );
    });

  program
    .command("quantize")
    .description("INT8 artifacts from a calibration corpus: a Q/DQ graph for TensorRT, an integer-MatMul graph for ONNX Runtime CPU, a TensorRT calibration cache")
    .argument("<artifact>", "artifact folder with model.fp32.onnx (bge export)")
    .requiredOption("--calibration <file>", "calibration texts (.json array, .jsonl, or one per line): a few hundred representative passages")
    .addOption(new Option("--method <method>", "how each activation's range is chosen").choices(CALIBRATION_METHODS).default("minmax"))
    .option("--percentile <p>", "percentile method: the share of |x| kept inside the range", decimalOption("--percentile", { above: 50, below: 100, meaning: "a percentile (100 is --method minmax)" }))
    .option("--precision <list>", `comma-separated: ${INT8_PRECISIONS.join(", ")}`, listOption("--precision", INT8_PRECISIONS), [...INT8_PRECISIONS])
    .option("--exclude <layers>", "keep these in float: encoder layer indices (3) or node places (/encoder/layer.3/output/dense), comma-separated", (v: string) => v.split(",").map((s) => s.trim()).filter(Boolean), [])
    .option("--no-auto-exclude", "quantise even the layers whose input INT8 would mostly round to zero (outlier activations)")
    .option("--smooth <auto|off|alpha>", "SmoothQuant before INT8: auto smooths (α 0.5) the linear inputs with outlier channels; a number in (0, 1) is α for every linear input", (v: string) => {
      const setting = parseSmoothSetting(v);
      if (setting === undefined) throw new InvalidArgumentError("Expected auto, off, or a migration strength α between 0 and 1 (0.5 is SmoothQuant's).");
      return setting;
    }, "auto" as SmoothSetting)
    .addOption(
      new Option("--activations <mode>", "model.int8.onnx: static calibrated per-tensor scales (fastest; vectors independent of batch and padding; inputs beyond the calibrated range are clipped), per-token scales computed at run time (no clipping, ~20% slower) or per-tensor DynamicQuantizeLinear (batch-dependent)")
        .choices([...DYNAMIC_ACTIVATIONS])
        .default("static"),
    )
    .option("--trt-version <version>", "TensorRT version for the calibration cache header (implicit INT8 on 8.6/10)", "8.6.1")
    .option("--batch-size <n>", "texts per calibration run", integerOption("--batch-size", LIMITS.batchSize), 16)
    .addOption(new Option("--naive", "test only: per-tensor minmax INT8 on everything, LayerNorm and Softmax included").hideHelp().default(false))
    .addHelpText("after", "\nExample:\n  bge quantize /tmp/t-onnx --calibration golden/texts/verify-passages.txt --method entropy\n  bge verify /tmp/t-onnx --golden golden.json --precision int8,int8-qdq")
    .action(async (artifact: string, opts, cmd: Command) => {
      await quantizeCommand(
        {
          artifact,
          calibration: opts.calibration,
          method: opts.method,
          percentile: opts.percentile,
          precisions: opts.precision,
          exclude: opts.exclude,
          trtVersion: opts.trtVersion,
          batchSize: opts.batchSize,
          naive: opts.naive,
          autoExclude: opts.autoExclude,
          smooth: opts.smooth,
          activations: opts.activations,
          argv: process.argv.slice(2),
        },
        outputFor(cmd),
      );
    });

  program
    .command("build")
    .description("TensorRT engines from an artifact's graphs through NVIDIA's trtexec (TensorRT 8.6, 10.x, 11.x)")
    .argument("<artifact>", "artifact folder (bge export; bge quantize for int8)")
    .option("--precision <list>", `comma-separated: ${ENGINE_PRECISIONS.join(", ")}`, listOption("--precision", ENGINE_PRECISIONS), ["fp16"])
    .option("--trtexec <path>", "the trtexec to use (default: $TRTEXEC, then PATH, then /usr/src/tensorrt/bin/trtexec)")
    .option("--min-shape <BxS>", "smallest batch × sequence the engine takes (default 1x2)", batchSeqOption("--min-shape"))
    .option("--opt-shape <BxS>", "batch × sequence the engine is tuned for (default 8x128)", batchSeqOption("--opt-shape"))
    .option("--max-shape <BxS>", "largest batch × sequence (default 32x the artifact's max_length)", batchSeqOption("--max-shape"))
    .option("--profile <name>", "a named profile beside the default engine: model.<precision>.<name>.plan, whose max sequence may exceed max_length up to the model's positions (bge-m3: --profile 8192 --max-shape 4x8192); runners take it for longer --max-length")
    .addOption(new Option("--int8-source <source>", "int8: the Q/DQ graph (bge quantize; the only path on TensorRT 11) or implicit INT8 from the calibration cache (8.6/10)").choices(["qdq", "calib"]).default("qdq"))
    .option("--strongly-typed", "TensorRT 10: take precision from the graph's own types (fp16 from model.fp16.onnx)", false)
    .option("--timing-cache <file>", "trtexec timing cache to read and update (speeds up rebuilds)")
    .option("--workspace <MiB>", "builder workspace memory pool", integerOption("--workspace", { min: 1, max: 1 << 20 }))
    .option("--opt-level <n>", "builder optimisation level", integerOption("--opt-level", { min: 0, max: 5 }))
    .addHelpText("after", "\nExample:\n  bge build /tmp/t-onnx --precision fp16,int8 --max-shape 32x512\n  bge build /tmp/m3-onnx --precision fp16 --profile 8192 --opt-shape 1x2048 --max-shape 4x8192\n  bge verify /tmp/t-onnx --golden golden.json --precision fp16 --backend trt")
    .action(async (artifact: string, opts, cmd: Command) => {
      await buildCommand(
        {
          artifact,
          precisions: opts.precision,
          trtexec: opts.trtexec,
          shapes: { ...(opts.minShape ? { min: opts.minShape } : {}), ...(opts.optShape ? { opt: opts.optShape } : {}), ...(opts.maxShape ? { max: opts.maxShape } : {}) },
          ...(opts.profile !== undefined ? { profile: opts.profile } : {}),
          int8Source: opts.int8Source,
          stronglyTyped: opts.stronglyTyped,
          timingCache: opts.timingCache,
          workspace: opts.workspace,
          optLevel: opts.optLevel,
          argv: process.argv.slice(2),
        },
        outputFor(cmd),
      );
    });

  program
    .command("convert")
    .description("the main job: download → export → quantize → build (where trtexec exists) → golden → verify, into one artifact folder; a rerun skips every stage whose inputs are unchanged")
    .argument("[model]", `hub id (id@revision) or checkpoint folder (default ${DEFAULT_MODEL})`)
    .requiredOption("-o, --output <dir>", "artifact folder to write (new, empty, or one convert wrote before)")
    .option("--precision <list>", `comma-separated: ${CONVERT_PRECISIONS.join(", ")} (default: the pipeline's, else all three; int8 makes both INT8 graphs)`, listOption("--precision", CONVERT_PRECISIONS))
    .option("--pipeline <file>", "recipe (pipelines/*.json): precisions and tolerances, corpora, shape profile (default: the bundled one for the model id)")
    .option("--golden <file>", "verify against this golden (bge golden, or FlagModel's) instead of a native float64 one")
    .option("--tolerance <cos>", "minimum cosine over every text, for every precision (default per precision: fp32 0.99999, fp16 0.999, int8 0.98)", toleranceOption)
    .option("--trtexec <path>", "the trtexec to build engines with (default: $TRTEXEC, PATH, /usr/src/tensorrt/bin/trtexec; none found: engines are skipped)")
    .option("--force", "run every stage even where its inputs are unchanged", false)
    .option("--report <file>", "write the bge-convert/1 JSON report here")
    .option("--junit <file>", "write a JUnit XML report (one test case per artifact) here")
    .option("--batch-size <n>", "texts per batch for the golden and verify", integerOption("--batch-size", LIMITS.batchSize), 32)
    .addHelpText("after", "\nExample:\n  bge convert BAAI/bge-small-zh-v1.5 -o out/bge-small-zh --junit out/junit.xml\n  bge convert ./my-bge-checkpoint -o out/mine --precision fp32,int8 --tolerance 0.985")
    .action(async (model: string | undefined, opts, cmd: Command) => {
      await convertCommand(
        {
          model,
          output: opts.output,
          precisions: opts.precision,
          pipeline: opts.pipeline,
          golden: opts.golden,
          tolerance: opts.tolerance,
          trtexec: opts.trtexec,
          force: opts.force,
          report: opts.report,
          junit: opts.junit,
          batchSize: opts.batchSize,
          argv: process.argv.slice(2),
        },
        outputFor(cmd),
      );
    });

  program
    .command("golden")
    .description("write a bge-golden/1 file of reference vectors for passages and queries")
    .argument("<model>", "checkpoint folder")
    .requiredOption("--texts <file>", "passages (.json array, .jsonl, or one per line)")
    .option("--queries <file>", "queries, embedded with the model's query instruction")
    .requiredOption("-o, --output <file>", "golden file to write")
    .addOption(new Option("--reference <kind>", "native: bge's float64 encoder; flagmodel: FlagEmbedding's FlagModel through Python (pipelines/flagmodel_golden.py; BGE_PYTHON picks the interpreter)").choices(["native", "flagmodel"]).default("native"))
    .option("--fp16", "flagmodel only: run FlagModel with use_fp16 (its default; the golden then records FP16 and caps fp32 gates)", false)
    .option("--max-length <n>", "truncate to N tokens (default 512)", integerOption("--max-length", LIMITS.maxLength))
    .option("--batch-size <n>", "texts per batch", integerOption("--batch-size", LIMITS.batchSize), 32)
    .addOption(instructionOption())
    .addOption(noInstructionOption())
    .addHelpText("after", "\nExample:\n  bge golden /tmp/t --texts passages.txt --queries queries.txt -o golden/tiny.json")
    .action(async (model: string, opts, cmd: Command) => {
      await goldenCommand(
        {
          model,
          texts: opts.texts,
          queries: opts.queries,
          output: opts.output,
          reference: opts.reference,
          fp16: opts.fp16,
          maxLength: opts.maxLength,
          batchSize: opts.batchSize,
          instruction: instructionFrom(opts),
        },
        outputFor(cmd),
      );
    });

  program
    .command("bench")
    .description("latency, throughput and % of this machine's MatMul ceiling (measured in the same run) over a batch × sequence grid")
    .argument("<target>", "artifact folder, an .onnx file, or an engine (.plan in its artifact folder) with --backend trt")
    .option("--precision <list>", `which models of an artifact folder (${ONNX_PRECISIONS.join(", ")}; engines: fp16, int8, fp32; default: fp32, else the first listed)`, listOption("--precision", ONNX_PRECISIONS))
    .option("--batch <list>", "comma-separated batch sizes", integerListOption("--batch", LIMITS.batchSize), [1, 8, 32])
    .option("--seq <list>", "comma-separated sequence lengths in tokens (each at most the model's positions)", integerListOption("--seq", { min: 1, max: LIMITS.maxLength.max }), [16, 128, 512])
    .addOption(new Option("--backend <backend>", "onnx: ONNX Runtime CPU; trt: the artifact's TensorRT engines timed by trtexec (default: onnx, trt for an engine file)").choices(["onnx", "trt"]))
    .option("--trtexec <path>", "--backend trt: the trtexec to use (default: $TRTEXEC, then PATH, then /usr/src/tensorrt/bin/trtexec)")
    .option("--threads <n>", "ONNX Runtime intra-op threads, for the model and the ceiling alike (default: all CPUs)", integerOption("--threads", { min: 1, max: 1024 }))
    .option("--warmup <n>", "untimed runs before each grid point", integerOption("--warmup", { min: 0, max: 10000 }), 2)
    .addOption(new Option("--runs <n>", "timed runs per grid point").argParser(integerOption("--runs", { min: 1, max: 100000 })).default(10).conflicts("seconds"))
    .option("--seconds <s>", "time each grid point for this long instead of a number of runs", decimalOption("--seconds", { above: 0, below: 3600, meaning: "seconds per grid point" }))
    .option("--texts <file>", "also time these texts end to end (tokenise + run + pool) at each --batch")
    .option("--report <file>", "write the bge-bench/1 JSON report here")
    .option("--chart <file>", "write an SVG chart (sequences/s vs batch, ceiling dashed) here")
    .addHelpText("after", "\nExample:\n  bge bench /tmp/t-onnx --precision fp32,fp16,int8 --batch 1,8,32 --seq 128 --report bench.json --chart bench.svg")
    .action(async (target: string, opts, cmd: Command) => {
      await benchCommand(
        {
          target,
          precision: opts.precision,
          batch: opts.batch,
          seq: opts.seq,
          backend: opts.backend,
          trtexec: opts.trtexec,
          threads: opts.threads,
          warmup: opts.warmup,
          runs: opts.runs,
          seconds: opts.seconds,
          texts: opts.texts,
          report: opts.report,
          chart: opts.chart,
        },
        outputFor(cmd),
      );
    });

  return program;
}

/** Errors of the file system that a user's paths or machine cause (not a bug): exit 2 with one line. */
const ENVIRONMENT_ERRNOS = new Set(["EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENOTDIR", "EISDIR", "ENOENT", "ENAMETOOLONG", "ELOOP", "EEXIST", "EBUSY", "ETXTBSY", "EFBIG", "EMFILE", "ENFILE", "EXDEV", "EIO"]);

function environmentError(err: unknown): string | undefined {
  const e = err as NodeJS.ErrnoException & { dest?: string };
  if (!e || typeof e.code !== "string" || !ENVIRONMENT_ERRNOS.has(e.code) || typeof e.syscall !== "string") return undefined;
  const where = e.path ? ` ${e.path}${e.dest ? ` → ${e.dest}` : ""}` : "";
  return `cannot ${e.syscall}${where}: ${e.code} (${oneLine(e.message.replace(/^[A-Z]+: /, "").replace(/,.*$/, ""))})`;
}

const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/**
 * SIGINT/SIGTERM: remove the command's temporary files and release its locks, then exit 130/143.
 * Returns the function that uninstalls the handlers.
 */
function handleInterrupts(): () => void {
  const handlers = Object.entries(SIGNAL_EXIT).map(([signal, code]) => {
    const handler = () => {
      runInterruptCleanup();
      process.stderr.write(`bge: interrupted (${signal}); temporary files removed\n`);
      process.exit(code);
    };
    process.on(signal, handler);
    return () => process.off(signal, handler);
  });
  return () => handlers.forEach((off) => off());
}

/**
 * `bge verify … | head` closes stdout early: the command still finishes and exits with its verdict
 * instead of dying on EPIPE; what no reader takes is dropped.
 */
function ignoreClosedPipes(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.listenerCount("error") > 0) continue;
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE" || err.code === "ERR_STREAM_DESTROYED") return;
      throw err;
    });
  }
}

/** Runs the CLI and returns the exit code: the one place where errors become exit codes. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const uninstall = handleInterrupts();
  ignoreClosedPipes();
  try {
    if (argv.length <= 2) {
      program.outputHelp();
      return 2;
    }
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; every parse error is bad usage (commander already printed it).
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof BgeError) {
      // A failed external tool's message carries its command line and log tail on further lines.
      process.stderr.write(`bge: ${err instanceof ToolFailedError ? err.message : oneLine(err.message)}\n`);
      return err.exitCode;
    }
    const env = environmentError(err);
    if (env) {
      process.stderr.write(`bge: ${env}\n`);
      return 2;
    }
    process.stderr.write(`bge: internal error (a bug; please report it)\n${(err as Error)?.stack ?? String(err)}\n`);
    return EXIT_INTERNAL;
  } finally {
    runInterruptCleanup();
    uninstall();
  }
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, " ").trim();
}
