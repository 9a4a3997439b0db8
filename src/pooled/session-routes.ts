// Which route a session's storage calls take, per persist root it is connected to: decided at
// each config assembly from the root's owner record (an owner that serves pooled sockets names
// their stable path there), and noted in the session's presence record for `storage-owner status`.
import { readFileSync } from "node:fs";
import { readOwner, rootPaths, writeRecordAtomic } from "../records.js";
import { describeRoutes, type KindRoute, type PooledBindingHooks } from "./session-bindings.js";
import type { CacheRoute } from "./session-cache.js";
import { type PooledKind, verifiedStableDir } from "./sockets.js";

interface Root {
  presence: string;
  routes: Map<PooledKind, KindRoute>;
  cache?: CacheRoute;
  /** Once the root's owner announced its cache socket: this session's Cache stays on it. */
  cacheDir?: string;
  described?: string;
}

export class SessionRoutes implements PooledBindingHooks {
  readonly #roots = new Map<string, Root>();

  /** The session wrote its presence at `presenceFile` and the root's owner serves. */
  connected(persistRoot: string, presenceFile: string): void {
    if (!this.#roots.has(persistRoot))
      this.#roots.set(persistRoot, { presence: presenceFile, routes: new Map() });
  }

  socketDirFor(storageScope: string): string | undefined {
    return this.#recorded(storageScope)?.dir;
  }

  /**
   * Sticky route, current path: once this session's Cache went to the owner it never comes back to
   * its own workerd, not while a successor starts, a workerd restarts or the record is unreadable
   * (calls then wait or fail for that moment, like KV's): its own Cache would be a second writer of
   * the files. The path follows the record's announcement at each assembly (a successor started
   * under another TMPDIR links elsewhere; a reload then reaches it, as KV's bindings do).
   */
  cacheSocketDirFor(storageScope: string): string | undefined {
    const root = this.#roots.get(storageScope);
    if (!root) return undefined;
    const recorded = this.#recorded(storageScope);
    if (recorded?.cache) root.cacheDir = recorded.dir;
    return root.cacheDir;
  }

  /** The root's stable socket path as its owner record names it (verified), and whether its Cache is offered. */
  #recorded(storageScope: string): { dir: string; cache: boolean } | undefined {
    // Only roots this session connected to: their owner serves (or fails over) for it.
    if (!this.#roots.has(storageScope)) return undefined;
    const owner = readOwner(rootPaths(storageScope));
    const recorded = owner?.ok ? owner.value.pooledSockets : undefined;
    const dir = recorded === undefined ? undefined : verifiedStableDir(storageScope, recorded);
    return dir === undefined
      ? undefined
      : { dir, cache: owner?.ok === true && owner.value.pooledCache === true };
  }

  onRoute(storageScope: string, kind: PooledKind, route: KindRoute): void {
    const root = this.#roots.get(storageScope);
    if (!root) return;
    root.routes.set(kind, route);
    this.#note(root);
  }

  onCacheRoute(storageScope: string, route: CacheRoute): void {
    const root = this.#roots.get(storageScope);
    if (!root) return;
    root.cache = route;
    this.#note(root);
  }

  #note(root: Root): void {
    const described = describeRoutes(root.routes, root.cache);
    if (described === undefined || described === root.described) return;
    root.described = described;
    notePresence(root.presence, described);
  }
}

/** Adds the route to our presence record (as written by writePresence; its other fields stay). */
function notePresence(file: string, storageRoute: string): void {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch {
    return; // removed at exit, or not yet readable: the next assembly notes it
  }
  if (record.pid !== process.pid) return;
  writeRecordAtomic(file, { ...record, storageRoute });
}
