// The storage owner: a detached, headless Miniflare that alone opens the KV, R2 and D1 files of
// one persist root. Sessions find it through miniflare's dev registry (it is the oldest storage
// candidate for the root) and through our owner record. It exits when no client remains.
import { linkSync, readdirSync, readFileSync, statSync } from "node:fs";
import { enableCompileCache } from "node:module";
import path from "node:path";
import { parseArgs } from "node:util";
import type * as MiniflareModule from "miniflare";
import { MINIFLARE_ENTRY, ownerTimings, requireFromWrangler, versions } from "../environment.js";
import { currentIdentity, isAlive } from "../process-info.js";
import {
  HEARTBEAT_INTERVAL_MS,
  listClients,
  type OwnerRecord,
  pointerPath,
  readOwner,
  removeFile,
  rootPaths,
  SCHEMA_VERSION,
  writeRecordAtomic,
} from "../records.js";
import { tryAcquireSpawnLock } from "./spawn-lock.js";

// Owners start on every failover: let Node cache miniflare's compiled code on disk.
enableCompileCache();

const CANDIDATE_PREFIX = "__miniflare_storage_candidate__-";

const { values } = parseArgs({
  options: { "persist-root": { type: "string" }, registry: { type: "string" } },
});
const persistRoot = values["persist-root"];
const registryPath = values.registry;
if (!persistRoot || !registryPath) {
  console.error("usage: owner --persist-root DIR --registry DIR");
  process.exit(2);
}
const paths = rootPaths(persistRoot);
const timings = ownerTimings();
const identity = currentIdentity();
const startedAt = new Date();
const log = (message: string) =>
  console.log(`[${new Date().toISOString()}] owner ${identity.pid}: ${message}`);

interface Candidate {
  name: string;
  created: number;
  instanceId?: string;
  debugPortAddress?: string;
}

/** Storage candidates for this root, oldest first: the order miniflare's proxy elects by. */
function candidates(): Candidate[] {
  let names: string[];
  try {
    names = readdirSync(registryPath!).filter((name) => name.startsWith(CANDIDATE_PREFIX));
  } catch {
    return [];
  }
  const found: Candidate[] = [];
  for (const name of names) {
    try {
      const file = path.join(registryPath!, name);
      const definition = readJson(file);
      if (definition === undefined || definition.storageScope !== persistRoot) continue;
      found.push({
        name,
        created: statSync(file).birthtimeMs,
        instanceId: definition.instanceId,
        debugPortAddress: definition.debugPortAddress,
      });
    } catch {
      // written or withdrawn while we looked
    }
  }
  return found.sort((a, b) => a.created - b.created || a.name.localeCompare(b.name));
}

function readJson(file: string): Record<string, string> | undefined {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
  } catch {
    return undefined;
  }
}

let record: OwnerRecord;
let shuttingDown = false;
let mf: MiniflareModule.Miniflare | undefined;

function publish(phase: OwnerRecord["phase"]): void {
  record = { ...record, phase, heartbeatAt: new Date().toISOString() };
  // Never overwrite a record that another owner now holds (e.g. after `gc` presumed us dead).
  const current = readOwner(paths);
  if (current?.ok && current.value.pid !== identity.pid) {
    log(`owner record now names pid ${current.value.pid}; exiting`);
    void shutdown("superseded", false);
    return;
  }
  writeRecordAtomic(paths.ownerRecord, record);
}

/**
 * Miniflare elects the oldest candidate. After a failover the candidates older than ours are
 * the dead owner's (oldest, left in place so that no client serves in between) and the
 * clients'. Withdraw them youngest first, the dead owner's last: at every moment the oldest
 * candidate is the dead owner or us, never a client. A client re-registers, younger, on its
 * next heartbeat.
 */
function takeOwnership(own: string): void {
  const all = candidates();
  const index = all.findIndex((c) => c.name === own);
  for (const candidate of all.slice(0, Math.max(index, 0)).reverse()) {
    log(`withdrawing older storage candidate ${candidate.name} (${candidate.debugPortAddress})`);
    removeFile(path.join(registryPath!, candidate.name));
  }
}

