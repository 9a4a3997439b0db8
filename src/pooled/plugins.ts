// miniflare's exported plugins whose hooks the pooled path wraps (the owner's sockets, the
// sessions' bindings, both ends of the Cache). A copy that lacks one, or whose hook is not a
// function, is left as it is: feature detection, not version checks.
import type * as MiniflareModule from "miniflare";
import type { PooledKind } from "./sockets.js";

type Hook = (this: unknown, ...args: unknown[]) => unknown;
export type Plugin = { getServices: Hook; getBindings?: Hook };

/** The export each storage kind's plugin has (miniflare's index), and the Cache's. */
export const PLUGIN_EXPORT: Record<PooledKind | "cache", string> = {
  kv: "KV_PLUGIN",
  r2: "R2_PLUGIN",
  d1: "D1_PLUGIN",
  cache: "CACHE_PLUGIN",
};

/** The plugin this miniflare copy exports for `kind`, if it has a `getServices` hook to wrap. */
export function exportedPlugin(
  miniflare: typeof MiniflareModule,
  kind: PooledKind | "cache",
): Plugin | undefined {
  const plugin = (miniflare as unknown as Record<string, unknown>)[PLUGIN_EXPORT[kind]];
  return typeof plugin === "object" &&
    plugin !== null &&
    typeof (plugin as Plugin).getServices === "function"
    ? (plugin as Plugin)
    : undefined;
}
