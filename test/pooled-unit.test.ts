// Pure logic of the pooled storage path (src/pooled): the target shape miniflare builds, the
// rewrite of bindings, the route summary, and the stable link's guard.
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readlinkSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import type * as MiniflareModule from "miniflare";
import { afterAll, describe, expect, it } from "vitest";
import { Presence } from "../src/dev/presence.js";
import { miniflareEntry } from "../src/environment.js";
import { prepareOwnerSockets } from "../src/pooled/owner-sockets.js";
import {
  describeRoutes,
  externalServiceName,
  installPooledBindings,
  type KindRoute,
  proxyTarget,
} from "../src/pooled/session-bindings.js";
import {
  instanceSocketDir,
  linkTarget,
  pointStableLink,
  type PooledKind,
  stableSocketDir,
  writeHolder,
} from "../src/pooled/sockets.js";
import { SessionRoutes } from "../src/pooled/session-routes.js";
import { ownerRecordFixture } from "./harness/records.js";
import { currentIdentity } from "../src/process-info.js";
import { rootPaths, writeRecordAtomic } from "../src/records.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "x-ss-pooled-unit-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const miniflare = createRequire(import.meta.url)(miniflareEntry()) as typeof MiniflareModule & {
  getStorageService: (
    service: string,
    props: object,
    shared: object,
    options?: object,
  ) => { name: string; entrypoint?: string; props?: { json?: string } };
};
const shared = { unsafeEnableSharedStorage: true, resourcePersistencePath: "/p/root" };
const namespaceProps = (id: string) => ({ MINIFLARE_NAMESPACE: id });

describe("proxyTarget", () => {
  it("recognises the target that this miniflare's getStorageService builds for each kind", () => {
    for (const [kind, service] of [
      ["kv", "kv:ns:entry"],
      ["r2", "r2:bucket:entry"],
      ["d1", "d1:db:entry"],
    ] as const) {
      const target = miniflare.getStorageService(service, namespaceProps("ns-1"), shared);
      expect(proxyTarget(target, kind)).toEqual({ storageScope: "/p/root", namespace: "ns-1" });
    }
  });

  it("leaves any other shape alone: no sharing, another service, an entrypoint", () => {
    const plain = miniflare.getStorageService("kv:ns:entry", namespaceProps("a"), {});
    expect(proxyTarget(plain, "kv")).toBeUndefined();
    const r2 = miniflare.getStorageService("r2:bucket:entry", namespaceProps("a"), shared);
    expect(proxyTarget(r2, "kv")).toBeUndefined();
    const stream = miniflare.getStorageService("stream:binding", {}, shared, {
      entrypoint: "StreamBinding",
    });
    expect(proxyTarget(stream, "kv")).toBeUndefined();
    expect(proxyTarget({ name: "core:user:dev-registry-proxy" }, "kv")).toBeUndefined();
  });
});

