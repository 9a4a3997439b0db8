// Every file this package writes, its schema, and how it is read back. docs/experimental.md
// ("On-disk protocol") describes the same files for people; keep the two in step.
//
//   <persist root>/.x-shared-storage/owner.json          owner record + lifetime lease (owner writes)
//   <persist root>/.x-shared-storage/clients/<pid>.json  presence of one client session (client writes)
//   <persist root>/.x-shared-storage/spawn.lock          election lock dir (proper-lockfile)
//   <persist root>/.x-shared-storage/spawn.lock.holder   who holds the election lock
//   <persist root>/.x-shared-storage/standby.json        a pre-started successor (standby writes)
//   <persist root>/.x-shared-storage/owner.log           the owner's stdout/stderr
//   <persist root>/.x-shared-storage/instances/<pid>-<start time>/
//                                                        an owner's or standby's private registry
//                                                        and placeholder Cache (removed on exit)
//   <persist root>/.x-shared-storage/isolated/<name>/    earlier versions: a worker's Cache/DO/Workflows
//   <registry>/.x-shared-storage/<hash>.json             pointer to a persist root (for --all)
//   <registry>/__miniflare_storage_candidate__-x-shared-storage-<hash>
//                                                        the owner's storage candidate (see
//                                                        storage-candidate.ts: the invariant)
//
// Nothing read from a record becomes a path: every path is derived from the persist root and the
// registry the reader resolved itself. Pids in records are signalled only through
// `signalIfOurs` (pid + recorded start time: `startTime` ticks and/or `started` seconds, see
// process-info.ts); an owner's or standby's `token` is what its lifeline answers.
import { errnoCode, errorCode } from "./errors.js";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { sameDirectory } from "./canonical-root.js";
import { removeFileWithRetrySync, renameWithRetrySync } from "./fs-retry.js";
import type { ProcessIdentity } from "./process-info.js";

export const STATE_DIR = ".x-shared-storage";
export const SCHEMA_VERSION = 1;

/** How often the owner rewrites its heartbeat, and when a live owner counts as "stale". */
export const HEARTBEAT_INTERVAL_MS = 2000;
export const HEARTBEAT_STALE_MS = 5000;

export interface RootPaths {
  persistRoot: string;
  stateDir: string;
  ownerRecord: string;
  clientsDir: string;
  spawnLock: string;
  spawnLockHolder: string;
  ownerLog: string;
  isolatedDir: string;
  standbyRecord: string;
  instancesDir: string;
  /** The root's Cache route, shared by its sessions and owners (src/pooled/cache-claim.ts). */
  cacheRoute: string;
}

export function rootPaths(persistRoot: string): RootPaths {
  const stateDir = path.join(persistRoot, STATE_DIR);
  return {
    persistRoot,
    stateDir,
    ownerRecord: path.join(stateDir, "owner.json"),
    clientsDir: path.join(stateDir, "clients"),
    spawnLock: path.join(stateDir, "spawn.lock"),
    spawnLockHolder: path.join(stateDir, "spawn.lock.holder"),
    ownerLog: path.join(stateDir, "owner.log"),
    isolatedDir: path.join(stateDir, "isolated"),
    standbyRecord: path.join(stateDir, "standby.json"),
    instancesDir: path.join(stateDir, "instances"),
    cacheRoute: path.join(stateDir, "cache-route.json"),
  };
}

export function clientRecordPath(paths: RootPaths, pid: number): string {
  return path.join(paths.clientsDir, `${pid}.json`);
}

/**
 * Where earlier versions kept a worker's Cache, Durable Objects and Workflows. Sessions now use
 * plain wrangler's layout (the persist root itself) and move what they find here into it once.
 */
export function legacyIsolatedPathFor(paths: RootPaths, workerName: string): string {
  const safe = workerName.replace(/[^A-Za-z0-9._-]/g, "_") || "worker";
  return path.join(paths.isolatedDir, safe);
}

export function pointerDir(registryPath: string): string {
  return path.join(registryPath, STATE_DIR);
}

export function pointerPath(registryPath: string, persistRoot: string): string {
  const hash = createHash("sha256").update(persistRoot).digest("hex").slice(0, 16);
  return path.join(pointerDir(registryPath), `${hash}.json`);
}

