// Succession of a persist root's owner: who may replace it, and the one critical section that
// does. Every path that replaces an owner goes through `replaceDeadOwner` — a session's election
// before it routes, a session's failover after its owner died, a standby's promotion,
// `storage-owner stop` and `gc`: under the root's election lock, re-read the record; a live
// owner there means someone else took over; a dead one is reclaimed, and its recorded workerd
// killed and waited for (it must let go of the files before anyone opens them); a corrupt one is
// set aside; only then does the successor start. What a session decides before it takes the lock
// is `decide`, pure, from what `observe` read: the same rules for the first election and for a
// failover.
import { ownerTimings, sameVersions, versions } from "../environment.js";
import {
  isAlive,
  killIdentities,
  liveness,
  type ProcessIdentity,
  signalIfOurs,
  waitUntilGone,
  waitUntilGoneSync,
} from "../process-info.js";
import { retryWithin, sleepSync } from "../wait.js";
import {
  listClients,
  type OwnerRecord,
  readOwner,
  type RootPaths,
  type Versions,
} from "../records.js";
import { keepFresh, oursIsOldest } from "../storage-candidate.js";
import {
  assessOwnerNow,
  describeVersions,
  ownerLeftovers,
  type OwnerState,
  registryMismatch,
  sessionsOfAnotherRegistry,
  standbyTakingOver,
} from "./assessment.js";
import { type ReclaimReport, reclaimDeadOwner, setAsideCorrupt } from "./reclaim.js";
import { spawnOwner, startOwnerRecorded, tailOfLog } from "./spawn.js";
import { tooManyOwnerStarts } from "./start-attempts.js";
import { tryAcquireSpawnLock } from "./spawn-lock.js";

/** What a session sees of the root's owner, read by `observe`: everything `decide` needs. */
export type ElectionView =
  | { kind: "none"; otherRegistry?: string }
  | { kind: "corrupt"; problem: string; otherRegistry?: string }
  | {
      kind: "owner";
      owner: OwnerRecord;
      state: OwnerState;
      /** Set when the owner serves through another dev registry than the session's. */
      registryMismatch?: string;
      sameVersions: boolean;
      /** For a serving owner of our versions: the root's candidate is fresh and the oldest. */
      candidateReady?: boolean;
      /** For a dead owner: the pid of a live standby that still has the right to take over. */
      standby?: number;
      /** For a dead owner without such a standby: live sessions of another registry, if any. */
      otherRegistry?: string;
    };

export type Decision =
  | { kind: "join"; owner: OwnerRecord }
  | { kind: "wait"; reason: string }
  | { kind: "refuse"; message: string; owner?: OwnerRecord }
  /** An owner of another version serves: stop it once no session of its version is left. */
  | { kind: "retire"; owner: OwnerRecord }
  /** No owner, or a dead one nobody else takes over: take the lock and start a successor. */
  | { kind: "replace" };

/** Pure: what a session does next about the root's owner. */
export function decide(view: ElectionView): Decision {
  if (view.kind === "owner") {
    const { owner, state } = view;
    if (state === "running" || state === "stale") {
      if (view.registryMismatch) return { kind: "refuse", message: view.registryMismatch, owner };
      if (!view.sameVersions) return { kind: "retire", owner };
      // Join only through the root's candidate, fresh and the oldest: a stopped owner's candidate
      // may have expired (miniflare drops one untouched for 10 s), and a session that builds its
      // Miniflare then would be the oldest candidate, and open the files.
      if (!view.candidateReady)
        return {
          kind: "wait",
          reason: `owner pid ${owner.pid}'s storage candidate is missing or not the oldest (${state === "stale" ? "the owner is stopped or hung" : "it republishes it within 2 s"})`,
        };
      return { kind: "join", owner };
    }
    if (state === "starting" || state === "stopping")
      return { kind: "wait", reason: `owner pid ${owner.pid} is ${state}` };
    if (view.standby !== undefined)
      return { kind: "wait", reason: `standby pid ${view.standby} is taking over` };
  }
  if (view.otherRegistry) return { kind: "refuse", message: view.otherRegistry };
  return { kind: "replace" };
}

