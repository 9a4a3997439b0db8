// The owner role: serves the root's KV/R2/D1 through the root's storage candidate, keeps its
// record (the lease: pid + start time) and the candidate fresh, keeps a standby booted, and exits
// once no client session remains. Its state and timers are fields of `OwnerRole`; `dispose()`
// clears them, on the one exit path (`OwnerProcess.exit`).
import { ownerTimings, standbyEnabled, versions } from "../environment.js";
import { askLifeline } from "../lifeline.js";
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
  startingOwnerRecord,
  writeRecordAtomic,
} from "../records.js";
import {
  CACHE_CLAIM,
  type ClaimMemory,
  claimCache,
  retireCacheRoute,
} from "../pooled/cache-claim.js";
import { type PooledLink, servePooled, withdrawPooled } from "../pooled/owner-sockets.js";
import * as candidate from "../storage-candidate.js";
import { startInstance, type Instance } from "./instance.js";
import type { OwnerProcess } from "./process.js";
import { startOwnerProcess } from "./spawn.js";
import { tryAcquireSpawnLock } from "./spawn-lock.js";

/** A standby that failed to start is retried this often. */
const STANDBY_RESPAWN_MS = 10_000;
/** Client presence is checked this often; the idle exit waits `idleMs` beyond the last client. */
const CLIENT_CHECK_MS = 2000;

/** A fresh owner: record first (sessions wait for it), the standby booting beside us, then serve. */
export async function runOwner(proc: OwnerProcess): Promise<void> {
  const role = new OwnerRole(proc);
  role.publish("starting");
  // Another owner's record was there: we are on our way out, and must not start an instance.
  if (proc.shuttingDown) return;
  proc.log(
    `starting for ${proc.persistRoot} (registry ${proc.registryPath}; process up ${Math.round(process.uptime() * 1000)} ms)`,
  );
  proc.instance = await startInstance(proc.paths, proc.identity, (message) => proc.log(message));
  role.serve(proc.instance);
}

/** A promoted standby serves in its owner's place: the owner role from its first record on. */
export function serve(proc: OwnerProcess, instance: Instance): void {
  new OwnerRole(proc).serve(instance);
}

class OwnerRole {
  /** The record as we last wrote it: the one writer of owner.json while we live. */
  private record: OwnerRecord;
  private standbySpawnedAt = 0;
  private clientsAtExit = 0;
  private lastClientAt = Date.now();
  private heartbeat?: NodeJS.Timeout;
  /** While serving: rewrites the record from the instance (and announces the Cache once it may). */
  private recordServing?: () => void;
  private clientCheck?: NodeJS.Timeout;
  private idleRetry?: NodeJS.Timeout;
  /** Moves the pooled sockets' link here once the previous holder is gone (owner-sockets.ts). */
  private pooledLink?: PooledLink;
  private claimProblem?: string;
  /** Between claims: a session stopped mid-decision blocks our thread once, not every 2 s. */
  private readonly claimMemory: ClaimMemory = {};

  constructor(private readonly proc: OwnerProcess) {
    this.record = startingOwnerRecord({
      paths: proc.paths,
      registryPath: proc.registryPath,
      identity: proc.identity,
      versions: versions(),
      // The electing session, or the owner we back: for diagnosis.
      spawnedBy: process.ppid,
      token: proc.token,
    });
  }

  /** Writes our record; never overwrites one that another owner now holds (e.g. after gc). */
  publish(phase: OwnerRecord["phase"]): void {
    this.record = { ...this.record, phase, heartbeatAt: new Date().toISOString() };
    const other = this.supersededBy();
    if (other !== undefined) return this.exitSuperseded(other);
    writeRecordAtomic(this.proc.paths.ownerRecord, this.record);
  }

  /** The pid the root's owner record names when it is not ours (another owner holds the root). */
  private supersededBy(): number | undefined {
    const current = readOwner(this.proc.paths);
    return current?.ok && current.value.pid !== this.proc.identity.pid
      ? current.value.pid
      : undefined;
  }

  private exitSuperseded(other: number): void {
    if (this.proc.shuttingDown) return;
    this.proc.log(`owner record now names pid ${other}; exiting`);
    void this.proc.exit("superseded", false);
  }

