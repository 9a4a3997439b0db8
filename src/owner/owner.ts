// The owner role: serves the root's KV/R2/D1 through the root's storage candidate, keeps its
// record (the lease: pid + start time) and the candidate fresh, keeps a standby booted, and exits
// once no client session remains.
import { ownerTimings, standbyEnabled, versions } from "../environment.js";
import { childProcesses, isAlive, killIdentities, signalIfOurs } from "../process-info.js";
import {
  HEARTBEAT_INTERVAL_MS,
  type OwnerRecord,
  pointerPath,
  readOwner,
  readPointer,
  readStandby,
  removeFile,
  SCHEMA_VERSION,
  type StandbyRecord,
  writeRecordAtomic,
} from "../records.js";
import { servePooled, withdrawPooled } from "../pooled/owner-sockets.js";
import * as candidate from "../storage-candidate.js";
import { startInstance, type Instance } from "./instance.js";
import { startOwnerProcess } from "./lifecycle.js";
import type { OwnerProcess } from "./process.js";
import { tryAcquireSpawnLock } from "./spawn-lock.js";

/** A standby that failed to start is retried this often. */
const STANDBY_RESPAWN_MS = 10_000;
/** Client presence is checked this often; the idle exit waits `idleMs` beyond the last client. */
const CLIENT_CHECK_MS = 2000;

let record: OwnerRecord;

export function startingRecord(proc: OwnerProcess): OwnerRecord {
  const now = new Date().toISOString();
  return {
    schema: SCHEMA_VERSION,
    phase: "starting",
    ...proc.identity,
    persistRoot: proc.persistRoot,
    registryPath: proc.registryPath,
    versions: versions(),
    startedAt: now,
    heartbeatAt: now,
    logFile: proc.paths.ownerLog,
  };
}

/** Writes our record; never overwrites one that another owner now holds (e.g. after gc). */
export function publishRecord(proc: OwnerProcess, phase: OwnerRecord["phase"]): void {
  record = { ...record, phase, heartbeatAt: new Date().toISOString() };
  const current = readOwner(proc.paths);
  if (current?.ok && current.value.pid !== proc.identity.pid) {
    proc.log(`owner record now names pid ${current.value.pid}; exiting`);
    void proc.exit("superseded", false);
    return;
  }
  writeRecordAtomic(proc.paths.ownerRecord, record);
}

let standbySpawnedAt = 0;
function ensureStandby(proc: OwnerProcess): void {
  if (!standbyEnabled() || Date.now() - standbySpawnedAt < STANDBY_RESPAWN_MS) return;
  if (liveStandby(proc)) return;
  standbySpawnedAt = Date.now();
  const pid = startOwnerProcess(proc.paths, proc.registryPath, { standby: true });
  proc.log(`started standby pid ${pid}`);
}

function liveStandby(proc: OwnerProcess): StandbyRecord | undefined {
  const standby = readStandby(proc.paths);
  return standby?.ok && standby.value.backs === proc.identity.pid && isAlive(standby.value)
    ? standby.value
    : undefined;
}

/** A fresh owner: record first (sessions wait for it), the standby booting beside us, then serve. */
export async function runOwner(proc: OwnerProcess): Promise<void> {
  record = startingRecord(proc);
  publishRecord(proc, "starting");
  proc.log(
    `starting for ${proc.persistRoot} (registry ${proc.registryPath}; process up ${Math.round(process.uptime() * 1000)} ms)`,
  );
  proc.instance = await startInstance(proc.paths, proc.identity);
  serve(proc, proc.instance);
}

