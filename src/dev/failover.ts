// What a client session does after it joined: keep the root's storage candidate fresh, always,
// and notice when its owner's lease (pid + start time) ends. The owner's standby normally takes
// over within milliseconds by rewriting that candidate in place; sessions do nothing for it. When
// there is no standby (or it does not take over within its priority window), the sessions elect
// one of them (the spawn lock) to reclaim what the owner left and start a new owner, by the same
// rules as the first election (owner/succession.ts), its limit of three owner starts included
// (owner/start-attempts.ts). No session ever serves storage itself: however long a failover
// takes, the candidate stays the oldest.
import { liveness } from "../process-info.js";
import type { OwnerRecord, RootPaths } from "../records.js";
import { decide, Election, observe } from "../owner/succession.js";
import { tailOfLog } from "../owner/spawn.js";
import { tooManyOwnerStarts } from "../owner/start-attempts.js";
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
/**
 * After recovery gave up (three owners died starting), how long before this session elects again:
 * a cause that passes (a port, a full disk) heals without a restart, a lasting one costs three
 * owner starts per period, not a loop.
 */
export const GAVE_UP_RETRY_MS = 30_000;

/**
 * One session's watch over one root's owner. Its timers (unref'd) and lifeline are fields,
 * released by `dispose()`, which the session's exit path calls (`Session.dispose`, preload.ts).
 */
export class OwnerWatch {
  private owner: OwnerRecord;
  private recovering = false;
  /** Recovery ended by the three-start rule: no owner start from this session before then. */
  private gaveUpUntil = 0;
  private disposed = false;
  /** The lifeline we hold, to whom: at most one, to the current owner. */
  private lifeline: { pid: number; drop: () => void } | undefined;
  /** After a lifeline closed under a live owner, no new one before this (no reconnect loop). */
  private lifelineRetryAt = 0;
  private readonly interval: NodeJS.Timeout;
  /** Quick looks after a lifeline closed (LOST_LIFELINE_RECHECK_MS). */
  private readonly rechecks = new Set<NodeJS.Timeout>();

  constructor(
    private readonly paths: RootPaths,
    private readonly registryPath: string,
    initial: OwnerRecord,
    private readonly say: (message: string) => void,
  ) {
    this.owner = initial;
    // A stopped or very busy owner cannot touch the candidate, a dead one never will, and every
    // session's miniflare deletes a candidate 10 s after its last touch (which would make a session
    // the oldest, and so the holder). So every session touches it, whatever the owner's state.
    keepFresh(registryPath, paths.persistRoot);
    this.check();
    this.interval = setInterval(() => {
      keepFresh(registryPath, paths.persistRoot);
      this.check();
    }, CHECK_INTERVAL_MS);
    this.interval.unref();
  }

  dispose(): void {
    this.disposed = true;
    clearInterval(this.interval);
    for (const timer of this.rechecks) clearTimeout(timer);
    this.rechecks.clear();
    this.lifeline?.drop();
    this.lifeline = undefined;
  }

  private holdLifelineTo(record: OwnerRecord): void {
    if (this.lifeline?.pid === record.pid || Date.now() < this.lifelineRetryAt) return;
    this.lifeline?.drop();
    this.lifeline = undefined;
    // A serving owner's record names its lifeline (an owner of an earlier version's does not).
    const port = record.lifelinePort;
    if (port === undefined) return; // polling alone
    this.lifeline = {
      pid: record.pid,
      drop: holdLifeline(port, () => {
        this.lifeline = undefined;
        this.lifelineRetryAt = Date.now() + CHECK_INTERVAL_MS;
        this.check();
        // A dying process closes its sockets a moment before /proc shows it gone: look again.
        for (const ms of LOST_LIFELINE_RECHECK_MS) {
          const timer = setTimeout(() => {
            this.rechecks.delete(timer);
            this.check();
          }, ms).unref();
          this.rechecks.add(timer);
        }
      }),
    };
  }

