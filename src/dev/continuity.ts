// One history per persist root, with the flag on or off. What miniflare cannot share (Durable
// Objects, Cache, Workflows, and the other per-instance resources) lives where plain wrangler keeps
// it, directly under the persist root, and only the sessions open it; the owner never does.
// Earlier versions kept it under `.x-shared-storage/isolated/<worker>/`: a session of that worker
// moves it into place once, never over existing data.
import { readdirSync, renameSync, rmdirSync, statSync, mkdirSync } from "node:fs";
import path from "node:path";
import { liveness } from "../process-info.js";
import { legacyIsolatedPathFor, listClients, type RootPaths } from "../records.js";

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

/** True when `target` exists and holds a file anywhere below it (empty directories do not count). */
export function holdsData(target: string): boolean {
  let stat;
  try {
    stat = statSync(target);
  } catch {
    return false;
  }
  if (!stat.isDirectory()) return true;
  return entries(target).some((name) => holdsData(path.join(target, name)));
}

/**
 * Moves `from` to `to` without ever replacing anything: a missing destination is renamed into
 * place; an existing (empty) directory receives the entries one by one, so a process that holds it
 * open sees them. Returns the paths it could not move because something appeared there meanwhile.
 */
function moveWithoutReplacing(from: string, to: string): string[] {
  if (!isDirectory(to)) {
    try {
      mkdirSync(path.dirname(to), { recursive: true });
      renameSync(from, to);
      return [];
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "EEXIST" && code !== "ENOTEMPTY" && code !== "EISDIR") throw error;
      if (!isDirectory(to)) return [from];
    }
  }
  if (!isDirectory(from)) return [from];
  const left = entries(from).flatMap((name) => {
    const target = path.join(to, name);
    if (holdsData(target) && !isDirectory(target)) return [path.join(from, name)];
    return moveWithoutReplacing(path.join(from, name), target);
  });
  removeEmptyDirs(from);
  return left;
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

/**
 * The units of a worker's legacy directory: each namespace of `do/` and `workflows/`, and every
 * other resource directory as a whole (the Cache keeps its objects and their blobs in sibling
 * directories, which must move together).
 */
function units(legacyDir: string): { unit: string; parts: string[] }[] {
  return entries(legacyDir)
    .filter((resource) => isDirectory(path.join(legacyDir, resource)))
    .flatMap((resource) => {
      const names = entries(path.join(legacyDir, resource));
      if (PER_NAMESPACE.has(resource))
        return names.map((name) => ({
          unit: `${resource}/${name}`,
          parts: [`${resource}/${name}`],
        }));
      return names.length === 0
        ? []
        : [{ unit: resource, parts: names.map((name) => `${resource}/${name}`) }];
    });
}

/**
 * Moves what an earlier version kept for `worker` under `.x-shared-storage/isolated/<worker>/` into
 * plain wrangler's layout. A unit moves only when the plain layout has no data for it; otherwise
 * both stay and the report names both. Nothing is ever overwritten or deleted, except directories
 * left empty by the move.
 */
export function adoptLegacyLayout(paths: RootPaths, worker: string): LayoutReport {
  const legacyDir = legacyIsolatedPathFor(paths, worker);
  const report: LayoutReport = { legacyDir, moved: [], kept: [] };
  for (const { unit, parts } of units(legacyDir)) {
    const move = { unit, from: path.join(legacyDir, unit), to: path.join(paths.persistRoot, unit) };
    if (parts.some((part) => holdsData(path.join(paths.persistRoot, part)))) {
      report.kept.push(move);
      continue;
    }
    const left = parts.flatMap((part) =>
      moveWithoutReplacing(path.join(legacyDir, part), path.join(paths.persistRoot, part)),
    );
    (left.length === 0 ? report.moved : report.kept).push(move);
  }
  removeEmptyDirs(legacyDir);
  removeEmptyDirs(paths.isolatedDir);
  return report;
}

export interface SessionLike {
  pid: number;
  worker: string;
  command: string;
  alive: boolean;
}

/** Live `dev` sessions, grouped by worker name, for every worker that has more than one. */
export function workersWithSeveralSessions<T extends SessionLike>(
  sessions: T[],
): { worker: string; sessions: T[] }[] {
  const byWorker = new Map<string, T[]>();
  for (const session of sessions) {
    if (!session.alive || session.command !== "dev") continue;
    byWorker.set(session.worker, [...(byWorker.get(session.worker) ?? []), session]);
  }
  return [...byWorker]
    .filter(([, list]) => list.length > 1)
    .map(([worker, list]) => ({ worker, sessions: list.sort((a, b) => a.pid - b.pid) }));
}

/** The live dev sessions of `worker` on this root (this one included) when there are several. */
export function severalSessionsOf(paths: RootPaths, worker: string): SessionLike[] {
  const sessions = listClients(paths).flatMap(({ record }) =>
    record.ok ? [{ ...record.value, alive: liveness(record.value) === "alive" }] : [],
  );
  return (
    workersWithSeveralSessions(sessions).find((group) => group.worker === worker)?.sessions ?? []
  );
}

/** Why two sessions of one worker on one root is a problem, for the session and for `status`. */
export function severalSessionsWarning(
  worker: string,
  pids: number[],
  persistRoot: string,
): string {
  return (
    `${pids.length} dev sessions of worker "${worker}" (pids ${pids.join(", ")}) use ${persistRoot}: ` +
    `Durable Objects, Cache and Workflows are not shared through the owner, so each session's ` +
    `workerd opens the same files under ${path.join(persistRoot, "do")} and they contend ` +
    `(as with plain wrangler). Run one session per worker.`
  );
}
