// Where the pooled storage sockets live. The owner's workerd listens on one Unix socket per
// storage kind (KV, R2, D1) in its own directory; sessions' workerds connect through a stable
// per-root path, a symlink that the serving instance points at its directory. A session's config
// therefore never changes across failover: only the link moves, and only once the previous
// holder's workerd is gone (`pointStableLink`).
import { createHash } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { liveness, type ProcessIdentity } from "../process-info.js";

export const POOLED_KINDS = ["kv", "r2", "d1"] as const;
export type PooledKind = (typeof POOLED_KINDS)[number];

/** miniflare's entry services that the sockets open onto (the object-entry workers). */
export const ENTRY_SERVICE: Record<PooledKind, string> = {
  kv: "kv:ns:entry",
  r2: "r2:bucket:entry",
  d1: "d1:db:entry",
};

/**
 * The Cache API's socket beside the kinds' ones: onto the owner's cache entry service (`cache:0`),
 * offered only where that service is the one sessions' workerds would otherwise run themselves.
 */
export const CACHE_SOCKET = "cache";
/** The header the cache requests' `cf` (its `cacheKey`) crosses the socket in, both ends. */
export const CF_BLOB_HEADER = "X-SS-CF-Blob";
/** The header the cache requests' scheme crosses in (the owner's socket reads it). */
export const PROTO_HEADER = "X-SS-Proto";

/** The header sessions name the namespace in; miniflare's object-entry workers read it. */
export const NAMESPACE_HEADER = "MF-Namespace";

/**
 * Set to 0 in a session to keep its KV/R2/D1 calls on miniflare's proxy path (to compare the two
 * by hand; no bench contender sets it). Not its Cache, and not the owner's sockets: the Cache has
 * no proxy path, and a session running its own beside the owner's would be a second writer.
 */
export const POOLED_ENV = "WRANGLER_X_POOLED_STORAGE";

/** sun_path holds 104 bytes on macOS, 108 on Linux (bytes, not characters); stay below both with the NUL. */
const MAX_SOCKET_PATH = 100;
const HOLDER_FILE = "holder.json";

/** Who serves a socket directory: the owner process and the workerd(s) it runs. */
export interface SocketHolder {
  owner: ProcessIdentity;
  workerd: ProcessIdentity[];
}

/** Unix sockets exist (not on Windows): owners offer them, sessions' workerds connect to them. */
export function pooledAvailable(): boolean {
  return process.platform !== "win32";
}

/** This session's KV/R2/D1 calls are to keep the proxy path (`POOLED_ENV`). */
export function pooledKindsOff(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[POOLED_ENV] === "0";
}

function currentUid(): number {
  return typeof process.getuid === "function" ? process.getuid() : 0;
}

/** Why `dir` may not hold our sockets (not a directory of ours, or others can enter it), or undefined. */
function notOurs(dir: string, uid: number): string | undefined {
  let stat;
  try {
    stat = lstatSync(dir, { throwIfNoEntry: false });
  } catch {
    stat = undefined; // EACCES on the way to it: not ours either
  }
  if (stat?.isDirectory() && stat.uid === uid && (stat.mode & 0o077) === 0) return undefined;
  return `${dir} must be a directory of uid ${uid} with mode 0700 to hold storage sockets`;
}

/** The longest instance directory name beside a root's link: 16 hex, a 7-digit pid, ps's seconds. */
const LONGEST_INSTANCE = `${"f".repeat(16)}.${"9".repeat(7)}-s${"9".repeat(10)}`;

/**
 * Our 0700 directory for every root's sockets, per user: under the temp dir (short paths), or
 * under /tmp where the temp dir is too long for an instance's sockets to fit sun_path (a long
 * TMPDIR would otherwise leave every session its own Cache, as without the owner). Throws when it
 * exists but is not ours or others can enter it.
 */
