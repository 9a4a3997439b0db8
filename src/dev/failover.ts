// What a client session does after it joined: keep the root's storage candidate fresh, always,
// and notice when its owner's lease (pid + start time) ends. The owner's standby normally takes
// over within milliseconds by rewriting that candidate in place; sessions do nothing for it. When
// there is no standby (or it does not take over within its priority window), the sessions elect
// one of them (the spawn lock) to reclaim what the owner left and start a new owner, by the same
// rules as the first election (owner/succession.ts). No session
// ever serves storage itself: however long a failover takes, the candidate stays the oldest.
import { liveness } from "../process-info.js";
import type { OwnerRecord, RootPaths } from "../records.js";
import { Election } from "../owner/succession.js";
import { ownerTimings } from "../environment.js";
import { keepFresh } from "../storage-candidate.js";
import { holdLifeline } from "../lifeline.js";
import { sleep } from "../wait.js";

/**
 * How often a session checks its owner's lease and touches the candidate. The owner's lifeline
 * (src/lifeline.ts) wakes it at once when the owner dies; the standby does not wait for either.
 */
const CHECK_INTERVAL_MS = 2000;
/** After a lifeline closed, the lease is checked again this soon (then every CHECK_INTERVAL_MS). */
const LOST_LIFELINE_RECHECK_MS = [20, 100, 400];
/** While recovering, how often to look again. */
const RECOVER_INTERVAL_MS = 50;

export function watchOwner(
  paths: RootPaths,
  registryPath: string,
  initial: OwnerRecord,
  say: (message: string) => void,
): void {
  let owner = initial;
  let recovering = false;
  /** The lifeline we hold, to whom: at most one, to the current owner. */
  let lifeline: { pid: number; drop: () => void } | undefined;

  /** After a lifeline closed under a live owner, no new one before this (no reconnect loop). */
  let lifelineRetryAt = 0;

  const holdLifelineTo = (record: OwnerRecord) => {
    if (lifeline?.pid === record.pid || Date.now() < lifelineRetryAt) return;
    lifeline?.drop();
    lifeline = undefined;
    // A serving owner's record names its lifeline (an owner of an earlier version's does not).
    const port = record.lifelinePort;
    if (port === undefined) return; // polling alone
    lifeline = {
      pid: record.pid,
      drop: holdLifeline(port, () => {
        lifeline = undefined;
        lifelineRetryAt = Date.now() + CHECK_INTERVAL_MS;
        check();
        // A dying process closes its sockets a moment before /proc shows it gone: look again.
        for (const ms of LOST_LIFELINE_RECHECK_MS) setTimeout(check, ms).unref();
      }),
    };
  };

  const check = () => {
    if (recovering) return;
    if (liveness(owner) === "alive") return holdLifelineTo(owner);
    recovering = true;
    lifelineRetryAt = 0;
    void recover(paths, registryPath, owner, say)
      .then((next) => {
        recovering = false;
        if (next) {
          owner = next;
          check(); // a lifeline to the new owner
        }
      })
      .catch((error: unknown) => {
        recovering = false;
        say(`✘ failover for ${paths.persistRoot} failed: ${String(error)}`);
      });
  };

  // A stopped or very busy owner cannot touch the candidate, a dead one never will, and every
  // session's miniflare deletes a candidate 10 s after its last touch (which would make a session
  // the oldest, and so the holder). So every session touches it, whatever the owner's state.
  keepFresh(registryPath, paths.persistRoot);
  check();
  const timer = setInterval(() => {
    keepFresh(registryPath, paths.persistRoot);
    check();
  }, CHECK_INTERVAL_MS);
  timer.unref();
}

async function recover(
  paths: RootPaths,
  registryPath: string,
  dead: OwnerRecord,
  say: (message: string) => void,
): Promise<OwnerRecord | undefined> {
  const election = new Election(paths, registryPath);
  const deadline = Date.now() + ownerTimings().startTimeoutMs;
  let refused: string | undefined;
  while (Date.now() < deadline) {
    const notes: string[] = [];
    const step = election.step(notes);
    if (step.kind === "ready") {
      if (step.owner.pid !== dead.pid)
        say(`storage owner is now pid ${step.owner.pid} at ${step.owner.debugAddress}`);
      return step.owner;
    }
    if (step.kind === "spawned") {
      say(`storage owner pid ${dead.pid} is gone; this session takes over the election`);
      for (const note of notes) say(note);
      say(`started storage owner pid ${step.pid} (log: ${paths.ownerLog})`);
    } else if (step.kind === "refused" && step.message !== refused) {
      // This session's storage cannot reach that owner (another registry or version). Said once;
      // the session keeps failing storage calls rather than serve them itself.
      refused = step.message;
      say(`✘ ${step.message} Restart this session with the same settings.`);
      if (step.owner) return step.owner;
    }
    await sleep(RECOVER_INTERVAL_MS);
  }
  say(
    `✘ no storage owner for ${paths.persistRoot} after ${ownerTimings().startTimeoutMs} ms; see ${paths.ownerLog}`,
  );
  return undefined;
}
