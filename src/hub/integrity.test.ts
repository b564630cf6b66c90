import { describe, expect, it } from "vitest";
import { blobName, ContentHasher, expectedContent, gitBlobSha1 } from "./integrity.js";

const HELLO = Buffer.from("hello\n");

describe("content hashes", () => {
  it("git blob sha1 is what `git hash-object` prints", () => {
    expect(gitBlobSha1(HELLO)).toBe("ce013625030ba8dba906f756967f9e9ca394464a");
    expect(gitBlobSha1(new Uint8Array())).toBe("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
  });

  it("hashes streamed chunks like the whole, by the listing's algorithm, and says no to other bytes", () => {
    const git = expectedContent({ path: "a.txt", type: "file", size: HELLO.length, oid: "ce013625030ba8dba906f756967f9e9ca394464a" });
    expect(git).toEqual({ size: 6, algorithm: "git-sha1", digest: "ce013625030ba8dba906f756967f9e9ca394464a" });
    const h = new ContentHasher(git);
    h.update(HELLO.subarray(0, 2));
    h.update(HELLO.subarray(2));
    expect(h.digest()).toBe(git.digest);

    const lfs = expectedContent({
      path: "w.safetensors",
      type: "file",
      size: 6,
      oid: "0".repeat(40),
      lfs: { oid: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03", size: 6 },
    });
    expect(lfs.algorithm).toBe("sha256");
    expect(blobName(lfs)).toBe("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
    const l = new ContentHasher(lfs);
    l.update(HELLO);
    expect(l.digest()).toBe(lfs.digest);
    const wrong = new ContentHasher(lfs);
    wrong.update(Buffer.from("hellO\n"));
    expect(wrong.digest()).not.toBe(lfs.digest);
  });

  it("refuses a listing entry it could not verify against", () => {
    expect(() => expectedContent({ path: "x", type: "file", size: 3 })).toThrow("the hub lists x without a git oid or size: its bytes could not be verified");
    expect(() => expectedContent({ path: "y", type: "file", size: 3, lfs: { oid: "nothex", size: 3 } })).toThrow(/malformed LFS oid/);
  });
});
