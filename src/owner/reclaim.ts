// Removing what a dead owner left. Paths come from the caller (the root and its registry), never
// from the record; only processes whose recorded identity still matches are signalled. Callers
// hold the election lock (succession.ts), except gc's dry run, which changes nothing.
import { existsSync } from "node:fs";
import { errnoCode } from "../errors.js";
import { removeTreeWithRetrySync, renameWithRetrySync } from "../fs-retry.js";
import { killIdentities, liveness, type ProcessIdentity } from "../process-info.js";
import {
  type OwnerRecord,
  pointerPath,
  readOwner,
  readPointer,
  removeFile,
  type RootPaths,
} from "../records.js";
import { ownerCandidateFile } from "../storage-candidate.js";
import { sameDirectory } from "../canonical-root.js";
import { ownerLeftovers } from "./assessment.js";
import { deadInstanceDirs, releaseStartupLocks } from "./instance.js";

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
 * storage candidate.
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
    for (const dir of dead) {
      try {
        removeTreeWithRetrySync(dir);
      } catch (error) {
        // A dead instance's private registry and placeholder Cache hold nothing anyone reads.
        report.ignored.push(`${(error as Error).message}; left for a later election or gc`);
      }
    }
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
  try {
    renameWithRetrySync(file, aside);
  } catch (error) {
    // Removed meanwhile (by hand): nothing is left to set aside.
    if (errnoCode(error) === "ENOENT") return `(already removed: ${file})`;
    throw error;
  }
  return aside;
}