export interface Versions {
  package: string;
  wrangler: string;
  miniflare: string;
  workerd: string;
}

export type OwnerPhase = "starting" | "running" | "stopping";

export interface OwnerRecord extends ProcessIdentity {
  schema: number;
  phase: OwnerPhase;
  persistRoot: string;
  registryPath: string;
  /** The owner's workerd debug port, where clients' storage calls land. */
  debugAddress?: string;
  /** Loopback port of the owner's lifeline (src/lifeline.ts): a hint, the pid is the authority. */
  lifelinePort?: number;
  /** The owner's miniflare instance id. */
  instanceId?: string;
  /** The owner's workerd process(es): the only other processes anyone may signal for it. */
  workerd?: ProcessIdentity[];
  /** Random, answered on the lifeline: proves the process there is this owner (src/lifeline.ts). */
  token?: string;
  versions: Versions;
  startedAt: string;
  heartbeatAt: string;
  logFile: string;
  spawnedBy?: number;
  /** The stable socket path (src/pooled/sockets.ts) when this owner serves pooled storage sockets. */
  pooledSockets?: string;
  /**
   * The owner's workerd serves the root's Cache on the stable path's cache socket, for status:
   * sessions decide by the root's route (`cache-route.json`, src/pooled/cache-claim.ts), which
   * outlives this record.
   */
  pooledCache?: boolean;
}

/**
 * An owner's first record, `starting`: the one builder of owner.json's fields, used by the owner
 * itself (`OwnerRole`) and by the electing session that writes it for an owner too slow to
 * (`spawnOwner`; it knows no token). Later records are this one with serving fields added.
 */
export function startingOwnerRecord(owner: {
  paths: RootPaths;
  registryPath: string;
  identity: ProcessIdentity;
  versions: Versions;
  /** The process that spawned the owner (the electing session, or the owner a standby backs). */
  spawnedBy: number;
  token?: string;
}): OwnerRecord {
  const now = new Date().toISOString();
  return {
    schema: SCHEMA_VERSION,
    phase: "starting",
    ...owner.identity,
    ...(owner.token === undefined ? {} : { token: owner.token }),
    persistRoot: owner.paths.persistRoot,
    registryPath: owner.registryPath,
    versions: owner.versions,
    startedAt: now,
    heartbeatAt: now,
    logFile: owner.paths.ownerLog,
    spawnedBy: owner.spawnedBy,
  };
}

export interface ClientRecord extends ProcessIdentity {
  schema: number;
  /** The dev registry the session found the owner through (absent in earlier versions). */
  registryPath?: string;
  worker: string;
  command: string;
  port?: number;
  since: string;
  cwd: string;
  /** Versions the client runs; an owner of other versions must not serve it. */
  versions: Versions;
  /**
   * How its KV/R2/D1 calls and its Cache reach the owner: "pooled", "proxy", per kind, and
   * "cache: session" where its own workerd runs the Cache (session-bindings.ts `describeRoutes`).
   */
  storageRoute?: string;
  /** Where its Cache is served, as the owner's announcement reads it (src/pooled/owner-cache.ts). */
  cacheDecision?: CacheDecision;
}

/**
 * A session's Cache route in its presence: deciding it, decided, following an owner's intent, or
 * `joining` the owner's (read a standing route, reading it again: src/pooled/cache-claim.ts).
 */
export type CacheDecision = "deciding" | "session" | "pooled" | "follows-owner" | "joining";

/**
 * The root's Cache route (src/pooled/cache-claim.ts): an owner checking the sessions' notes
 * (`intent`), or the owner's workerd serving every session's Cache (`pooled`). Written by owners.
 */
export interface CacheRouteRecord extends ProcessIdentity {
  schema: number;
  state: "intent" | "pooled";
  /** Names one claim: a session follows an intent by it, and its owner withdraws only its own. */
  nonce: string;
  at: string;
}

/** A started owner that is not yet serving: it takes over when the owner it `backs` dies. */
export interface StandbyRecord extends ProcessIdentity {
  schema: number;
  /** "starting" until its Miniflare is up; sessions give a starting standby priority too. */
  phase: "starting" | "ready";
  backs: number;
  debugAddress?: string;
  instanceId?: string;
  workerd?: ProcessIdentity[];
  /** As the owner's: its lifeline and the token it answers there. */
  lifelinePort?: number;
  token?: string;
  since: string;
  versions: Versions;
}