describe("installPooledBindings", () => {
  // A miniflare module whose plugins return what the real getStorageService builds.
  function fakeModule() {
    const target = (service: string, id: string) =>
      miniflare.getStorageService(service, namespaceProps(id), shared);
    const plugin = (bindings: () => object[]) => ({
      getBindings: async (..._args: unknown[]): Promise<unknown> => bindings(),
      getServices: async (..._args: unknown[]): Promise<unknown> => [{ name: "original" }],
    });
    return {
      KV_PLUGIN: plugin(() => [{ name: "KV", kvNamespace: target("kv:ns:entry", "kv-id") }]),
      R2_PLUGIN: plugin(() => [{ name: "R2", r2Bucket: target("r2:bucket:entry", "bucket") }]),
      D1_PLUGIN: plugin(() => [
        {
          name: "DB",
          wrapped: {
            moduleName: "cloudflare-internal:d1-api",
            innerBindings: [{ name: "fetcher", service: target("d1:db:entry", "db-id") }],
          },
        },
      ]),
    };
  }

  it("points each binding at an external service on the root's sockets, header per namespace", async () => {
    const module = fakeModule();
    const routes: [string, PooledKind, KindRoute][] = [];
    const dir = "/tmp/x-ss-0/abc";
    expect(
      installPooledBindings(module as unknown as typeof MiniflareModule, {
        socketDirFor: (scope) => (scope === "/p/root" ? dir : undefined),
        cacheSocketDirFor: async () => undefined,
        onRoute: (...args) => routes.push(args),
      }),
    ).toBe(true);
    const options = { compatibilityFlags: [] };
    // As miniflare's assembly does: every plugin's bindings of a worker, then every plugin's services.
    const [kv] = (await module.KV_PLUGIN.getBindings.call(module.KV_PLUGIN, options)) as {
      kvNamespace: object;
    }[];
    await module.R2_PLUGIN.getBindings.call(module.R2_PLUGIN, options);
    expect(kv!.kvNamespace).toEqual({ name: externalServiceName(dir, "kv", "kv-id") });
    const services = await module.KV_PLUGIN.getServices.call(module.KV_PLUGIN, { options });
    expect(services).toEqual([
      { name: "original" },
      {
        name: externalServiceName(dir, "kv", "kv-id"),
        external: {
          address: "unix:/tmp/x-ss-0/abc/kv",
          http: { injectRequestHeaders: [{ name: "MF-Namespace", value: "kv-id" }] },
        },
      },
    ]);
    const [db] = (await module.D1_PLUGIN.getBindings.call(module.D1_PLUGIN, options)) as {
      wrapped: { innerBindings: { service: object }[] };
    }[];
    expect(db!.wrapped.innerBindings[0]!.service).toEqual({
      name: externalServiceName(dir, "d1", "db-id"),
    });
    expect(routes).toEqual([
      ["/p/root", "kv", "pooled"],
      ["/p/root", "r2", "pooled"],
      ["/p/root", "d1", "pooled"],
    ]);
  });

  it("keeps D1 under d1_binding_jsrpc (JS RPC) and every binding of a root without sockets", async () => {
    const module = fakeModule();
    const routes: KindRoute[] = [];
    installPooledBindings(module as unknown as typeof MiniflareModule, {
      socketDirFor: () => "/tmp/x-ss-0/abc",
      cacheSocketDirFor: async () => undefined,
      onRoute: (_scope, _kind, route) => routes.push(route),
    });
    const options = { compatibilityFlags: ["d1_binding_jsrpc"] };
    const [db] = (await module.D1_PLUGIN.getBindings.call(module.D1_PLUGIN, options)) as {
      wrapped: { innerBindings: { service: { name: string } }[] };
    }[];
    expect(db!.wrapped.innerBindings[0]!.service.name).toBe("core:user:dev-registry-proxy");
    expect(await module.D1_PLUGIN.getServices.call(module.D1_PLUGIN, { options })).toEqual([
      { name: "original" },
    ]);
    expect(routes).toEqual(["proxy (d1_binding_jsrpc)"]);

    const none = fakeModule();
    installPooledBindings(none as unknown as typeof MiniflareModule, {
      socketDirFor: () => undefined,
      cacheSocketDirFor: async () => undefined,
      onRoute: (_scope, _kind, route) => routes.push(route),
    });
    const [kv] = (await none.KV_PLUGIN.getBindings.call(none.KV_PLUGIN, {})) as {
      kvNamespace: { name: string };
    }[];
    expect(kv!.kvNamespace.name).toBe("core:user:dev-registry-proxy");
    expect(routes.at(-1)).toBe("proxy");
  });

  it("refuses a module without the three plugins", () => {
    const hooks = {
      socketDirFor: () => undefined,
      cacheSocketDirFor: async () => undefined,
      onRoute: () => {},
    };
    expect(installPooledBindings({} as typeof MiniflareModule, hooks)).toBe(false);
  });
});

