// The one invariant of shared storage, in one place: for a persist root that has an owner, the
// oldest storage candidate in the dev registry is always ours — the owner's — so miniflare never
// elects a session (which would open the database files itself).
//
// miniflare (`unsafeEnableSharedStorage`) registers one storage candidate per Miniflare instance,
// `<registry>/__miniflare_storage_candidate__-<instance id>`, a JSON file naming a debug-port
// address and a storage scope (the persist root). Every instance routes the root's KV/R2/D1 calls
// to the *oldest* candidate of the scope (by file birthtime), and serves them itself when it is
// that oldest one. An instance deletes any candidate whose mtime is older than 10 s.
//
// How we keep the oldest candidate ours:
// - Our candidate has a name derived from the persist root alone (`ownerCandidateName`), never one
//   read from a record, and no Miniflare instance owns it: owners and standbys register their own
//   instance only in a private registry, so miniflare never withdraws ours (on dispose, or when it
//   restarts a crashed workerd) and never writes it.
// - The first owner creates it before any session builds a Miniflare (sessions wait for the owner),
//   then withdraws every older candidate of the scope (`withdrawOlderCandidates`).
// - A successor (standby or newly elected owner) rewrites the same file in place (`publish`):
//   same inode, same birthtime, still the oldest. Every session's storage calls move to the new
//   address in one step; there is no moment in which a session is the oldest.
// - The file is kept fresh (`keepFresh`) by the owner and by every client session, whether the
//   owner is alive or not: however long a failover takes, it never expires, so storage calls fail
//   fast (connection refused) instead of a session becoming the holder.
// - It is withdrawn only when no client session is left (`withdraw`: idle exit, `gc`).
import { errnoCode } from "./errors.js";
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import path from "node:path";

export const CANDIDATE_PREFIX = "__miniflare_storage_candidate__-";

export interface StorageCandidate {
  name: string;
  file: string;
  /** Birthtime: miniflare elects the oldest candidate of a scope. */
  created: number;
  instanceId?: string;
  debugPortAddress?: string;
}

/** The name of the candidate through which the owner of `persistRoot` serves, whoever it is. */
export function ownerCandidateName(persistRoot: string): string {
  const hash = createHash("sha256").update(persistRoot).digest("hex").slice(0, 16);
  return `${CANDIDATE_PREFIX}x-shared-storage-${hash}`;
}

export function ownerCandidateFile(registryPath: string, persistRoot: string): string {
  return path.join(registryPath, ownerCandidateName(persistRoot));
}

/** The storage candidates for `persistRoot` in a registry, oldest first (miniflare's order). */
export function storageCandidates(registryPath: string, persistRoot: string): StorageCandidate[] {
  let names: string[];
  try {
    names = readdirSync(registryPath).filter((name) => name.startsWith(CANDIDATE_PREFIX));
  } catch {
    return [];
  }
  const found: StorageCandidate[] = [];
  for (const name of names) {
    const file = path.join(registryPath, name);
    try {
      const definition = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown> | null;
      if (definition?.storageScope !== persistRoot) continue;
      found.push({
        name,
        file,
        created: statSync(file).birthtimeMs,
        instanceId: typeof definition.instanceId === "string" ? definition.instanceId : undefined,
        debugPortAddress:
          typeof definition.debugPortAddress === "string" ? definition.debugPortAddress : undefined,
      });
    } catch {
      // written or withdrawn while we looked, or not a definition
    }
  }
  return found.sort((a, b) => a.created - b.created || a.name.localeCompare(b.name));
}

/** Where a Miniflare instance serves: what miniflare wrote for it in its (private) registry. */
export interface ServingAddress {
  debugAddress: string;
  instanceId: string;
}

/** The one candidate an owner's or standby's own instance registered in its private registry. */
export function instanceAddress(
  privateRegistry: string,
  persistRoot: string,
): ServingAddress | undefined {
  const own = storageCandidates(privateRegistry, persistRoot).find(
    (c) => c.debugPortAddress && c.instanceId,
  );
  return own ? { debugAddress: own.debugPortAddress!, instanceId: own.instanceId! } : undefined;
}