/** Reads what `decide` needs; touches the root's candidate when it judges a serving owner. */
export function observe(paths: RootPaths, registryPath: string): ElectionView {
  const current = readOwner(paths);
  if (current === undefined)
    return { kind: "none", otherRegistry: sessionsOfAnotherRegistry(paths, registryPath) };
  if (!current.ok)
    return {
      kind: "corrupt",
      problem: current.problem,
      otherRegistry: sessionsOfAnotherRegistry(paths, registryPath),
    };
  const owner = current.value;
  const { state } = assessOwnerNow(owner);
  const same = sameVersions(owner.versions, versions());
  if (state === "running" || state === "stale") {
    const mismatch = registryMismatch(owner, registryPath);
    const candidateReady =
      !mismatch && same
        ? keepFresh(registryPath, paths.persistRoot) &&
          oursIsOldest(registryPath, paths.persistRoot)
        : undefined;
    return {
      kind: "owner",
      owner,
      state,
      registryMismatch: mismatch,
      sameVersions: same,
      candidateReady,
    };
  }
  if (state !== "dead") return { kind: "owner", owner, state, sameVersions: same };
  const standby = standbyTakingOver(paths, owner);
  return {
    kind: "owner",
    owner,
    state,
    sameVersions: same,
    standby,
    otherRegistry:
      standby === undefined ? sessionsOfAnotherRegistry(paths, registryPath) : undefined,
  };
}

export interface Successor {
  /** Starts the successor under the lock (spawns an owner, or a standby serves); none: reclaim only. */
  start?: () => number | void;
  /** Decided under the lock: withdraw the root's candidate too (only with no session left). */
  withdrawCandidate?: () => boolean;
  /** How long a dead owner's SIGKILLed workerd may take to exit before the successor gives up. */
  workerdExitMs?: number;
  /**
   * For the async wait only, without a process table: whether the dead owner's process group has
   * exited (its workerd's debug port refusing connections) before init reaps it.
   */
  groupExited?: (dead: OwnerRecord) => Promise<boolean>;
}

export type SuccessionOutcome = { notes: string[] } & (
  | { kind: "busy"; heldBy: string }
  /** A live owner holds the record: someone else took over (or it never died). */
  | { kind: "taken"; owner: OwnerRecord; state: OwnerState }
  /** The dead owner's workerd has not exited: starting a successor would make two holders. */
  | { kind: "lingering"; dead: OwnerRecord; pids: number[] }
  | {
      kind: "replaced";
      dead?: OwnerRecord;
      reclaimed?: ReclaimReport;
      /** Where a corrupt record was moved aside (`owner.json.corrupt-<time>`). */
      setAside?: string;
      started?: number;
    }
);

/** What the critical section waits for, still holding the lock: a dead owner's killed workerd. */
interface WaitForExit {
  killed: ProcessIdentity[];
  dead: OwnerRecord;
}

/**
 * The critical section of every succession (see the header); one attempt at the lock. Written
 * once, as a generator: it yields where it must wait for the dead owner's workerd to exit, and
 * its two drivers wait synchronously (the preload's election) or on the event loop.
 */
