/** What replaces a secret in any text bge prints or stores. */
export const REDACTED = "***";

/**
 * Removes every occurrence of each secret (the HF token) from `text`, and the credentials of any
 * `scheme://user:pass@host` URL in it. Applied to every message that leaves the hub module.
 */
export function redactSecrets(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/gi, `$1${REDACTED}@`);
  for (const s of secrets) {
    if (s && s.length >= 4) out = out.split(s).join(REDACTED);
  }
  return out;
}
