// Which route a session's storage calls take, per persist root it is connected to: KV/R2/D1 by
// the root's owner record at each config assembly (an owner that serves pooled sockets names
// their stable path there), the Cache by the root's route (cache-claim.ts), decided once. Both are
// noted in the session's presence record, for `storage-owner status` and, for the Cache, for the
// owners' claim.
import { type CacheDecision, type ClientRecord, readOwner, rootPaths } from "../records.js";
import { CACHE_CLAIM, decideCacheRoute } from "./cache-claim.js";
import { describeRoutes, type KindRoute, type PooledBindingHooks } from "./session-bindings.js";
import type { CacheRoute } from "./session-cache.js";
import { type PooledKind, stableSocketDir, verifiedStableDir } from "./sockets.js";

/** Where a session notes its routes: its presence record under the root (src/dev/presence.ts). */
export interface RouteNotes {
  /** Readers see the note once this returns. */
  note(note: Partial<Pick<ClientRecord, "storageRoute" | "cacheDecision">>): void;
}

interface Root {
  presence: RouteNotes;
  routes: Map<PooledKind, KindRoute>;
  /** Decided once for the session's life (the first assembly that has a Cache decides it). */
  cache?: CacheRoute;
  /** While the first assembly decides: later ones wait for the same decision. */
  deciding?: Promise<void>;
  /** The owner's stable socket path its Cache goes to, as last found. */
  cacheDir?: string;
  described?: string;
}

export class SessionRoutes implements PooledBindingHooks {
  readonly #roots = new Map<string, Root>();

  constructor(private readonly timings = CACHE_CLAIM) {}

  /** The session wrote its presence and the root's owner serves. */
  connected(persistRoot: string, presence: RouteNotes): void {
    if (!this.#roots.has(persistRoot))
      this.#roots.set(persistRoot, { presence, routes: new Map() });
  }

  /** The root's verified stable socket path as its owner record names it, or undefined. */
  socketDirFor(storageScope: string): string | undefined {
    // Only roots this session connected to: their owner serves (or fails over) for it.
    if (!this.#roots.has(storageScope)) return undefined;
    const owner = readOwner(rootPaths(storageScope));
    if (!owner?.ok || owner.value.pooledSockets === undefined) return undefined;
    return verifiedStableDir(storageScope, owner.value.pooledSockets);
  }

  /**
   * The root's cache socket path for this assembly, or undefined where this session's own workerd
   * runs the Cache. Decided once (cache-claim.ts `decideCacheRoute`), then sticky both ways: on
   * the owner's Cache it never comes back to its own workerd, not while a successor starts, a
   * workerd restarts or the record is unreadable (calls then wait or fail for that moment, like
   * KV's), since its own Cache would be a second writer of the files. On its own Cache it stays:
   * its note holds every owner's claim back while it lives, and a reload's old workerd still
   * holds the files.
   */
  async cacheSocketDirFor(storageScope: string): Promise<string | undefined> {
    const root = this.#roots.get(storageScope);
    if (!root) return undefined;
    if (root.cache === undefined) {
      root.deciding ??= this.#decideCache(root, storageScope).finally(() => {
        root.deciding = undefined;
      });
      await root.deciding;
    }
    if (root.cache === "session") return undefined;
    return this.#ownerCacheDir(root, storageScope);
  }

  async #decideCache(root: Root, storageScope: string): Promise<void> {
    const route = await decideCacheRoute(
      rootPaths(storageScope),
      (decision) => this.#noteCache(root, decision),
      this.timings,
    );
    this.#noteCache(root, route);
  }

  /**
   * Where the owner's cache socket is: the record's stable path (it follows a successor started
   * under another TMPDIR), else the one last found, else, before any owner record names one (a
   * successor starting), the root's stable path in our TMPDIR, which every owner of ours links
   * (its base dir made ours and 0700, or an error naming it: never the session's own Cache).
   */
  #ownerCacheDir(root: Root, storageScope: string): string {
    const recorded = this.socketDirFor(storageScope);
    if (recorded !== undefined) root.cacheDir = recorded;
    root.cacheDir ??= stableSocketDir(storageScope);
    return root.cacheDir;
  }

  onRoute(storageScope: string, kind: PooledKind, route: KindRoute): void {
    const root = this.#roots.get(storageScope);
    if (!root) return;
    root.routes.set(kind, route);
    const described = describeRoutes(root.routes, root.cache);
    if (described === undefined || described === root.described) return;
    root.described = described;
    root.presence.note({ storageRoute: described });
  }

  /** Notes the Cache's decision, and once decided its route in `storageRoute` (one write). */
  #noteCache(root: Root, decision: CacheDecision): CacheDecision {
    if (decision === "session" || decision === "pooled") root.cache = decision;
    const described = describeRoutes(root.routes, root.cache);
    if (described !== undefined) root.described = described;
    root.presence.note({
      cacheDecision: decision,
      ...(described === undefined ? {} : { storageRoute: described }),
    });
    return decision;
  }
}
