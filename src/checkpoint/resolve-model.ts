import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import type { Log } from "../util/log.js";
import { UsageError } from "../errors.js";
import { looksLikeHubId, parseHubId } from "../hub/hub-id.js";
import { hubSettings } from "../hub/hub-settings.js";

export interface ResolveModelOptions {
  /** Where download messages and progress go; without it a download is silent. */
  out?: Log;
  /** Environment to read HF_* from. @default process.env */
  env?: NodeJS.ProcessEnv;
}

/**
 * A `<model>` argument as a local checkpoint folder. An existing folder is used as it is; otherwise
 * `ORG/NAME` or `ORG/NAME@REV` is fetched from the hub into the Hugging Face cache (or found there:
 * HF_HUB_OFFLINE, HF_ENDPOINT, HF_HOME / HF_HUB_CACHE and HF_TOKEN apply) and its snapshot folder
 * returned.
 */
export async function resolveModelDir(model: string, options: ResolveModelOptions = {}): Promise<string> {
  const dir = resolve(model);
  const s = await stat(dir).catch(() => null);
  if (s) {
    if (!s.isDirectory()) throw new UsageError(`${model} is a file; <model> must be a checkpoint folder (config.json, tokenizer.json, weights)`);
    return dir;
  }
  if (!looksLikeHubId(model)) throw new UsageError(`${model}: no such checkpoint folder (a hub model is named ORG/NAME or ORG/NAME@REVISION)`);
  const { repo, revision } = parseHubId(model);
  const settings = hubSettings({}, options.env ?? process.env);
  // Loaded only for hub ids: @huggingface/hub and cli-progress cost every other run ~50 ms of startup.
  const { downloadSnapshot } = await import("../hub/download-snapshot.js");
  const { createDownloadProgress, progressMode } = await import("../hub/progress.js");
  const out = options.out;
  const quiet = out?.quiet === true;
  const progress = out
    ? createDownloadProgress({ mode: progressMode(process.stderr, quiet), line: (m) => out.info(m), detail: (m) => out.verbose(m) })
    : undefined;
  const snapshot = await downloadSnapshot({ repo, revision, ...settings, progress, log: out });
  return snapshot.snapshotDir;
}
