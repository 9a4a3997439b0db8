// Owner side of the pooled path: the owner's (or standby's) workerd listens on a Unix socket per
// storage kind, straight onto miniflare's object-entry service for it (`kv:ns:entry`, ...). No
// JavaScript of ours and no per-call connect sits between a session's binding and the storage:
// each session's workerd keeps a pooled HTTP connection to these sockets. A plugin's
// `getServices` may return `sockets` in miniflare that supports it; an older one ignores them,
// which shows as sockets that never appear (`socketsListening`), and the owner then offers no
// pooled path.
import { rmSync } from "node:fs";
import type * as MiniflareModule from "miniflare";
import type { ProcessIdentity } from "../process-info.js";
import { prepareOwnerCache } from "./owner-cache.js";
import { exportedPlugin, type Plugin } from "./plugins.js";
import {
  cacheSocketListening,
  createSocketDir,
  ENTRY_SERVICE,
  instanceSocketDir,
  linkTarget,
  NAMESPACE_HEADER,
  pointStableLink,
  POOLED_KINDS,
  type PooledKind,
  pooledAvailable,
  removeSocketDir,
  socketPath,
  socketsListening,
  stableSocketDir,
  writeHolder,
} from "./sockets.js";

type Service = { name?: string; worker?: { modules?: { esModule?: unknown }[] } };
type ServicesResult =
  | Service[]
  | { services: Service[]; extensions: unknown[]; sockets?: unknown[] }
  | undefined;

function readsNamespaceHeader(service: Service): boolean {
  return (service.worker?.modules ?? []).some(
    (m) => typeof m.esModule === "string" && m.esModule.includes(NAMESPACE_HEADER),
  );
}

/** Where a wrapped plugin keeps the directory it opens sockets in (one instance per process). */
const SOCKET_DIR = Symbol.for("shared-storage-wrangler.pooled-socket-dir");

export interface PooledSockets {
  /** The stable per-root path sessions connect through. */
  stable: string;
  /** This instance's own socket directory. */
  dir: string;
  /** Its workerd listens on the cache socket too (owner-cache.ts), known once it started. */
  cache: boolean;
}

/**
 * Before the instance's Miniflare is built: makes this process's miniflare open the sockets in a
 * fresh directory of this instance. Undefined where the pooled path cannot be offered (Windows,
 * turned off, a miniflare without these plugins, a path too long for sun_path).
 */
export function prepareOwnerSockets(
  miniflare: typeof MiniflareModule,
  persistRoot: string,
  identity: ProcessIdentity,
): PooledSockets | undefined {
  if (!pooledAvailable()) return undefined;
  const plugins = POOLED_KINDS.map((kind) => [kind, exportedPlugin(miniflare, kind)] as const);
  if (plugins.some(([, plugin]) => plugin === undefined)) return undefined;
  let sockets: PooledSockets;
  try {
    const dir = instanceSocketDir(persistRoot, identity);
    if (!dir) return undefined;
    createSocketDir(dir);
    sockets = { stable: stableSocketDir(persistRoot), dir, cache: false };
  } catch {
    // The temp dir's socket directory is not ours or not 0700 (another user made it first):
    // the proxy path still serves; the owner must start all the same.
    return undefined;
  }
  for (const [kind, plugin] of plugins) wrapGetServices(plugin!, kind, sockets.dir);
  prepareOwnerCache(miniflare, persistRoot, sockets.dir);
  return sockets;
}