function baseDir(): string {
  const uid = currentUid();
  const fits = (tmp: string) =>
    Buffer.byteLength(path.join(tmp, `x-ss-${uid}`, LONGEST_INSTANCE, CACHE_SOCKET)) <=
    MAX_SOCKET_PATH;
  const tmp = fits(os.tmpdir()) || process.platform === "win32" ? os.tmpdir() : "/tmp";
  const dir = path.join(tmp, `x-ss-${uid}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const problem = notOurs(dir, uid);
  if (problem) throw new Error(problem);
  return dir;
}

function rootHash(persistRoot: string): string {
  return createHash("sha256").update(persistRoot).digest("hex").slice(0, 16);
}

/** The stable path sessions connect through: the same for every owner of `persistRoot`. */
export function stableSocketDir(persistRoot: string): string {
  return path.join(baseDir(), rootHash(persistRoot));
}

/**
 * A stable path read from `persistRoot`'s owner record, if it is that root's link in a 0700
 * directory of ours (the owner's temp dir may differ from ours); else undefined. A record names no
 * path anyone connects to unchecked.
 */
export function verifiedStableDir(persistRoot: string, recorded: string): string | undefined {
  const uid = currentUid();
  const base = path.dirname(recorded);
  if (!path.isAbsolute(recorded) || path.basename(recorded) !== rootHash(persistRoot))
    return undefined;
  if (path.basename(base) !== `x-ss-${uid}` || notOurs(base, uid)) return undefined;
  return recorded;
}

/** One instance's own directory beside the stable link; undefined when its paths would not fit. */
export function instanceSocketDir(
  persistRoot: string,
  identity: ProcessIdentity,
): string | undefined {
  // Named as instance dirs are (owner/instance.ts): ticks, else ps's seconds, else nothing.
  const start =
    identity.startTime ?? (identity.started === undefined ? "0" : `s${identity.started}`);
  const dir = `${stableSocketDir(persistRoot)}.${identity.pid}-${start}`;
  return Buffer.byteLength(path.join(dir, CACHE_SOCKET)) <= MAX_SOCKET_PATH ? dir : undefined;
}

export function socketPath(dir: string, kind: PooledKind | typeof CACHE_SOCKET): string {
  return path.join(dir, kind);
}

/** A fresh socket directory for this instance (what an earlier process of the same pid left goes). */
export function createSocketDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o700 });
}

export function writeHolder(dir: string, holder: SocketHolder): void {
  const tmp = path.join(dir, `${HOLDER_FILE}.${process.pid}.tmp`);
  writeFileSync(tmp, JSON.stringify(holder));
  renameSync(tmp, path.join(dir, HOLDER_FILE));
}

export function readHolder(dir: string): SocketHolder | undefined {
  try {
    const value = JSON.parse(readFileSync(path.join(dir, HOLDER_FILE), "utf8")) as SocketHolder;
    return typeof value.owner?.pid === "number" && Array.isArray(value.workerd) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The socket `name` exists in `dir` (workerd created it; an older miniflare may not). */
function socketListening(dir: string, name: PooledKind | typeof CACHE_SOCKET): boolean {
  try {
    return lstatSync(socketPath(dir, name)).isSocket();
  } catch {
    return false;
  }
}

/** Every KV/R2/D1 socket of the directory exists. */
export function socketsListening(dir: string): boolean {
  return POOLED_KINDS.every((kind) => socketListening(dir, kind));
}

/** The cache socket exists in `dir` (the instance's miniflare offered it: `socketsOpened`). */
export function cacheSocketListening(dir: string): boolean {
  return socketListening(dir, CACHE_SOCKET);
}

/** The directory the stable link points at now, if any. */
export function linkTarget(stable: string): string | undefined {
  try {
    return path.resolve(path.dirname(stable), readlinkSync(stable));
  } catch {
    return undefined;
  }
}

/** Processes of `holder` still alive, other than `self`. */
function liveHolders(holder: SocketHolder, self: ProcessIdentity): ProcessIdentity[] {
  return [holder.owner, ...holder.workerd].filter(
    (p) => p.pid !== self.pid && liveness(p) === "alive",
  );
}

/**
 * Points the stable link at `dir` (atomically: a new link renamed over the old). Refused while
 * the directory it points at now is held by a live process other than us: a kept-alive pooled
 * connection, or a new one, must never reach a live previous workerd. Removes that previous
 * directory once it is ours to remove. Returns why it refused, or undefined.
 */
export function pointStableLink(
  stable: string,
  dir: string,
  self: ProcessIdentity,
): string | undefined {
  const previous = linkTarget(stable);
  if (previous !== dir) {
    const holder = previous ? readHolder(previous) : undefined;
    const live = holder ? liveHolders(holder, self) : [];
    if (live.length > 0)
      return `${stable} points at ${previous}, still served by live pid(s) ${live.map((p) => p.pid).join(", ")}`;
    let stat;
    try {
      stat = lstatSync(stable);
    } catch {
      stat = undefined;
    }
    if (stat && !stat.isSymbolicLink()) return `${stable} exists and is not a symlink`;
    const tmp = `${stable}.link-${process.pid}`;
    rmSync(tmp, { force: true });
    symlinkSync(path.basename(dir), tmp);
    renameSync(tmp, stable);
    if (previous) rmSync(previous, { recursive: true, force: true });
  }
  removeDeadSiblings(stable, self);
  return undefined;
}

/**
 * Socket dirs left by instances that died (kill -9 leaves them), of any root, and the links left
 * pointing at nothing: never a directory whose owner or workerd lives. A root whose owner is
 * gone loses nothing by it (a call to a removed socket fails as one to a dead socket does), and
 * its next owner links its own directory.
 */
function removeDeadSiblings(stable: string, self: ProcessIdentity): void {
  const base = path.dirname(stable);
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return;
  }
  for (const name of names) {
    const file = path.join(base, name);
    if (/^[0-9a-f]{16}$/.test(name)) continue; // links: once their directory goes, below
    const match = /^[0-9a-f]{16}\.(\d+)-(s?)(\d+)$/.exec(name);
    if (!match) continue;
    // "-0": its owner could tell no start time; its pid alone then (alive while it exists), never
    // a start time of 0 that any live process would fail to match.
    const pid = Number(match[1]);
    const owner: ProcessIdentity = match[2]
      ? { pid, started: match[3] }
      : match[3] === "0"
        ? { pid }
        : { pid, startTime: match[3] };
    if (owner.pid === self.pid || liveness(owner) === "alive") continue;
    const holder = readHolder(file);
    if (holder && liveHolders(holder, self).length > 0) continue;
    rmSync(file, { recursive: true, force: true });
  }
  for (const name of names) {
    const file = path.join(base, name);
    // A link whose directory is gone (existsSync follows it); the stable one is ours to keep.
    if (/^[0-9a-f]{16}$/.test(name) && file !== stable && !existsSync(file))
      rmSync(file, { force: true });
  }
}

/** At a graceful exit with no client: our directory goes, and the link when it points at it. */
export function removeSocketDir(stable: string, dir: string): void {
  if (linkTarget(stable) === dir) rmSync(stable, { force: true });
  rmSync(dir, { recursive: true, force: true });
}
