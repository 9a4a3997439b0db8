// What the records of one persist root say, judged against the live process table. Used by
// `storage-owner status` (and stop/gc): reads files only, never loads wrangler or miniflare.
import { liveness, type Liveness } from "../process-info.js";
import {
  listClients,
  type OwnerRecord,
  readLockHolder,
  readOwner,
  readStandby,
  rootPaths,
  type Versions,
} from "../records.js";
import { assessOwnerNow, type OwnerState } from "./assessment.js";
import { existsSync } from "node:fs";

export interface ClientStatus {
  pid: number;
  alive: boolean;
  liveness: Liveness;
  worker: string;
  command: string;
  port?: number;
  /** How its KV/R2/D1 calls reach the owner ("pooled", "proxy", ...), when it said. */
  storageRoute?: string;
  since: string;
  file: string;
}

export interface OwnerStatus {
  persistRoot: string;
  /** running = its pid is alive; stale = alive but not heartbeating; dead = gone, records left. */
  state: "running" | "stale" | "dead";
  phase: OwnerRecord["phase"];
  pid: number;
  debugAddress: string | null;
  heartbeatAgeMs: number;
  startedAt: string;
  uptimeMs: number | null;
  logFile: string;
  versions: Versions;
  clients: ClientStatus[];
  /** A started successor that takes over when this owner dies while clients remain. */
  standby: StandbyStatus | null;
}

export interface StandbyStatus {
  pid: number;
  alive: boolean;
  /** "starting" while its Miniflare boots, then "ready". */
  phase: "starting" | "ready";
  backs: number;
  debugAddress: string | null;
  since: string;
}

export interface RootReport {
  persistRoot: string;
  owner?: OwnerStatus;
  clients: ClientStatus[];
  /** Records we could not read, with the path and what is wrong. */
  problems: string[];
  spawnLock?: { holderPid?: number; alive: boolean };
  standby?: StandbyStatus;
}

function publicState(state: OwnerState): OwnerStatus["state"] {
  if (state === "dead") return "dead";
  if (state === "stale") return "stale";
  return "running";
}

export function inspectRoot(persistRoot: string, now = Date.now()): RootReport {
  const paths = rootPaths(persistRoot);
  const problems: string[] = [];
  const clients: ClientStatus[] = [];
  for (const { file, record } of listClients(paths)) {
    if (!record.ok) {
      problems.push(record.problem);
      continue;
    }
    const state = liveness(record.value);
    clients.push({
      pid: record.value.pid,
      alive: state === "alive",
      liveness: state,
      worker: record.value.worker,
      command: record.value.command,
      ...(record.value.port === undefined ? {} : { port: record.value.port }),
      ...(record.value.storageRoute === undefined
        ? {}
        : { storageRoute: record.value.storageRoute }),
      since: record.value.since,
      file,
    });
  }
  clients.sort((a, b) => a.since.localeCompare(b.since));

  let standby: StandbyStatus | undefined;
  const standbyRead = readStandby(paths);
  if (standbyRead && !standbyRead.ok) problems.push(standbyRead.problem);
  if (standbyRead?.ok) {
    const { pid, phase, backs, debugAddress, since } = standbyRead.value;
    standby = {
      pid,
      alive: liveness(standbyRead.value) === "alive",
      phase,
      backs,
      debugAddress: debugAddress ?? null,
      since,
    };
  }

  let owner: OwnerStatus | undefined;
  const read = readOwner(paths);
  if (read && !read.ok) problems.push(read.problem);
  if (read?.ok) {
    const record = read.value;
    const assessment = assessOwnerNow(record);
    const state = publicState(assessment.state);
    owner = {
      persistRoot,
      state,
      phase: record.phase,
      pid: record.pid,
      debugAddress: record.debugAddress ?? null,
      heartbeatAgeMs: Math.max(0, now - Date.parse(record.heartbeatAt)),
      startedAt: record.startedAt,
      uptimeMs: state === "dead" ? null : Math.max(0, now - Date.parse(record.startedAt)),
      logFile: record.logFile,
      versions: record.versions,
      clients,
      standby: standby && standby.backs === record.pid ? standby : null,
    };
  }

  let spawnLock: RootReport["spawnLock"];
  if (existsSync(paths.spawnLock)) {
    const holder = readLockHolder(paths);
    if (holder && !holder.ok) problems.push(holder.problem);
    spawnLock = holder?.ok
      ? { holderPid: holder.value.pid, alive: liveness(holder.value) === "alive" }
      : { alive: false };
  }
  return {
    persistRoot,
    owner,
    clients,
    problems,
    ...(spawnLock ? { spawnLock } : {}),
    ...(standby ? { standby } : {}),
  };
}
