/**
 * Where a command's words go: the machine-readable result on stdout, everything for people on stderr
 * (so `--json` output pipes cleanly). `--quiet` silences info, `--verbose` adds detail.
 */
export interface Output {
  readonly json: boolean;
  /** --quiet: nothing but results and errors (progress bars included). */
  readonly quiet: boolean;
  info(message: string): void;
  verbose(message: string): void;
  warn(message: string): void;
  /** The command's result: JSON with --json, else the human text. */
  result(human: string, machine: unknown): void;
  progress(label: string, total: number): (done: number) => void;
}

export interface OutputOptions {
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

export function createOutput(options: OutputOptions, stdout = process.stdout, stderr = process.stderr): Output {
  const quiet = options.quiet ?? false;
  const verbose = (options.verbose ?? false) && !quiet;
  return {
    json: options.json ?? false,
    quiet,
    info: (m) => {
      if (!quiet) stderr.write(m + "\n");
    },
    verbose: (m) => {
      if (verbose) stderr.write(m + "\n");
    },
    warn: (m) => stderr.write(`warning: ${m}\n`),
    result(human, machine) {
      if (options.json) stdout.write(JSON.stringify(machine) + "\n");
      else if (human) stdout.write(human.endsWith("\n") ? human : human + "\n");
    },
    progress(label, total) {
      if (quiet || total <= 0) return () => undefined;
      const tty = Boolean(stderr.isTTY);
      const started = Date.now();
      let lastPct = -1;
      return (done) => {
        const pct = Math.floor((done / total) * 100);
        const secs = (Date.now() - started) / 1000;
        const rate = secs > 0 ? done / secs : 0;
        const eta = rate > 0 && done < total ? `, ETA ${formatSeconds((total - done) / rate)}` : "";
        if (tty) {
          const width = 30;
          const fill = Math.round((done / total) * width);
          stderr.write(`\r${label} [${"#".repeat(fill)}${"-".repeat(width - fill)}] ${done}/${total} ${rate.toFixed(1)}/s${eta}   `);
          if (done >= total) stderr.write("\n");
        } else if (pct >= lastPct + 10 || done >= total) {
          lastPct = pct;
          stderr.write(`${label}: ${done}/${total} (${pct}%, ${rate.toFixed(1)}/s${eta})\n`);
        }
      };
    },
  };
}

function formatSeconds(s: number): string {
  return s >= 90 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.ceil(s)} s`;
}
