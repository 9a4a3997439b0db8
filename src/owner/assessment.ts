// Judging an owner (or standby) from its record, with the pid + start time as the authority:
// its state, what it left running, whether its standby still has the right to take over, and
// whether a session may use it at all (the same dev registry).
import { sameDirectory } from "../canonical-root.js";
import {
  isAlive,
  isStopped,
  leftoverGroup,
  liveness,
  type Liveness,
  type ProcessIdentity,
} from "../process-info.js";
import {
  HEARTBEAT_STALE_MS,
  listClients,
  type OwnerRecord,
  readStandby,
  type RootPaths,
} from "../records.js";

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

/** The root's sessions alive now (pid + start time), counted afresh at each call. */
export function liveSessionCount(paths: RootPaths): number {
  return listClients(paths).filter((c) => c.record.ok && isAlive(c.record.value)).length;
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

export function describeVersions(v: OwnerRecord["versions"]): string {
  return `package ${v.package}, miniflare ${v.miniflare}, workerd ${v.workerd}`;
}
