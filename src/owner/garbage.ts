// Reclaims what crashed processes left under one persist root and in the dev registry. Never
// touches a live owner, a live client, a lock a live process holds, or any user data; never
// signals a process unless a record proves it ours (pid + start time); never withdraws a storage
// candidate while a live session may route through it (a failover may be under way).
import { probePort } from "../lifeline.js";
import { existsSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import {
  commandLine,
  hasProcFs,
  killIdentities,
  liveness,
  openFiles,
  procPids,
  type ProcessIdentity,
  procStat,
} from "../process-info.js";
import {
  listClients,
  type OwnerRecord,
  type Parsed,
  readOwner,
  readStandby,
  removeFile,
  type RootPaths,
  rootPaths,
} from "../records.js";
import { ownerCandidateName, storageCandidates } from "../storage-candidate.js";
import { inspectRoot } from "./inspect.js";
import { deadInstanceDirs, releaseStartupLocks } from "./instance.js";
import { liveSessionCount, ownerLeftovers } from "./assessment.js";
import { type ReclaimReport, reclaimDeadOwner } from "./reclaim.js";
import { replaceDeadOwnerWithin } from "./succession.js";
import { tryAcquireSpawnLock } from "./spawn-lock.js";

export interface GcAction {
  what: string;
  path?: string;
  pid?: number;
  why: string;
}

export interface GcReport {
  persistRoot: string;
  removed: GcAction[];
  killed: GcAction[];
  kept: GcAction[];
  /** What gc could not check on this system, one line each. */
  notes: string[];
}

/** An instance answers at its debug port, or may (no answer is not proof of death). */
async function portAnswers(address: string): Promise<boolean> {
  const look = await probePort(address);
  return look === "open" || look === "silent";
}

/**
 * workerd processes that hold this root's storage files but whose parent is gone. No record proves
 * them ours (a plain `wrangler dev` leaves such orphans too), so gc only reports them. Needs the
 * fd walk of /proc: undefined where it is not read (macOS, WRANGLER_X_PROCESS_INFO=portable).
 */
function orphanedHolders(persistRoot: string, liveOwnerPid?: number): number[] | undefined {
  if (!hasProcFs()) return undefined;
  const orphans: number[] = [];
  for (const pid of procPids()) {
    if (pid === process.pid) continue;
    const stat = procStat(pid);
    if (!stat) continue;
    const { ppid, pgrp } = stat;
    if (ppid !== 1 || pgrp === liveOwnerPid || !commandLine(pid).includes("workerd")) continue;
    // Its group leader (the owner node process) must be gone too.
    if (liveness({ pid: pgrp }) === "alive" && pgrp !== pid) continue;
    if (openFiles(pid)?.some((file) => file.startsWith(persistRoot + path.sep))) orphans.push(pid);
  }
  return orphans;
}

/**
 * A dead owner is reclaimed as every succession does it (succession.ts): under the election lock,
 * judged again there. A dry run changes nothing and needs no lock.
 */
async function reclaimOwner(
  paths: RootPaths,
  registryPath: string,
  dead: OwnerRecord,
  options: { dryRun: boolean; withdrawCandidate: () => boolean },
): Promise<ReclaimReport | { kept: GcAction }> {
  if (options.dryRun)
    return reclaimDeadOwner(paths, registryPath, dead, {
      dryRun: true,
      withdrawCandidate: options.withdrawCandidate(),
    });
  const outcome = await replaceDeadOwnerWithin(
    paths,
    registryPath,
    { withdrawCandidate: options.withdrawCandidate },
    5000,
  );
  const kept = (why: string): { kept: GcAction } => ({
    kept: { what: "owner record", path: paths.ownerRecord, why },
  });
  switch (outcome.kind) {
    case "replaced":
      return outcome.reclaimed ?? { killed: [], removed: [], ignored: [] };
    case "busy":
      return kept(`the election lock is held by ${outcome.heldBy}, whose election reclaims it`);
    case "taken":
      return kept(`owner pid ${outcome.owner.pid} took over meanwhile`);
    case "lingering":
      return kept(
        `workerd ${outcome.pids.join(", ")} of dead owner pid ${dead.pid} was killed but has not exited yet; run gc again`,
      );
  }
}

export async function collectGarbage(
  persistRoot: string,
  registryPath: string,
  pointerFiles: string[],
  dryRun: boolean,
): Promise<GcReport> {
  const paths = rootPaths(persistRoot);
  const report: GcReport = { persistRoot, removed: [], killed: [], kept: [], notes: [] };
  const remove = (action: GcAction) => {
    if (dryRun || (action.path && removeFile(action.path))) report.removed.push(action);
  };

  const liveClients = liveSessionCount(paths);
  const candidateKept = liveClients
    ? `${liveClients} live session(s) route through the oldest candidate; a failover may be under way`
    : undefined;

  // The owner record: dead owner -> kill its recorded workerd, withdraw record, pointer and (with
  // no live session) the candidate.
  const owner = readOwner(paths);
  let liveOwner: { pid: number } | undefined;
  if (owner && !owner.ok) {
    if (dryRun) remove({ what: "owner record", path: paths.ownerRecord, why: owner.problem });
    else {
      // As every succession does it: under the election lock, judged again, moved aside (kept
      // for diagnosis as owner.json.corrupt-<time>), not deleted.
      const outcome = await replaceDeadOwnerWithin(paths, registryPath, {}, 5000);
      if (outcome.kind === "replaced")
        report.removed.push({
          what: "owner record",
          path: paths.ownerRecord,
          why: outcome.setAside
            ? `${owner.problem}; moved it to ${outcome.setAside}`
            : owner.problem,
        });
      else
        report.kept.push({
          what: "owner record",
          path: paths.ownerRecord,
          why:
            outcome.kind === "busy"
              ? `the election lock is held by ${outcome.heldBy}, whose election sets it aside`
              : `${owner.problem}; left as it is (${outcome.kind})`,
        });
    }
  } else if (owner?.ok) {
    const state = liveness(owner.value);
    if (state === "alive") {
      liveOwner = owner.value;
      report.kept.push({
        what: "owner",
        pid: owner.value.pid,
        path: paths.ownerRecord,
        why: "its process is alive",
      });
    } else {
      const reclaimed = await reclaimOwner(paths, registryPath, owner.value, {
        dryRun,
        // Counted again under the lock: a session may arrive while gc runs.
        withdrawCandidate: () => liveSessionCount(paths) === 0,
      });
      if ("kept" in reclaimed) report.kept.push(reclaimed.kept);
      else {
        for (const { pid } of reclaimed.killed) {
          report.killed.push({
            what: "workerd of dead owner",
            pid,
            why: `recorded (pid + start time) by dead owner pid ${owner.value.pid}`,
          });
        }
        for (const file of reclaimed.removed) {
          report.removed.push({
            what: "record of dead owner",
            path: file,
            why: `owner pid ${owner.value.pid} is ${state}`,
          });
        }
        for (const why of reclaimed.ignored) report.kept.push({ what: "registry entries", why });
      }
    }
  }

  const standby = readStandby(paths);
  if (standby && !standby.ok) {
    remove({ what: "standby record", path: paths.standbyRecord, why: standby.problem });
  } else if (standby?.ok) {
    const state = liveness(standby.value);
    if (state === "alive") {
      report.kept.push({
        what: "standby",
        pid: standby.value.pid,
        path: paths.standbyRecord,
        why: "its process is alive",
      });
    } else {
      for (const pid of killIdentities(ownerLeftovers(standby.value), dryRun)) {
        report.killed.push({
          what: "workerd of dead standby",
          pid,
          why: `recorded (pid + start time) by dead standby pid ${standby.value.pid}`,
        });
      }
      remove({
        what: "standby record",
        path: paths.standbyRecord,
        pid: standby.value.pid,
        why: `pid ${standby.value.pid} is ${state}`,
      });
    }
  }

  for (const { file, record } of listClients(paths)) {
    if (!record.ok) {
      remove({ what: "client presence", path: file, why: record.problem });
      continue;
    }
    const state = liveness(record.value);
    if (state === "alive") {
      report.kept.push({
        what: "client presence",
        pid: record.value.pid,
        path: file,
        why: "its process is alive",
      });
    } else {
      remove({
        what: "client presence",
        path: file,
        pid: record.value.pid,
        why: `pid ${record.value.pid} is ${state === "reused" ? "now another process" : "gone"}`,
      });
    }
  }

  const lock = inspectRoot(persistRoot).spawnLock;
  if (lock) {
    if (lock.alive) {
      report.kept.push({
        what: "spawn lock",
        path: paths.spawnLock,
        pid: lock.holderPid,
        why: "held by a live process",
      });
    } else {
      if (!dryRun) {
        removeFile(paths.spawnLockHolder);
        rmSync(paths.spawnLock, { recursive: true, force: true });
      }
      report.removed.push({
        what: "spawn lock",
        path: paths.spawnLock,
        why: lock.holderPid ? `holder pid ${lock.holderPid} is gone` : "no live holder",
      });
    }
  }

  // Storage candidates for this root whose instance no longer answers on its debug port.
  const ours = ownerCandidateName(persistRoot);
  for (const { name, file, debugPortAddress } of storageCandidates(registryPath, persistRoot)) {
    if (name === ours && liveOwner) continue;
    if (candidateKept) {
      report.kept.push({ what: "storage candidate", path: file, why: candidateKept });
    } else if (debugPortAddress && (await portAnswers(debugPortAddress))) {
      report.kept.push({
        what: "storage candidate",
        path: file,
        why: `its instance answers at ${debugPortAddress}`,
      });
    } else {
      remove({
        what: "storage candidate",
        path: file,
        why: `nothing answers at ${debugPortAddress ?? "(no address)"}`,
      });
    }
  }

  const orphans = orphanedHolders(persistRoot, liveOwner?.pid);
  if (orphans === undefined) {
    report.notes.push(
      "orphaned workerd processes were not looked for: seeing which process holds the files needs /proc (absent here, or WRANGLER_X_PROCESS_INFO=portable)",
    );
  }
  for (const pid of orphans ?? []) {
    report.kept.push({
      what: "orphaned workerd",
      pid,
      why: `holds files under ${persistRoot} with its parent gone, but no record proves it ours; stop it yourself if it is a leftover (kill ${pid})`,
    });
  }

  if (!liveOwner) {
    for (const file of pointerFiles.filter((f) => existsSync(f)))
      remove({ what: "registry pointer", path: file, why: "no live owner for its root" });
  }
  if (!liveOwner && !liveClients) removeCacheRoute(paths, dryRun, report);
  for (const file of leftoverTempFiles(paths.stateDir))
    remove({ what: "temporary file", path: file, why: "an interrupted write" });
  const deadDirs = deadInstanceDirs(paths);
  const lockHeld = dryRun ? undefined : releaseStartupLocks(paths, deadDirs);
  if (lockHeld)
    report.removed.push({
      what: "miniflare startup lock",
      path: lockHeld,
      why: "held by an owner or standby that died while starting",
    });
  for (const dir of deadDirs) {
    if (!dryRun) rmSync(dir, { recursive: true, force: true });
    report.removed.push({ what: "instance files", path: dir, why: "its owner or standby is gone" });
  }
  return report;
}

/** A record's process, alive now (pid + start time). */
function alive(record: Parsed<ProcessIdentity> | undefined): boolean {
  return record?.ok === true && liveness(record.value) === "alive";
}

/**
 * The root's Cache route outlives owners while sessions live (src/pooled/cache-claim.ts); with
 * none left it goes, and the next owner decides afresh. Counted again under the election lock, as
 * the owner's idle exit does: a session that arrives meanwhile elects under that lock first.
 */
function removeCacheRoute(paths: RootPaths, dryRun: boolean, report: GcReport): void {
  if (!existsSync(paths.cacheRoute)) return;
  const action = {
    what: "cache route",
    path: paths.cacheRoute,
    why: "no owner or session is left on the root",
  };
  if (dryRun) return void report.removed.push(action);
  const lock = tryAcquireSpawnLock(paths);
  if (!lock.release) {
    report.kept.push({ ...action, why: "an election holds the root's lock" });
    return;
  }
  try {
    if (liveSessionCount(paths) > 0)
      report.kept.push({ ...action, why: "a session arrived while gc ran" });
    else if (alive(readOwner(paths)) || alive(readStandby(paths)))
      report.kept.push({ ...action, why: "an owner started while gc ran" });
    else if (removeFile(paths.cacheRoute)) report.removed.push(action);
  } finally {
    lock.release();
  }
}

function leftoverTempFiles(dir: string): string[] {
  const found: string[] = [];
  const visit = (d: string) => {
    let entries: import("node:fs").Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory() && !["isolated", "instances"].includes(entry.name)) visit(full);
      else if (entry.isFile() && /\.\d+\.tmp$/.test(entry.name)) {
        const pid = Number(entry.name.match(/\.(\d+)\.tmp$/)![1]);
        if (liveness({ pid }) !== "alive") found.push(full);
      }
    }
  };
  visit(dir);
  return found;
}
