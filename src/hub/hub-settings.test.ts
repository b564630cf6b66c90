import { join, resolve } from "node:path";
import { homedir } from "node:os";
import { describe, expect, it } from "vitest";
import { hubCacheDir, hubSettings } from "./hub-settings.js";
import { redactSecrets } from "./redact.js";

describe("hub settings from the environment (huggingface_hub's variables)", () => {
  it("finds the cache with huggingface_hub's precedence, empty meaning unset", () => {
    expect(hubCacheDir({})).toBe(join(homedir(), ".cache", "huggingface", "hub"));
    expect(hubCacheDir({ XDG_CACHE_HOME: "/x" })).toBe("/x/huggingface/hub");
    expect(hubCacheDir({ HF_HOME: "/h", XDG_CACHE_HOME: "/x" })).toBe("/h/hub");
    expect(hubCacheDir({ HF_HUB_CACHE: "/c", HF_HOME: "/h" })).toBe("/c");
    expect(hubCacheDir({ HF_HUB_CACHE: "", HF_HOME: "/h" })).toBe("/h/hub");
    expect(hubCacheDir({ HUGGINGFACE_HUB_CACHE: "rel" })).toBe(resolve("rel"));
  });

  it("reads endpoint, offline, token and timeouts; flags win", () => {
    const s = hubSettings({}, { HF_ENDPOINT: "http://127.0.0.1:8080/", HF_HUB_OFFLINE: "TRUE", HF_TOKEN: "hf_abc", HF_HUB_DOWNLOAD_TIMEOUT: "2.5", HF_HOME: "/h" });
    expect(s).toEqual({ endpoint: "http://127.0.0.1:8080", cacheDir: "/h/hub", offline: true, token: "hf_abc", stallTimeoutMs: 2500, apiTimeoutMs: 10_000 });
    expect(hubSettings({ endpoint: "https://hf-mirror.example", cacheDir: "/c", offline: false }, { HF_HUB_OFFLINE: "0" })).toMatchObject({
      endpoint: "https://hf-mirror.example",
      cacheDir: "/c",
      offline: false,
    });
    expect(hubSettings({}, {}).endpoint).toBe("https://huggingface.co");
    expect(() => hubSettings({ endpoint: "ftp://x" }, {})).toThrow("only http and https");
    expect(() => hubSettings({}, { HF_ENDPOINT: "https://user:pw@h.example" })).toThrow("put credentials in HF_TOKEN");
    expect(() => hubSettings({}, { HF_HUB_DOWNLOAD_TIMEOUT: "soon" })).toThrow("HF_HUB_DOWNLOAD_TIMEOUT=soon");
  });

  it("redacts the token and URL credentials from any text", () => {
    expect(redactSecrets("Bearer hf_abcdef failed at https://u:p@host/x", ["hf_abcdef"])).toBe("Bearer *** failed at https://***@host/x");
    expect(redactSecrets("no secret", [undefined])).toBe("no secret");
  });
});
