// Owner lifecycle as seen from outside the owner: judging a record, spawning an owner,
// reclaiming what a dead one left, and the election every session runs before it routes.
import { spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
} from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ownerTimings, sameVersions, versions } from "../environment.js";
import {
  currentIdentity,
  identityOf,
  isAlive,
  isStopped,
  killIdentities,
  leftoverGroup,
  liveness,
  type Liveness,
  type ProcessIdentity,
  signalIfOurs,
  sleepSync,
  waitUntilGoneSync,
} from "../process-info.js";
import { keepFresh, oursIsOldest, ownerCandidateFile } from "../storage-candidate.js";
import { deadInstanceDirs, releaseStartupLocks } from "./instance.js";
import {
  clientRecordPath,
  listClients,
  HEARTBEAT_STALE_MS,
  type OwnerRecord,
  pointerPath,
  readOwner,
  readPointer,
  readStandby,
  removeFile,
  type RootPaths,
  SCHEMA_VERSION,
  writeRecordAtomic,
} from "../records.js";
import { tryAcquireSpawnLock } from "./spawn-lock.js";

export const OWNER_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), "main.js");

export type OwnerState = "starting" | "running" | "stale" | "stopping" | "dead";

export interface OwnerAssessment {
  state: OwnerState;
  liveness: Liveness;
  heartbeatAgeMs: number;
}

/** Pure: the state of an owner from its record, its process' liveness and the clock. */
export function assessOwner(
  record: OwnerRecord,
  processLiveness: Liveness,
  now: number,
  stopped = false,
): OwnerAssessment {
  const heartbeatAgeMs = Math.max(0, now - Date.parse(record.heartbeatAt));
  if (processLiveness !== "alive")
    return { state: "dead", liveness: processLiveness, heartbeatAgeMs };
  if (record.phase === "starting")
    return { state: "starting", liveness: processLiveness, heartbeatAgeMs };
  if (record.phase === "stopping")
    return { state: "stopping", liveness: processLiveness, heartbeatAgeMs };
  const stale = stopped || !(heartbeatAgeMs <= HEARTBEAT_STALE_MS);
  return { state: stale ? "stale" : "running", liveness: processLiveness, heartbeatAgeMs };
}

export function assessOwnerNow(record: OwnerRecord): OwnerAssessment {
  return assessOwner(record, liveness(record), Date.now(), isStopped(record.pid));
}

/**
 * What is left of an owner or standby: its recorded workerd processes that are still alive, and
 * where no process table can be read, what is left of a dead owner's process group (its workerd:
 * see `leftoverGroup`).
 */
export function ownerLeftovers(record: {
  pid: number;
  workerd?: ProcessIdentity[];
  heartbeatAt?: string;
}): ProcessIdentity[] {
  const recorded = (record.workerd ?? []).filter((w) => liveness(w) === "alive");
  const group =
    record.heartbeatAt === undefined
      ? undefined
      : leftoverGroup({ pid: record.pid, heartbeatAt: record.heartbeatAt });
  return group ? [...recorded, group] : recorded;
}

/** The owner process and every workerd it recorded have exited. */
export function ownerGone(record: OwnerRecord): boolean {
  return liveness(record) !== "alive" && ownerLeftovers(record).length === 0;
}

export interface ReclaimReport {
  killed: ProcessIdentity[];
  removed: string[];
  /** Record fields we did not follow, as one line each. */
  ignored: string[];
}

export interface ReclaimOptions {
  dryRun?: boolean;
  /**
   * Withdraw the root's storage candidate too: only when no client session is left. While
   * sessions remain, the candidate must stay the oldest (see storage-candidate.ts).
   */
  withdrawCandidate?: boolean;
}

/**
 * Removes what a dead owner left: its recorded workerd processes (an orphaned workerd keeps the
 * database files open), its record and registry pointer, and with `withdrawCandidate` the root's
 * storage candidate. Paths come from `paths` and `registryPath` (the caller's), never from the
 * record; only processes whose recorded start time matches are signalled.
 */
