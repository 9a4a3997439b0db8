// Owner side of the Cache API's pooled route. miniflare runs the Cache in each session's own
// workerd: an entry worker `cache:<i>` per worker, onto one Durable Object namespace `cache:cache`
// whose files sit in `cache:storage` under the persist root (plain wrangler's layout). Two
// sessions' workerds writing those files lose entries. The owner's workerd runs the same three
// services with their files at exactly that path, and listens on a `cache` socket onto its entry
// service; sessions then send every cache call there (session-cache.ts), so one process writes.
import { existsSync, mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import type * as MiniflareModule from "miniflare";
import { rootPaths } from "../records.js";
import { exportedPlugin, type Plugin } from "./plugins.js";
import { CACHE_SOCKET, CF_BLOB_HEADER, PROTO_HEADER, socketPath } from "./sockets.js";

export type CacheService = {
  name?: string;
  worker?: {
    modules?: { name?: string; esModule?: unknown }[];
    durableObjectStorage?: { localDisk?: string };
  };
  disk?: { path?: string; writable?: boolean };
};

/** miniflare's names (src/plugins/cache): the entry per worker, its storage and its object. */
export const CACHE_STORAGE = "cache:storage";
export const CACHE_OBJECT = "cache:cache";
/** What the entry worker reads to pick the named cache: a working Cache, not the no-op entry. */
const NAMESPACE_HEADER = "cf-cache-namespace";
/** Where a wrapped plugin keeps this instance's socket dir and root (one instance per process). */
const TARGET = Symbol.for("shared-storage-wrangler.pooled-cache");

export const cacheEntryName = (workerIndex: number) => `cache:${workerIndex}`;

/** The three services of a working Cache as this miniflare builds them, or undefined. */
export function cacheServices(
  services: CacheService[],
  workerIndex: number,
): { entry: CacheService; storage: CacheService; object: CacheService } | undefined {
  const entry = services.find((s) => s.name === cacheEntryName(workerIndex));
  const storage = services.find((s) => s.name === CACHE_STORAGE);
  const object = services.find((s) => s.name === CACHE_OBJECT);
  const readsNamespace = (entry?.worker?.modules ?? []).some(
    (m) => typeof m.esModule === "string" && m.esModule.includes(NAMESPACE_HEADER),
  );
  if (!entry || !readsNamespace || typeof storage?.disk?.path !== "string") return undefined;
  if (object?.worker?.durableObjectStorage?.localDisk !== CACHE_STORAGE) return undefined;
  return { entry, storage, object };
}

/** Plain wrangler's cache directory under a persist root (miniflare's getPersistPath spelling). */
export function rootCacheDir(persistRoot: string): string {
  return path.join(persistRoot, "cache").replaceAll("\\", "/");
}

/**
 * Before the owner's Miniflare is built: its Cache keeps its files at the root's `cache` dir and
 * its workerd listens on `dir`'s cache socket onto the entry. A miniflare whose Cache is not the
 * shape above is left as it is (no socket appears, sessions keep their own Cache).
 */
export function prepareOwnerCache(
  miniflare: typeof MiniflareModule,
  persistRoot: string,
  dir: string,
): void {
  const plugin = exportedPlugin(miniflare, "cache");
  if (!plugin) return;
  // An earlier version's per-worker data waits to move into `<root>/cache` (each session moves
  // its worker's, after this owner started): a workerd holding that directory would keep the one
  // set aside. Sessions keep their own Cache until an owner starts with nothing left to move.
  if (existsSync(rootPaths(persistRoot).isolatedDir)) return;
  const wrapped = plugin as Plugin & { [TARGET]?: { dir: string; persistRoot: string } };
  const first = wrapped[TARGET] === undefined;
  wrapped[TARGET] = { dir, persistRoot };
  if (!first) return;
  const original = plugin.getServices;
  plugin.getServices = async function (this: unknown, ...args: unknown[]) {
    const result = await original.apply(this, args);
    const workerIndex = (args[0] as { workerIndex?: unknown } | undefined)?.workerIndex;
    // The owner runs one worker (index 0), a placeholder: its entry is the one sessions reach.
    if (!Array.isArray(result) || workerIndex !== 0) return result;
    const found = cacheServices(result as CacheService[], 0);
    if (!found) return result;
    const target = wrapped[TARGET]!;
    const files = rootCacheDir(target.persistRoot);
    mkdirSync(files, { recursive: true });
    found.storage.disk = { ...found.storage.disk, path: files };
    const file = socketPath(target.dir, CACHE_SOCKET);
    // workerd leaves the socket file behind: a restart after a crash would find it in use.
    rmSync(file, { force: true });
    const socket = {
      name: "x-ss-pooled-cache",
      address: `unix:${file}`,
      service: { name: cacheEntryName(0) },
      // The request's scheme as the session's forwarder names it: the URL is the default cache
      // key, and over a socket an https:// key would arrive as http:// (plain wrangler's entries
      // would not match).
      http: { cfBlobHeader: CF_BLOB_HEADER, forwardedProtoHeader: PROTO_HEADER },
    };
    return { services: result, extensions: [], sockets: [socket] };
  };
}
