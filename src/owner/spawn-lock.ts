// The per-persist-root election lock. proper-lockfile does the locking (atomic mkdir, mtime
// refresh, removal on exit); we add a holder record so a lock left by a dead process is
// reclaimed at once instead of waiting out proper-lockfile's mtime staleness.
import { rmSync, statSync } from "node:fs";
import lockfile from "proper-lockfile";
import { errnoCode } from "../errors.js";
import { currentIdentity, liveness } from "../process-info.js";
import { retryWithin, retryWithinSync } from "../wait.js";
import {
  readLockHolder,
  removeFile,
  type RootPaths,
  SCHEMA_VERSION,
  writeRecordAtomic,
} from "../records.js";

/** A holder that has not yet written its record gets this long before its lock counts as stale. */
const UNRECORDED_HOLDER_GRACE_MS = 3000;

export type Release = () => void;

export interface LockAttempt {
  release?: Release;
  /** Why the lock was not acquired, for messages while waiting. */
  heldBy?: string;
  /** A stale lock that this attempt removed. */
  reclaimed?: string;
}

function lockOptions(paths: RootPaths) {
  return {
    lockfilePath: paths.spawnLock,
    realpath: false,
    stale: 30_000,
    // A compromised election lock must never crash the session; the election re-checks anyway.
    onCompromised: () => {},
  };
}

/** One non-blocking attempt; callers decide how (sync or async) to wait between attempts. */
export function tryAcquireSpawnLock(paths: RootPaths): LockAttempt {
  let reclaimed: string | undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const unlock = lockfile.lockSync(paths.stateDir, lockOptions(paths));
      writeRecordAtomic(paths.spawnLockHolder, {
        schema: SCHEMA_VERSION,
        ...currentIdentity(),
        acquiredAt: new Date().toISOString(),
      });
      return {
        reclaimed,
        release: () => {
          removeFile(paths.spawnLockHolder);
          try {
            unlock();
          } catch {
            // Already removed (e.g. by `storage-owner gc` after we were presumed dead).
          }
        },
      };
    } catch (error) {
      if (errnoCode(error) !== "ELOCKED") throw error;
      const holder = readLockHolder(paths);
      if (holder?.ok) {
        const state = liveness(holder.value);
        if (state === "alive") return { heldBy: `pid ${holder.value.pid}` };
        reclaimed = `spawn lock ${paths.spawnLock} held by ${state} pid ${holder.value.pid}`;
      } else {
        let ageMs = 0;
        try {
          ageMs = Date.now() - statSync(paths.spawnLock).mtimeMs;
        } catch {
          continue; // released between our attempt and now
        }
        if (ageMs < UNRECORDED_HOLDER_GRACE_MS) return { heldBy: "a process that is starting" };
        reclaimed = `spawn lock ${paths.spawnLock} with ${holder ? "an unreadable" : "no"} holder record`;
      }
      removeFile(paths.spawnLockHolder);
      rmSync(paths.spawnLock, { recursive: true, force: true });
    }
  }
  return { heldBy: "another process (contended)", reclaimed };
}

/** Waits (synchronously, bounded) for the lock; for the preload, which runs before wrangler's Miniflare. */
export function acquireSpawnLockSync(paths: RootPaths, timeoutMs: number): Release | undefined {
  return retryWithinSync(() => tryAcquireSpawnLock(paths), hasLock, timeoutMs, 50).release;
}

/** Waits (bounded) for the lock; the attempt returned last says who held it, if it failed. */
export function acquireSpawnLock(
  paths: RootPaths,
  timeoutMs: number,
  intervalMs = 50,
): Promise<LockAttempt> {
  return retryWithin(() => tryAcquireSpawnLock(paths), hasLock, timeoutMs, intervalMs);
}

const hasLock = (lock: LockAttempt) => lock.release !== undefined;
