import { describe, expect, it } from "vitest";
import { checkRepoFilePath } from "./repo-path.js";

describe("checkRepoFilePath", () => {
  it("accepts the relative paths a model repo has", () => {
    for (const ok of ["config.json", "1_Pooling/config.json", "onnx/model.onnx_data", "model-00001-of-00002.safetensors", ".gitattributes", "a..b/c"]) {
      expect(checkRepoFilePath(ok, "t")).toBe(ok);
    }
  });

  it("refuses every way out of the snapshot, naming the file and the reason", () => {
    const cases: [unknown, string][] = [
      ["../x", "climbs out of the snapshot with '..'"],
      ["onnx/../../x", "climbs out"],
      ["/etc/passwd", "is an absolute path"],
      ["C:/Windows/x", "is a drive path"],
      ["c:x", "is a drive path"],
      ["a\\..\\b", "contains a backslash"],
      ["a//b", "has an empty or '.' path segment"],
      ["./a", "has an empty or '.' path segment"],
      ["a/", "has an empty or '.' path segment"],
      ["a\u0000b", "contains control characters"],
      ["", "is not a file name"],
      [42, "is not a file name"],
    ];
    for (const [name, why] of cases) {
      let message = "";
      try {
        checkRepoFilePath(name, "the listing");
      } catch (err) {
        message = (err as Error).message;
        expect((err as { exitCode: number }).exitCode).toBe(2);
      }
      expect(message, String(name)).toContain(why);
      expect(message).toContain(`the listing names the file ${JSON.stringify(name)}`);
    }
  });
});