describe("describeRoutes", () => {
  it("names one route, or the kinds that differ", () => {
    const of = (entries: [PooledKind, KindRoute][]) => describeRoutes(new Map(entries));
    expect(of([])).toBeUndefined();
    expect(
      of([
        ["kv", "pooled"],
        ["d1", "pooled"],
      ]),
    ).toBe("pooled");
    expect(of([["r2", "proxy"]])).toBe("proxy");
    expect(
      of([
        ["kv", "pooled"],
        ["d1", "proxy (d1_binding_jsrpc)"],
      ]),
    ).toBe("pooled; d1: proxy (d1_binding_jsrpc)");
    // The Cache: named only where it is not served beside pooled storage.
    const kv = new Map<PooledKind, KindRoute>([["kv", "pooled"]]);
    expect(describeRoutes(kv, "pooled")).toBe("pooled");
    expect(describeRoutes(kv, "session")).toBe("pooled; cache: session");
    // Never hidden: a session running its own Cache is what an owner must see (owner-cache.ts).
    expect(describeRoutes(new Map([["kv", "proxy"]]), "session")).toBe("proxy; cache: session");
    expect(describeRoutes(new Map([["kv", "proxy"]]), "pooled")).toBe("proxy; cache: pooled");
    expect(describeRoutes(new Map(), "pooled")).toBe("pooled");
    expect(describeRoutes(new Map(), "session")).toBe("cache: session");
  });
});

describe("the stable socket link", () => {
  const root = path.join(tmp, "root");
  const self = { pid: 999_999_990, startTime: "1" };

  it("fits sun_path and lives in a 0700 directory of ours", () => {
    const dir = instanceSocketDir(root, currentIdentity())!;
    expect(path.join(dir, "kv").length).toBeLessThanOrEqual(100);
    expect(lstatSync(path.dirname(stableSocketDir(root))).mode & 0o777).toBe(0o700);
  });

  it("moves only once the directory it points at has no live holder", () => {
    const stable = stableSocketDir(root);
    const first = instanceSocketDir(root, currentIdentity())!; // this process's own
    const second = `${stable}.999999997-1`;
    for (const dir of [first, second]) mkdirSync(dir, { recursive: true });
    // The second instance is up (a live workerd, this process): no sweep may take its directory.
    writeHolder(second, {
      owner: { pid: 999_999_997, startTime: "1" },
      workerd: [currentIdentity()],
    });
    try {
      // The first holder is this test process: alive.
      writeHolder(first, { owner: currentIdentity(), workerd: [] });
      expect(pointStableLink(stable, first, currentIdentity())).toBeUndefined();
      expect(readlinkSync(stable)).toBe(path.basename(first));
      const refused = pointStableLink(stable, second, self);
      expect(refused).toContain(`live pid(s) ${process.pid}`);
      expect(linkTarget(stable)).toBe(first);
      // Its holders gone (a dead pid), the link moves and the old directory goes.
      writeHolder(first, { owner: { pid: 999_999_991, startTime: "1" }, workerd: [] });
      expect(pointStableLink(stable, second, self)).toBeUndefined();
      expect(linkTarget(stable)).toBe(second);
      expect(() => lstatSync(first)).toThrow();
    } finally {
      for (const file of [stable, first, second]) rmSync(file, { recursive: true, force: true });
    }
  });
});

describe("the stable link's sweep", () => {
  it("removes dead instances' directories of any root and links left dangling, nothing live", () => {
    const stable = stableSocketDir(path.join(tmp, "sweep-root"));
    const base = path.dirname(stable);
    const other = path.join(base, "00000000000000aa");
    const dead = `${other}.999999993-1`;
    const live = `${other}.999999994-1`;
    const mine = `${stable}.999999995-1`;
    mkdirSync(dead, { recursive: true });
    mkdirSync(live, { recursive: true });
    mkdirSync(mine, { recursive: true });
    writeHolder(live, {
      owner: { pid: 999_999_994, startTime: "1" },
      workerd: [currentIdentity()],
    });
    rmSync(other, { force: true });
    symlinkSync(path.basename(dead), other);
    try {
      expect(pointStableLink(stable, mine, { pid: 999_999_995, startTime: "1" })).toBeUndefined();
      expect(existsSync(dead)).toBe(false);
      expect(() => lstatSync(other)).toThrow(); // its link pointed at nothing once it went
      expect(existsSync(live)).toBe(true); // its workerd (this process) lives
      expect(linkTarget(stable)).toBe(mine);
    } finally {
      for (const file of [stable, other, dead, live, mine])
        rmSync(file, { recursive: true, force: true });
    }
  });
});