async function main(): Promise<void> {
  const miniflare = requireFromWrangler(MINIFLARE_ENTRY) as typeof MiniflareModule;
  record = {
    schema: SCHEMA_VERSION,
    phase: "starting",
    ...identity,
    persistRoot: persistRoot!,
    registryPath: registryPath!,
    versions: versions(),
    startedAt: startedAt.toISOString(),
    heartbeatAt: startedAt.toISOString(),
    logFile: paths.ownerLog,
  };
  publish("starting");
  const before = new Set(candidates().map((c) => c.name));
  log(
    `starting for ${persistRoot} (registry ${registryPath}, miniflare ${record.versions.miniflare}; ` +
      `process up ${Math.round(process.uptime() * 1000)} ms)`,
  );
  const options = miniflare.convertV4MiniflareOptions({
    name: "x-shared-storage-owner",
    modules: true,
    script: "export default { fetch() { return new Response(null, { status: 404 }); } };",
    host: "127.0.0.1",
    // Not a worker anyone calls: no registry entry, and no network fetch of Request.cf.
    unsafeRegisterWorker: false,
    cf: false,
    port: 0,
    resourcePersistencePath: persistRoot,
    unsafeDevRegistryPath: registryPath,
    log: new miniflare.Log(miniflare.LogLevel.WARN),
  });
  mf = new miniflare.Miniflare({
    ...options,
    unsafeEnableSharedStorage: true,
    isolatedResourcePersistencePath: path.join(paths.isolatedDir, "__owner__"),
  });
  await mf.ready;
  const own = candidates().find((c) => !before.has(c.name));
  if (!own?.debugPortAddress)
    throw new Error("the owner's storage candidate did not appear in the registry");
  takeOwnership(own.name);
  record = {
    ...record,
    debugAddress: own.debugPortAddress,
    instanceId: own.instanceId,
    candidate: own.name,
  };
  publish("running");
  writeRecordAtomic(pointerPath(registryPath!, persistRoot!), {
    schema: SCHEMA_VERSION,
    persistRoot,
    ownerPid: identity.pid,
    updatedAt: new Date().toISOString(),
  });
  log(`serving storage at ${own.debugPortAddress} (candidate ${own.name})`);

  setInterval(() => {
    if (shuttingDown) return;
    publish("running");
    takeOwnership(own.name);
  }, HEARTBEAT_INTERVAL_MS);
  watchClients();
}

function liveClientCount(): number {
  return listClients(paths).filter((c) => c.record.ok && isAlive(c.record.value)).length;
}

function watchClients(): void {
  let lastClientAt = Date.now();
  const timer = setInterval(() => {
    if (shuttingDown) return;
    if (liveClientCount() > 0) {
      lastClientAt = Date.now();
      return;
    }
    const now = Date.now();
    if (now - startedAt.getTime() < timings.graceMs || now - lastClientAt < timings.idleMs) return;
    clearInterval(timer);
    void idleOut();
  }, 200);
}

/**
 * Clients write their presence before they read our record; we write "stopping" before we
 * count clients. So a client that read "running" is always counted here, and we stay.
 */
async function idleOut(): Promise<void> {
  const lock = tryAcquireSpawnLock(paths);
  if (!lock.release) {
    setTimeout(() => watchClients(), 200);
    return;
  }
  try {
    publish("stopping");
    if (liveClientCount() > 0) {
      publish("running");
      watchClients();
      return;
    }
  } finally {
    lock.release();
  }
  await shutdown(`no client for ${timings.idleMs} ms`, true);
}

async function shutdown(reason: string, removeRecords: boolean): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  const clients = liveClientCount();
  log(`stopping: ${reason}${clients ? ` (${clients} client session(s) still connected)` : ""}`);
  // With no client left, withdraw from the registry first so nothing routes to a closing port.
  // With clients left (a forced stop), stay the oldest candidate: they fail fast against the
  // closed port until their new owner takes over, instead of one of them opening the files.
  if (record?.candidate) {
    const candidateFile = path.join(registryPath!, record.candidate);
    if (clients > 0) {
      // miniflare's dispose unlinks our candidate; a hard link keeps its inode, and so its
      // birthtime (miniflare's election order), under a name it does not own.
      try {
        linkSync(candidateFile, `${candidateFile}-retired`);
      } catch (error) {
        log(`could not keep the storage candidate in place: ${String(error)}`);
      }
    } else {
      removeFile(candidateFile);
    }
  }
  if (removeRecords) {
    const pointer = pointerPath(registryPath!, persistRoot!);
    const current = readOwner(paths);
    if (current?.ok && current.value.pid === identity.pid) {
      removeFile(paths.ownerRecord);
      removeFile(pointer);
    }
  }
  try {
    await mf?.dispose();
  } catch (error) {
    log(`dispose failed: ${String(error)}`);
  }
  log("stopped");
  process.exit(0);
}

for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
  process.on(signal, () => void shutdown(signal, true));
}

main().catch((error: unknown) => {
  log(
    `failed to start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
  );
  const current = readOwner(paths);
  if (current?.ok && current.value.pid === identity.pid) removeFile(paths.ownerRecord);
  void mf?.dispose().finally(() => process.exit(1));
  if (!mf) process.exit(1);
});