  /** Serve storage through the root's candidate until no client remains. */
  serve(instance: Instance): void {
    const proc = this.proc;
    proc.role = "owner";
    // First: a record found superseded below exits at once, and that exit must dispose of us.
    proc.onExit(
      (reason, graceful) => this.beforeExit(reason, graceful),
      () => this.afterDispose(),
    );
    const log = (message: string) => proc.log(message);
    // Superseded while our workerd started (gc, `stop --force`, a promoted standby): the root's
    // candidate, pointer and link are the other owner's. Exit touching none of them.
    const other = this.supersededBy();
    if (other !== undefined) return this.exitSuperseded(other);
    const how = candidate.publish(proc.registryPath, proc.persistRoot, instance.address, log);
    let pooledSockets: string | undefined;
    // Only now, after any previous owner's workerd is gone, may the pooled sockets' link move here.
    this.pooledLink = servePooled(instance.pooled, proc.identity, log, (stable) => {
      pooledSockets = stable;
      recordServing();
    });
    pooledSockets = this.pooledLink.offered;
    // The root's Cache route made, found or kept `pooled` (cache-claim.ts `claimCache`: our intent
    // first, then the sessions' notes) at each record write: a route found torn is written again.
    const recordServing = () => {
      const announce =
        pooledSockets !== undefined && instance.pooled?.cache === true && this.claimCache();
      const { pooledCache: _announced, ...record } = this.record;
      this.record = {
        ...record,
        pooledSockets,
        ...(announce ? { pooledCache: true } : {}),
        debugAddress: instance.address.debugAddress,
        instanceId: instance.address.instanceId,
        workerd: instance.workerd,
        lifelinePort: proc.lifelinePort,
      };
      this.publish("running");
    };
    this.recordServing = recordServing;
    recordServing();
    // Found superseded by that first write: its exit has begun; no pointer, timer or standby.
    if (proc.shuttingDown) return;
    proc.step("pointer", () => this.writePointer());

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
      const standby = this.liveStandby();
      if (standby?.phase !== "ready") return; // miniflare restarts it; onRestart re-points the candidate
      proc.log(`workerd crashed; handing over to ready standby pid ${standby.pid}`);
      killIdentities(childProcesses(process.pid, "workerd"));
      process.exit(1);
    };
    this.heartbeat = setInterval(
      () => proc.step("heartbeat", () => this.beat(instance)),
      HEARTBEAT_INTERVAL_MS,
    );
    this.watchClients();
    // The standby starts as soon as we serve (a promoted standby: its own successor at once), so a
    // crash in our first seconds, or soon after a failover, finds one booting. It loads miniflare
    // and boots its workerd once the first session's is up (standby.ts), out of the way of our
    // own start and of that session's.
    proc.step("standby", () => this.ensureStandby());
  }

  /**
   * The root's Cache route made or found `pooled` (cache-claim.ts). A route file we cannot write
   * (a full disk, a reader holding it on Windows) must not stop the record's heartbeat: logged
   * once per problem, tried again at the next write.
   */
  private claimCache(): boolean {
    // Superseded: the route is the other owner's to keep (our exit begins at this write).
    if (this.supersededBy() !== undefined) return false;
    try {
      return claimCache(this.proc.paths, this.proc.identity, CACHE_CLAIM, this.claimMemory);
    } catch (error) {
      const problem = `cannot claim the Cache route ${this.proc.paths.cacheRoute}: ${String(error)}`;
      if (problem !== this.claimProblem) this.proc.log(`${problem}; trying again every 2 s`);
      this.claimProblem = problem;
      return false;
    }
  }

  /** Every 2 s: the lease, the candidate (it must exist while we serve), the pointer, the standby. */
  private beat(instance: Instance): void {
    const proc = this.proc;
    const log = (message: string) => proc.log(message);
    instance.checkRestart();
    if (this.recordServing) this.recordServing();
    else this.publish("running");
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
    this.writePointer();
    this.ensureStandby();
  }

  private ensureStandby(): void {
    if (!standbyEnabled() || Date.now() - this.standbySpawnedAt < STANDBY_RESPAWN_MS) return;
    if (this.liveStandby()) return;
    this.standbySpawnedAt = Date.now();
    const pid = startOwnerProcess(this.proc.paths, this.proc.registryPath, { standby: true });
    this.proc.log(`started standby pid ${pid}`);
  }

  private liveStandby(): StandbyRecord | undefined {
    const standby = readStandby(this.proc.paths);
    return standby?.ok && standby.value.backs === this.proc.identity.pid && isAlive(standby.value)
      ? standby.value
      : undefined;
  }

  /** Writes the registry pointer unless it already names us (a reclaim may have removed it). */
  private writePointer(): void {
    const { proc } = this;
    const current = readPointer(proc.registryPath, proc.persistRoot);
    if (current?.ok && current.value.ownerPid === proc.identity.pid) return;
    writeRecordAtomic(pointerPath(proc.registryPath, proc.persistRoot), {
      schema: SCHEMA_VERSION,
      persistRoot: proc.persistRoot,
      ownerPid: proc.identity.pid,
      updatedAt: new Date().toISOString(),
    });
  }

  private watchClients(): void {
    const timings = ownerTimings();
    this.clientCheck = setInterval(() => {
      if (this.proc.liveClientCount() > 0) {
        this.lastClientAt = Date.now();
        return;
      }
      const now = Date.now();
      if (now - this.proc.startedAt < timings.graceMs || now - this.lastClientAt < timings.idleMs)
        return;
      clearInterval(this.clientCheck);
      this.proc.step("idle exit", () => this.idleOut());
    }, CLIENT_CHECK_MS);
  }

  /**
   * Clients write their presence before they read our record; we write "stopping" before we
   * count clients. So a client that read "running" is always counted here, and we stay. The record
   * stays "stopping" until the instance is disposed: a session arriving meanwhile waits for us to be
   * gone instead of starting a second owner while we still hold the files.
   */
  private idleOut(): void {
    const lock = tryAcquireSpawnLock(this.proc.paths);
    if (!lock.release) {
      this.idleRetry = setTimeout(() => this.watchClients(), CLIENT_CHECK_MS);
      return;
    }
    try {
      this.publish("stopping");
      if (this.proc.liveClientCount() > 0) {
        this.publish("running");
        this.watchClients();
        return;
      }
      retireCacheRoute(this.proc.paths);
    } finally {
      lock.release();
    }
    void this.proc.exit(`no client for ${ownerTimings().idleMs} ms`, true);
  }

  /** Our timers: nothing of the role runs once the process is on its way out. */
  private dispose(): void {
    clearInterval(this.heartbeat);
    clearInterval(this.clientCheck);
    clearTimeout(this.idleRetry);
    this.pooledLink?.dispose();
  }

  private beforeExit(reason: string, graceful: boolean): void {
    const proc = this.proc;
    this.dispose();
    this.clientsAtExit = proc.liveClientCount();
    proc.log(
      `stopping: ${reason}${this.clientsAtExit ? ` (${this.clientsAtExit} client session(s) still connected)` : ""}`,
    );
    const current = readOwner(proc.paths);
    const ours = current?.ok && current.value.pid === proc.identity.pid;
    if (!ours) return;
    if (this.clientsAtExit > 0) {
      // Leave the candidate where it is: clients fail fast until the standby (or an elected owner)
      // rewrites it in place. The record stays, "stopping", until our pid is gone.
      writeRecordAtomic(proc.paths.ownerRecord, { ...this.record, phase: "stopping" });
      return;
    }
    if (!graceful) return;
    // Nothing routes to a port that is about to close.
    candidate.withdraw(proc.registryPath, proc.persistRoot);
    writeRecordAtomic(proc.paths.ownerRecord, { ...this.record, phase: "stopping" });
    const standby = this.liveStandby();
    if (standby && signalIfOurs(standby, "SIGTERM") === "unproven") {
      // No start time to prove it by (no /proc, no ps): ask over its lifeline; it exits on its own
      // anyway when our pipe to its stdin closes and no client remains.
      const { lifelinePort, token, pid } = standby;
      if (lifelinePort !== undefined && token !== undefined)
        void askLifeline(lifelinePort, { pid, token }, { stop: true });
    }
  }

  private afterDispose(): void {
    if (this.clientsAtExit > 0) return;
    const { proc } = this;
    withdrawPooled(proc.instance?.pooled);
    const current = readOwner(proc.paths);
    if (current?.ok && current.value.pid === proc.identity.pid) {
      removeFile(proc.paths.ownerRecord);
      removeFile(pointerPath(proc.registryPath, proc.persistRoot));
    }
  }
}