function wrapGetServices(plugin: Plugin, kind: PooledKind, dir: string): void {
  const wrapped = plugin as Plugin & { [SOCKET_DIR]?: string };
  const first = wrapped[SOCKET_DIR] === undefined;
  wrapped[SOCKET_DIR] = dir;
  if (!first) return;
  const original = plugin.getServices;
  plugin.getServices = async function (this: unknown, ...args: unknown[]) {
    const result = (await original.apply(this, args)) as ServicesResult;
    const services = Array.isArray(result) ? result : result?.services;
    const entry = services?.find((service) => service.name === ENTRY_SERVICE[kind]);
    // Sessions name the namespace in a header; an entry worker that reads only props (older
    // miniflare) gets no socket, so this owner offers no pooled path.
    if (!entry || !readsNamespaceHeader(entry)) return result;
    const file = socketPath(wrapped[SOCKET_DIR]!, kind);
    // workerd leaves the socket file behind: a restart after a crash would find it in use.
    rmSync(file, { force: true });
    const socket = {
      name: `x-ss-pooled-${kind}`,
      address: `unix:${file}`,
      service: { name: ENTRY_SERVICE[kind] },
      http: {},
    };
    if (Array.isArray(result)) return { services: result, extensions: [], sockets: [socket] };
    return { ...result!, sockets: [...(result!.sockets ?? []), socket] };
  };
}

/**
 * Once the instance's workerd is up: the sockets when they all listen (noting who holds them, for
 * the link's guard), else undefined (a miniflare that ignores plugin sockets) and the dir goes.
 */
export function socketsOpened(
  sockets: PooledSockets | undefined,
  owner: ProcessIdentity,
  workerd: ProcessIdentity[],
): PooledSockets | undefined {
  if (!sockets) return undefined;
  if (!socketsListening(sockets.dir)) {
    rmSync(sockets.dir, { recursive: true, force: true });
    return undefined;
  }
  writeHolder(sockets.dir, { owner, workerd });
  return { ...sockets, cache: cacheSocketListening(sockets.dir) };
}

/** At dispose: a directory nothing links to goes (the serving one stays for its successor). */
export function disposeSockets(sockets: PooledSockets | undefined): void {
  if (sockets && linkTarget(sockets.stable) !== sockets.dir)
    rmSync(sockets.dir, { recursive: true, force: true });
}

/** How often a refused link move is tried again: soon (the previous workerd exits in ms), then slower. */
const RETRY_FAST_MS = 20;
const RETRY_FAST_FOR_MS = 10_000;
const RETRY_SLOW_MS = 1000;

/**
 * When the instance serves: points the root's stable path at its sockets. While the previous
 * holder still lives the link may not move: it tries again until it can, then calls `offered`.
 * The retry is the returned link's: its owner (`OwnerRole`) disposes of it on the way out.
 */
export function servePooled(
  sockets: PooledSockets | undefined,
  self: ProcessIdentity,
  log: (message: string) => void,
  offered: (stable: string) => void,
): PooledLink {
  return new PooledLink(sockets, self, log, offered);
}

export class PooledLink {
  private stable?: string;
  private retry?: NodeJS.Timeout;

  constructor(
    private readonly sockets: PooledSockets | undefined,
    private readonly self: ProcessIdentity,
    private readonly log: (message: string) => void,
    private readonly onOffered: (stable: string) => void,
  ) {
    if (!sockets) return;
    const refused = pointStableLink(sockets.stable, sockets.dir, self);
    if (!refused) {
      this.stable = sockets.stable;
      return;
    }
    log(`pooled storage sockets wait: ${refused}`);
    this.retryIn(RETRY_FAST_MS, Date.now());
  }

  /** The stable path once it points at our sockets (to name in the owner record), else undefined. */
  get offered(): string | undefined {
    return this.stable;
  }

  /** Nothing moves the link after this. */
  dispose(): void {
    clearTimeout(this.retry);
    this.retry = undefined;
  }

  private retryIn(ms: number, since: number): void {
    this.retry = setTimeout(() => {
      const { stable, dir } = this.sockets!;
      if (pointStableLink(stable, dir, this.self) !== undefined) {
        const elapsed = Date.now() - since;
        return this.retryIn(elapsed < RETRY_FAST_FOR_MS ? RETRY_FAST_MS : RETRY_SLOW_MS, since);
      }
      this.retry = undefined;
      this.stable = stable;
      this.log(`pooled storage sockets offered ${Date.now() - since} ms later`);
      this.onOffered(stable);
    }, ms);
  }
}

/** A graceful exit with no client left: our sockets and the link to them go. */
export function withdrawPooled(sockets: PooledSockets | undefined): void {
  if (sockets) removeSocketDir(sockets.stable, sockets.dir);
}
