// Shared storage inside a session's own process: every Miniflare that persists is built with
// `unsafeEnableSharedStorage` against the root's dedicated owner. `sharedStorageModule` installs
// our Miniflare subclass into a miniflare module object (any copy, any version that can share);
// two entries use it:
// - `preload-entry.cjs` (`node --require`, started by our `wrangler` when --x-shared-storage is
//   on): wrangler builds every Miniflare as `new miniflare.Miniflare(convertV4MiniflareOptions(o))`
//   and later calls `setOptions`; `installForWrangler` swaps the exports of wrangler's miniflare in
//   the CommonJS cache before wrangler's bundle requires it.
// - `register.cjs` (`NODE_OPTIONS="--require shared-storage-wrangler/register"`): hooks the
//   CommonJS loader, so that whichever miniflare copy a process loads, ESM or CommonJS, gets ours.
// Before the first persisting instance starts, this session registers its presence and makes sure
// the root's dedicated owner serves. When it cannot share, the Miniflare constructor (or
// setOptions) throws a SharedStorageError: under the register that is the user's own process
// (vite, a getPlatformProxy() script), which decides what to do with it; in our `wrangler dev
// --x-shared-storage` the preload prints it in one line and exits 1.
import { errorCode } from "../errors.js";
import { existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import type * as MiniflareModule from "miniflare";
import { onExit } from "signal-exit";
import { canonicalRoot, sameDirectory } from "../canonical-root.js";
import {
  MINIFLARE_ENTRY_ENV,
  miniflareEntry,
  ownerTimings,
  requireMiniflare,
  resolveRegistryPath,
  versions,
  wranglerPackageJson,
} from "../environment.js";
import { describeVersions, liveSessionCount, registryMismatch } from "../owner/assessment.js";
import { Election, OwnerElectionError } from "../owner/succession.js";
import { isAlive } from "../process-info.js";
import { sleepSync } from "../wait.js";
import {
  legacyIsolatedPathFor,
  readOwner,
  removeFile,
  rootPaths,
  type RootPaths,
} from "../records.js";
import { acquireSpawnLockSync } from "../owner/spawn-lock.js";
import { installPooledBindings } from "../pooled/session-bindings.js";
import { SessionRoutes } from "../pooled/session-routes.js";
import { pooledAvailable } from "../pooled/sockets.js";
import { severalSessionsOf, severalSessionsWarning } from "../several-sessions.js";
import { adoptLegacyLayout } from "./continuity.js";
import {
  type HeadStart,
  startOwnerAhead,
  WITHDRAW_TIMEOUT_MS,
  withdrawHeadStart,
} from "./head-start.js";
import { OwnerWatch } from "./failover.js";
import { Presence } from "./presence.js";
import { SESSION_ENV } from "./shared-storage.js";

type MiniflareOptions = ConstructorParameters<typeof MiniflareModule.Miniflare>[0];

const say = (message: string) => process.stderr.write(`⎔ [x-shared-storage] ${message}\n`);

/**
 * Why this process cannot share storage, naming the root, file or pid involved. Thrown out of the
 * Miniflare constructor and setOptions before anything is written for that Miniflare.
 */
export class SharedStorageError extends Error {
  override name = "SharedStorageError";
}

/** Which entry started the session: our wrangler's preload, or the register in a user's process. */
type Entry = "wrangler" | "register";

/**
 * What this process shares, as one object: created by the first entry that needs it (the preload
 * at start, the register when a miniflare loads), never at import. It owns what it holds — the
 * presence files, and per root an OwnerWatch with its timers and lifeline — and lets go of all of
 * it in `dispose`, its one exit path (signal-exit's onExit, registered once).
 */
class Session {
  readonly command: string;
  /** For `npm run bench` only: shared storage as upstream miniflare does it, with no owner. */
  readonly upstreamOnly = process.env.WRANGLER_X_BENCH_UPSTREAM_SHARED_STORAGE === "1";
  /** Persist roots this session is connected to (presence written, owner serving). */
  readonly connections = new Map<string, RootPaths>();
  /** Per connected root: whether KV/R2/D1 calls take the owner's pooled sockets (src/pooled). */
  readonly routes = new SessionRoutes();
  /** Workers of this session whose layout was checked, per persist root. */
  readonly checkedLayouts = new Set<string>();
  /** The miniflare copy this session shares through (see `bindCopy`). */
  boundEntry: string | undefined;
  /** The owner started ahead at the preload, for `wrangler dev` (head-start.ts). */
  headStart: HeadStart | undefined;
  /** The session's own port, from a Miniflare that does not persist (wrangler's proxy). */
  presencePort: number | undefined;
  /** Each miniflare module object met, with ours in its place. */
  readonly installed = new WeakMap<object, typeof MiniflareModule>();

  /** Presence files written (`clients/<pid>.json`), removed by `dispose`. */
  readonly #presences = new Set<string>();
  /** One per connected root: its timers and lifeline, cleared by `dispose`. */
  readonly #watches: OwnerWatch[] = [];
  /** Unregisters the exit hook; set once the session holds something. */
  #exitHook: (() => void) | undefined;
  #disposed = false;

  constructor(readonly entry: Entry) {
    this.command = process.env[SESSION_ENV] ?? "dev";
    // Children that wrangler spawns must not run this preload again.
    delete process.env[SESSION_ENV];
  }

  /** A presence file now exists: from here on, the process's exit removes it (`dispose`). */
  holdPresence(file: string): void {
    this.#presences.add(file);
    // One exit hook for all the session holds, registered when it first holds something.
    this.#exitHook ??= onExit(() => {
      // Not removed while signal-exit runs its hooks: that would skip the hook after ours.
      this.#exitHook = undefined;
      this.dispose();
    });
  }

  releasePresence(file: string): void {
    this.#presences.delete(file);
    removeFile(file);
  }

  watch(watch: OwnerWatch): void {
    this.#watches.push(watch);
  }

  /** The session's one exit path: its watches' timers and lifelines, then its presence files. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#exitHook?.();
    for (const watch of this.#watches.splice(0)) watch.dispose();
    for (const file of [...this.#presences]) this.releasePresence(file);
  }
}

/**
 * The one process-wide slot: every miniflare copy met (by the preload and the register alike)
 * shares through this process's one session. Filled on first use (by the register, unless the
 * preload came first), never at import.
 */
