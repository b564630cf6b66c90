import { expect } from "vitest";
import { UsageError } from "../../src/errors.js";

/** Runs `fn` and returns the UsageError it must throw: exit code 2 and a one-line message. */
export async function usageError(fn: () => Promise<unknown>): Promise<UsageError> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    const e = err as UsageError;
    expect(e.exitCode).toBe(2);
    expect(e.message).not.toMatch(/[\n\r]/);
    return e;
  }
  throw new Error("expected a UsageError");
}