export function reclaimDeadOwner(
  paths: RootPaths,
  registryPath: string,
  record: OwnerRecord,
  { dryRun = false, withdrawCandidate = false }: ReclaimOptions = {},
): ReclaimReport {
  if (liveness(record) === "alive")
    throw new Error(`refusing to reclaim live owner pid ${record.pid}`);
  const report: ReclaimReport = { killed: [], removed: [], ignored: [] };
  const leftovers = ownerLeftovers(record);
  const killed = new Set(killIdentities(leftovers, dryRun));
  report.killed = leftovers.filter((w) => killed.has(w.pid));
  const files: string[] = [];
  if (sameDirectory(record.registryPath, registryPath)) {
    // The pointer only if it still names the dead owner (a successor may have rewritten it).
    const pointer = readPointer(registryPath, paths.persistRoot);
    if (pointer?.ok && pointer.value.ownerPid === record.pid)
      files.push(pointerPath(registryPath, paths.persistRoot));
    if (withdrawCandidate) files.push(ownerCandidateFile(registryPath, paths.persistRoot));
  } else {
    report.ignored.push(
      `owner pid ${record.pid} used the dev registry ${record.registryPath}, not ${registryPath}; its entries there were left alone`,
    );
  }
  for (const file of files) {
    if (existsSync(file) && (dryRun || removeFile(file))) report.removed.push(file);
  }
  if (!dryRun) {
    const dead = deadInstanceDirs(paths);
    const released = releaseStartupLocks(paths, dead);
    if (released) report.removed.push(released);
    for (const dir of dead) rmSync(dir, { recursive: true, force: true });
  }
  const current = readOwner(paths);
  if (
    current?.ok &&
    current.value.pid === record.pid &&
    (dryRun || removeFile(paths.ownerRecord))
  ) {
    report.removed.push(paths.ownerRecord);
  }
  return report;
}

/** Two paths name the same directory (symlinks resolved where they exist). */
export function sameDirectory(a: string, b: string): boolean {
  const canonical = (dir: string) => {
    try {
      return realpathSync(dir);
    } catch {
      return path.resolve(dir);
    }
  };
  return canonical(a) === canonical(b);
}

const REGISTRY_SETTINGS = [
  "WRANGLER_REGISTRY_PATH",
  "CLOUDFLARE_DEV_REGISTRY_PATH",
  "XDG_CONFIG_HOME",
];

/**
 * Sessions that share a persist root must share the dev registry its owner serves through:
 * a session looking in another registry would not see the owner's candidate, become the oldest
 * candidate there, and open the database files itself.
 */
export function registryMismatch(owner: OwnerRecord, registryPath: string): string | undefined {
  if (sameDirectory(owner.registryPath, registryPath)) return undefined;
  return mismatchMessage(
    `the storage owner for ${owner.persistRoot} (pid ${owner.pid}) serves sessions through the dev registry ${owner.registryPath}`,
    registryPath,
  );
}

/** Live sessions of the root that found it through another registry (with no owner alive). */
export function sessionsOfAnotherRegistry(
  paths: RootPaths,
  registryPath: string,
): string | undefined {
  const others = listClients(paths).flatMap((c) =>
    c.record.ok &&
    c.record.value.pid !== process.pid &&
    c.record.value.registryPath !== undefined &&
    !sameDirectory(c.record.value.registryPath, registryPath) &&
    isAlive(c.record.value)
      ? [c.record.value]
      : [],
  );
  const first = others[0];
  if (!first?.registryPath) return undefined;
  return mismatchMessage(
    `${others.length} live session(s) of ${paths.persistRoot} (${others.map((c) => `${c.worker} pid ${c.pid}`).join(", ")}) use the dev registry ${first.registryPath}`,
    registryPath,
  );
}

function mismatchMessage(theirs: string, registryPath: string): string {
  const settings = REGISTRY_SETTINGS.map(
    (name) => `${name}=${process.env[name] === undefined ? "(unset)" : process.env[name]}`,
  ).join(", ");
  return (
    `${theirs}, but this session uses the dev registry ${registryPath} (${settings}). ` +
    `Sessions that share a persist directory must share a dev registry, or two processes would open its database files. ` +
    `Give this terminal the same settings as the sessions already running (same WRANGLER_REGISTRY_PATH / ` +
    `CLOUDFLARE_DEV_REGISTRY_PATH / XDG_CONFIG_HOME / HOME), or use another --persist-to.`
  );
}

