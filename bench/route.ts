// Which route the measured sessions' storage calls took (pooled sockets or miniflare's proxy), as
// their presence records say: the bench names the path its latency rows measured.
import { inspectRoot } from "../src/owner/inspect.js";

export function storageRoutes(persistRoot: string): string {
  const routes = new Set(
    inspectRoot(persistRoot)
      .clients.filter((c) => c.alive)
      .map((c) => c.storageRoute ?? "not recorded"),
  );
  return routes.size === 0 ? "no live session" : [...routes].join(", ");
}
