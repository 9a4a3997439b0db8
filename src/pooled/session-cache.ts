// Session side of the Cache API's pooled route (owner-cache.ts is the other end). Where the root's
// owner listens on a cache socket, each worker's `cache:<i>` (its `cacheApiOutbound`, and the
// purge binding's target) becomes a forwarder onto an `external` HTTP service on the root's stable
// cache socket, the request's `cf` (`cacheKey`) and scheme carried in headers, and the Cache's object and storage
// services go: this session's workerd never opens the cache files. Elsewhere (an owner without
// the socket, a Cache of another shape, the no-op Cache of `dev.cacheAPI: false`) it stays as
// miniflare built it, and the route says so.
import path from "node:path";
import type * as MiniflareModule from "miniflare";
import {
  CACHE_OBJECT,
  CACHE_STORAGE,
  cacheEntryName,
  type CacheService,
  cacheServices,
} from "./owner-cache.js";
import { exportedPlugin, type Plugin } from "./plugins.js";
import { CACHE_SOCKET, CF_BLOB_HEADER, PROTO_HEADER, socketPath } from "./sockets.js";

/** Where a session's Cache is served: the owner's workerd, or (today's path) its own. */
export type CacheRoute = "pooled" | "session";

export interface PooledCacheHooks {
  /**
   * The root's stable socket path where its owner announced the cache socket (`pooledCache`), or
   * undefined for this session's own Cache: decided (and noted) by the session (session-routes.ts).
   */
  cacheSocketDirFor(storageScope: string): Promise<string | undefined>;
}

type Args = {
  workerIndex?: unknown;
  sharedOptions?: { resourcePersistencePath?: unknown };
};
const INSTALLED = Symbol.for("shared-storage-wrangler.pooled-session-cache");

/** The external service on the owner's cache socket. */
export function externalCacheName(dir: string): string {
  return `x-ss-pooled:${path.basename(dir)}:cache`;
}

/**
 * What stands in for `cache:<i>`: a forwarder that names the request's scheme in a header (an
 * HTTP hop keeps only the path and host, and the URL is the default cache key) and passes it on,
 * `cf` included, to the owner's socket; and that socket as an external service.
 */
export function pooledCacheServices(dir: string, workerIndex: number) {
  const external = externalCacheName(dir);
  return [
    {
      name: cacheEntryName(workerIndex),
      worker: {
        compatibilityDate: "2023-07-24",
        modules: [{ name: "x-ss-cache-forward.js", esModule: FORWARDER }],
        bindings: [{ name: "OWNER", service: { name: external } }],
      },
    },
    {
      name: external,
      external: {
        address: `unix:${socketPath(dir, CACHE_SOCKET)}`,
        http: { cfBlobHeader: CF_BLOB_HEADER },
      },
    },
  ];
}

/**
 * How long a cache call that cannot reach the owner is sent again: workerd's Cache.put resolves
 * even when its backend disconnected, so a put refused while the owner fails over would be
 * dropped without a word. The standby takes over within this (the failover test's bound).
 */
export const CACHE_RETRY_MS = 1500;
const CACHE_RETRY_PAUSE_MS = 50;

// A put's body is read once, before the first try, so that it can be sent again. Sent again after
// the owner applied a call but died before answering, a put stores the same entry twice (no
// change) and a delete answers "not found".
const FORWARDER = `export default {
  async fetch(request, env) {
    const headers = new Headers(request.headers);
    headers.set(${JSON.stringify(PROTO_HEADER)}, new URL(request.url).protocol.slice(0, -1));
    const body = request.body === null ? null : await request.arrayBuffer();
    const deadline = Date.now() + ${CACHE_RETRY_MS};
    for (;;) {
      try {
        return await env.OWNER.fetch(
          new Request(request.url, { method: request.method, headers, body }),
          { cf: request.cf },
        );
      } catch (error) {
        if (Date.now() >= deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, ${CACHE_RETRY_PAUSE_MS}));
      }
    }
  },
};
`;

/** Rewrites this miniflare copy's Cache services (once per copy); false when it has no Cache plugin. */
export function installPooledCache(
  miniflare: typeof MiniflareModule,
  hooks: PooledCacheHooks,
): boolean {
  const plugin = exportedPlugin(miniflare, "cache") as
    | (Plugin & { [INSTALLED]?: true })
    | undefined;
  if (!plugin) return false;
  if (plugin[INSTALLED]) return true;
  plugin[INSTALLED] = true;
  const original = plugin.getServices;
  // One decision per config assembly (its sharedOptions object), the same for all its workers:
  // no worker keeps the Cache's object while another routes to the owner.
  const decided = new WeakMap<object, Promise<string | undefined>>();
  plugin.getServices = async function (this: unknown, ...args: unknown[]) {
    const result = await original.apply(this, args);
    const { workerIndex, sharedOptions } = (args[0] ?? {}) as Args;
    const root = sharedOptions?.resourcePersistencePath;
    if (!Array.isArray(result) || typeof workerIndex !== "number" || typeof root !== "string")
      return result;
    if (!cacheServices(result as CacheService[], workerIndex)) return result;
    // miniflare's storageScope spelling (getStorageScope), which the owner record is keyed by.
    const scope = path.resolve(root);
    let decision = decided.get(sharedOptions!);
    if (!decision) decided.set(sharedOptions!, (decision = hooks.cacheSocketDirFor(scope)));
    const dir = await decision;
    if (!dir) return result;
    return (result as CacheService[]).flatMap((service) => {
      if (service.name === CACHE_STORAGE || service.name === CACHE_OBJECT) return [];
      return service.name === cacheEntryName(workerIndex)
        ? pooledCacheServices(dir, workerIndex)
        : [service];
    });
  };
  return true;
}