let current: Session | undefined;
function session(entry: Entry = "register"): Session {
  return (current ??= new Session(entry));
}

function canonical(dir: string): string {
  try {
    mkdirSync(dir, { recursive: true });
    // The one spelling of the directory: miniflare elects by this string (its storageScope).
    return canonicalRoot(dir);
  } catch (error) {
    const code = errorCode(error);
    fail(
      `cannot create the persist directory ${dir} (${code}). Pass a writable --persist-to.`,
      error,
    );
  }
}

function fail(message: string, cause?: unknown): never {
  throw new SharedStorageError(message, cause === undefined ? undefined : { cause });
}

/**
 * The owner this session started ahead for the root, as one of its election's owner starts: unless
 * it already left cleanly (it idled out before the session connected, its record gone with it).
 */
function startedAhead(self: Session, paths: RootPaths): number | undefined {
  const ahead = self.headStart;
  if (ahead?.persistRoot !== paths.persistRoot) return undefined;
  if (isAlive(ahead.owner)) return ahead.owner.pid;
  const record = readOwner(paths);
  return record?.ok && record.value.pid === ahead.owner.pid ? ahead.owner.pid : undefined;
}

/**
 * Before anything is written: where the root's owner serves through another dev registry, the
 * session refuses once a live session uses that owner. One that no session uses yet is not
 * refused: the owner this process started ahead is stopped (`withdrawHeadStart`); another's (a
 * session whose wrangler may yet correct its prediction, or an owner idling out) is waited for,
 * within the owner start timeout, and the election goes on once it is gone.
 */
function refuseAnotherRegistry(self: Session, paths: RootPaths, registryPath: string): void {
  const deadline = Date.now() + ownerTimings().startTimeoutMs;
  let waitingFor: number | undefined;
  for (;;) {
    const current = readOwner(paths);
    if (!current?.ok || !isAlive(current.value)) return;
    const mismatch = registryMismatch(current.value, registryPath);
    if (!mismatch) return;
    const ahead = self.headStart;
    if (ahead?.owner.pid === current.value.pid && ahead.persistRoot === paths.persistRoot) {
      const outcome = withdrawHeadStart(ahead, paths, say);
      if (outcome === "did not stop")
        fail(
          `the storage owner pid ${ahead.owner.pid}, started ahead for ${paths.persistRoot} in the dev ` +
            `registry ${ahead.registryPath}, did not stop within ${WITHDRAW_TIMEOUT_MS / 1000} s; see its log ${paths.ownerLog}`,
        );
      if (outcome !== "withdrawn") fail(mismatch);
      self.headStart = undefined; // not one of the election's owner starts
      continue;
    }
    if (liveSessionCount(paths) > 0 || Date.now() > deadline) fail(mismatch);
    if (waitingFor !== current.value.pid) {
      waitingFor = current.value.pid;
      say(
        `waiting for owner pid ${waitingFor} of ${paths.persistRoot} to go: it serves the dev registry ` +
          `${current.value.registryPath}, not this session's ${registryPath}, and no session uses it`,
      );
    }
    sleepSync(50);
  }
}