describe("prepareOwnerSockets", () => {
  const root = path.join(tmp, "owner-root");
  const identity = { pid: 999_999_992, startTime: "7" };
  const entryWorker = (code: string) => ({ modules: [{ name: "entry.js", esModule: code }] });
  function fakeModule(code: string) {
    const plugin = (entry: string) => ({
      getServices: async (..._args: unknown[]): Promise<unknown> => [
        { name: entry, worker: entryWorker(code) },
        { name: "other" },
      ],
    });
    return {
      KV_PLUGIN: plugin("kv:ns:entry"),
      R2_PLUGIN: plugin("r2:bucket:entry"),
      D1_PLUGIN: plugin("d1:db:entry"),
    };
  }

  it("adds a socket per kind onto the entry service when it reads the namespace header", async () => {
    const module = fakeModule(`request.headers.get("MF-Namespace")`);
    const sockets = prepareOwnerSockets(
      module as unknown as typeof MiniflareModule,
      root,
      identity,
    )!;
    try {
      expect(sockets.stable).toBe(stableSocketDir(root));
      const result = (await module.D1_PLUGIN.getServices()) as { sockets: unknown[] };
      expect(result.sockets).toEqual([
        {
          name: "x-ss-pooled-d1",
          address: `unix:${path.join(sockets.dir, "d1")}`,
          service: { name: "d1:db:entry" },
          http: {},
        },
      ]);
    } finally {
      rmSync(sockets.dir, { recursive: true, force: true });
    }
  });

  it("adds none where the entry worker reads only props (older miniflare)", async () => {
    const module = fakeModule(`ctx.props.MINIFLARE_NAMESPACE`);
    const sockets = prepareOwnerSockets(
      module as unknown as typeof MiniflareModule,
      root,
      identity,
    )!;
    try {
      expect(Array.isArray(await module.KV_PLUGIN.getServices())).toBe(true);
    } finally {
      rmSync(sockets.dir, { recursive: true, force: true });
    }
  });
});

