import { UsageError } from "../errors.js";

export type JsonObject = Record<string, unknown>;

/**
 * Typed reads of a parsed tokenizer file. Every failure is a UsageError naming the file and the
 * field, because a malformed tokenizer.json is bad input, not a bug.
 */
export class JsonFields {
  constructor(readonly file: string) {}

  fail(where: string, problem: string): never {
    throw new UsageError(`${this.file}: ${where} ${problem}; use the tokenizer files from the model's hub repository`);
  }

  object(value: unknown, where: string): JsonObject {
    if (typeof value !== "object" || value === null || Array.isArray(value)) this.fail(where, "must be an object");
    return value as JsonObject;
  }

  array(value: unknown, where: string): unknown[] {
    if (!Array.isArray(value)) this.fail(where, "must be an array");
    return value;
  }

  string(value: unknown, where: string): string {
    if (typeof value !== "string") this.fail(where, "must be a string");
    return value;
  }

  integer(value: unknown, where: string): number {
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0) this.fail(where, "must be a non-negative integer");
    return value;
  }

  number(value: unknown, where: string): number {
    if (typeof value !== "number" || !Number.isFinite(value)) this.fail(where, "must be a finite number");
    return value;
  }

  boolean(value: unknown, where: string, fallback: boolean): boolean {
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "boolean") this.fail(where, "must be true or false");
    return value;
  }
}
