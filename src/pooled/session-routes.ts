// Which route a session's storage calls take, per persist root it is connected to: decided at
// each config assembly from the root's owner record (an owner that serves pooled sockets names
// their stable path there), and noted in the session's presence record for `storage-owner status`
// and, for the Cache, for the owner's announcement (owner-cache.ts `CACHE_CLAIM`).
import { type CacheDecision, type ClientRecord, readOwner, rootPaths } from "../records.js";
import { sleep } from "../wait.js";
import { CACHE_CLAIM } from "./owner-cache.js";
import { describeRoutes, type KindRoute, type PooledBindingHooks } from "./session-bindings.js";
import type { CacheRoute } from "./session-cache.js";
import { type PooledKind, verifiedStableDir } from "./sockets.js";

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
  /** Where the owner announced its cache socket, as its record names it at each assembly. */
  cacheDir?: string;
  described?: string;
}

/** What the root's owner record says for the routes. */
interface Recorded {
  /** Its stable socket path, verified (sockets.ts `verifiedStableDir`). */
  dir?: string;
  /** It announced its cache socket at `dir`. */
  cache: boolean;
  /** It is checking the sessions' notes before it announces (owner-cache.ts `claimCache`). */
  intent?: string;
}

export class SessionRoutes implements PooledBindingHooks {
  readonly #roots = new Map<string, Root>();

  constructor(private readonly timings = CACHE_CLAIM) {}

  /** The session wrote its presence and the root's owner serves. */
  connected(persistRoot: string, presence: RouteNotes): void {
    if (!this.#roots.has(persistRoot))
      this.#roots.set(persistRoot, { presence, routes: new Map() });
  }

  socketDirFor(storageScope: string): string | undefined {
    return this.#recorded(storageScope)?.dir;
  }

  /**
   * The root's cache socket path for this assembly, or undefined where this session's own workerd
   * runs the Cache. Decided once (`#decideCache`), then sticky both ways. Once on the owner's
   * Cache it never comes back to its own workerd, not while a successor starts, a workerd
   * restarts or the record is unreadable (calls then wait or fail for that moment, like KV's): its
   * own Cache would be a second writer of the files. The path follows the record's announcement
   * at each assembly (a successor started under another TMPDIR links elsewhere; a reload then
   * reaches it, as KV's bindings do). A session on its own Cache keeps it: its note holds every
   * owner's announcement back while it lives, and a reload's old workerd still holds the files.
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
    const recorded = this.#recorded(storageScope);
    if (recorded?.cache) root.cacheDir = recorded.dir;
    return root.cacheDir;
  }

  /**
   * This session's side of owner-cache.ts `CACHE_CLAIM`: note `deciding`, then read the record.
   * Announced: the owner's Cache. No live intent, read while noted `deciding`: its own, noted
   * `session` (an owner that writes its intent after that read sees the note, and withdraws). A
   * live intent: follow it (`follows-owner`, which lets the owner announce) until announced, or
   * withdrawn or expired (then note `deciding` and read again). Past `followMs` it stops
   * following and stays `deciding`: no intent written after that note is announced, and one
   * written before is announced within `intentMs` or never, so after `expireMs` noted so an
   * unannounced record means its own Cache. Never two writers; at most `followMs + expireMs`.
   */
  async #decideCache(root: Root, storageScope: string): Promise<void> {
    const { followMs, expireMs, pollMs } = this.timings;
    const start = performance.now();
    /** When each intent was first read: the owner wrote it before then. */
    const firstRead = new Map<string, number>();
    let noted = this.#noteCache(root, "deciding");
    let notedAt = performance.now();
    for (;;) {
      const before = performance.now();
      const recorded = this.#recorded(storageScope);
      const after = performance.now();
      if (recorded?.cache) {
        root.cacheDir = recorded.dir;
        this.#noteCache(root, "pooled");
        return;
      }
      const intent = recorded?.intent;
      if (intent !== undefined && !firstRead.has(intent)) firstRead.set(intent, after);
      const live = intent !== undefined && before - firstRead.get(intent)! < expireMs;
      const stillDeciding = noted === "deciding" && before - start >= followMs;
      if (!live || (stillDeciding && before - notedAt > expireMs)) {
        // Read while noted `deciding`: no owner announces beside us.
        if (noted === "deciding") {
          this.#noteCache(root, "session");
          return;
        }
        noted = this.#noteCache(root, "deciding");
        notedAt = performance.now();
        continue;
      }
      const next: CacheDecision = before - start < followMs ? "follows-owner" : "deciding";
      if (next !== noted) {
        noted = this.#noteCache(root, next);
        notedAt = performance.now();
      }
      await sleep(pollMs);
    }
  }

  /** The root's owner record as the routes read it; undefined where it is unreadable or names no sockets. */
  #recorded(storageScope: string): Recorded | undefined {
    // Only roots this session connected to: their owner serves (or fails over) for it.
    if (!this.#roots.has(storageScope)) return undefined;
    const owner = readOwner(rootPaths(storageScope));
    if (!owner?.ok || owner.value.pooledSockets === undefined) return undefined;
    const dir = verifiedStableDir(storageScope, owner.value.pooledSockets);
    return {
      ...(dir === undefined ? {} : { dir }),
      cache: dir !== undefined && owner.value.pooledCache === true,
      ...(owner.value.cacheIntent === undefined ? {} : { intent: owner.value.cacheIntent }),
    };
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
