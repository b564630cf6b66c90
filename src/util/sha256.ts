import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";

/** The sha256 of a file, streamed in 4 MiB chunks. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}
