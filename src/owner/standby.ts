// The standby role: a successor booted beside the owner (started by it), serving nobody and
// opening no database file, until the owner it backs dies while clients remain. Then it reclaims
// what the owner left and rewrites the root's candidate in place to point at itself: every
// session's storage calls move in one step.
//
// It learns of the owner's death from a lifeline: its stdin is a pipe from the owner, which the
// kernel closes the instant the owner exits. The owner's pid + start time stay the authority (a
// stopped owner keeps the pipe open and is never replaced); a slow poll is the fallback. Its state
// and timers are fields of `StandbyRole`; `dispose()` clears them.
import { versions } from "../environment.js";
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

/** Without the lifeline (or a stopped owner holding it open), the owner is looked at this often. */
const FALLBACK_POLL_MS = 5000;
/** A standby booting at the same moment as the owner would compete with it (CPU, miniflare's startup lock) and slow the first session's start. */
const BOOT_AFTER_SERVING_MS = 5000;
/** Until the standby is needed, the owner's state is looked at this often. */
const NEED_POLL_MS = 100;
/** After the lifeline closes, the owner's death is looked for this often, for this long. */
const LIFELINE_BURST_MS = 5;
const LIFELINE_BURST_FOR_MS = 1000;
const PROMOTION_LOCK_WAIT_MS = 2000;

export async function runStandby(proc: OwnerProcess): Promise<void> {
  const owner = readOwner(proc.paths);
  if (!owner?.ok || !isAlive(owner.value)) return proc.exit("no owner to back", false);
  const { pid, startTime, started } = owner.value;
  await new StandbyRole(proc, { pid, startTime, started }).run();
}

/**
 * The standby's state and timers. `dispose()` clears every timer and the lifeline's listeners: on
 * the way out (`OwnerProcess.exit`) and when it is promoted, after which the owner role takes over.
 */
class StandbyRole {
  private record: StandbyRecord;
  /** Set once our workerd is up: only then can we take over. */
  private instance?: Instance;
  /** Set once we decided to take over (or to leave): the check is not run again. */
  private promoting = false;
  private poll?: NodeJS.Timeout;
  private lifelineBurst?: NodeJS.Timeout;
  private needPoll?: NodeJS.Timeout;

  constructor(
    private readonly proc: OwnerProcess,
    private readonly backed: ProcessIdentity,
  ) {
    this.record = {
      schema: SCHEMA_VERSION,
      phase: "starting",
      ...proc.identity,
      token: proc.token,
      ...(proc.lifelinePort === undefined ? {} : { lifelinePort: proc.lifelinePort }),
      backs: backed.pid,
      since: new Date().toISOString(),
      versions: versions(),
    };
  }

  async run(): Promise<void> {
    const { proc, backed } = this;
    this.writeRecord({});
    proc.onExit(() => {
      if (proc.role !== "standby") return;
      this.dispose();
      const mine = readStandby(proc.paths);
      if (mine?.ok && mine.value.pid === proc.identity.pid) removeFile(proc.paths.standbyRecord);
    });
    process.stdin.once("end", this.onLifelineClosed).once("error", this.onLifelineClosed).resume();
    this.poll = setInterval(() => proc.step("owner check", this.check), FALLBACK_POLL_MS);

    await this.untilNeeded();
    const ready = (this.instance = proc.instance = await startInstance(proc.paths, proc.identity));
    const recordReady = () =>
      this.writeRecord({
        phase: "ready",
        debugAddress: ready.address.debugAddress,
        instanceId: ready.address.instanceId,
        workerd: ready.workerd,
      });
    recordReady();
    ready.onRestart = () => proc.step("workerd restart", recordReady);
    proc.log(`ready to take over from owner pid ${backed.pid} (at ${ready.address.debugAddress})`);
    this.check(); // the owner may have died while we booted
  }

  /** Our timers and the lifeline's listeners: nothing of the standby runs after this. */
  dispose(): void {
    clearInterval(this.poll);
    clearTimeout(this.lifelineBurst);
    clearInterval(this.needPoll);
    process.stdin.off("end", this.onLifelineClosed).off("error", this.onLifelineClosed);
  }

  private writeRecord(update: Partial<StandbyRecord>): void {
    this.record = { ...this.record, ...update };
    writeRecordAtomic(this.proc.paths.standbyRecord, this.record);
  }

  private readonly check = (): void => {
    const { proc, backed } = this;
    if (proc.shuttingDown || this.promoting || proc.role !== "standby") return;
    const mine = readStandby(proc.paths);
    if (!mine?.ok || mine.value.pid !== proc.identity.pid)
      return void proc.exit("replaced by another standby", false);
    if (isAlive(backed)) return;
    if (!this.instance) {
      // Still booting, perhaps blocked on miniflare's startup lock that the owner died holding.
      const released = releaseStartupLocks(proc.paths, deadInstanceDirs(proc.paths));
      if (released) proc.log(`released ${released}, held by owner pid ${backed.pid} when it died`);
      return; // checked again once up
    }
    this.promoting = true;
    this.dispose();
    if (proc.liveClientCount() === 0)
      return void proc.exit(`owner pid ${backed.pid} left and no client remains`, false);
    promote(proc, this.instance, backed).catch((error: unknown) =>
      proc.exit(`promotion failed: ${String(error)}`, false, 1),
    );
  };

  /**
   * The kernel closes the owner's end of the pipe a moment before /proc shows it dead: on EOF,
   * look again every few ms for a while instead of waiting for the slow poll.
   */
  private readonly onLifelineClosed = (): void => {
    const until = Date.now() + LIFELINE_BURST_FOR_MS;
    const again = () => {
      this.proc.step("owner check", this.check);
      if (!this.promoting && !this.proc.shuttingDown && isAlive(this.backed) && Date.now() < until)
        this.lifelineBurst = setTimeout(again, LIFELINE_BURST_MS);
    };
    again();
  };

  /**
   * Waits until the standby is needed: the owner serves and the first session's workerd is up (its
   * storage candidate appears), or 5 s after the owner serves, or at once when the owner dies.
   * miniflare's code loads after that, in `startInstance`: loaded at once, its ~200 ms of CPU ran
   * beside the first session's own Miniflare start (the owner starts us as it serves) and slowed
   * that start on 2 cores. Never settles once disposed (we are exiting).
   */
  private untilNeeded(): Promise<void> {
    return new Promise((resolve, reject) => {
      const look = () => {
        let needed: boolean;
        try {
          needed = this.needed();
        } catch (error) {
          needed = true;
          reject(error instanceof Error ? error : new Error(String(error)));
        }
        if (!needed) return;
        clearInterval(this.needPoll);
        resolve(); // a no-op after reject
      };
      this.needPoll = setInterval(look, NEED_POLL_MS);
      look();
    });
  }

  private needed(): boolean {
    const { proc, backed } = this;
    if (!isAlive(backed)) return true;
    const owner = readOwner(proc.paths);
    if (owner?.ok && owner.value.pid === backed.pid && owner.value.phase === "running") {
      const ours = ownerCandidateName(proc.persistRoot);
      const sessionUp = storageCandidates(proc.registryPath, proc.persistRoot).some(
        (c) => c.name !== ours,
      );
      return sessionUp || Date.now() - Date.parse(owner.value.startedAt) > BOOT_AFTER_SERVING_MS;
    }
    return false;
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
