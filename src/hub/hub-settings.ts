import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { UsageError } from "../errors.js";

/** Where the hub is, where its cache is, and how to talk to it: what `huggingface_hub` reads from the environment. */
export interface HubSettings {
  /** @default HF_ENDPOINT, else https://huggingface.co */
  endpoint: string;
  /** The hub cache folder holding `models--ORG--NAME`. @default HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub */
  cacheDir: string;
  /** Use the cache only. @default HF_HUB_OFFLINE */
  offline: boolean;
  /** HF_TOKEN: sent to the endpoint's origin only, never printed or stored. */
  token?: string;
  /** A transfer that receives nothing for this long is retried (HF_HUB_DOWNLOAD_TIMEOUT, seconds). @default 10 s */
  stallTimeoutMs: number;
  /** Each metadata request's limit (HF_HUB_ETAG_TIMEOUT, seconds). @default 10 s */
  apiTimeoutMs: number;
}

export interface HubSettingsOverrides {
  endpoint?: string;
  cacheDir?: string;
  offline?: boolean;
}

export const DEFAULT_ENDPOINT = "https://huggingface.co";

/** An environment variable, with empty meaning unset (as in huggingface_hub). */
function env(vars: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = vars[name];
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

/** huggingface_hub's truthy spellings. */
function truthy(value: string | undefined): boolean {
  return value !== undefined && ["1", "on", "yes", "true"].includes(value.toLowerCase());
}

function seconds(vars: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const v = env(vars, name);
  if (v === undefined) return fallback * 1000;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name}=${v}: expected a positive number of seconds`);
  return n * 1000;
}

/** The hub cache folder, with huggingface_hub's precedence: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub. */
export function hubCacheDir(vars: NodeJS.ProcessEnv = process.env): string {
  const explicit = env(vars, "HF_HUB_CACHE") ?? env(vars, "HUGGINGFACE_HUB_CACHE");
  if (explicit) return resolve(explicit);
  const home = env(vars, "HF_HOME") ?? join(env(vars, "XDG_CACHE_HOME") ?? join(homedir(), ".cache"), "huggingface");
  return resolve(home, "hub");
}

export function checkEndpoint(endpoint: string, source: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new UsageError(`${source} ${JSON.stringify(endpoint)} is not a URL (e.g. https://huggingface.co)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UsageError(`${source} ${endpoint}: only http and https endpoints are supported`);
  if (url.username || url.password) throw new UsageError(`${source}: put credentials in HF_TOKEN, not in the endpoint URL`);
  if (url.search || url.hash) throw new UsageError(`${source} ${endpoint}: an endpoint has no query or fragment`);
  return url.href.replace(/\/+$/, "");
}

export function hubSettings(overrides: HubSettingsOverrides = {}, vars: NodeJS.ProcessEnv = process.env): HubSettings {
  const endpoint = overrides.endpoint !== undefined
    ? checkEndpoint(overrides.endpoint, "--endpoint")
    : checkEndpoint(env(vars, "HF_ENDPOINT") ?? DEFAULT_ENDPOINT, "HF_ENDPOINT");
  return {
    endpoint,
    cacheDir: overrides.cacheDir !== undefined ? resolve(overrides.cacheDir) : hubCacheDir(vars),
    offline: overrides.offline === true || truthy(env(vars, "HF_HUB_OFFLINE")),
    token: env(vars, "HF_TOKEN"),
    stallTimeoutMs: seconds(vars, "HF_HUB_DOWNLOAD_TIMEOUT", 10),
    apiTimeoutMs: seconds(vars, "HF_HUB_ETAG_TIMEOUT", 10),
  };
}
