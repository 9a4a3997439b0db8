// What a client session does after it joined: keep the root's storage candidate fresh, always,
// and notice when its owner's lease (pid + start time) ends. The owner's standby normally takes
// over within milliseconds by rewriting that candidate in place; sessions do nothing for it. When
// there is no standby (or it does not take over within its priority window), the sessions elect
// one of them (the spawn lock) to reclaim what the owner left and start a new owner. No session
// ever serves storage itself: however long a failover takes, the candidate stays the oldest.
import { liveness, waitUntilGone } from "../process-info.js";
import { type OwnerRecord, readOwner, type RootPaths } from "../records.js";
import {
  assessOwnerNow,
  reclaimDeadOwner,
  registryMismatch,
  spawnOwner,
  standbyTakingOver,
} from "../owner/lifecycle.js";
import { tryAcquireSpawnLock } from "../owner/spawn-lock.js";
import { ownerTimings } from "../environment.js";
import { keepFresh } from "../storage-candidate.js";

/** How often a session checks its owner's lease; the standby does not wait for this. */
const WATCH_INTERVAL_MS = 500;
/** While recovering, how often to look again. */
const RECOVER_INTERVAL_MS = 50;
/** Below miniflare's 10 s staleness for storage candidates, with room for a busy machine. */
const CANDIDATE_REFRESH_MS = 2000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function watchOwner(
  paths: RootPaths,
  registryPath: string,
  initial: OwnerRecord,
  say: (message: string) => void,
): void {
  // A stopped or very busy owner cannot touch the candidate, a dead one never will, and every
  // session's miniflare deletes a candidate 10 s after its last touch (which would make a session
  // the oldest, and so the holder). So every session touches it, whatever the owner's state.
  keepFresh(registryPath, paths.persistRoot);
  const fresh = setInterval(() => keepFresh(registryPath, paths.persistRoot), CANDIDATE_REFRESH_MS);
  fresh.unref();

  let owner = initial;
  let recovering = false;
  const timer = setInterval(() => {
    if (recovering || liveness(owner) === "alive") return;
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

async function recover(
  paths: RootPaths,
  registryPath: string,
  dead: OwnerRecord,
  say: (message: string) => void,
): Promise<OwnerRecord | undefined> {
  const deadline = Date.now() + ownerTimings().startTimeoutMs;
  let announced = false;
  while (Date.now() < deadline) {
    const current = readOwner(paths);
    if (current?.ok && current.value.pid !== dead.pid) {
      const { state } = assessOwnerNow(current.value);
      if (state === "running" || state === "stale") {
        const mismatch = registryMismatch(current.value, registryPath);
        if (mismatch) {
          // Its candidate is in another registry: this session's storage cannot reach it. Said
          // once; the session keeps failing storage calls rather than serve them itself.
          say(`✘ ${mismatch} Restart this session with the same settings.`);
          return current.value;
        }
        say(`storage owner is now pid ${current.value.pid} at ${current.value.debugAddress}`);
        return current.value;
      }
      if (state !== "dead") {
        await sleep(RECOVER_INTERVAL_MS);
        continue;
      }
    }
    if (standbyTakingOver(paths, current?.ok ? current.value : dead)) {
      await sleep(RECOVER_INTERVAL_MS);
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
          const killed = record ? reclaimDeadOwner(paths, registryPath, record).killed : [];
          // Its workerd must have let go of the files before a new owner may open them.
          if (await waitUntilGone(killed)) {
            const pid = spawnOwner(paths, registryPath);
            say(`started storage owner pid ${pid} (log: ${paths.ownerLog})`);
          }
        }
      } finally {
        lock.release();
      }
    }
    await sleep(RECOVER_INTERVAL_MS);
  }
  say(
    `✘ no storage owner for ${paths.persistRoot} after ${ownerTimings().startTimeoutMs} ms; see ${paths.ownerLog}`,
  );
  return undefined;
}
