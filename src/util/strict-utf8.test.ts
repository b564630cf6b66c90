import { describe, expect, it } from "vitest";
import { decodeUtf8Strict, firstInvalidUtf8 } from "./strict-utf8.js";

const enc = (s: string) => new TextEncoder().encode(s);

describe("strict UTF-8", () => {
  it("accepts valid text in every sequence length and drops a BOM", () => {
    const text = "a é 中 😀 \u{10ffff}\n二行";
    expect(decodeUtf8Strict(enc(text), "t.txt")).toBe(text);
    expect(decodeUtf8Strict(Uint8Array.from([0xef, 0xbb, 0xbf, ...enc("x")]), "t.txt")).toBe("x");
  });

  it("finds the first malformed byte as the WHATWG decoder would reject it", () => {
    const cases: [number[], number][] = [
      [[0x61, 0xff], 1],
      [[0xc0, 0x80], 0], // overlong NUL
      [[0xe0, 0x80, 0x80], 0], // overlong
      [[0xed, 0xa0, 0x80], 0], // a UTF-16 surrogate
      [[0xf4, 0x90, 0x80, 0x80], 0], // past U+10FFFF
      [[0x61, 0x62, 0xe4, 0xb8], 2], // truncated at the end
      [[0xe4, 0x41, 0x41], 0],
    ];
    for (const [bytes, at] of cases) {
      expect(firstInvalidUtf8(Uint8Array.from(bytes))).toBe(at);
      expect(() => new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bytes))).toThrow();
    }
    expect(firstInvalidUtf8(enc("plain 中文 😀"))).toBe(-1);
  });

  it("names file, line and byte offset; UTF-16 is named as such; control characters are text", () => {
    const latin1 = Uint8Array.from([...enc("ok\nstill ok\ncaf"), 0xe9, 0x0a]);
    expect(() => decodeUtf8Strict(latin1, "texts.txt")).toThrow("texts.txt: line 3, byte offset 15: byte 0xe9 is not valid UTF-8");
    const utf16 = Uint8Array.from([0xff, 0xfe, 0x61, 0x00]);
    expect(() => decodeUtf8Strict(utf16, "u.txt")).toThrow(/line 1, byte offset 0: .*UTF-16/);
    expect(decodeUtf8Strict(Uint8Array.from([0x61, 0x0a, 0x00, 0x07]), "c.txt")).toBe("a\n\u0000\u0007");
  });
});
