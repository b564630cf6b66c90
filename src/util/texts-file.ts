import { readFile } from "node:fs/promises";
import { UsageError } from "../errors.js";
import { assertInputFile } from "./io-paths.js";
import { decodeUtf8Strict } from "./strict-utf8.js";

/**
 * Texts from a file: `.json` (an array of strings), `.jsonl` (one JSON string or {"text": …} per
 * line), else plain text with one text per line (a final newline does not make an extra empty text).
 * `-` reads standard input as plain lines.
 */
export async function readTextsFile(path: string): Promise<string[]> {
  let content: string;
  if (path === "-") content = decodeUtf8Strict(await readStdin(), "standard input");
  else {
    await assertInputFile(path, "texts file");
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (err) {
      throw new UsageError(`${path}: cannot read texts (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
    content = decodeUtf8Strict(bytes, path);
  }
  if (path.endsWith(".json")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(content);
    } catch (err) {
      throw new UsageError(`${path}: not valid JSON (${(err as Error).message})`);
    }
    if (!Array.isArray(parsed) || !parsed.every((t) => typeof t === "string")) throw new UsageError(`${path}: expected a JSON array of strings`);
    return parsed;
  }
  const lines = content.split("\n");
  if (lines.at(-1) === "") lines.pop();
  if (path.endsWith(".jsonl")) {
    return lines.map((line, i) => {
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        throw new UsageError(`${path}:${i + 1}: not valid JSON`);
      }
      if (typeof v === "string") return v;
      if (typeof v === "object" && v !== null && typeof (v as { text?: unknown }).text === "string") return (v as { text: string }).text;
      throw new UsageError(`${path}:${i + 1}: expected a JSON string or an object with "text"`);
    });
  }
  return lines.map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