function connect(persistRoot: string, registryPath: string, worker: string): RootPaths {
  const self = session();
  const { connections, routes, command, presencePort } = self;
  const existing = connections.get(persistRoot);
  if (existing) return existing;
  const paths = rootPaths(persistRoot);
  refuseAnotherRegistry(self, paths, registryPath);
  let presence: Presence;
  try {
    // Presence first: an owner that sees no client may idle out under a session that routes.
    presence = Presence.write(paths, registryPath, { worker, command, port: presencePort });
  } catch (error) {
    const code = errorCode(error);
    fail(
      `cannot write session records under ${paths.stateDir} (${code}). Is the persist directory writable?`,
      error,
    );
  }
  self.holdPresence(presence.file);
  try {
    const owner = new Election(paths, registryPath).untilServedSync(say, startedAhead(self, paths));
    say(`storage for ${persistRoot} is served by owner pid ${owner.pid} at ${owner.debugAddress}`);
    self.watch(new OwnerWatch(paths, registryPath, owner, say));
    routes.connected(persistRoot, presence);
  } catch (error) {
    self.releasePresence(presence.file);
    fail(
      error instanceof OwnerElectionError
        ? error.message
        : `no storage owner for ${persistRoot}: ${String(error)}`,
      error,
    );
  }
  connections.set(persistRoot, paths);
  return paths;
}

/**
 * Once per worker and root: warns when other live sessions of the same worker share the root, and
 * moves what an earlier version kept under `.x-shared-storage/isolated/<worker>/` into plain
 * wrangler's layout (not while another session of the worker may have those files open).
 */
function checkLayout(paths: RootPaths, worker: string): void {
  const { checkedLayouts } = session();
  const key = `${paths.persistRoot}\0${worker}`;
  if (checkedLayouts.has(key)) return;
  checkedLayouts.add(key);
  const several = severalSessionsOf(paths, worker);
  const pids = several.map((session) => session.pid);
  if (several.length > 0) say(`⚠ ${severalSessionsWarning(worker, pids, paths.persistRoot)}`);
  const legacyDir = legacyIsolatedPathFor(paths, worker);
  if (!existsSync(legacyDir)) return;
  // Under the election lock: sessions of this version never open the legacy directory, and one
  // that starts meanwhile builds its Miniflare only after its own check, so nothing of ours holds
  // what moves.
  const release = acquireSpawnLockSync(paths, 10_000);
  if (!release) {
    say(`not moving ${legacyDir} now: the election lock stays held; the next session moves it`);
    return;
  }
  let report;
  try {
    report = adoptLegacyLayout(paths, worker);
  } catch (error) {
    checkedLayouts.delete(key); // the next Miniflare of this worker tries again
    fail(
      `cannot move ${legacyDir} into ${paths.persistRoot}: ${(error as Error).message}. ` +
        `Nothing was overwritten or deleted; each part moves whole or not at all, so starting ` +
        `the session again after fixing the cause finishes the move.`,
      error,
    );
  } finally {
    release();
  }
  if (report.moved.length > 0) {
    say(
      `moved "${worker}"'s ${report.moved.map((m) => m.unit).join(", ")} from ${legacyDir} to ` +
        `${paths.persistRoot} (once): Durable Objects, Cache and Workflows now live where plain ` +
        `wrangler keeps them, so turning --x-shared-storage on or off shows the same data` +
        (report.setAside.length
          ? ` (empty indexes found there were set aside: ${report.setAside.join(", ")})`
          : ""),
    );
  }
  for (const kept of report.kept) {
    say(
      `⚠ kept both copies of "${worker}"'s ${kept.unit}: ${kept.from} (from an earlier ` +
        `--x-shared-storage, not used now) and ${kept.to} (used with the flag on and off)`,
    );
  }
}

/**
 * The session's own worker: the first with a name (miniflare 5 keeps it at `config.name`), past
 * helpers such as @cloudflare/vite-plugin's `__router-worker__`.
 */
function workerName(options: MiniflareOptions): string {
  const names = (options.workers as { config?: { name?: string } }[]).flatMap((worker) =>
    worker.config?.name ? [worker.config.name] : [],
  );
  return names.find((name) => !/^__.*__$/.test(name)) ?? names[0] ?? "worker";
}

