import cliProgress from "cli-progress";

/** Progress of one file's transfer: `update` with the bytes held so far, `finish` once. */
export interface FileProgress {
  update(done: number): void;
  finish(ok: boolean): void;
}

export interface DownloadProgress {
  file(path: string, total: number): FileProgress;
  /** Ends the display (bars are redrawn on a timer until then). */
  stop(): void;
}

export interface DownloadProgressOptions {
  /** bars: cli-progress on a TTY; lines: plain lines; none. */
  mode: "bars" | "lines" | "none";
  /** Where bars go. @default process.stderr */
  stream?: NodeJS.WritableStream;
  /** A line for people (lines mode), e.g. Output.info. */
  line?: (message: string) => void;
  /** A line for --verbose (small files' completions). */
  detail?: (message: string) => void;
}

/** Files from this size on get intermediate lines in lines mode. */
const LARGE = 8 * 1024 * 1024;

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n / 1000;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(v >= 100 ? 0 : 1)} ${units[u]}`;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** bars on a TTY, plain lines elsewhere, nothing when quiet. */
export function progressMode(stream: NodeJS.WritableStream & { isTTY?: boolean }, quiet: boolean): DownloadProgressOptions["mode"] {
  if (quiet) return "none";
  return stream.isTTY ? "bars" : "lines";
}

export function createDownloadProgress(options: DownloadProgressOptions): DownloadProgress {
  if (options.mode === "bars") return barsProgress(options.stream ?? process.stderr);
  if (options.mode === "lines") return linesProgress(options.line ?? ((m) => process.stderr.write(m + "\n")), options.detail ?? (() => undefined));
  return { file: () => ({ update: () => undefined, finish: () => undefined }), stop: () => undefined };
}

function barsProgress(stream: NodeJS.WritableStream): DownloadProgress {
  const multi = new cliProgress.MultiBar(
    {
      stream,
      format: " {file} |{bar}| {percentage}% | {held} / {size} | {speed} | ETA {eta_formatted}",
      barsize: 25,
      hideCursor: false,
      clearOnComplete: false,
      stopOnComplete: false,
      autopadding: true,
      etaBuffer: 50,
      fps: 8,
    },
    cliProgress.Presets.shades_classic,
  );
  return {
    file(path, total) {
      const started = Date.now();
      let first: number | undefined;
      const payload = (done: number) => {
        first ??= done;
        const secs = (Date.now() - started) / 1000;
        const rate = secs > 0.05 ? (done - first) / secs : 0;
        return { file: path, held: formatBytes(done), size: formatBytes(total), speed: `${formatBytes(Math.round(rate))}/s` };
      };
      const bar = multi.create(Math.max(total, 1), 0, payload(0));
      return {
        update: (done) => bar.update(done, payload(done)),
        finish: () => {
          bar.update(total, payload(total));
          bar.stop();
        },
      };
    },
    stop: () => multi.stop(),
  };
}

function linesProgress(line: (m: string) => void, detail: (m: string) => void): DownloadProgress {
  return {
    file(path, total) {
      const started = Date.now();
      let first: number | undefined;
      let nextPct = 10;
      let lastLine = started;
      const rate = (done: number) => {
        const secs = (Date.now() - started) / 1000;
        return secs > 0 ? (done - (first ?? 0)) / secs : 0;
      };
      return {
        update(done) {
          first ??= done;
          if (total < LARGE || done >= total) return;
          const pct = Math.floor((done / total) * 100);
          if (pct < nextPct || Date.now() - lastLine < 1000) return;
          nextPct = pct + 10;
          lastLine = Date.now();
          const r = rate(done);
          line(`${path}: ${formatBytes(done)} of ${formatBytes(total)} (${pct}%, ${formatBytes(Math.round(r))}/s, ETA ${formatSeconds(r > 0 ? (total - done) / r : Infinity)})`);
        },
        finish(ok) {
          if (!ok) return;
          const secs = (Date.now() - started) / 1000;
          const msg = `fetched ${path} (${formatBytes(total)} in ${secs.toFixed(1)} s)`;
          (total >= LARGE ? line : detail)(msg);
        },
      };
    },
    stop: () => undefined,
  };
}
