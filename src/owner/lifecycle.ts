// Owner lifecycle as seen from outside the owner: judging a record, spawning an owner,
// reclaiming what a dead one left, and the election every session runs before it routes.
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ownerTimings, sameVersions, versions } from "../environment.js";
import {
  commandLine,
  currentIdentity,
  isAlive,
  isStopped,
  killAll,
  liveness,
  type Liveness,
  type ProcessIdentity,
  processGroupMembers,
  readStartTime,
} from "../process-info.js";
import {
  clientRecordPath,
  listClients,
  HEARTBEAT_STALE_MS,
  type OwnerRecord,
  pointerPath,
  readOwner,
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

/** Processes an owner left behind: its process group, limited to what we started (node, workerd). */
export function ownerLeftovers(record: ProcessIdentity): number[] {
  return processGroupMembers(record.pid).filter((pid) => {
    const cmd = commandLine(pid);
    return cmd.includes("workerd") || cmd.includes(OWNER_MAIN);
  });
}

/** The owner process and everything left in its group have exited. */
export function ownerGone(record: ProcessIdentity): boolean {
  return liveness(record) !== "alive" && ownerLeftovers(record).length === 0;
}

export interface ReclaimReport {
  killed: number[];
  removed: string[];
}

export interface ReclaimOptions {
  dryRun?: boolean;
  /**
   * Withdraw the dead owner's storage candidate too. An election leaves it: while it is the
   * oldest candidate no client session can become the owner (and open the files) in between;
   * the new owner withdraws it once it serves. Only gc, with no new owner coming, removes it.
   */
  withdrawCandidate?: boolean;
}

/**
 * Removes what a dead owner left: processes still in its group (an orphaned workerd keeps the
 * database files open and keeps serving), its record and registry pointer, and with
 * `withdrawCandidate` its storage candidate. Never touches a live owner.
 */
export function reclaimDeadOwner(
  paths: RootPaths,
  record: OwnerRecord,
  { dryRun = false, withdrawCandidate = false }: ReclaimOptions = {},
): ReclaimReport {
  if (liveness(record) === "alive")
    throw new Error(`refusing to reclaim live owner pid ${record.pid}`);
  const report: ReclaimReport = { killed: [], removed: [] };
  report.killed.push(...killAll(ownerLeftovers(record), dryRun));
  const files = [
    withdrawCandidate && record.candidate
      ? path.join(record.registryPath, record.candidate)
      : undefined,
    pointerPath(record.registryPath, record.persistRoot),
  ];
  for (const file of files) {
    if (file && existsSync(file) && (dryRun || removeFile(file))) report.removed.push(file);
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
  options: { standby?: boolean; adopt?: string } = {},
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
    if (options.adopt) args.push("--adopt", options.adopt);
    const child = spawn(process.execPath, args, {
      detached: true,
      stdio: ["ignore", log, log],
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
 * for it rather than start another. `adopt` names a dead predecessor's storage candidate for the
 * new owner to take over in place.
 */
export function spawnOwner(paths: RootPaths, registryPath: string, adopt?: string): number {
  const pid = startOwnerProcess(paths, registryPath, { adopt });
  const now = new Date().toISOString();
  const starting: OwnerRecord = {
    schema: SCHEMA_VERSION,
    phase: "starting",
    pid,
    startTime: readStartTime(pid),
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

export function writePresence(paths: RootPaths, session: ClientSession): string {
  const file = clientRecordPath(paths, process.pid);
  writeRecordAtomic(file, {
    schema: SCHEMA_VERSION,
    ...currentIdentity(),
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
      if (!sameVersions(owner.versions, versions())) return retireOtherVersion(paths, owner, notes);
      return { kind: "ready", owner };
    }
    if (state === "starting" || state === "stopping") {
      return { kind: "wait", reason: `owner pid ${owner.pid} is ${state}` };
    }
  }
  const lock = tryAcquireSpawnLock(paths);
  if (lock.reclaimed) notes.push(`reclaimed ${lock.reclaimed}`);
  if (!lock.release) return { kind: "wait", reason: `election lock held by ${lock.heldBy}` };
  try {
    const again = readOwner(paths);
    if (again?.ok) {
      const { state } = assessOwnerNow(again.value);
      if (state !== "dead")
        return { kind: "wait", reason: `owner pid ${again.value.pid} is ${state}` };
      const report = reclaimDeadOwner(paths, again.value);
      notes.push(
        `reclaimed dead owner pid ${again.value.pid}` +
          (report.killed.length ? ` (killed leftover ${report.killed.join(", ")})` : ""),
      );
      return { kind: "spawned", pid: spawnOwner(paths, registryPath, again.value.candidate) };
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
    notes.push(`${mismatch}; no session of its version remains, so it is being stopped`);
    retiring.set(owner.pid, Date.now());
    process.kill(owner.pid, "SIGTERM");
  } else if (Date.now() - since > RETIRE_TIMEOUT_MS) {
    killAll([owner.pid, ...ownerLeftovers(owner)]);
  }
  return { kind: "wait", reason: `owner pid ${owner.pid} of another version is stopping` };
}

export function describeVersions(v: OwnerRecord["versions"]): string {
  return `package ${v.package}, miniflare ${v.miniflare}, workerd ${v.workerd}`;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
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
