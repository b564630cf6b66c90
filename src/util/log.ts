/**
 * Where a lower layer's messages go. The CLI's Output satisfies it; lower layers take this small
 * interface instead of importing the CLI.
 */
export interface Log {
  /** --quiet: progress bars and info stay off. */
  readonly quiet?: boolean;
  info(message: string): void;
  verbose(message: string): void;
  warn(message: string): void;
}