export interface LockHolderRecord extends ProcessIdentity {
  schema: number;
  acquiredAt: string;
}

export interface PointerRecord {
  schema: number;
  persistRoot: string;
  ownerPid: number;
  updatedAt: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

/** Reads one JSON record; a missing file is `undefined`, anything unreadable is a problem. */
export function readRecord<T>(
  file: string,
  validate: (value: unknown) => string | undefined,
): Parsed<T> | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    return { ok: false, problem: `cannot read ${file}: ${errorCode(error)}` };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    const what = text.trim() === "" ? "is empty" : "is not valid JSON (truncated or corrupt)";
    return { ok: false, problem: `${file} ${what}` };
  }
  const problem = validate(value);
  return problem === undefined
    ? { ok: true, value: value as T }
    : { ok: false, problem: `${file}: ${problem}` };
}

type FieldType = "string" | "number" | "boolean" | "object";

function checkFields(
  value: unknown,
  fields: Record<string, FieldType>,
  optional: Record<string, FieldType> = {},
): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return "not a JSON object";
  const record = value as Record<string, unknown>;
  if (record.schema !== SCHEMA_VERSION) return `unknown schema ${JSON.stringify(record.schema)}`;
  for (const [name, type] of Object.entries(fields)) {
    if (typeof record[name] !== type || record[name] === null)
      return `field "${name}" is missing or not a ${type}`;
  }
  for (const [name, type] of Object.entries(optional)) {
    if (record[name] !== undefined && typeof record[name] !== type)
      return `field "${name}" is not a ${type}`;
  }
  if ("pid" in fields && !isProcessId(record.pid)) return `field "pid" is not a process id`;
  // Runtime-only (process-info.ts: a dead leader's process group); a record naming it would make
  // a reader signal a whole group.
  if (record.group !== undefined) return `field "group" is not a record field`;
  if (record.started !== undefined && !/^\d+$/.test(String(record.started)))
    return `field "started" is not a number of seconds`;
  if (record.workerd !== undefined) {
    const ok =
      Array.isArray(record.workerd) &&
      record.workerd.every(
        (w: unknown) =>
          typeof w === "object" &&
          w !== null &&
          isProcessId((w as ProcessIdentity).pid) &&
          (typeof (w as ProcessIdentity).startTime === "string" ||
            typeof (w as ProcessIdentity).started === "string") &&
          (w as ProcessIdentity).group === undefined,
      );
    if (!ok) return `field "workerd" is not a list of {pid, startTime or started}`;
  }
  for (const name of ["persistRoot", "registryPath"]) {
    if (typeof record[name] === "string" && !path.isAbsolute(record[name] as string))
      return `field "${name}" is not an absolute path`;
  }
  return undefined;
}

function isProcessId(value: unknown): boolean {
  return Number.isInteger(value) && (value as number) > 0;
}

export function validateOwner(value: unknown): string | undefined {
  const problem = checkFields(
    value,
    {
      pid: "number",
      phase: "string",
      persistRoot: "string",
      registryPath: "string",
      versions: "object",
      startedAt: "string",
      heartbeatAt: "string",
      logFile: "string",
    },
    {
      startTime: "string",
      started: "string",
      token: "string",
      debugAddress: "string",
      instanceId: "string",
      spawnedBy: "number",
      lifelinePort: "number",
      pooledSockets: "string",
      pooledCache: "boolean",
    },
  );
  if (problem) return problem;
  const port = (value as OwnerRecord).lifelinePort;
  if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65536))
    return `lifelinePort ${port} is not a port`;
  const phase = (value as OwnerRecord).phase;
  if (!["starting", "running", "stopping"].includes(phase)) return `unknown phase "${phase}"`;
  return undefined;
}

export function validateClient(value: unknown): string | undefined {
  return checkFields(
    value,
    {
      pid: "number",
      worker: "string",
      command: "string",
      since: "string",
      cwd: "string",
      versions: "object",
    },
    {
      startTime: "string",
      started: "string",
      port: "number",
      registryPath: "string",
      storageRoute: "string",
      cacheDecision: "string",
    },
  );
}