/** Serve storage through the root's candidate until no client remains (also a promoted standby). */
export function serve(proc: OwnerProcess, instance: Instance): void {
  proc.role = "owner";
  const log = (message: string) => proc.log(message);
  record = { ...(record ?? startingRecord(proc)), ...proc.identity };
  const how = candidate.publish(proc.registryPath, proc.persistRoot, instance.address, log);
  // Only now, after any previous owner's workerd is gone, may the pooled sockets' link move here.
  let pooledSockets = servePooled(
    instance.pooled,
    proc.identity,
    log,
    () => !proc.shuttingDown,
    (stable) => {
      pooledSockets = stable;
      recordServing();
    },
  );
  const recordServing = () => {
    record = {
      ...record,
      pooledSockets,
      debugAddress: instance.address.debugAddress,
      instanceId: instance.address.instanceId,
      workerd: instance.workerd,
      lifelinePort: proc.lifelinePort,
    };
    publishRecord(proc, "running");
  };
  recordServing();
  proc.step("pointer", () => writePointer(proc));

  proc.log(
    `serving storage at ${instance.address.debugAddress} (candidate ${candidate.ownerCandidateName(proc.persistRoot)}, ${how})`,
  );
  instance.onRestart = () =>
    proc.step("workerd restart", () => {
      candidate.publish(proc.registryPath, proc.persistRoot, instance.address, log);
      recordServing();
      proc.log(`workerd restarted; serving at ${instance.address.debugAddress}`);
    });
  // A ready standby serves within tens of ms; miniflare's restart of our workerd takes ~1 s. So
  // with one ready we exit at once (before miniflare restarts anything) and let it take over.
  instance.onCrash = () => {
    const standby = liveStandby(proc);
    if (standby?.phase !== "ready") return; // miniflare restarts it; onRestart re-points the candidate
    proc.log(`workerd crashed; handing over to ready standby pid ${standby.pid}`);
    killIdentities(childProcesses(process.pid, "workerd"));
    process.exit(1);
  };
  proc.onExit(
    (reason, graceful) => beforeExit(proc, reason, graceful),
    () => afterDispose(proc),
  );
  const heartbeat = setInterval(() => {
    if (proc.shuttingDown) return clearInterval(heartbeat);
    proc.step("heartbeat", () => {
      instance.checkRestart();
      publishRecord(proc, "running");
      // Missing only if withdrawn under us (gc, a user) or expired while we and every session
      // were stopped: while we serve, it must exist.
      if (!candidate.keepFresh(proc.registryPath, proc.persistRoot)) {
        const clients = proc.liveClientCount();
        proc.log(
          `the root's storage candidate was missing; publishing it again` +
            (clients
              ? ` (${clients} session(s) connected: one may have served storage meanwhile; restart them if storage calls fail)`
              : ""),
        );
        candidate.publish(proc.registryPath, proc.persistRoot, instance.address, log);
      }
      candidate.withdrawOlderCandidates(proc.registryPath, proc.persistRoot, log);
      writePointer(proc);
      ensureStandby(proc);
    });
  }, HEARTBEAT_INTERVAL_MS);
  watchClients(proc);
  // The standby starts as soon as we serve (a promoted standby: its own successor at once), so a
  // crash in our first seconds, or soon after a failover, finds one booting. It loads its code
  // now and boots its workerd once the first session's is up (standby.ts), out of the way of
  // our own start and of that session's.
  proc.step("standby", () => ensureStandby(proc));
}

/** Writes the registry pointer unless it already names us (a reclaim may have removed it). */
function writePointer(proc: OwnerProcess): void {
  const current = readPointer(proc.registryPath, proc.persistRoot);
  if (current?.ok && current.value.ownerPid === proc.identity.pid) return;
  writeRecordAtomic(pointerPath(proc.registryPath, proc.persistRoot), {
    schema: SCHEMA_VERSION,
    persistRoot: proc.persistRoot,
    ownerPid: proc.identity.pid,
    updatedAt: new Date().toISOString(),
  });
}

function watchClients(proc: OwnerProcess): void {
  const timings = ownerTimings();
  let lastClientAt = Date.now();
  const timer = setInterval(() => {
    if (proc.shuttingDown) return clearInterval(timer);
    if (proc.liveClientCount() > 0) {
      lastClientAt = Date.now();
      return;
    }
    const now = Date.now();
    if (now - proc.startedAt < timings.graceMs || now - lastClientAt < timings.idleMs) return;
    clearInterval(timer);
    proc.step("idle exit", () => idleOut(proc));
  }, CLIENT_CHECK_MS);
}

/**
 * Clients write their presence before they read our record; we write "stopping" before we
 * count clients. So a client that read "running" is always counted here, and we stay. The record
 * stays "stopping" until the instance is disposed: a session arriving meanwhile waits for us to be
 * gone instead of starting a second owner while we still hold the files.
 */
function idleOut(proc: OwnerProcess): void {
  const lock = tryAcquireSpawnLock(proc.paths);
  if (!lock.release) {
    setTimeout(() => watchClients(proc), CLIENT_CHECK_MS);
    return;
  }
  try {
    publishRecord(proc, "stopping");
    if (proc.liveClientCount() > 0) {
      publishRecord(proc, "running");
      watchClients(proc);
      return;
    }
  } finally {
    lock.release();
  }
  void proc.exit(`no client for ${ownerTimings().idleMs} ms`, true);
}

let clientsAtExit = 0;
function beforeExit(proc: OwnerProcess, reason: string, graceful: boolean): void {
  clientsAtExit = proc.liveClientCount();
  proc.log(
    `stopping: ${reason}${clientsAtExit ? ` (${clientsAtExit} client session(s) still connected)` : ""}`,
  );
  const current = readOwner(proc.paths);
  const ours = current?.ok && current.value.pid === proc.identity.pid;
  if (!ours) return;
  if (clientsAtExit > 0) {
    // Leave the candidate where it is: clients fail fast until the standby (or an elected owner)
    // rewrites it in place. The record stays, "stopping", until our pid is gone.
    writeRecordAtomic(proc.paths.ownerRecord, { ...record, phase: "stopping" });
    return;
  }
  if (!graceful) return;
  // Nothing routes to a port that is about to close.
  candidate.withdraw(proc.registryPath, proc.persistRoot);
  writeRecordAtomic(proc.paths.ownerRecord, { ...record, phase: "stopping" });
  const standby = liveStandby(proc);
  if (standby) signalIfOurs(standby, "SIGTERM");
}

function afterDispose(proc: OwnerProcess): void {
  if (clientsAtExit > 0) return;
  withdrawPooled(proc.instance?.pooled);
  const current = readOwner(proc.paths);
  if (current?.ok && current.value.pid === proc.identity.pid) {
    removeFile(proc.paths.ownerRecord);
    removeFile(pointerPath(proc.registryPath, proc.persistRoot));
  }
}
