// Every client watches its owner's lease (pid + start time) and keeps the owner's storage
// candidate fresh. When the owner dies, its standby normally takes over within milliseconds; the
// clients give it a moment, then elect one of them (the spawn lock) to reclaim what the owner left
// and start a new owner, which takes the dead owner's candidate over in place. No client ever
// serves storage itself, so no two processes ever have the database files open.
import { utimesSync } from "node:fs";
import path from "node:path";
import { liveness } from "../process-info.js";
import { type OwnerRecord, readOwner, readStandby, type RootPaths } from "../records.js";
import { assessOwnerNow, reclaimDeadOwner, spawnOwner } from "../owner/lifecycle.js";
import { tryAcquireSpawnLock } from "../owner/spawn-lock.js";
import { ownerTimings } from "../environment.js";

const WATCH_INTERVAL_MS = 50;
/** Below miniflare's 10 s staleness for storage candidates, with room for a busy machine. */
const CANDIDATE_REFRESH_MS = 2000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function watchOwner(
  paths: RootPaths,
  registryPath: string,
  initial: OwnerRecord,
  say: (message: string) => void,
): void {
  let owner = initial;
  let recovering = false;
  let refreshedAt = 0;
  const timer = setInterval(() => {
    if (recovering) return;
    if (liveness(owner) === "alive") {
      if (Date.now() - refreshedAt >= CANDIDATE_REFRESH_MS) {
        refreshedAt = Date.now();
        keepCandidateFresh(owner);
      }
      return;
    }
    recovering = true;
    void recover(paths, registryPath, owner, say)
      .then((next) => {
        if (next) owner = next;
      })
      .catch((error: unknown) =>
        say(`✘ failover for ${paths.persistRoot} failed: ${String(error)}`),
      )
      .finally(() => {
        recovering = false;
      });
  }, WATCH_INTERVAL_MS);
  timer.unref();
}

/**
 * The owner's lease is its pid. A stopped or very busy owner cannot touch its miniflare
 * candidate file, and every session's miniflare deletes a candidate 10 s after its last touch,
 * which would make a client the owner while the real one still holds the files. So while the
 * owner's pid lives, its clients touch the file for it.
 */
function keepCandidateFresh(owner: OwnerRecord): void {
  if (!owner.candidate) return;
  const now = new Date();
  try {
    utimesSync(path.join(owner.registryPath, owner.candidate), now, now);
  } catch {
    // withdrawn (owner stopping) or not yet written
  }
}

/** A live standby backing the dead owner takes over within ~100 ms; sessions give it this long first. */
const STANDBY_PRIORITY_MS = 3000;

async function recover(
  paths: RootPaths,
  registryPath: string,
  dead: OwnerRecord,
  say: (message: string) => void,
): Promise<OwnerRecord | undefined> {
  const detectedAt = Date.now();
  const deadline = detectedAt + ownerTimings().startTimeoutMs;
  let announced = false;
  while (Date.now() < deadline) {
    const current = readOwner(paths);
    if (current?.ok && current.value.pid !== dead.pid) {
      const { state } = assessOwnerNow(current.value);
      if (state === "running" || state === "stale") {
        say(`storage owner is now pid ${current.value.pid} at ${current.value.debugAddress}`);
        return current.value;
      }
      if (state !== "dead") {
        await sleep(WATCH_INTERVAL_MS);
        continue;
      }
    }
    const standby = readStandby(paths);
    if (
      standby?.ok &&
      standby.value.backs === dead.pid &&
      liveness(standby.value) === "alive" &&
      Date.now() - detectedAt < STANDBY_PRIORITY_MS
    ) {
      await sleep(WATCH_INTERVAL_MS / 2);
      continue;
    }
    const lock = tryAcquireSpawnLock(paths);
    if (lock.release) {
      try {
        const again = readOwner(paths);
        const record = again?.ok ? again.value : undefined;
        if (record === undefined || assessOwnerNow(record).state === "dead") {
          if (!announced)
            say(`storage owner pid ${dead.pid} is gone; this session takes over the election`);
          announced = true;
          if (record) reclaimDeadOwner(paths, record);
          const pid = spawnOwner(paths, registryPath, record?.candidate);
          say(`started storage owner pid ${pid} (log: ${paths.ownerLog})`);
        }
      } finally {
        lock.release();
      }
    }
    await sleep(WATCH_INTERVAL_MS);
  }
  say(
    `✘ no storage owner for ${paths.persistRoot} after ${ownerTimings().startTimeoutMs} ms; see ${paths.ownerLog}`,
  );
  return undefined;
}
