// The headless Miniflare that an owner or a standby runs for one persist root. It registers only
// in a private registry (<state dir>/instances/<pid>-<start time>/registry), so its own storage candidate never appears where
// sessions look: sessions reach it solely through the root's candidate that storage-candidate.ts
// manages. miniflare therefore never withdraws or rewrites what sessions route through, not on
// dispose and not when it restarts a crashed workerd.
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import type * as MiniflareModule from "miniflare";
import { requireMiniflare } from "../environment.js";
import { removeTreeWithRetrySync } from "../fs-retry.js";
import { childProcesses, liveness, type ProcessIdentity } from "../process-info.js";
import {
  disposeSockets,
  prepareOwnerSockets,
  socketsOpened,
  type PooledSockets,
} from "../pooled/owner-sockets.js";
import { writeHolder } from "../pooled/sockets.js";
import { sleepSync } from "../wait.js";
import type { RootPaths } from "../records.js";
import { instanceAddress, type ServingAddress } from "../storage-candidate.js";

/** The signals the owner program exits on, through its own exit path (main.ts). */
const EXIT_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;

export interface Instance {
  mf: MiniflareModule.Miniflare;
  address: ServingAddress;
  /** The workerd process(es) this instance runs, recorded so that only they are ever signalled. */
  workerd: ProcessIdentity[];
  /** Its workerd's pooled storage sockets (src/pooled), where this miniflare can open them. */
  pooled?: PooledSockets;
  /** Called after miniflare restarted a crashed workerd (new pid, new debug port). */
  onRestart?: () => void;
  /** Called when miniflare reports that workerd crashed, before it restarts it. */
  onCrash?: () => void;
  /** Where miniflare has no restart hook: notices a restart on the caller's heartbeat. */
  checkRestart(): void;
  dispose(): Promise<void>;
}

function readAddress(privateRegistry: string, persistRoot: string): ServingAddress {
  const address = instanceAddress(privateRegistry, persistRoot);
  if (!address) throw new Error(`our storage candidate did not appear in ${privateRegistry}`);
  return address;
}

/**
 * An instance's own files (private registry, the placeholder's Cache): one dir per process,
 * named `<pid>-<ticks>` where /proc gave the start time, `<pid>-s<seconds>` where only ps did,
 * `<pid>-0` where nothing did.
 */
export function instanceDir(paths: RootPaths, identity: ProcessIdentity): string {
  const start =
    identity.startTime ?? (identity.started === undefined ? "0" : `s${identity.started}`);
  return path.join(paths.instancesDir, `${identity.pid}-${start}`);
}

/** The identity an instance dir's name records (see `instanceDir`). */
export function instanceDirIdentity(name: string): ProcessIdentity | undefined {
  const match = /^(\d+)-(s?)(\d+)$/.exec(name);
  if (!match) return undefined;
  const pid = Number(match[1]);
  if (match[2]) return { pid, started: match[3] };
  return match[3] === "0" ? { pid } : { pid, startTime: match[3] };
}

/**
 * miniflare serialises workerd starts on a root with `<root>/.miniflare-startup.lock`, a file
 * holding a random token, which it only treats as stale after 30 s. An owner killed while it holds
 * the lock would stall the next owner (and every session's start or reload) that long. So each
 * instance notes the token it writes, in its instance dir, and reclaiming a dead instance releases
 * the lock when it still holds that token (`releaseStartupLocks`).
 */
const STARTUP_LOCK = ".miniflare-startup.lock";
const STARTUP_TOKEN = "startup-lock-token";

function noteStartupLockTokens(dir: string): void {
  // The same module object miniflare's bundle calls `writeFile` on.
  const fsp = createRequire(import.meta.url)("node:fs/promises") as {
    writeFile: (...args: unknown[]) => Promise<void>;
  };
  const original = fsp.writeFile;
  fsp.writeFile = function (this: unknown, ...args: unknown[]) {
    const [file, data] = args;
    if (
      typeof file === "string" &&
      path.basename(file) === STARTUP_LOCK &&
      typeof data === "string"
    )
      writeFileSync(path.join(dir, STARTUP_TOKEN), data);
    return original.apply(this, args);
  };
}

/** Releases miniflare's startup lock on the root if one of these dead instance dirs holds it. */
export function releaseStartupLocks(paths: RootPaths, deadDirs: string[]): string | undefined {
  const lock = path.join(paths.persistRoot, STARTUP_LOCK);
  let held: string;
  try {
    held = readFileSync(lock, "utf8");
  } catch {
    return undefined;
  }
  for (const dir of deadDirs) {
    try {
      const token = path.join(dir, STARTUP_TOKEN);
      // Killed between creating the lock and writing its token, it left the lock empty: ours if
      // it noted a token just before, and it stays empty (a live writer fills it at once).
      const emptyAfterUs =
        held === "" && statSync(lock).mtimeMs >= statSync(token).mtimeMs && stillEmpty(lock);
      if (readFileSync(token, "utf8") === held || emptyAfterUs) {
        rmSync(lock, { force: true });
        return lock;
      }
    } catch {
      // that instance never took the lock
    }
  }
  return undefined;
}

