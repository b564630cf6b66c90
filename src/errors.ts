/**
 * One error family for everything a user can cause or fix. Each class carries the exit code that
 * SPEC.md assigns; `main` turns it into process.exitCode in exactly one place. Anything that is not a
 * BgeError is a bug and exits 70 with a stack trace.
 */
export class BgeError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** The parity gate said no (exit 1). */
export class ParityError extends BgeError {
  constructor(message: string) {
    super(message, 1);
  }
}

/** Bad usage or bad input (exit 2): the message says what is wrong and how to mend it. */
export class UsageError extends BgeError {
  constructor(message: string) {
    super(message, 2);
  }
}

/** A required external tool or resource is missing (exit 3). */
export class ToolMissingError extends BgeError {
  constructor(message: string) {
    super(message, 3);
  }
}

/** An external tool failed (exit 4): the message holds its command line and the tail of its log. */
export class ToolFailedError extends BgeError {
  constructor(message: string) {
    super(message, 4);
  }
}

export const EXIT_INTERNAL = 70;