/** A miniflare module as loaded, with what we detect on it. */
interface Copy {
  real: typeof MiniflareModule;
  /** The module's file: the owner must load this same copy. */
  entry: string;
  /** The options this miniflare knows: features are detected, versions not compared. */
  knownOptions: Set<string>;
}

function prepare(copy: Copy, options: MiniflareOptions): MiniflareOptions {
  if (options.resourcePersistencePath === undefined) {
    if (typeof options.port === "number" && options.port > 0)
      session().presencePort ??= options.port;
    return options;
  }
  bindCopy(copy.entry);
  const { real, knownOptions } = copy;
  const worker = workerName(options);
  const persistRoot = canonical(options.resourcePersistencePath);
  const registryPath = sessionRegistryPath(real, options.unsafeDevRegistryPath);
  // Bench only (upstreamOnly): miniflare's own election, the oldest session owns storage.
  if (!session().upstreamOnly) {
    checkLayout(connect(persistRoot, registryPath, worker), worker);
    missedHeadStart(persistRoot, registryPath);
  }
  return {
    ...options,
    resourcePersistencePath: persistRoot,
    unsafeEnableSharedStorage: true,
    // What cannot be shared (Durable Objects, Cache, Workflows) stays with the session, in plain
    // wrangler's own layout under the root, so the flag never hides data. The owner never opens it.
    isolatedResourcePersistencePath: persistRoot,
    // Older miniflare (wrangler 4.126.0's) has no such option: its registry is on with a path.
    ...(knownOptions.has("enableDevRegistry") ? { enableDevRegistry: true } : {}),
    unsafeDevRegistryPath: registryPath,
  };
}

/** The dev registry a Miniflare given `given` (wrangler's setting, or none) registers in. */
function sessionRegistryPath(real: typeof MiniflareModule, given?: string): string {
  given ??= resolveRegistryPath();
  // Older miniflare (wrangler 4.126.0's, @cloudflare/vite-plugin 1.64.0's) has no
  // resolveDevRegistryPath: it takes the path as given.
  return real.resolveDevRegistryPath?.(given) ?? given;
}

/** Says once when the owner started ahead was for another root or registry than the session's. */
function missedHeadStart(persistRoot: string, registryPath: string): void {
  const ahead = session().headStart;
  if (ahead === undefined) return;
  session().headStart = undefined;
  if (ahead.persistRoot === persistRoot && sameDirectory(ahead.registryPath, registryPath)) return;
  say(
    `the owner started ahead (pid ${ahead.owner.pid}, ${ahead.persistRoot}, registry ${ahead.registryPath}) ` +
      `is not this session's (${persistRoot}, registry ${registryPath}); with no session it exits by itself`,
  );
}

/**
 * The first persisting Miniflare (or, for `wrangler dev`, the head start) decides which copy of
 * miniflare this session shares with: its owner (which inherits WRANGLER_X_MINIFLARE_ENTRY) loads
 * that file, and `versions()` reports it. A second copy of another version in the same process
 * cannot share through the same owner.
 */
function bindCopy(entry: string): void {
  // Bound per process, not read back from the environment: a WRANGLER_X_MINIFLARE_ENTRY inherited
  // from a parent process names the parent's copy, and is no second copy in this one.
  const bound = session().boundEntry;
  if (!bound) {
    session().boundEntry = entry;
    process.env[MINIFLARE_ENTRY_ENV] = entry;
    return;
  }
  if (bound === entry) return;
  const first = versionsOf(bound);
  const second = versionsOf(entry);
  if (first.miniflare !== second.miniflare || first.workerd !== second.workerd) {
    fail(
      `this process builds persisting Miniflares from two copies of miniflare, ${bound} (${describeVersions(first)}) ` +
        `and ${entry} (${describeVersions(second)}); one process shares storage through one of them. ` +
        `Make the process load one miniflare (npm dedupe, or the same version in both places).`,
    );
  }
}

/** `versions()` of the miniflare copy at `entry` (it reports the copy WRANGLER_X_MINIFLARE_ENTRY names). */
function versionsOf(entry: string): ReturnType<typeof versions> {
  const bound = process.env[MINIFLARE_ENTRY_ENV];
  process.env[MINIFLARE_ENTRY_ENV] = entry;
  try {
    return versions();
  } finally {
    if (bound === undefined) delete process.env[MINIFLARE_ENTRY_ENV];
    else process.env[MINIFLARE_ENTRY_ENV] = bound;
  }
}

/** Unsupported: this miniflare cannot share storage. */
function lacksSharedStorage(copy: Copy): boolean {
  return !copy.knownOptions.has("unsafeEnableSharedStorage");
}

