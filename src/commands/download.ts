import type { Output } from "../cli/output.js";
import { UsageError } from "../errors.js";
import type { IncludeExtra } from "../hub/download-snapshot.js";
import { parseHubId } from "../hub/hub-id.js";
import { hubSettings } from "../hub/hub-settings.js";

export interface DownloadCommandOptions {
  model: string;
  revision?: string;
  cacheDir?: string;
  endpoint?: string;
  offline?: boolean;
  include?: string[];
  quiet?: boolean;
}

const INCLUDE: readonly IncludeExtra[] = ["onnx"];

/** `bge download`: the model's config, tokenizer and weights into the Hugging Face cache; prints the snapshot folder. */
export async function downloadCommand(options: DownloadCommandOptions, out: Output): Promise<void> {
  const { repo, revision } = parseHubId(options.model, options.revision);
  const include = (options.include ?? []).map((x) => {
    if (!(INCLUDE as readonly string[]).includes(x)) throw new UsageError(`--include ${x}: choose from ${INCLUDE.join(", ")}`);
    return x as IncludeExtra;
  });
  const settings = hubSettings({ endpoint: options.endpoint, cacheDir: options.cacheDir, offline: options.offline });
  // Loaded on use: main.ts imports every command, and @huggingface/hub + cli-progress cost ~50 ms of startup.
  const { downloadSnapshot } = await import("../hub/download-snapshot.js");
  const { createDownloadProgress, formatBytes, progressMode } = await import("../hub/progress.js");
  const progress = createDownloadProgress({
    mode: progressMode(process.stderr, options.quiet ?? false),
    line: (m) => out.info(m),
    detail: (m) => out.verbose(m),
  });
  const started = Date.now();
  const snap = await downloadSnapshot({ repo, revision, include, ...settings, progress, log: out });
  const fetched = snap.files.filter((f) => f.bytesTransferred > 0);
  out.info(
    snap.offline
      ? `${snap.repo}@${snap.revision}: commit ${snap.commit} from the cache (offline), ${snap.files.length} files`
      : `${snap.repo}@${snap.revision}: commit ${snap.commit}, ${snap.files.length} files; transferred ${formatBytes(snap.bytesTransferred)} in ${fetched.length} file(s) in ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
  out.result(snap.snapshotDir, {
    snapshot: snap.snapshotDir,
    repo: snap.repo,
    revision: snap.revision,
    commit: snap.commit,
    cache_dir: snap.cacheDir,
    offline: snap.offline,
    bytes_transferred: snap.bytesTransferred,
    files: snap.files.map((f) => ({ path: f.path, size: f.size, blob: f.blob ?? null, algorithm: f.algorithm ?? null, cached: f.cached })),
  });
}