/** Sessions leave a dead owner's failover to its standby for this long after its last heartbeat. */
export const STANDBY_PRIORITY_MS = 5000;
/**
 * …and for this long when the standby is still booting: it takes over the moment it is up, which
 * is sooner than an owner the sessions would start from nothing beside it (seen: 5–8 s of boot on
 * a loaded 2-core machine). A standby that never gets up is passed over after this.
 */
export const BOOTING_STANDBY_PRIORITY_MS = 15_000;

/** A live standby backs the dead owner and may still take over: sessions wait instead of electing. */
export function standbyTakingOver(
  paths: RootPaths,
  dead: OwnerRecord,
  now = Date.now(),
): number | undefined {
  const standby = readStandby(paths);
  if (!standby?.ok || standby.value.backs !== dead.pid || !isAlive(standby.value)) return undefined;
  // A stopped standby (SIGSTOP, a debugger) will not take over: do not wait for it.
  if (isStopped(standby.value.pid)) return undefined;
  const priority =
    standby.value.phase === "starting" ? BOOTING_STANDBY_PRIORITY_MS : STANDBY_PRIORITY_MS;
  return now - Date.parse(dead.heartbeatAt) < priority ? standby.value.pid : undefined;
}

/** A corrupt owner record is ours but unreadable: keep it for diagnosis, out of the way. */
export function setAsideCorrupt(file: string): string {
  const aside = `${file}.corrupt-${Date.now()}`;
  renameSync(file, aside);
  return aside;
}

/** WRANGLER_X_OWNER_WORKERD_PATH runs the owner (only) with another workerd, e.g. a debug build. */
function ownerEnv(): NodeJS.ProcessEnv {
  const workerd = process.env.WRANGLER_X_OWNER_WORKERD_PATH;
  return workerd ? { ...process.env, MINIFLARE_WORKERD_PATH: workerd } : process.env;
}