const MARK = Symbol.for("shared-storage-wrangler.miniflare");

/**
 * `real` with our Miniflare in place of its own: every instance that persists shares storage.
 * Idempotent (a module that is already ours, or whose copy exists, is returned as it is), so the
 * preload and the register may both meet the same module.
 */
export function sharedStorageModule(
  real: typeof MiniflareModule,
  entry: string,
): typeof MiniflareModule {
  if ((real as unknown as Record<symbol, unknown>)[MARK]) return real;
  const done = session().installed.get(real);
  if (done) return done;
  const schema = (real as { InstanceOptionsSchema?: { shape?: object } }).InstanceOptionsSchema;
  const copy: Copy = { real, entry, knownOptions: new Set(Object.keys(schema?.shape ?? {})) };
  if (!session().upstreamOnly && pooledAvailable()) installPooledBindings(real, session().routes);
  class SharedStorageMiniflare extends real.Miniflare {
    constructor(options: MiniflareOptions) {
      super(prepareOrRefuse(copy, options));
    }
    override setOptions(options: MiniflareOptions): Promise<void> {
      let prepared: MiniflareOptions;
      try {
        prepared = prepareOrRefuse(copy, options);
      } catch (error) {
        return Promise.reject(error as Error); // as every other failure of setOptions
      }
      return super.setOptions(prepared);
    }
  }
  // miniflare's exports are non-configurable getters: build a copy with ours in place.
  const descriptors = Object.getOwnPropertyDescriptors(real);
  descriptors.Miniflare = { value: SharedStorageMiniflare, enumerable: true };
  const ours = Object.defineProperties({}, descriptors) as typeof MiniflareModule;
  Object.defineProperty(ours, MARK, { value: copy });
  session().installed.set(real, ours);
  return ours;
}

/**
 * `prepare`, or the refusal: thrown to the user's code under the register; in our wrangler (whose
 * error output would bury it) one line, exit 1.
 */
function prepareOrRefuse(copy: Copy, options: MiniflareOptions): MiniflareOptions {
  try {
    return refuseOrPrepare(copy, options);
  } catch (error) {
    if (!(error instanceof SharedStorageError) || session().entry !== "wrangler") throw error;
    say(`✘ ${error.message}`);
    process.exit(1);
  }
}

function refuseOrPrepare(copy: Copy, options: MiniflareOptions): MiniflareOptions {
  if (options.resourcePersistencePath !== undefined && lacksSharedStorage(copy)) {
    // miniflare exports no version: it is read from the copy's package.json.
    const { miniflare } = versionsOf(copy.entry);
    fail(
      `shared storage needs miniflare's unsafeEnableSharedStorage, which the miniflare this process runs ` +
        `(${miniflare}, ${copy.entry}) does not have. Use wrangler 4.126.0 or later ` +
        `(miniflare 5.20260825.0-alpha or later), or remove shared-storage-wrangler/register from NODE_OPTIONS.`,
    );
  }
  return prepare(copy, options);
}

/** The `--require` preload of our `wrangler`: wrangler's own miniflare, before wrangler loads it. */
export function installForWrangler(): void {
  session("wrangler"); // at start, before wrangler spawns any child (see Session)
  const entry = miniflareEntry();
  const real = requireMiniflare() as typeof MiniflareModule;
  const schema = (real as { InstanceOptionsSchema?: { shape?: object } }).InstanceOptionsSchema;
  if (!Object.keys(schema?.shape ?? {}).includes("unsafeEnableSharedStorage")) {
    const { wrangler, miniflare } = versions();
    process.stderr.write(
      `✘ [ERROR] --x-shared-storage needs miniflare's unsafeEnableSharedStorage, which this project's wrangler ${wrangler} (miniflare ${miniflare}, ${wranglerPackageJson()}) does not have. Use wrangler 4.126.0 or later, or drop --x-shared-storage.\n`,
    );
    process.exit(1);
  }
  // Make ours what every later `require("miniflare")` of wrangler's returns.
  const cached = createRequire(import.meta.url).cache[entry];
  if (!cached) throw new Error(`miniflare was not loaded from ${entry}`);
  cached.exports = sharedStorageModule(real, entry);
  const self = session();
  if (self.command === "dev" && !self.upstreamOnly) {
    // Every Miniflare of wrangler's is built from this copy: the owner started ahead loads it.
    bindCopy(entry);
    self.headStart = startOwnerAhead(process.argv.slice(2), sessionRegistryPath(real), say);
  }
}