  /** After recovery gave up: joins an owner someone else started (by `decide`), starts none. */
  private joinIfServed(): void {
    let decision: ReturnType<typeof decide>;
    try {
      decision = decide(observe(this.paths, this.registryPath));
    } catch (error) {
      // In a timer of the user's process (wrangler, vite): said, never thrown.
      this.say(`✘ failover for ${this.paths.persistRoot} failed: ${String(error)}`);
      return;
    }
    if (decision.kind !== "join") return;
    this.gaveUpUntil = 0;
    this.owner = decision.owner;
    this.say(`storage owner is now pid ${decision.owner.pid} at ${decision.owner.debugAddress}`);
    this.holdLifelineTo(decision.owner);
  }

  private check(): void {
    if (this.disposed || this.recovering) return;
    if (liveness(this.owner) === "alive") return this.holdLifelineTo(this.owner);
    if (Date.now() < this.gaveUpUntil) return this.joinIfServed();
    this.recovering = true;
    this.lifelineRetryAt = 0;
    const election = new Election(this.paths, this.registryPath);
    void recover(election, this.paths, this.owner, this.say)
      .then((outcome) => {
        this.recovering = false;
        if (outcome.kind === "gaveUp") this.gaveUpUntil = Date.now() + GAVE_UP_RETRY_MS;
        if (outcome.kind === "served") {
          this.owner = outcome.owner;
          this.check(); // a lifeline to the new owner
        }
      })
      .catch((error: unknown) => {
        this.recovering = false;
        this.say(`✘ failover for ${this.paths.persistRoot} failed: ${String(error)}`);
      });
  }
}

/** What recovery needs of an election: its steps (`Election.step`). */
export type ElectionSteps = Pick<Election, "step">;

export type Recovery =
  | { kind: "served"; owner: OwnerRecord }
  /** No owner within WRANGLER_X_OWNER_START_TIMEOUT_MS: the next check elects again. */
  | { kind: "timeout" }
  /** The first election's three-start rule (`tooManyOwnerStarts`): no start for GAVE_UP_RETRY_MS. */
  | { kind: "gaveUp" };

/**
 * One failover election after `dead` died, by the first election's rules: its decisions
 * (`Election.step`), its bound (WRANGLER_X_OWNER_START_TIMEOUT_MS) and its limit of owner starts.
 */
export async function recover(
  election: ElectionSteps,
  paths: RootPaths,
  dead: OwnerRecord,
  say: (message: string) => void,
): Promise<Recovery> {
  const deadline = Date.now() + ownerTimings().startTimeoutMs;
  let refused: string | undefined;
  let starts = 0;
  while (Date.now() < deadline) {
    const notes: string[] = [];
    const tooMany = tooManyOwnerStarts(starts);
    const step = election.step(notes, { mayStart: tooMany === undefined });
    if (step.kind === "exhausted") {
      say(
        `✘ ${tooMany}; this session starts no further owner for ${paths.persistRoot} for ` +
          `${GAVE_UP_RETRY_MS / 1000} s (it joins one that another session starts meanwhile). ` +
          `Owner log ${paths.ownerLog}:\n${tailOfLog(paths.ownerLog)}`,
      );
      return { kind: "gaveUp" };
    }
    if (step.kind === "ready") {
      if (step.owner.pid !== dead.pid)
        say(`storage owner is now pid ${step.owner.pid} at ${step.owner.debugAddress}`);
      return { kind: "served", owner: step.owner };
    }
    if (step.kind === "spawned") {
      say(`storage owner pid ${dead.pid} is gone; this session takes over the election`);
      for (const note of notes) say(note);
      say(`started storage owner pid ${step.pid} (log: ${paths.ownerLog})`);
      starts++;
    } else if (step.kind === "refused" && step.message !== refused) {
      // This session's storage cannot reach that owner (another registry or version). Said once;
      // the session keeps failing storage calls rather than serve them itself.
      refused = step.message;
      say(`✘ ${step.message} Restart this session with the same settings.`);
      if (step.owner) return { kind: "served", owner: step.owner };
    }
    await sleep(RECOVER_INTERVAL_MS);
  }
  say(
    `✘ no storage owner for ${paths.persistRoot} after ${ownerTimings().startTimeoutMs} ms; see ${paths.ownerLog}`,
  );
  return { kind: "timeout" };
}
