import { BgeError, ToolFailedError, ToolMissingError, UsageError } from "../errors.js";
import { redactSecrets } from "./redact.js";

export interface HubClientOptions {
  /** The hub's base URL; the token goes to this origin only. */
  endpoint: string;
  token?: string;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
  /** Retries of a metadata request after a connection failure, a timeout, 429 or 5xx. @default 3 */
  retries?: number;
  /** First retry delay; doubles each time, capped at 8 s. @default 500 */
  backoffMs?: number;
  /** Limit for one metadata request, body included. @default 10000 */
  timeoutMs?: number;
  /** Told about each retry (for --verbose). */
  onRetry?: (message: string) => void;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;
const MAX_BACKOFF_MS = 8000;

export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

export function backoffDelay(baseMs: number, failures: number): number {
  return Math.min(baseMs * 2 ** Math.max(0, failures - 1), MAX_BACKOFF_MS);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** What went wrong below HTTP: ECONNREFUSED, ECONNRESET, a timeout… in a few words. */
export function networkReason(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === "TimeoutError" || e?.name === "AbortError") return "timed out";
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

/** The hub refused a request for a reason the user can mend (404, 401, 403): exit 2. `code` is X-Error-Code. */
export class HubRequestError extends UsageError {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/**
 * All HTTP to the hub goes through here: the token is attached for the endpoint's origin only (and
 * so dropped when a redirect leaves it, e.g. to a CDN), redirects are followed by hand, metadata
 * requests time out and retry with backoff, and every message is redacted.
 */
export class HubClient {
  readonly endpoint: string;
  private readonly origin: string;
  private readonly token?: string;
  private readonly fetchImpl: typeof fetch;
  private readonly retries: number;
  readonly backoffMs: number;
  private readonly timeoutMs: number;
  private readonly onRetry: (message: string) => void;

  constructor(options: HubClientOptions) {
    this.endpoint = options.endpoint.replace(/\/+$/, "");
    this.origin = new URL(this.endpoint).origin;
    this.token = options.token;
    this.fetchImpl = options.fetch ?? globalThis.fetch;
    this.retries = options.retries ?? 3;
    this.backoffMs = options.backoffMs ?? 500;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.onRetry = options.onRetry ?? (() => undefined);
  }

  redact(text: string): string {
    return redactSecrets(text, [this.token]);
  }

  /** One request (no retries), redirects followed; Authorization only while on the endpoint's origin. */
  async send(url: string, init: RequestInit = {}): Promise<Response> {
    let current = new URL(url);
    let method = init.method ?? "GET";
    let body = init.body;
    for (let hop = 0; ; hop++) {
      const headers = new Headers(init.headers);
      if (this.token && current.origin === this.origin) headers.set("Authorization", `Bearer ${this.token}`);
      else headers.delete("Authorization");
      const res = await this.fetchImpl(current, { ...init, method, body, headers, redirect: "manual" });
      const location = res.headers.get("location");
      if (!REDIRECTS.has(res.status) || !location) return res;
      await res.body?.cancel().catch(() => undefined);
      if (hop >= MAX_REDIRECTS) throw new ToolFailedError(`hub: more than ${MAX_REDIRECTS} redirects from ${this.redact(url)}`);
      current = new URL(location, current);
      if (res.status === 303) {
        method = "GET";
        body = undefined;
      }
    }
  }

  /**
   * A metadata request with timeout and retries. Returns the response when it is OK; throws a
   * HubRequestError (exit 2) for 4xx, ToolFailedError (exit 4) when the hub keeps failing, and
   * ToolMissingError (exit 3) when it cannot be reached.
   */
  async api(url: string, init: RequestInit = {}, what = "request"): Promise<Response> {
    let failures = 0;
    for (;;) {
      let res: Response;
      try {
        res = await this.send(url, { ...init, signal: AbortSignal.timeout(this.timeoutMs) });
      } catch (err) {
        if (err instanceof BgeError) throw err;
        if (failures < this.retries) {
          failures++;
          const delay = backoffDelay(this.backoffMs, failures);
          this.onRetry(`${what}: ${networkReason(err)}; retry ${failures}/${this.retries} in ${delay} ms`);
          await sleep(delay);
          continue;
        }
        throw new ToolMissingError(
          `cannot reach the hub at ${this.redact(this.endpoint)} (${this.redact(networkReason(err))} after ${failures + 1} attempts): check the network or HF_ENDPOINT, or use --offline / HF_HUB_OFFLINE=1 with a cached model`,
        );
      }
      if (res.ok) return res;
      if (isRetryableStatus(res.status) && failures < this.retries) {
        failures++;
        const delay = Math.max(backoffDelay(this.backoffMs, failures), retryAfterMs(res));
        await res.body?.cancel().catch(() => undefined);
        this.onRetry(`${what}: HTTP ${res.status}; retry ${failures}/${this.retries} in ${delay} ms`);
        await sleep(delay);
        continue;
      }
      throw await this.responseError(res, url, what, failures + 1);
    }
  }

  /** `fetch` for @huggingface/hub's functions: retries, auth and error mapping as in `api`. */
  readonly libraryFetch: typeof fetch = async (input, init) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    return this.api(url, init, `${init?.method ?? "GET"} ${withoutQuery(url)}`);
  };

  /** Turns a failed response into the error its status calls for, with the hub's own message. */
  async responseError(res: Response, url: string, what: string, attempts = 1): Promise<BgeError> {
    const code = res.headers.get("x-error-code") ?? undefined;
    const detail = this.redact(await errorDetail(res));
    const where = this.redact(withoutQuery(url));
    const said = detail ? `: ${detail}` : "";
    if (res.status === 401 || res.status === 403 || res.status === 404) {
      const hint =
        code === "GatedRepo" || res.status === 403
          ? " (a gated or private model: accept its terms on the hub and set HF_TOKEN)"
          : code === "RepoNotFound" || res.status === 401
            ? " (check the model id; a private model needs HF_TOKEN)"
            : "";
      return new HubRequestError(`${what}: the hub answered ${res.status}${code ? ` ${code}` : ""} for ${where}${said}${hint}`, res.status, code);
    }
    return new ToolFailedError(`${what}: the hub answered ${res.status}${code ? ` ${code}` : ""} for ${where}${attempts > 1 ? ` (${attempts} attempts)` : ""}${said}`);
  }
}

/** A URL as messages show it: no query string (huggingface.js adds long `expand=` lists). */
function withoutQuery(url: string): string {
  try {
    const u = new URL(url);
    return u.origin + u.pathname;
  } catch {
    return url;
  }
}

function retryAfterMs(res: Response): number {
  const v = Number(res.headers.get("retry-after"));
  return Number.isFinite(v) && v > 0 ? Math.min(v * 1000, 30_000) : 0;
}

/** The hub's error text (`{"error": …}` or plain), on one line and short. */
async function errorDetail(res: Response): Promise<string> {
  let text = "";
  try {
    text = (await res.text()).slice(0, 2000);
  } catch {
    return "";
  }
  try {
    const json = JSON.parse(text) as { error?: unknown; message?: unknown };
    const msg = json.error ?? json.message;
    if (typeof msg === "string") text = msg;
  } catch {
    // not JSON: keep the text
  }
  // The hub repeats the URL in its messages ("… for url: https://…"); the message names it once already.
  text = text.replace(/\s*for url: \S+/gi, "").replace(/\s+/g, " ").trim();
  return text.length > 200 ? text.slice(0, 200) + "…" : text;
}
