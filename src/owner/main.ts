// The storage owner: a detached, headless Miniflare that alone opens the KV, R2 and D1 files of
// one persist root. Sessions find it through miniflare's dev registry (it is the oldest storage
// candidate for the root) and through our owner record. It exits when no client remains.
//
// With --standby the same program starts a successor: Miniflare and workerd up, registered only
// in a private registry, so it serves nobody and opens no database file. When the owner it backs
// dies while clients remain, it takes over in milliseconds instead of the ~1 s a fresh start takes.
import {
  closeSync,
  existsSync,
  linkSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { enableCompileCache } from "node:module";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type * as MiniflareModule from "miniflare";
import {
  MINIFLARE_ENTRY,
  ownerTimings,
  requireFromWrangler,
  sameVersions,
  standbyEnabled,
  versions,
} from "../environment.js";
import { currentIdentity, isAlive, liveness, type ProcessIdentity } from "../process-info.js";
import {
  CANDIDATE_PREFIX,
  HEARTBEAT_INTERVAL_MS,
  listClients,
  type OwnerRecord,
  pointerPath,
  readOwner,
  readStandby,
  removeFile,
  rootPaths,
  SCHEMA_VERSION,
  storageCandidates,
  writeRecordAtomic,
} from "../records.js";
import { reclaimDeadOwner, startOwnerProcess } from "./lifecycle.js";
import { tryAcquireSpawnLock } from "./spawn-lock.js";

// Owners start on every failover: let Node cache miniflare's compiled code on disk.
enableCompileCache();

const STANDBY_WATCH_MS = 25;
const STANDBY_RESPAWN_MS = 10_000;
/** Sessions usually start in a burst right after the owner: keep the standby's start out of it. */
const STANDBY_DELAY_MS = 5000;

const { values } = parseArgs({
  options: {
    "persist-root": { type: "string" },
    registry: { type: "string" },
    standby: { type: "boolean", default: false },
    /** The dead predecessor's storage candidate, to take over in place. */
    adopt: { type: "string" },
  },
});
if (!values["persist-root"] || !values.registry) {
  console.error("usage: owner --persist-root DIR --registry DIR [--standby] [--adopt CANDIDATE]");
  process.exit(2);
}
const persistRoot = values["persist-root"];
const registryPath = values.registry;
const paths = rootPaths(persistRoot);
const timings = ownerTimings();
const identity = currentIdentity();
const startedAt = new Date();
let role = values.standby ? "standby" : "owner";
const log = (message: string) =>
  console.log(`[${new Date().toISOString()}] ${role} ${identity.pid}: ${message}`);

/** Storage candidates for this root in a registry, oldest first: miniflare's election order. */
const candidates = (registry: string) => storageCandidates(registry, persistRoot);

interface Instance {
  mf: MiniflareModule.Miniflare;
  debugAddress: string;
  instanceId: string;
  /** The candidate miniflare itself registered (in `registry`). */
  ownCandidate: string;
  isolatedDir: string;
}

let record: OwnerRecord;
let instance: Instance | undefined;
let shuttingDown = false;
/** The candidate file in the real registry through which sessions reach us. */
let serving: { name: string; adopted: boolean } | undefined;

async function startInstance(registry: string): Promise<Instance> {
  const miniflare = requireFromWrangler(MINIFLARE_ENTRY) as typeof MiniflareModule;
  const before = new Set(candidates(registry).map((c) => c.name));
  // The placeholder worker has nothing worth keeping: its Cache lives in a temp dir.
  const isolatedDir = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-owner-"));
  const options = miniflare.convertV4MiniflareOptions({
    name: "x-shared-storage-owner",
    modules: true,
    script: "export default { fetch() { return new Response(null, { status: 404 }); } };",
    host: "127.0.0.1",
    port: 0,
    // Not a worker anyone calls: no registry entry, and no network fetch of Request.cf.
    unsafeRegisterWorker: false,
    cf: false,
    resourcePersistencePath: persistRoot,
    unsafeDevRegistryPath: registry,
    log: new miniflare.Log(miniflare.LogLevel.WARN),
  });
  const mf = new miniflare.Miniflare({
    ...options,
    unsafeEnableSharedStorage: true,
    isolatedResourcePersistencePath: isolatedDir,
  });
  instance = { mf, debugAddress: "", instanceId: "", ownCandidate: "", isolatedDir };
  await mf.ready;
  const own = candidates(registry).find((c) => !before.has(c.name));
  if (!own?.debugPortAddress || !own.instanceId)
    throw new Error(`our storage candidate did not appear in ${registry}`);
  Object.assign(instance, {
    debugAddress: own.debugPortAddress,
    instanceId: own.instanceId,
    ownCandidate: own.name,
  });
  return instance;
}

/** Our record as an owner that is starting now (the heartbeat and serve() fill in the rest). */
function startingRecord(): OwnerRecord {
  const now = new Date().toISOString();
  return {
    schema: SCHEMA_VERSION,
    phase: "starting",
    ...identity,
    persistRoot,
    registryPath,
    versions: versions(),
    startedAt: now,
    heartbeatAt: now,
    logFile: paths.ownerLog,
  };
}

/** What miniflare writes into a storage candidate file, pointing at `target`. */
function candidateDefinition(target: Instance): string {
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
 * Miniflare elects the oldest candidate. Withdraw every candidate older than ours, youngest
 * first: the oldest is a dead owner's, and while it stays the oldest no client can become the
 * owner (and open the files) in between. Clients re-register, younger, on their next heartbeat.
 */
function takeOwnership(own: string): void {
  const all = candidates(registryPath);
  const index = all.findIndex((c) => c.name === own);
  for (const candidate of all.slice(0, Math.max(index, 0)).reverse()) {
    log(`withdrawing older storage candidate ${candidate.name} (${candidate.debugPortAddress})`);
    removeFile(candidate.file);
  }
}

/**
 * Points a dead predecessor's candidate file at us. Rewriting it in place keeps its inode, and so
 * its birthtime: it stays the oldest candidate, and every session's storage calls move to us in
 * one step, with no moment in which a client is the oldest. Padding keeps the file at least as
 * long as before, so a concurrent reader never sees a truncated file.
 */
function adopt(name: string, target: Instance): boolean {
  const file = path.join(registryPath, name);
  if (!existsSync(file)) return false;
  const old = readFileSync(file, "utf8");
  const definition = candidateDefinition(target);
  const fd = openSync(file, "r+");
  try {
    writeSync(fd, definition.padEnd(old.length, " "), 0);
  } finally {
    closeSync(fd);
  }
  log(`took over storage candidate ${name} in place`);
  return true;
}

function touch(name: string): void {
  const now = new Date();
  try {
    utimesSync(path.join(registryPath, name), now, now);
  } catch {
    // withdrawn (by gc) — miniflare's own heartbeat re-registers ours
  }
}

function writePointer(): void {
  writeRecordAtomic(pointerPath(registryPath, persistRoot), {
    schema: SCHEMA_VERSION,
    persistRoot,
    ownerPid: identity.pid,
    updatedAt: new Date().toISOString(),
  });
}

/** Live sessions of our own versions: an owner never serves (nor stays up for) another version's. */
function liveClientCount(): number {
  const ours = versions();
  return listClients(paths).filter(
    (c) => c.record.ok && sameVersions(c.record.value.versions, ours) && isAlive(c.record.value),
  ).length;
}

/** Serve storage through `candidate` (ours, or a predecessor's we adopted) until no client remains. */
function serve(target: Instance, candidate: { name: string; adopted: boolean }): void {
  serving = candidate;
  role = "owner";
  record = {
    ...record,
    debugAddress: target.debugAddress,
    instanceId: target.instanceId,
    candidate: candidate.name,
  };
  publish("running");
  writePointer();
  log(`serving storage at ${target.debugAddress} (candidate ${candidate.name})`);
  // Pretend a spawn just happened, so the first standby starts STANDBY_DELAY_MS from now.
  let standbySpawnedAt = Date.now() - STANDBY_RESPAWN_MS + STANDBY_DELAY_MS;
  setInterval(() => {
    if (shuttingDown) return;
    publish("running");
    touch(candidate.name);
    takeOwnership(candidate.name);
    if (standbyEnabled() && Date.now() - standbySpawnedAt > STANDBY_RESPAWN_MS && !liveStandby()) {
      standbySpawnedAt = Date.now();
      const pid = startOwnerProcess(paths, registryPath, { standby: true });
      log(`started standby pid ${pid}`);
    }
  }, HEARTBEAT_INTERVAL_MS);
  watchClients();
}

function liveStandby(): ProcessIdentity | undefined {
  const standby = readStandby(paths);
  return standby?.ok && standby.value.backs === identity.pid && isAlive(standby.value)
    ? standby.value
    : undefined;
}

async function runOwner(): Promise<void> {
  record = startingRecord();
  publish("starting");
  log(
    `starting for ${persistRoot} (registry ${registryPath}; process up ${Math.round(process.uptime() * 1000)} ms)`,
  );
  const target = await startInstance(registryPath);
  if (values.adopt && adopt(values.adopt, target)) {
    serve(target, { name: values.adopt, adopted: true });
  } else {
    takeOwnership(target.ownCandidate);
    serve(target, { name: target.ownCandidate, adopted: false });
  }
}

async function runStandby(): Promise<void> {
  const owner = readOwner(paths);
  if (!owner?.ok || !isAlive(owner.value)) return shutdown("no owner to back", false);
  const backed: ProcessIdentity = { pid: owner.value.pid, startTime: owner.value.startTime };
  const target = await startInstance(paths.standbyRegistry);
  writeRecordAtomic(paths.standbyRecord, {
    schema: SCHEMA_VERSION,
    ...identity,
    backs: backed.pid,
    debugAddress: target.debugAddress,
    instanceId: target.instanceId,
    since: new Date().toISOString(),
    versions: versions(),
  });
  log(`ready to take over from owner pid ${backed.pid} (at ${target.debugAddress})`);
  const timer = setInterval(() => {
    if (shuttingDown) return clearInterval(timer);
    const mine = readStandby(paths);
    if (!mine?.ok || mine.value.pid !== identity.pid)
      return void shutdown("replaced by another standby", false);
    if (liveness(backed) === "alive") return;
    clearInterval(timer);
    if (liveClientCount() === 0)
      return void shutdown(`owner pid ${backed.pid} left and no client remains`, false);
    void promote(target, backed);
  }, STANDBY_WATCH_MS);
}

/** The owner we back is gone and clients remain: reclaim what it left and serve in its place. */
async function promote(target: Instance, backed: ProcessIdentity): Promise<void> {
  const deadline = Date.now() + 2000;
  let lock = tryAcquireSpawnLock(paths);
  while (!lock.release && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    lock = tryAcquireSpawnLock(paths);
  }
  if (!lock.release)
    return shutdown(`a session holds the election (${lock.heldBy}); standing down`, false);
  const current = readOwner(paths);
  if (current?.ok && current.value.pid !== backed.pid && isAlive(current.value)) {
    lock.release();
    return shutdown(`owner pid ${current.value.pid} already took over`, false);
  }
  try {
    const predecessor = current?.ok ? current.value : undefined;
    if (predecessor) reclaimDeadOwner(paths, predecessor);
    record = startingRecord();
    log(`owner pid ${backed.pid} is gone; taking over`);
    let name = predecessor?.candidate;
    if (!name || !adopt(name, target)) {
      // Nothing to take over in place: register in the real registry, then become the oldest.
      name = `${CANDIDATE_PREFIX}${target.instanceId}`;
      writeFileSync(path.join(registryPath, name), candidateDefinition(target));
      takeOwnership(name);
    }
    removeFile(paths.standbyRecord);
    serve(target, { name, adopted: true });
  } finally {
    lock.release();
  }
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
  if (role === "standby") {
    log(`stopping: ${reason}`);
    const mine = readStandby(paths);
    if (mine?.ok && mine.value.pid === identity.pid) removeFile(paths.standbyRecord);
  } else {
    const clients = liveClientCount();
    log(`stopping: ${reason}${clients ? ` (${clients} client session(s) still connected)` : ""}`);
    const standby = liveStandby();
    if (clients === 0 && standby) process.kill(standby.pid, "SIGTERM");
    if (serving) {
      const file = path.join(registryPath, serving.name);
      if (clients === 0) {
        // Withdraw from the registry first, so nothing routes to a port that is about to close.
        removeFile(file);
      } else if (!serving.adopted) {
        // A forced stop with clients left: stay the oldest candidate, so they fail fast until a
        // successor takes it over in place. miniflare's dispose unlinks its own candidate; a hard
        // link keeps the inode (and birthtime) under a name it does not own.
        try {
          linkSync(file, `${file}-retired`);
          record = { ...record, candidate: `${serving.name}-retired` };
        } catch (error) {
          log(`could not keep the storage candidate in place: ${String(error)}`);
        }
      }
    }
    const current = readOwner(paths);
    if (removeRecords && current?.ok && current.value.pid === identity.pid) {
      if (clients === 0) {
        removeFile(paths.ownerRecord);
        removeFile(pointerPath(registryPath, persistRoot));
      } else {
        // Leave the record (and so the candidate's name) to the successor.
        writeRecordAtomic(paths.ownerRecord, { ...record, phase: "stopping" });
      }
    }
  }
  try {
    await instance?.mf.dispose();
  } catch (error) {
    log(`dispose failed: ${String(error)}`);
  }
  if (instance) rmSync(instance.isolatedDir, { recursive: true, force: true });
  log("stopped");
  process.exit(0);
}

for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
  process.on(signal, () => void shutdown(signal, true));
}

(values.standby ? runStandby() : runOwner()).catch((error: unknown) => {
  log(
    `failed to start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
  );
  const current = readOwner(paths);
  if (role === "owner" && current?.ok && current.value.pid === identity.pid)
    removeFile(paths.ownerRecord);
  const mine = readStandby(paths);
  if (mine?.ok && mine.value.pid === identity.pid) removeFile(paths.standbyRecord);
  void (instance?.mf.dispose() ?? Promise.resolve()).finally(() => process.exit(1));
});
