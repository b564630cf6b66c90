import { describe, expect, it } from "vitest";
import { looksLikeHubId, parseHubId } from "./hub-id.js";

describe("parseHubId", () => {
  it("reads ORG/NAME with an optional @revision or --revision", () => {
    expect(parseHubId("BAAI/bge-small-zh-v1.5")).toEqual({ repo: "BAAI/bge-small-zh-v1.5" });
    expect(parseHubId("BAAI/bge-m3@refs/pr/3")).toEqual({ repo: "BAAI/bge-m3", revision: "refs/pr/3" });
    expect(parseHubId("BAAI/bge-m3", "v1.0")).toEqual({ repo: "BAAI/bge-m3", revision: "v1.0" });
    expect(parseHubId("BAAI/bge-m3@main", "main")).toEqual({ repo: "BAAI/bge-m3", revision: "main" });
  });

  it("refuses what huggingface_hub refuses, and two different revisions", () => {
    for (const bad of ["BAAI", "a/b/c", "BAAI/bge--x", "BAAI/..", "BAAI/x.git", "-a/b", "BAAI/bge.", "a/" + "b".repeat(97)]) {
      expect(() => parseHubId(bad), bad).toThrow(/is not a hub model id/);
    }
    expect(parseHubId("BAAI/bge_")).toEqual({ repo: "BAAI/bge_" });
    for (const rev of ["", "../main", "/main", "a//b", "a b", "main/.."]) expect(() => parseHubId("BAAI/x", rev), rev).toThrow(/is not a branch, tag or commit sha/);
    expect(() => parseHubId("BAAI/x@main", "dev")).toThrow("BAAI/x@main names revision main but --revision says dev: give one");
  });

  it("tells hub ids from paths", () => {
    expect(looksLikeHubId("BAAI/bge-small-zh-v1.5")).toBe(true);
    expect(looksLikeHubId("BAAI/bge-small-zh-v1.5@abc")).toBe(true);
    for (const p of ["./BAAI/x", "/abs/x", "../x/y", "x", "a/b/c", "~/x", ".cache/x", "C:\\x\\y"]) expect(looksLikeHubId(p), p).toBe(false);
  });
});
