// The standby role: a successor booted beside the owner (started by it), serving nobody and
// opening no database file, until the owner it backs dies while clients remain. Then it reclaims
// what the owner left and rewrites the root's candidate in place to point at itself: every
// session's storage calls move in one step.
//
// It learns of the owner's death from a lifeline: its stdin is a pipe from the owner, which the
// kernel closes the instant the owner exits. The owner's pid + start time stay the authority (a
// stopped owner keeps the pipe open and is never replaced); a slow poll is the fallback.
import { sleep } from "../wait.js";
import { requireMiniflare, versions } from "../environment.js";
import { ownerCandidateName, storageCandidates } from "../storage-candidate.js";
import { isAlive, type ProcessIdentity } from "../process-info.js";
import {
  readOwner,
  readStandby,
  removeFile,
  SCHEMA_VERSION,
  type StandbyRecord,
  writeRecordAtomic,
} from "../records.js";
import { deadInstanceDirs, releaseStartupLocks, startInstance, type Instance } from "./instance.js";
import { refuses } from "../lifeline.js";
import { serve } from "./owner.js";
import type { OwnerProcess } from "./process.js";
import { replaceDeadOwnerWithin } from "./succession.js";

const FALLBACK_POLL_MS = 5000;
const PROMOTION_LOCK_WAIT_MS = 2000;

export async function runStandby(proc: OwnerProcess): Promise<void> {
  const owner = readOwner(proc.paths);
  if (!owner?.ok || !isAlive(owner.value)) return proc.exit("no owner to back", false);
  const { pid, startTime, started } = owner.value;
  const backed: ProcessIdentity = { pid, startTime, started };
  let standby: StandbyRecord = {
    schema: SCHEMA_VERSION,
    phase: "starting",
    ...proc.identity,
    token: proc.token,
    ...(proc.lifelinePort === undefined ? {} : { lifelinePort: proc.lifelinePort }),
    backs: backed.pid,
    since: new Date().toISOString(),
    versions: versions(),
  };
  const writeRecord = (update: Partial<StandbyRecord>) => {
    standby = { ...standby, ...update };
    writeRecordAtomic(proc.paths.standbyRecord, standby);
  };
  writeRecord({});
  proc.onExit(() => {
    if (proc.role !== "standby") return;
    const mine = readStandby(proc.paths);
    if (mine?.ok && mine.value.pid === proc.identity.pid) removeFile(proc.paths.standbyRecord);
  });

  let instance: Instance | undefined;
  let promoting = false;
  const check = () => {
    if (proc.shuttingDown || promoting || proc.role !== "standby") return;
    const mine = readStandby(proc.paths);
    if (!mine?.ok || mine.value.pid !== proc.identity.pid)
      return void proc.exit("replaced by another standby", false);
    if (isAlive(backed)) return;
    if (!instance) {
      // Still booting, perhaps blocked on miniflare's startup lock that the owner died holding.
      const released = releaseStartupLocks(proc.paths, deadInstanceDirs(proc.paths));
      if (released) proc.log(`released ${released}, held by owner pid ${backed.pid} when it died`);
      return; // checked again once up
    }
    promoting = true;
    clearInterval(poll);
    if (proc.liveClientCount() === 0)
      return void proc.exit(`owner pid ${backed.pid} left and no client remains`, false);
    promote(proc, instance, backed).catch((error: unknown) =>
      proc.exit(`promotion failed: ${String(error)}`, false, 1),
    );
  };
  // The kernel closes the owner's end of the pipe a moment before /proc shows it dead: on EOF,
  // look again every few ms for a while instead of waiting for the slow poll.
  const onLifelineClosed = () => {
    const until = Date.now() + 1000;
    const again = () => {
      proc.step("owner check", check);
      if (!promoting && !proc.shuttingDown && isAlive(backed) && Date.now() < until)
        setTimeout(again, 5);
    };
    again();
  };
  process.stdin.once("end", onLifelineClosed).once("error", onLifelineClosed).resume();
  const poll = setInterval(() => proc.step("owner check", check), FALLBACK_POLL_MS);

  await untilNeeded(proc, backed);
  instance = proc.instance = await startInstance(proc.paths, proc.identity);
  const ready = instance;
  const recordReady = () =>
    writeRecord({
      phase: "ready",
      debugAddress: ready.address.debugAddress,
      instanceId: ready.address.instanceId,
      workerd: ready.workerd,
    });
  recordReady();
  ready.onRestart = () => proc.step("workerd restart", recordReady);
  proc.log(`ready to take over from owner pid ${backed.pid} (at ${ready.address.debugAddress})`);
  check(); // the owner may have died while we booted
}

/** A standby booting at the same moment as the owner would compete with it (CPU, miniflare's startup lock) and slow the first session's start. */
const BOOT_AFTER_SERVING_MS = 5000;

/**
 * Waits, with node and miniflare's code already loaded, until the standby is needed: the owner
 * serves and the first session's workerd is up (its storage candidate appears), or 5 s after the
 * owner serves, or at once when the owner dies.
 */
async function untilNeeded(proc: OwnerProcess, backed: ProcessIdentity): Promise<void> {
  requireMiniflare();
  const ours = ownerCandidateName(proc.persistRoot);
  for (;;) {
    if (!isAlive(backed)) return;
    const owner = readOwner(proc.paths);
    if (owner?.ok && owner.value.pid === backed.pid && owner.value.phase === "running") {
      const sessionUp = storageCandidates(proc.registryPath, proc.persistRoot).some(
        (c) => c.name !== ours,
      );
      if (sessionUp || Date.now() - Date.parse(owner.value.startedAt) > BOOT_AFTER_SERVING_MS)
        return;
    }
    await sleep(100);
  }
}

/** The owner we back is gone and clients remain: reclaim what it left and serve in its place. */
async function promote(
  proc: OwnerProcess,
  instance: Instance,
  backed: ProcessIdentity,
): Promise<void> {
  proc.log(`owner pid ${backed.pid} is gone; taking over`);
  const outcome = await replaceDeadOwnerWithin(
    proc.paths,
    proc.registryPath,
    {
      start: () => {
        removeFile(proc.paths.standbyRecord);
        serve(proc, instance);
      },
      workerdExitMs: 5000,
      // Without a process table, its workerd's port closing shows it exited before init reaps it.
      groupExited: (dead) =>
        dead.debugAddress === undefined ? Promise.resolve(false) : refuses(dead.debugAddress),
    },
    PROMOTION_LOCK_WAIT_MS,
  );
  for (const note of outcome.notes) proc.log(note);
  switch (outcome.kind) {
    case "busy":
      return proc.exit(`a session holds the election (${outcome.heldBy}); standing down`, false);
    case "taken":
      return proc.exit(`owner pid ${outcome.owner.pid} already took over`, false);
    case "lingering":
      // Serving now would make two holders; the sessions' election retries the reclaim.
      return proc.exit(
        `workerd ${outcome.pids.join(", ")} of the dead owner did not exit within 5 s; standing down`,
        false,
      );
    case "replaced":
      return;
  }
}