export function validateCacheRoute(value: unknown): string | undefined {
  const problem = checkFields(
    value,
    { pid: "number", state: "string", nonce: "string", at: "string" },
    { startTime: "string", started: "string" },
  );
  if (problem) return problem;
  const state = (value as CacheRouteRecord).state;
  return state === "intent" || state === "pooled" ? undefined : `unknown state "${state}"`;
}

export function validateStandby(value: unknown): string | undefined {
  return checkFields(
    value,
    {
      pid: "number",
      phase: "string",
      backs: "number",
      since: "string",
      versions: "object",
    },
    {
      startTime: "string",
      started: "string",
      token: "string",
      lifelinePort: "number",
      debugAddress: "string",
      instanceId: "string",
    },
  );
}

export function validateLockHolder(value: unknown): string | undefined {
  return checkFields(
    value,
    { pid: "number", acquiredAt: "string" },
    { startTime: "string", started: "string" },
  );
}

export function validatePointer(value: unknown): string | undefined {
  return checkFields(value, { persistRoot: "string", ownerPid: "number", updatedAt: "string" });
}

/** The owner record; one that names another persist root (copied or mounted from elsewhere) is a problem. */
export const readOwner = (paths: RootPaths) =>
  readRecord<OwnerRecord>(paths.ownerRecord, (value) => {
    const problem = validateOwner(value);
    if (problem) return problem;
    const named = (value as OwnerRecord).persistRoot;
    // Another spelling of this directory (one written before roots were canonical) is this root.
    return sameDirectory(named, paths.persistRoot)
      ? undefined
      : `names persist root ${named}, not ${paths.persistRoot} (copied or mounted from elsewhere?)`;
  });
export const readStandby = (paths: RootPaths) =>
  readRecord<StandbyRecord>(paths.standbyRecord, validateStandby);
export const readCacheRoute = (paths: RootPaths) =>
  readRecord<CacheRouteRecord>(paths.cacheRoute, validateCacheRoute);
export const readPointer = (registryPath: string, persistRoot: string) =>
  readRecord<PointerRecord>(pointerPath(registryPath, persistRoot), validatePointer);
export const readLockHolder = (paths: RootPaths) =>
  readRecord<LockHolderRecord>(paths.spawnLockHolder, validateLockHolder);

export interface ClientEntry {
  file: string;
  record: Parsed<ClientRecord>;
}

export function listClients(paths: RootPaths): ClientEntry[] {
  let names: string[];
  try {
    names = readdirSync(paths.clientsDir);
  } catch {
    return [];
  }
  return names
    .filter((name) => name.endsWith(".json"))
    .flatMap((name) => {
      const file = path.join(paths.clientsDir, name);
      const record = readRecord<ClientRecord>(file, validateClient);
      return record === undefined ? [] : [{ file, record }];
    });
}

export function listPointers(
  registryPath: string,
): { file: string; record: Parsed<PointerRecord> }[] {
  let names: string[];
  try {
    names = readdirSync(pointerDir(registryPath));
  } catch {
    return [];
  }
  return names
    .filter((name) => name.endsWith(".json"))
    .flatMap((name) => {
      const file = path.join(pointerDir(registryPath), name);
      const record = readRecord<PointerRecord>(file, validatePointer);
      return record === undefined ? [] : [{ file, record }];
    });
}

/**
 * Write-then-rename, so a reader sees the old record or the new one, never half of one. The
 * rename is retried while Windows holds the record open (a reader, the indexer); when it fails
 * for good the old record stays whole and the temporary file is removed.
 */
export function writeRecordAtomic(
  file: string,
  value: object,
  rename: (from: string, to: string) => void = renameWithRetrySync,
): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}.tmp`;
  // Owner-only: owner and standby records carry the token their lifeline is stopped with.
  writeFileSync(temp, JSON.stringify(value, null, 2) + "\n", { mode: 0o600 });
  try {
    rename(temp, file);
  } catch (error) {
    removeFile(temp); // best effort: the rename's error is the one to report
    throw error;
  }
}

/** Removes a record (retried while Windows holds it); false when it is gone or cannot go. */
export function removeFile(file: string): boolean {
  try {
    return removeFileWithRetrySync(file);
  } catch {
    return false;
  }
}