function definition(persistRoot: string, target: ServingAddress): string {
  return JSON.stringify(
    {
      debugPortAddress: target.debugAddress,
      defaultEntrypointService: "",
      userWorkerService: "",
      storageScope: persistRoot,
      instanceId: target.instanceId,
    },
    null,
    2,
  );
}

export type Publication = "created" | "rewritten in place";

/**
 * Points the root's candidate at `target`. An existing file (a predecessor's) is rewritten in
 * place, padded to at least its old length so a concurrent reader never sees a truncated file;
 * keeping the inode keeps the birthtime, so it stays the oldest. A new file is created and every
 * older candidate withdrawn.
 */
export function publish(
  registryPath: string,
  persistRoot: string,
  target: ServingAddress,
  log: (message: string) => void,
): Publication {
  const file = ownerCandidateFile(registryPath, persistRoot);
  const text = definition(persistRoot, target);
  let fd: number | undefined;
  try {
    fd = openSync(file, "r+");
  } catch (error) {
    if (errnoCode(error) !== "ENOENT") throw error;
  }
  if (fd === undefined) {
    // Written whole under a temporary name (in a subdirectory, which miniflare skips), then
    // linked into place: readers never see a partial file.
    const tempDir = path.join(registryPath, ".x-shared-storage");
    const temp = path.join(tempDir, `candidate.${process.pid}.tmp`);
    mkdirSync(tempDir, { recursive: true });
    writeFileSync(temp, text);
    try {
      linkSync(temp, file);
    } catch (error) {
      if (errnoCode(error) !== "EEXIST") throw error;
      return publish(registryPath, persistRoot, target, log); // a predecessor's appeared meanwhile
    } finally {
      rmSync(temp, { force: true });
    }
    withdrawOlderCandidates(registryPath, persistRoot, log);
    return "created";
  }
  try {
    const oldLength = readFileSync(file, "utf8").length;
    writeSync(fd, text.padEnd(oldLength, " "), 0);
  } finally {
    closeSync(fd);
  }
  keepFresh(registryPath, persistRoot);
  withdrawOlderCandidates(registryPath, persistRoot, log);
  return "rewritten in place";
}

/**
 * Withdraws every candidate of the scope older than ours, youngest first. They are a stale
 * session's or a foreign process's; their owners re-register younger on their next heartbeat.
 */
export function withdrawOlderCandidates(
  registryPath: string,
  persistRoot: string,
  log: (message: string) => void,
): void {
  const ours = ownerCandidateName(persistRoot);
  const all = storageCandidates(registryPath, persistRoot);
  const index = all.findIndex((c) => c.name === ours);
  for (const candidate of all.slice(0, Math.max(index, 0)).reverse()) {
    log(`withdrawing older storage candidate ${candidate.name} (${candidate.debugPortAddress})`);
    rmSync(candidate.file, { force: true });
  }
}

/** Touches the root's candidate (never creates it). Returns false when it does not exist. */
export function keepFresh(registryPath: string, persistRoot: string): boolean {
  const now = new Date();
  try {
    utimesSync(ownerCandidateFile(registryPath, persistRoot), now, now);
    return true;
  } catch {
    return false;
  }
}

/** Withdraws the root's candidate. Only when no client session is left to route through it. */
export function withdraw(registryPath: string, persistRoot: string): boolean {
  const file = ownerCandidateFile(registryPath, persistRoot);
  if (!existsSync(file)) return false;
  rmSync(file, { force: true });
  return true;
}

/** True when our candidate exists and is the oldest of the scope (what tests and status check). */
export function oursIsOldest(registryPath: string, persistRoot: string): boolean {
  return storageCandidates(registryPath, persistRoot)[0]?.name === ownerCandidateName(persistRoot);
}