function* criticalSection(
  paths: RootPaths,
  registryPath: string,
  successor: Successor,
): Generator<WaitForExit, SuccessionOutcome, boolean> {
  const notes: string[] = [];
  const lock = tryAcquireSpawnLock(paths);
  if (lock.reclaimed) notes.push(`reclaimed ${lock.reclaimed}`);
  if (!lock.release) return { kind: "busy", heldBy: lock.heldBy ?? "another process", notes };
  try {
    const again = readOwner(paths);
    let dead: OwnerRecord | undefined;
    let reclaimed: ReclaimReport | undefined;
    let setAside: string | undefined;
    if (again?.ok) {
      const { state } = assessOwnerNow(again.value);
      if (state !== "dead") return { kind: "taken", owner: again.value, state, notes };
      dead = again.value;
      reclaimed = reclaimDeadOwner(paths, registryPath, dead, {
        withdrawCandidate: successor.withdrawCandidate?.() ?? false,
      });
      const pids = reclaimed.killed.map((w) => w.pid);
      // Its workerd must have let go of the files before a successor may open them.
      if (!(yield { killed: reclaimed.killed, dead }))
        return { kind: "lingering", dead, pids, notes };
      notes.push(
        `reclaimed dead owner pid ${dead.pid}` +
          (pids.length ? ` (killed its workerd ${pids.join(", ")})` : ""),
        ...reclaimed.ignored,
      );
    } else if (again && !again.ok) {
      setAside = setAsideCorrupt(paths.ownerRecord);
      notes.push(`${again.problem}; moved it to ${setAside}`);
    }
    const started = successor.start?.();
    return { kind: "replaced", dead, reclaimed, setAside, started: started ?? undefined, notes };
  } finally {
    lock.release();
  }
}

/** The critical section, waiting synchronously: for the preload's election. */
export function replaceDeadOwner(
  paths: RootPaths,
  registryPath: string,
  successor: Successor = {},
): SuccessionOutcome {
  const section = criticalSection(paths, registryPath, successor);
  let step = section.next();
  while (!step.done)
    step = section.next(waitUntilGoneSync(step.value.killed, successor.workerdExitMs ?? 2000));
  return step.value;
}

/** The critical section on the event loop, retrying while another process holds the lock. */
export async function replaceDeadOwnerWithin(
  paths: RootPaths,
  registryPath: string,
  successor: Successor,
  timeoutMs: number,
  intervalMs = 20,
): Promise<SuccessionOutcome> {
  const attempt = async () => {
    const section = criticalSection(paths, registryPath, successor);
    let step = section.next();
    while (!step.done) {
      const { killed, dead } = step.value;
      const groupExited = successor.groupExited && (() => successor.groupExited!(dead));
      step = section.next(
        await waitUntilGone(killed, successor.workerdExitMs ?? 2000, groupExited),
      );
    }
    return step.value;
  };
  return retryWithin(attempt, (outcome) => outcome.kind !== "busy", timeoutMs, intervalMs);
}

export class OwnerElectionError extends Error {}

export type ElectionStep =
  | { kind: "ready"; owner: OwnerRecord }
  | { kind: "wait"; reason: string }
  | { kind: "refused"; message: string; owner?: OwnerRecord }
  | { kind: "spawned"; pid: number }
  /** The owner is dead and must be replaced, but the caller may start no more (`mayStart`). */
  | { kind: "exhausted" };

/** How long an owner of another version gets to exit after SIGTERM before it is killed. */
export const RETIRE_TIMEOUT_MS = 10_000;

/** What `Election.retire` reads about an owner of another version: everything `retirement` needs. */
export interface RetireView {
  owner: OwnerRecord;
  persistRoot: string;
  /** This session's versions. */
  ours: Versions;
  /** Live sessions of the owner's versions other than this one: they still use it. */
  itsClients: { worker: string; pid: number }[];
  /** How long ago this election sent it SIGTERM; undefined until it did. */
  askedMsAgo?: number;
  /**
   * Whether the live process at its pid is proven to be it (pid + recorded start time, as
   * `signalIfOurs` checks): only a proven owner is ever signalled. Read only where it decides
   * (the election passes a getter: each read is a fresh look at the process table).
   */
  readonly proof: "proven" | "unproven" | "gone";
}

export type RetireAction =
  | { kind: "refuse"; message: string }
  /** SIGTERM it (proven), noting why; then wait for it to exit. */
  | { kind: "terminate"; note: string }
  /** It had RETIRE_TIMEOUT_MS: SIGKILL it and its recorded workerd (each proven); then wait. */
  | { kind: "kill" }
  | { kind: "wait" };