function stillEmpty(file: string): boolean {
  sleepSync(50);
  try {
    return readFileSync(file, "utf8") === "";
  } catch {
    return false;
  }
}

/** Instance dirs whose process is gone (a kill -9 leaves them): derived names, never record paths. */
export function deadInstanceDirs(paths: RootPaths): string[] {
  let names: string[];
  try {
    names = readdirSync(paths.instancesDir);
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const identity = instanceDirIdentity(name);
    if (!identity) return [];
    return liveness(identity) === "alive" ? [] : [path.join(paths.instancesDir, name)];
  });
}

/** `log`, where given, hears how long loading miniflare and starting its workerd took (cold start). */
export async function startInstance(
  paths: RootPaths,
  identity: ProcessIdentity,
  log?: (message: string) => void,
): Promise<Instance> {
  const persistRoot = paths.persistRoot;
  const loadStarted = performance.now();
  const miniflare = requireMiniflare() as typeof MiniflareModule;
  const loadMs = Math.round(performance.now() - loadStarted);
  // The placeholder worker has nothing worth keeping; its registry goes with the process (the
  // root's Cache files are opened at <root>/cache where the owner offers the cache socket).
  const dir = instanceDir(paths, identity);
  // A standby stopped while it booted (its owner idled out) died holding miniflare's startup
  // lock, and no record names it: release what dead instances hold before we wait on it.
  releaseStartupLocks(paths, deadInstanceDirs(paths));
  const privateRegistry = path.join(dir, "registry");
  const isolatedDir = path.join(dir, "isolated");
  removeTreeWithRetrySync(dir);
  mkdirSync(privateRegistry, { recursive: true });
  noteStartupLockTokens(dir);
  let instance: Instance | undefined;
  // miniflare says so in a warning when workerd crashes, before it queues the restart.
  class CrashAwareLog extends miniflare.Log {
    override warn(message: string): void {
      super.warn(message);
      if (/runtime crashed unexpectedly/i.test(message)) instance?.onCrash?.();
    }
  }
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
    unsafeDevRegistryPath: privateRegistry,
    log: new CrashAwareLog(miniflare.LogLevel.WARN),
  });
  const restarted = () => {
    if (!instance) return;
    instance.address = readAddress(privateRegistry, persistRoot);
    instance.workerd = childProcesses(process.pid, "workerd");
    if (instance.pooled)
      writeHolder(instance.pooled.dir, { owner: identity, workerd: instance.workerd });
    instance.onRestart?.();
  };
  // Features are detected, not versions: older miniflare (wrangler 4.126.0's) rejects unknown keys.
  const known = (miniflare as { InstanceOptionsSchema?: { shape?: object } }).InstanceOptionsSchema
    ?.shape;
  const restartHook = known !== undefined && "unsafeHandleRuntimeRestart" in known;
  const sockets = prepareOwnerSockets(miniflare, persistRoot, identity);
  const signalListenersBefore = new Map(
    EXIT_SIGNALS.map((signal) => [signal, new Set(process.listeners(signal))]),
  );
  const mf = new miniflare.Miniflare({
    ...options,
    unsafeEnableSharedStorage: true,
    isolatedResourcePersistencePath: isolatedDir,
    ...(restartHook ? { unsafeHandleRuntimeRestart: restarted } : {}),
  });
  // miniflare's exit hook answers SIGTERM/SIGINT/SIGHUP with process.exit(128 + n) at once, which
  // cut our own exit short (owner.log: "stopping: SIGTERM", then nothing): `storage-owner stop`
  // left a "stopping" record, the registry pointer and the socket link behind. Our signal handlers
  // dispose the instance themselves; miniflare's "exit" hook (it kills workerd) stays.
  for (const signal of EXIT_SIGNALS)
    for (const listener of process.listeners(signal))
      if (!signalListenersBefore.get(signal)!.has(listener)) process.off(signal, listener);
  const dispose = async () => {
    try {
      await mf.dispose();
    } finally {
      // workerd may still be letting go of files in it on Windows (EBUSY): retried.
      removeTreeWithRetrySync(dir);
      disposeSockets(sockets);
    }
  };
  try {
    const readyStarted = performance.now();
    await mf.ready;
    log?.(
      `miniflare loaded in ${loadMs} ms, its workerd ready ${Math.round(performance.now() - readyStarted)} ms later`,
    );
    const workerd = childProcesses(process.pid, "workerd");
    instance = {
      mf,
      address: readAddress(privateRegistry, persistRoot),
      workerd,
      pooled: socketsOpened(sockets, identity, workerd),
      dispose,
      // Without the hook, a restart shows as a new address in the private registry.
      checkRestart: () => {
        if (restartHook || !instance) return;
        const now = instanceAddress(privateRegistry, persistRoot);
        if (now && now.debugAddress !== instance.address.debugAddress) restarted();
      },
    };
    return instance;
  } catch (error) {
    await dispose().catch(() => {});
    throw error;
  }
}