describe("the sockets' base directory, another user's or open to others", () => {
  const uid = process.getuid!();
  const withTmp = <T>(fn: (tmpdir: string) => T): T => {
    const dir = mkdtempSync(path.join(tmp, "tmpdir-"));
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = dir;
    try {
      return fn(dir);
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
  };

  it("costs the owner its pooled path only, never its start", () => {
    withTmp((dir) => {
      mkdirSync(path.join(dir, `x-ss-${uid}`), { mode: 0o755 });
      chmodSync(path.join(dir, `x-ss-${uid}`), 0o755); // umask aside
      const module = {
        KV_PLUGIN: { getServices: async () => [] },
        R2_PLUGIN: { getServices: async () => [] },
        D1_PLUGIN: { getServices: async () => [] },
      };
      const root = path.join(tmp, "open-base-root");
      const identity = { pid: 999_999_989, startTime: "3" };
      expect(
        prepareOwnerSockets(module as unknown as typeof MiniflareModule, root, identity),
      ).toBeUndefined();
    });
  });

  it("a session takes a recorded socket path only where it is the root's stable link in our 0700 dir", () => {
    const root = path.join(tmp, "session-root");
    const stable = stableSocketDir(root);
    const routes = new SessionRoutes();
    routes.connected(root, presenceFor(root));
    const recording = (pooledSockets: string) => {
      writeOwnerRecord(root, { pooledSockets });
      return routes.socketDirFor(root);
    };
    expect(recording(stable)).toBe(stable);
    // Another root's link, a path elsewhere, a relative one, one beside an open directory: none.
    expect(recording(stableSocketDir(path.join(tmp, "other-root")))).toBeUndefined();
    expect(recording(path.join(tmp, path.basename(stable)))).toBeUndefined();
    expect(recording(`relative/${path.basename(stable)}`)).toBeUndefined();
    withTmp((dir) => {
      const open = path.join(dir, `x-ss-${uid}`);
      mkdirSync(open);
      chmodSync(open, 0o755);
      expect(recording(path.join(open, path.basename(stable)))).toBeUndefined();
    });
  });
});

/** A running owner's record for `root` (a pid no process has), with the pooled fields given. */
function writeOwnerRecord(root: string, fields: { pooledSockets?: string }): void {
  writeRecordAtomic(
    rootPaths(root).ownerRecord,
    ownerRecordFixture({ pid: 999_999_988, persistRoot: root, ...fields }),
  );
}

/** This process's presence under `root`, as a session's preload writes it. */
function presenceFor(root: string): Presence {
  return Presence.write(rootPaths(root), path.join(tmp, "registry"), {
    worker: "w",
    command: "dev",
  });
}

describe("a session's Cache hooks", () => {
  it("hooks a copy's Cache even where its KV/R2/D1 plugins cannot be pooled (no getBindings)", () => {
    const getServices = async () => [];
    const copy = {
      KV_PLUGIN: { getServices },
      R2_PLUGIN: { getServices, getBindings: async () => [] },
      D1_PLUGIN: { getServices, getBindings: async () => [] },
      CACHE_PLUGIN: { getServices },
    };
    const installed = installPooledBindings(copy as unknown as typeof MiniflareModule, {
      socketDirFor: () => undefined,
      cacheSocketDirFor: async () => undefined,
      onRoute: () => {},
    });
    expect(installed).toBe(false);
    expect(copy.CACHE_PLUGIN.getServices).not.toBe(getServices);
  });
});

describe("the sweep, across identity sources", () => {
  it("keeps a starting instance's directory named without ticks (no /proc, or ps only) while its pid lives", () => {
    const stable = stableSocketDir(path.join(tmp, "mixed-root"));
    const base = path.dirname(stable);
    // This process as an owner that could read no start time, or only ps's seconds; its workerd
    // still booting, so no holder file yet.
    const none = path.join(base, `00000000000000bb.${process.pid}-0`);
    const seconds = path.join(
      base,
      `00000000000000bc.${process.pid}-s${currentIdentity().started}`,
    );
    const mine = `${stable}.999999987-1`;
    for (const dir of [none, seconds, mine]) mkdirSync(dir, { recursive: true });
    try {
      expect(pointStableLink(stable, mine, { pid: 999_999_987, startTime: "1" })).toBeUndefined();
      expect(existsSync(none)).toBe(true);
      expect(existsSync(seconds)).toBe(true);
    } finally {
      for (const file of [stable, none, seconds, mine])
        rmSync(file, { recursive: true, force: true });
    }
  });

  it("names an instance's directory by ps's seconds where it has no ticks", () => {
    const root = path.join(tmp, "seconds-root");
    expect(instanceSocketDir(root, { pid: 42, started: "1700000000" })).toBe(
      `${stableSocketDir(root)}.42-s1700000000`,
    );
    expect(instanceSocketDir(root, { pid: 42 })).toBe(`${stableSocketDir(root)}.42-0`);
  });
});

describe("sun_path", () => {
  it("counts the socket path in bytes: a temp dir too long in bytes (not in letters) puts the sockets under /tmp", () => {
    const saved = process.env.TMPDIR;
    const identity = { pid: 999_999_986, startTime: "123456" };
    const root = path.join(tmp, "utf8-root");
    // Fewer than 100 characters, more than 108 bytes (sun_path on Linux).
    const rest = `/x-ss-${process.getuid!()}/0123456789abcdef.999999986-123456/kv`.length;
    const dir = path.join(tmp, "é".repeat(96 - tmp.length - 1 - rest));
    mkdirSync(dir, { recursive: true });
    process.env.TMPDIR = dir;
    try {
      expect(
        `${path.join(dir, `x-ss-${process.getuid!()}`, "0123456789abcdef")}.999999986-123456/kv`
          .length,
      ).toBe(96);
      const sockets = instanceSocketDir(root, identity)!;
      expect(sockets.startsWith(`/tmp/x-ss-${process.getuid!()}/`)).toBe(true);
      expect(Buffer.byteLength(path.join(sockets, "cache"))).toBeLessThanOrEqual(100);
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
  });
});