/**
 * Pure: what an election does about an owner of another package/miniflare/workerd version. Two
 * versions must never open the same files: while sessions of its version use it, refuse; once
 * none remains, stop it (SIGTERM, then SIGKILL after RETIRE_TIMEOUT_MS) and let the election go on.
 * Nothing is signalled unless its record proves which process it is.
 */
export function retirement(view: RetireView): RetireAction {
  const { owner, persistRoot, itsClients } = view;
  const mismatch =
    `the storage owner for ${persistRoot} (pid ${owner.pid}) runs ${describeVersions(owner.versions)}, ` +
    `this session runs ${describeVersions(view.ours)}`;
  if (itsClients.length > 0)
    return {
      kind: "refuse",
      message:
        `${mismatch}. Two versions must never open the same files, and ${itsClients.length} session(s) of its version ` +
        `still use it (${itsClients.map((c) => `${c.worker} pid ${c.pid}`).join(", ")}). Stop them, or use the same ` +
        `version of this package in every project that shares ${persistRoot}.`,
    };
  if (view.askedMsAgo === undefined) {
    const proof = view.proof;
    if (proof === "unproven")
      return {
        kind: "refuse",
        message: `${mismatch}, and its record does not prove which process it is (no start time); stop it yourself.`,
      };
    if (proof === "gone") return { kind: "wait" }; // exited: the next step replaces it
    return {
      kind: "terminate",
      note: `${mismatch}; no session of its version remains, so it is being stopped`,
    };
  }
  if (view.askedMsAgo > RETIRE_TIMEOUT_MS && view.proof === "proven") return { kind: "kill" };
  return { kind: "wait" };
}

/** As `signalIfOurs` would find it, without signalling. */
function proofOf(owner: OwnerRecord): RetireView["proof"] {
  if (liveness(owner) === "dead") return "gone";
  return killIdentities([owner], true).length > 0 ? "proven" : "unproven";
}

/**
 * One session's election for one root, run before it routes and again when its owner dies.
 * Sync, so the dev preload can run it before wrangler builds its first Miniflare.
 */
export class Election {
  /** Owners of another version this election asked to stop, and when. */
  private readonly retiring = new Map<number, number>();

  constructor(
    readonly paths: RootPaths,
    readonly registryPath: string,
  ) {}

  /** One look and what it decides; `mayStart: false` returns `exhausted` instead of starting an owner. */
  step(notes: string[], { mayStart = true }: { mayStart?: boolean } = {}): ElectionStep {
    const decision = decide(observe(this.paths, this.registryPath));
    switch (decision.kind) {
      case "join":
        return { kind: "ready", owner: decision.owner };
      case "wait":
        return decision;
      case "refuse":
        return { kind: "refused", message: decision.message, owner: decision.owner };
      case "retire":
        return this.retire(decision.owner, notes);
      case "replace": {
        if (!mayStart) return { kind: "exhausted" };
        const outcome = replaceDeadOwner(this.paths, this.registryPath, {
          start: () => spawnOwner(this.paths, this.registryPath),
        });
        notes.push(...outcome.notes);
        switch (outcome.kind) {
          case "busy":
            return { kind: "wait", reason: `election lock held by ${outcome.heldBy}` };
          case "taken":
            return { kind: "wait", reason: `owner pid ${outcome.owner.pid} is ${outcome.state}` };
          case "lingering":
            return {
              kind: "wait",
              reason: `workerd ${outcome.pids.join(", ")} of dead owner pid ${outcome.dead.pid} has not exited yet`,
            };
          case "replaced":
            return { kind: "spawned", pid: outcome.started! };
        }
      }
    }
  }

