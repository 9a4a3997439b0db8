// Renames and removals that Windows fails for a moment: a rename over (or of) a file another
// process has open — a standby reading the record, Defender, the search indexer — fails with
// EPERM/EACCES/EBUSY, and removing a directory whose workerd is still exiting fails with EBUSY
// or ENOTEMPTY. A few short retries get through; a lasting error still surfaces, naming the path.
// (On Linux and macOS these codes are lasting, and the retries cost at most ~150 ms once.)
// The file operations are a parameter, so that tests inject the failures without touching node:fs.
import { errnoCode } from "./errors.js";
import { sleepSync } from "./wait.js";
import { renameSync, rmSync } from "node:fs";

export interface RetryPolicy {
  /** Tries in all, the first included. */
  attempts: number;
  /** Wait before the second try; each later wait is one more of it (linear, as rmSync's own). */
  delayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, delayMs: 15 };

export const TRANSIENT_RENAME_CODES: ReadonlySet<string> = new Set(["EPERM", "EACCES", "EBUSY"]);
export const TRANSIENT_RM_CODES: ReadonlySet<string> = new Set([
  "EBUSY",
  "ENOTEMPTY",
  "EPERM",
  "EACCES",
]);

/**
 * Runs `operation` until it succeeds, retrying only `transient` error codes, at most
 * `policy.attempts` times. The last error is rethrown with `what` (naming the paths) in its
 * message and its code kept.
 */
export function retrySync<T>(
  what: string,
  operation: () => T,
  transient: ReadonlySet<string>,
  policy: RetryPolicy = DEFAULT_RETRY,
  sleep: (ms: number) => void = sleepSync,
): T {
  for (let attempt = 1; ; attempt++) {
    try {
      return operation();
    } catch (error) {
      const code = errnoCode(error);
      if (code === undefined || !transient.has(code) || attempt >= policy.attempts) {
        const tries = attempt > 1 ? ` (${attempt} tries)` : "";
        const message = `cannot ${what}${tries}: ${(error as Error).message ?? String(error)}`;
        throw Object.assign(new Error(message, { cause: error }), { code });
      }
      sleep(policy.delayMs * attempt);
    }
  }
}

export interface RenameIo {
  rename: (from: string, to: string) => void;
  sleep?: (ms: number) => void;
}

/** `renameSync`, retried while Windows holds either path for a moment. */
export function renameWithRetrySync(
  from: string,
  to: string,
  io: RenameIo = { rename: renameSync },
  policy: RetryPolicy = DEFAULT_RETRY,
): void {
  retrySync(
    `rename ${from} to ${to}`,
    () => io.rename(from, to),
    TRANSIENT_RENAME_CODES,
    policy,
    io.sleep,
  );
}

export interface RemoveIo {
  rm: (target: string, options: { recursive: boolean; force: boolean; maxRetries: number }) => void;
  sleep?: (ms: number) => void;
}

/**
 * `rm -rf`, retried while a file in it is busy. rmSync retries EBUSY/ENOTEMPTY/EPERM itself
 * inside a recursive removal (`maxRetries`); the outer retry covers the top-level entry and
 * EACCES, which it does not retry.
 */
export function removeTreeWithRetrySync(
  target: string,
  io: RemoveIo = { rm: rmSync },
  policy: RetryPolicy = DEFAULT_RETRY,
): void {
  retrySync(
    `remove ${target}`,
    () => io.rm(target, { recursive: true, force: true, maxRetries: 2 }),
    TRANSIENT_RM_CODES,
    policy,
    io.sleep,
  );
}

/** Removes one file; false when it was not there. Other errors are retried, then thrown. */
export function removeFileWithRetrySync(
  file: string,
  io: { rm: (file: string) => void; sleep?: (ms: number) => void } = { rm: rmSync },
  policy: RetryPolicy = DEFAULT_RETRY,
): boolean {
  try {
    retrySync(`remove ${file}`, () => io.rm(file), TRANSIENT_RM_CODES, policy, io.sleep);
    return true;
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return false;
    throw error;
  }
}
