// Session side of the pooled path. miniflare's shared storage makes every KV/R2/D1 binding a
// target on `core:user:dev-registry-proxy` (`ExternalServiceProxy`, the real target in props),
// which opens a new debug-port connection per call. Where the root's owner offers its sockets,
// each such target becomes an `external` HTTP service on the root's stable socket path instead,
// carrying the namespace as `MF-Namespace` (which miniflare's object-entry workers read): workerd
// keeps one connection pool per service, with no JavaScript in between. A target of any other
// shape, and D1 under `d1_binding_jsrpc` (JS RPC, not HTTP), stay as miniflare built them.
import type * as MiniflareModule from "miniflare";
import path from "node:path";
import { exportedPlugin } from "./plugins.js";
import { type CacheRoute, installPooledCache, type PooledCacheHooks } from "./session-cache.js";
import {
  ENTRY_SERVICE,
  NAMESPACE_HEADER,
  POOLED_KINDS,
  type PooledKind,
  pooledKindsOff,
  socketPath,
} from "./sockets.js";

/** The route one kind's bindings take: pooled, or miniflare's proxy (and why, when pooled was offered). */
export type KindRoute = "pooled" | "proxy" | `proxy (${string})`;

type Target = { name?: string; entrypoint?: string; props?: { json?: string } };
type Binding = {
  name: string;
  kvNamespace?: Target;
  r2Bucket?: Target;
  wrapped?: { innerBindings?: { name: string; service?: Target }[] };
};
type Plugin = {
  getBindings: (this: unknown, ...args: unknown[]) => unknown;
  getServices: (this: unknown, ...args: unknown[]) => unknown;
};
type Service = { name?: string };
type ServicesResult = Service[] | { services: Service[]; extensions: unknown[] } | undefined;

const PROXY_SERVICE = "core:user:dev-registry-proxy";
const PROXY_ENTRYPOINT = "ExternalServiceProxy";
const NAMESPACE_PROP = "MINIFLARE_NAMESPACE";
/** Compatibility flags under which a kind's binding does not speak HTTP to its target. */
const NOT_HTTP_FLAGS: Record<PooledKind, string[]> = {
  kv: ["kv_direct_binding"],
  r2: [],
  d1: ["d1_binding_jsrpc"],
};
const INSTALLED = Symbol.for("shared-storage-wrangler.pooled-bindings");

export interface PooledBindingHooks extends PooledCacheHooks {
  /** The stable socket dir for a root whose owner offers pooled sockets, else undefined. */
  socketDirFor(storageScope: string): string | undefined;
  /** What a worker's bindings of one kind on a root were given (at each config assembly). */
  onRoute(storageScope: string, kind: PooledKind, route: KindRoute): void;
}

interface ProxyTarget {
  storageScope: string;
  namespace: string;
}

/** The proxy-shaped storage target miniflare builds, or undefined for any other shape. */
export function proxyTarget(target: Target | undefined, kind: PooledKind): ProxyTarget | undefined {
  if (target?.name !== PROXY_SERVICE || target.entrypoint !== PROXY_ENTRYPOINT) return undefined;
  if (typeof target.props?.json !== "string") return undefined;
  let props: {
    service?: unknown;
    entrypoint?: unknown;
    storage?: unknown;
    storageScope?: unknown;
    userProps?: Record<string, unknown>;
  };
  try {
    props = JSON.parse(target.props.json) as typeof props;
  } catch {
    return undefined;
  }
  const namespace = props.userProps?.[NAMESPACE_PROP];
  if (
    props.storage !== true ||
    props.service !== ENTRY_SERVICE[kind] ||
    props.entrypoint !== undefined ||
    typeof props.storageScope !== "string" ||
    typeof namespace !== "string"
  )
    return undefined;
  return { storageScope: props.storageScope, namespace };
}

/** One external service per root, kind and namespace (the header is per service). */
export function externalServiceName(dir: string, kind: PooledKind, namespace: string): string {
  return `x-ss-pooled:${path.basename(dir)}:${kind}:${namespace}`;
}

function externalService(dir: string, kind: PooledKind, namespace: string) {
  return {
    name: externalServiceName(dir, kind, namespace),
    external: {
      address: `unix:${socketPath(dir, kind)}`,
      http: { injectRequestHeaders: [{ name: NAMESPACE_HEADER, value: namespace }] },
    },
  };
}

function targetsOf(
  binding: Binding,
  kind: PooledKind,
): { get: () => Target | undefined; set: (t: Target) => void } | undefined {
  if (kind === "kv" && binding.kvNamespace)
    return { get: () => binding.kvNamespace, set: (t) => (binding.kvNamespace = t) };
  if (kind === "r2" && binding.r2Bucket)
    return { get: () => binding.r2Bucket, set: (t) => (binding.r2Bucket = t) };
  const fetcher = binding.wrapped?.innerBindings?.find((inner) => inner.name === "fetcher");
  if (kind === "d1" && fetcher)
    return { get: () => fetcher.service, set: (t) => (fetcher.service = t) };
  return undefined;
}