  /**
   * A head start (src/dev/head-start.ts): an owner is started only where this election's step
   * would start one (no owner, or a dead one nobody else takes over), through the same critical
   * section, and not waited for. Anything else (an owner serving, starting, of another version or
   * registry, the lock held) is left to the election itself. The owner started, or undefined.
   */
  startAhead(notes: string[]): ProcessIdentity | undefined {
    // An owner not dead (serving, starting, stopped) never leads to a start, and judging it would
    // touch its candidate: a stopped owner's, expired, must be dropped before the session elects.
    const current = readOwner(this.paths);
    if (current?.ok && assessOwnerNow(current.value).state !== "dead") return undefined;
    if (decide(observe(this.paths, this.registryPath)).kind !== "replace") return undefined;
    let started: ProcessIdentity | undefined;
    const outcome = replaceDeadOwner(this.paths, this.registryPath, {
      start: () => (started = startOwnerRecorded(this.paths, this.registryPath)).pid,
    });
    notes.push(...outcome.notes);
    return outcome.kind === "replaced" ? started : undefined;
  }

  /**
   * An owner of another version serves this root: what `retirement` decides, done. Every signal
   * is proven again where it is sent (`signalIfOurs`, `killIdentities`: pid + start time).
   */
  private retire(owner: OwnerRecord, notes: string[]): ElectionStep {
    const since = this.retiring.get(owner.pid);
    const action = retirement({
      owner,
      persistRoot: this.paths.persistRoot,
      ours: versions(),
      itsClients: listClients(this.paths).flatMap((c) =>
        c.record.ok &&
        c.record.value.pid !== process.pid &&
        isAlive(c.record.value) &&
        sameVersions(c.record.value.versions, owner.versions)
          ? [c.record.value]
          : [],
      ),
      askedMsAgo: since === undefined ? undefined : Date.now() - since,
      get proof() {
        return proofOf(owner);
      },
    });
    switch (action.kind) {
      case "refuse":
        return { kind: "refused", message: action.message };
      case "terminate":
        // Unproven by now (a race with its exit or the process table): nothing was sent, and
        // the next step decides again.
        if (signalIfOurs(owner, "SIGTERM") === "signalled") {
          notes.push(action.note);
          this.retiring.set(owner.pid, Date.now());
        }
        break;
      case "kill":
        killIdentities([owner, ...ownerLeftovers(owner)]);
        break;
      case "wait":
        break;
    }
    return { kind: "wait", reason: `owner pid ${owner.pid} of another version is stopping` };
  }

  /**
   * Runs the election until an owner serves, bounded by WRANGLER_X_OWNER_START_TIMEOUT_MS.
   * `startedAhead`: the owner this session's head start started, one of the election's starts.
   */
  untilServedSync(log: (message: string) => void, startedAhead?: number): OwnerRecord {
    const { startTimeoutMs } = ownerTimings();
    const deadline = Date.now() + startTimeoutMs;
    let lastReason = "";
    let spawnedPid = startedAhead;
    let spawns = startedAhead === undefined ? 0 : 1;
    for (;;) {
      const notes: string[] = [];
      const tooMany = tooManyOwnerStarts(spawns);
      const step = this.step(notes, { mayStart: tooMany === undefined });
      for (const note of notes) log(note);
      if (step.kind === "ready") return step.owner;
      if (step.kind === "refused") throw new OwnerElectionError(step.message);
      if (step.kind === "exhausted") throw this.startFailure(tooMany!);
      if (step.kind === "spawned") {
        spawnedPid = step.pid;
        spawns++;
        log(
          `started storage owner pid ${step.pid} for ${this.paths.persistRoot} (log: ${this.paths.ownerLog})`,
        );
      } else {
        lastReason = step.reason;
      }
      if (Date.now() > deadline) {
        throw this.startFailure(
          `no storage owner published its address within ${startTimeoutMs} ms (${lastReason || `spawned pid ${spawnedPid}`})`,
        );
      }
      sleepSync(50);
    }
  }

  private startFailure(why: string): OwnerElectionError {
    return new OwnerElectionError(
      `${why}. Owner log ${this.paths.ownerLog}:\n${tailOfLog(this.paths.ownerLog)}`,
    );
  }
}
