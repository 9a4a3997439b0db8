// One history per persist root, with the flag on or off. What miniflare cannot share (Durable
// Objects, Cache, Workflows, and the other per-instance resources) lives where plain wrangler keeps
// it, directly under the persist root, and only the sessions open it; the owner never does.
// Earlier versions kept it under `.x-shared-storage/isolated/<worker>/`: a session of that worker
// moves it into place once, never over existing data.
import { lstatSync, mkdirSync, readdirSync, rmdirSync, statSync } from "node:fs";
import path from "node:path";
import { renameWithRetrySync } from "../fs-retry.js";
import { legacyIsolatedPathFor, type RootPaths } from "../records.js";

/** Resources whose directories hold independent namespaces (one per DO class or workflow). */
const PER_NAMESPACE = new Set(["do", "workflows"]);

export interface LayoutMove {
  /** A moved unit, relative to the persist root: `do/counter-Counter`, `cache`, … */
  unit: string;
  from: string;
  to: string;
}

export interface LayoutReport {
  legacyDir: string;
  moved: LayoutMove[];
  /** Units left where they are because the plain layout already has data for them. */
  kept: LayoutMove[];
  /** Data-less directories of the plain layout that a move set aside (kept, not deleted). */
  setAside: string[];
}

function entries(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

function isDirectory(file: string): boolean {
  try {
    return statSync(file).isDirectory();
  } catch {
    return false;
  }
}

/** What every session start creates, before any request: an empty index, not data. */
const STARTUP_FILES = /^metadata\.sqlite(-shm|-wal|-journal)?$/;

/**
 * True when `target` exists and holds a file anywhere below it, other than the `metadata.sqlite`
 * that any session creates on start (empty directories do not count either).
 */
export function holdsData(target: string): boolean {
  let stat;
  try {
    stat = lstatSync(target);
  } catch {
    return false;
  }
  if (!stat.isDirectory()) return !STARTUP_FILES.test(path.basename(target));
  return entries(target).some((name) => holdsData(path.join(target, name)));
}

/**
 * The units of a worker's legacy directory: each namespace of `do/` and `workflows/`, and every
 * other resource directory as a whole (the Cache keeps its objects and their blobs in sibling
 * directories, which must move together).
 */
function units(legacyDir: string): string[] {
  return entries(legacyDir)
    .filter((resource) => isDirectory(path.join(legacyDir, resource)))
    .flatMap((resource) =>
      PER_NAMESPACE.has(resource)
        ? entries(path.join(legacyDir, resource))
            .filter((name) => isDirectory(path.join(legacyDir, resource, name)))
            .map((name) => `${resource}/${name}`)
        : [resource],
    );
}

/**
 * Moves what an earlier version kept for `worker` under `.x-shared-storage/isolated/<worker>/` into
 * plain wrangler's layout, one unit at a time, each by a single rename: a unit is wholly in one
 * place or the other, and an interrupted move resumes on the next start. A unit moves only when
 * the plain layout has no data for it; what is there without data (the empty index a plain start
 * creates) is set aside under `.x-shared-storage/set-aside/`, never deleted. Otherwise both stay
 * and the report names both. The caller holds the root's election lock. Renames are retried
 * while Windows holds a file of the unit for a moment (src/fs-retry.ts).
 */
export function adoptLegacyLayout(
  paths: RootPaths,
  worker: string,
  rename: (from: string, to: string) => void = renameWithRetrySync,
): LayoutReport {
  const legacyDir = legacyIsolatedPathFor(paths, worker);
  const report: LayoutReport = { legacyDir, moved: [], kept: [], setAside: [] };
  for (const unit of units(legacyDir)) {
    const move = { unit, from: path.join(legacyDir, unit), to: path.join(paths.persistRoot, unit) };
    if (holdsData(move.to)) {
      report.kept.push(move);
      continue;
    }
    if (exists(move.to)) {
      const aside = path.join(
        paths.stateDir,
        "set-aside",
        `${unit.replaceAll("/", "_")}-${Date.now()}`,
      );
      mkdirSync(path.dirname(aside), { recursive: true });
      rename(move.to, aside);
      report.setAside.push(aside);
    }
    mkdirSync(path.dirname(move.to), { recursive: true });
    rename(move.from, move.to);
    report.moved.push(move);
  }
  removeEmptyDirs(legacyDir);
  removeEmptyDirs(paths.isolatedDir);
  return report;
}

function exists(file: string): boolean {
  try {
    lstatSync(file);
    return true;
  } catch {
    return false;
  }
}

/** Removes `dir` and the directories below it that hold no file; keeps everything else. */
function removeEmptyDirs(dir: string): void {
  if (!isDirectory(dir)) return;
  for (const name of entries(dir)) removeEmptyDirs(path.join(dir, name));
  try {
    rmdirSync(dir);
  } catch {
    // not empty: something is left here on purpose
  }
}