/**
 * Rewrites the storage targets of this miniflare copy's KV/R2/D1 plugins (once per copy); false
 * when the copy lacks one of those plugins (then nothing changes).
 */
export function installPooledBindings(
  miniflare: typeof MiniflareModule,
  hooks: PooledBindingHooks,
): boolean {
  const plugins = POOLED_KINDS.map(
    (kind) => [kind, exportedPlugin(miniflare, kind) as Plugin | undefined] as const,
  );
  // The Cache follows the same root's owner whatever the kinds' plugins look like: a copy that
  // kept its own Cache beside an owner serving it would be a second writer.
  installPooledCache(miniflare, hooks);
  if (plugins.some(([, p]) => typeof p?.getBindings !== "function")) return false;
  // Read once per copy, as the env var is read once per session.
  const kindsOff = pooledKindsOff();
  for (const [kind, plugin] of plugins) {
    const marked = plugin as Plugin & { [INSTALLED]?: true };
    if (marked[INSTALLED]) continue;
    marked[INSTALLED] = true;
    // This kind's services to add per worker options object: from getBindings to getServices.
    const pending = new WeakMap<object, Map<string, ReturnType<typeof externalService>>>();
    const getBindings = plugin!.getBindings;
    const getServices = plugin!.getServices;
    plugin!.getBindings = async function (this: unknown, ...args: unknown[]) {
      const bindings = (await getBindings.apply(this, args)) as Binding[] | undefined;
      const options = args[0] as { compatibilityFlags?: string[] } | undefined;
      if (!bindings || !options) return bindings;
      const notHttp = NOT_HTTP_FLAGS[kind].find((f) => options.compatibilityFlags?.includes(f));
      const added = new Map<string, ReturnType<typeof externalService>>();
      const routes = new Map<string, KindRoute>();
      for (const binding of bindings) {
        const slot = targetsOf(binding, kind);
        const target = slot && proxyTarget(slot.get(), kind);
        if (!slot || !target) continue;
        const dir = kindsOff ? undefined : hooks.socketDirFor(target.storageScope);
        if (!dir) {
          routes.set(target.storageScope, "proxy");
          continue;
        }
        if (notHttp) {
          routes.set(target.storageScope, `proxy (${notHttp})`);
          continue;
        }
        const service = externalService(dir, kind, target.namespace);
        slot.set({ name: service.name });
        added.set(service.name, service);
        if (!routes.has(target.storageScope)) routes.set(target.storageScope, "pooled");
      }
      pending.set(options, added);
      for (const [scope, route] of routes) hooks.onRoute(scope, kind, route);
      return bindings;
    };
    plugin!.getServices = async function (this: unknown, ...args: unknown[]) {
      const result = (await getServices.apply(this, args)) as ServicesResult;
      const options = (args[0] as { options?: object } | undefined)?.options;
      const added = options ? pending.get(options) : undefined;
      if (!added || added.size === 0) return result;
      const extra = [...added.values()];
      if (result === undefined) return extra;
      if (Array.isArray(result)) return [...result, ...extra];
      return { ...result, services: [...result.services, ...extra] };
    };
  }
  return true;
}

/**
 * One line for a root's routes by kind: "pooled", "proxy", or "pooled; d1: proxy (why)", then the
 * Cache's unless it is pooled beside pooled KV/R2/D1: "proxy; cache: pooled", "pooled; cache:
 * session" (its own workerd runs it; owners read the record's `cacheDecision`, not this line).
 */
export function describeRoutes(
  routes: ReadonlyMap<PooledKind, KindRoute>,
  cache?: CacheRoute,
): string | undefined {
  const kinds = describeKinds(routes);
  if (cache === undefined || (cache === "pooled" && (kinds ?? "pooled") === "pooled"))
    return kinds ?? cache;
  return kinds === undefined ? `cache: ${cache}` : `${kinds}; cache: ${cache}`;
}

function describeKinds(routes: ReadonlyMap<PooledKind, KindRoute>): string | undefined {
  const values = [...routes.values()];
  if (values.length === 0) return undefined;
  if (values.every((route) => route === "pooled")) return "pooled";
  if (values.every((route) => route === "proxy")) return "proxy";
  const others = POOLED_KINDS.flatMap((kind) => {
    const route = routes.get(kind);
    return route && route !== "pooled" ? [`${kind}: ${route}`] : [];
  });
  return values.includes("pooled") ? `pooled; ${others.join("; ")}` : others.join("; ");
}