/** Starts an owner (or, with `standby`, a successor for the running one), detached, logging to the owner log. */
export function startOwnerProcess(
  paths: RootPaths,
  registryPath: string,
  options: { standby?: boolean } = {},
): number {
  mkdirSync(paths.stateDir, { recursive: true });
  let log: number;
  try {
    log = openSync(paths.ownerLog, "a");
  } catch (error) {
    throw new OwnerElectionError(
      `cannot open the storage owner's log ${paths.ownerLog} (${(error as NodeJS.ErrnoException).code ?? String(error)}); ` +
        `no owner was started. Check that ${paths.stateDir} is writable.`,
    );
  }
  try {
    const args = [OWNER_MAIN, "--persist-root", paths.persistRoot, "--registry", registryPath];
    if (options.standby) args.push("--standby");
    // A standby's stdin is its lifeline: a pipe from the owner that the kernel closes when it dies.
    const child = spawn(process.execPath, args, {
      detached: true,
      stdio: [options.standby ? "pipe" : "ignore", log, log],
      env: ownerEnv(),
    });
    if (child.pid === undefined)
      throw new Error(`could not start the storage owner (${process.execPath})`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(log);
  }
}

/**
 * Starts an owner and records it as `starting` (pid + start time), so that every session waits
 * for it rather than start another. It takes a dead predecessor's candidate over in place.
 */
export function spawnOwner(paths: RootPaths, registryPath: string): number {
  const pid = startOwnerProcess(paths, registryPath);
  const now = new Date().toISOString();
  const starting: OwnerRecord = {
    schema: SCHEMA_VERSION,
    phase: "starting",
    ...identityOf(pid),
    persistRoot: paths.persistRoot,
    registryPath,
    versions: versions(),
    startedAt: now,
    heartbeatAt: now,
    logFile: paths.ownerLog,
    spawnedBy: process.pid,
  };
  writeRecordAtomic(paths.ownerRecord, starting);
  return pid;
}

export function tailOfLog(file: string, lines = 15): string {
  try {
    const text = readFileSync(file, "utf8").trimEnd().split("\n");
    return text.slice(-lines).join("\n");
  } catch {
    return "(no log written)";
  }
}

export interface ClientSession {
  worker: string;
  command: string;
  port?: number;
}

export function writePresence(
  paths: RootPaths,
  registryPath: string,
  session: ClientSession,
): string {
  const file = clientRecordPath(paths, process.pid);
  writeRecordAtomic(file, {
    schema: SCHEMA_VERSION,
    ...currentIdentity(),
    registryPath,
    worker: session.worker,
    command: session.command,
    ...(session.port === undefined ? {} : { port: session.port }),
    since: new Date().toISOString(),
    cwd: process.cwd(),
    versions: versions(),
  });
  return file;
}

export class OwnerElectionError extends Error {}

export type ElectionStep =
  | { kind: "ready"; owner: OwnerRecord }
  | { kind: "wait"; reason: string }
  | { kind: "spawned"; pid: number };

/**
 * One step of the election. Reads the owner record; returns it when a compatible owner serves,
 * otherwise spawns one under the spawn lock (reclaiming a dead one first) or says why to wait.
 * Sync, so the dev preload can run it before wrangler builds its first Miniflare.
 */
export function electionStep(
  paths: RootPaths,
  registryPath: string,
  notes: string[],
): ElectionStep {
  const current = readOwner(paths);
  if (current?.ok) {
    const owner = current.value;
    const { state } = assessOwnerNow(owner);
    if (state === "running" || state === "stale") {
      const mismatch = registryMismatch(owner, registryPath);
      if (mismatch) throw new OwnerElectionError(mismatch);
      if (!sameVersions(owner.versions, versions())) return retireOtherVersion(paths, owner, notes);
      // Join only through the root's candidate, fresh and the oldest: a stopped owner's candidate
      // may have expired (miniflare drops one untouched for 10 s), and a session that builds its
      // Miniflare then would be the oldest candidate, and open the files.
      if (
        !keepFresh(registryPath, paths.persistRoot) ||
        !oursIsOldest(registryPath, paths.persistRoot)
      )
        return {
          kind: "wait",
          reason: `owner pid ${owner.pid}'s storage candidate is missing or not the oldest (${state === "stale" ? "the owner is stopped or hung" : "it republishes it within 2 s"})`,
        };
      return { kind: "ready", owner };
    }
    if (state === "starting" || state === "stopping") {
      return { kind: "wait", reason: `owner pid ${owner.pid} is ${state}` };
    }
    const standby = standbyTakingOver(paths, owner);
    if (standby) return { kind: "wait", reason: `standby pid ${standby} is taking over` };
  }
  const elsewhere = sessionsOfAnotherRegistry(paths, registryPath);
  if (elsewhere) throw new OwnerElectionError(elsewhere);
  const lock = tryAcquireSpawnLock(paths);
  if (lock.reclaimed) notes.push(`reclaimed ${lock.reclaimed}`);
  if (!lock.release) return { kind: "wait", reason: `election lock held by ${lock.heldBy}` };
  try {
    const again = readOwner(paths);
    if (again?.ok) {
      const { state } = assessOwnerNow(again.value);
      if (state !== "dead")
        return { kind: "wait", reason: `owner pid ${again.value.pid} is ${state}` };
      const report = reclaimDeadOwner(paths, registryPath, again.value);
      // Its workerd must have let go of the files before a new owner may open them.
      if (!waitUntilGoneSync(report.killed))
        return {
          kind: "wait",
          reason: `workerd ${report.killed.map((w) => w.pid).join(", ")} of dead owner pid ${again.value.pid} has not exited yet`,
        };
      notes.push(
        `reclaimed dead owner pid ${again.value.pid}` +
          (report.killed.length
            ? ` (killed its workerd ${report.killed.map((w) => w.pid).join(", ")})`
            : ""),
        ...report.ignored,
      );
      return { kind: "spawned", pid: spawnOwner(paths, registryPath) };
    } else if (again && !again.ok) {
      notes.push(`${again.problem}; moved it to ${setAsideCorrupt(paths.ownerRecord)}`);
    }
    return { kind: "spawned", pid: spawnOwner(paths, registryPath) };
  } finally {
    lock.release();
  }
}

const retiring = new Map<number, number>();
const RETIRE_TIMEOUT_MS = 10_000;

/**
 * An owner of another package/miniflare/workerd version serves this root. Two versions must
 * never open the same files: while sessions of its version use it, refuse; once none remains,
 * stop it (SIGTERM, then SIGKILL of its group) and let the election go on.
 */
function retireOtherVersion(paths: RootPaths, owner: OwnerRecord, notes: string[]): ElectionStep {
  const itsClients = listClients(paths).flatMap((c) =>
    c.record.ok &&
    c.record.value.pid !== process.pid &&
    isAlive(c.record.value) &&
    sameVersions(c.record.value.versions, owner.versions)
      ? [c.record.value]
      : [],
  );
  const mismatch =
    `the storage owner for ${paths.persistRoot} (pid ${owner.pid}) runs ${describeVersions(owner.versions)}, ` +
    `this session runs ${describeVersions(versions())}`;
  if (itsClients.length > 0) {
    throw new OwnerElectionError(
      `${mismatch}. Two versions must never open the same files, and ${itsClients.length} session(s) of its version ` +
        `still use it (${itsClients.map((c) => `${c.worker} pid ${c.pid}`).join(", ")}). Stop them, or use the same ` +
        `version of this package in every project that shares ${paths.persistRoot}.`,
    );
  }
  const since = retiring.get(owner.pid);
  if (since === undefined) {
    if (signalIfOurs(owner, "SIGTERM") === "unproven") {
      throw new OwnerElectionError(
        `${mismatch}, and its record does not prove which process it is (no start time); stop it yourself.`,
      );
    }
    notes.push(`${mismatch}; no session of its version remains, so it is being stopped`);
    retiring.set(owner.pid, Date.now());
  } else if (Date.now() - since > RETIRE_TIMEOUT_MS) {
    killIdentities([owner, ...ownerLeftovers(owner)]);
  }
  return { kind: "wait", reason: `owner pid ${owner.pid} of another version is stopping` };
}

export function describeVersions(v: OwnerRecord["versions"]): string {
  return `package ${v.package}, miniflare ${v.miniflare}, workerd ${v.workerd}`;
}

/** Runs the election until an owner serves, bounded by WRANGLER_X_OWNER_START_TIMEOUT_MS. */
export function ensureOwnerSync(
  paths: RootPaths,
  registryPath: string,
  log: (message: string) => void,
): OwnerRecord {
  const { startTimeoutMs } = ownerTimings();
  const deadline = Date.now() + startTimeoutMs;
  let lastReason = "";
  let spawnedPid: number | undefined;
  let spawns = 0;
  while (true) {
    const notes: string[] = [];
    const step = electionStep(paths, registryPath, notes);
    for (const note of notes) log(note);
    if (step.kind === "ready") return step.owner;
    if (step.kind === "spawned") {
      spawnedPid = step.pid;
      spawns++;
      log(
        `started storage owner pid ${step.pid} for ${paths.persistRoot} (log: ${paths.ownerLog})`,
      );
      if (spawns > 2)
        throw startFailure(paths, `the storage owner exited during startup ${spawns} times`);
    } else if (step.reason !== lastReason) {
      lastReason = step.reason;
    }
    if (Date.now() > deadline) {
      throw startFailure(
        paths,
        `no storage owner published its address within ${startTimeoutMs} ms (${lastReason || `spawned pid ${spawnedPid}`})`,
      );
    }
    sleepSync(50);
  }
}

function startFailure(paths: RootPaths, why: string): OwnerElectionError {
  return new OwnerElectionError(
    `${why}. Owner log ${paths.ownerLog}:\n${tailOfLog(paths.ownerLog)}`,
  );
}
