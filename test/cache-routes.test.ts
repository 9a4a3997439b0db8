// The Cache's one-writer rule across everything that can change a session's route: a session of
// another WRANGLER_X_POOLED_STORAGE setting, a reload while a successor starts or while the
// owner's workerd restarts, a successor elected by a session of another setting, a long TMPDIR,
// and an earlier version's data. In each, no session runs its own Cache beside the owner's
// (docs/experimental.md "What is shared"; src/owner/OWNERSHIP.md "Pooled storage sockets").
import { spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { inspectRoot } from "../src/owner/inspect.js";
import { linkTarget } from "../src/pooled/sockets.js";
import { commandLine, procPids, procStat } from "../src/process-info.js";
import { readCacheRoute, rootPaths, SCHEMA_VERSION, writeRecordAtomic } from "../src/records.js";
import { addCacheWorker, isCacheFile, putsAndLookups, putThenMatch } from "./harness/cache.js";
import { readyStandby, succeeds, waitForOwner } from "./harness/records.js";
import {
  parentPid,
  processesWithOpen,
  Sandbox,
  type Session,
  sleep,
  waitFor,
} from "./harness/sandbox.js";

const ALL_FOUND = [100, 100, 100, 100];

/** A pid no process has any more: a child that ran and exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]);
  return Number(child.stdout.toString());
}

/** Two sessions' entries all found from both, and only the owner's workerd holding them. */
async function expectOneWriter(sandbox: Sandbox, sessions: Session[], tag: string, root?: string) {
  const { failed, found, holders } = await putsAndLookups(sandbox, sessions, tag, root);
  expect(failed).toEqual([0, 0]);
  expect(found).toEqual(ALL_FOUND);
  expect(holders.length).toBeGreaterThan(0);
  expect(holders.filter((h) => h !== "owner")).toEqual([]);
}

/** The real wrangler under our bin's session pid: the process whose preload watches the owner. */
function wranglerOf(sessionPid: number): number {
  const pid = procPids().find(
    (p) => procStat(p)?.ppid === sessionPid && commandLine(p).includes("wrangler-dist"),
  );
  if (pid === undefined) throw new Error(`no wrangler under session ${sessionPid}`);
  return pid;
}

const count = (session: Session, pattern: RegExp) => session.output().match(pattern)?.length ?? 0;

/** Edits the session's worker; resolves once the reload is done. */
async function edit(sandbox: Sandbox, session: Session): Promise<void> {
  await (
    await startEdit(sandbox, session)
  )();
}

/**
 * Edits the session's worker and waits until its reload has begun and had time to assemble its
 * config (where the routes are decided); returns the wait for the reload's end. A process held
 * still meanwhile may hold miniflare's startup lock, which the reload's workerd update waits for.
 */
async function startEdit(sandbox: Sandbox, session: Session): Promise<() => Promise<void>> {
  const updated = count(session, /Local server updated/gi);
  const reloading = count(session, /Reloading local server/gi);
  appendFileSync(path.join(sandbox.workerDir(session.worker), "index.js"), "\n// edited\n");
  await waitFor(
    `session ${session.worker} to start reloading`,
    () => count(session, /Reloading local server|Local server updated/gi) > updated + reloading,
    30_000,
    20,
  );
  await sleep(1000);
  return () =>
    waitFor(
      `session ${session.worker} to reload`,
      () => count(session, /Local server updated/gi) > updated,
      30_000,
    ).then(() => undefined);
}

describe.skipIf(process.platform !== "linux")("the Cache's route on one root", () => {
  let sandbox: Sandbox | undefined;
  const fresh = (env: Record<string, string> = {}) => {
    sandbox = new Sandbox();
    Object.assign(sandbox.env, env);
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    return sandbox;
  };
  afterEach(async () => {
    await sandbox?.cleanup();
    sandbox = undefined;
  });

  it("a session with WRANGLER_X_POOLED_STORAGE=0 beside a pooled one, the root's route torn meanwhile: its Cache goes through the owner too, and the owner writes the route again", async () => {
    const sandbox = fresh();
    const a = await sandbox.startSession("cachea");
    // Torn while a is on the owner's Cache (review5: b took its own after 10 s, 4 of 100 found).
    const paths = rootPaths(sandbox.persistRoot);
    writeFileSync(paths.cacheRoute, "{ torn");
    const b = await sandbox.startSession("cacheb", { env: { WRANGLER_X_POOLED_STORAGE: "0" } });
    expect(sandbox.owner()?.pooledCache).toBe(true);
    await expectOneWriter(sandbox, [a, b], "pooled0-");
    await waitFor(
      "the owner to write the route again",
      () => readCacheRoute(paths)?.ok === true,
      10_000,
    );
    expect(readCacheRoute(paths)).toMatchObject({
      value: { state: "pooled", pid: sandbox.owner()!.pid },
    });
    const routes = Object.fromEntries(
      inspectRoot(sandbox.persistRoot).clients.map((c) => [c.worker, c.storageRoute]),
    );
    // The cache worker has no KV/R2/D1 binding: its route is its Cache's.
    expect(routes).toEqual({ cachea: "pooled", cacheb: "pooled" });
  });

  it("a reload while the successor starts (its record names no sockets yet) keeps the Cache on the owner", async () => {
    const sandbox = fresh({ WRANGLER_X_OWNER_STANDBY: "0" });
    const [a, b] = await Promise.all([
      sandbox.startSession("cachea"),
      sandbox.startSession("cacheb"),
    ]);
    const first = sandbox.owner()!;
    expect(first.pooledCache).toBe(true);
    process.kill(first.pid, "SIGKILL");
    // The route is the root's, not the dead owner's record's: a session deciding now finds it.
    expect(readCacheRoute(rootPaths(sandbox.persistRoot))).toMatchObject({
      ok: true,
      value: { state: "pooled", pid: first.pid },
    });
    const starting = await waitForOwner(
      sandbox,
      "a new owner to start",
      (o) => o.pid !== first.pid && o.phase === "starting",
      20_000,
      5,
    );
    // Held in its start, as on a slow machine, while session a reloads (an edit, saved).
    process.kill(starting.pid, "SIGSTOP");
    let reloaded: () => Promise<void>;
    try {
      reloaded = await startEdit(sandbox, a);
    } finally {
      process.kill(starting.pid, "SIGCONT");
    }
    await reloaded();
    await waitForOwner(
      sandbox,
      "the new owner to announce its cache socket",
      (o) => o.pid === starting.pid && o.phase === "running" && o.pooledCache === true,
    );
    await sandbox.waitReady(a);
    await expectOneWriter(sandbox, [a, b], "reload-");
  });

  it("a reload while the owner's workerd restarts (its cache socket gone for that moment) keeps the Cache on the owner", async () => {
    const sandbox = fresh({ WRANGLER_X_OWNER_STANDBY: "0" });
    const [a, b] = await Promise.all([
      sandbox.startSession("cachea"),
      sandbox.startSession("cacheb"),
    ]);
    const owner = sandbox.owner()!;
    const socket = path.join(linkTarget(owner.pooledSockets!)!, "cache");
    expect(existsSync(socket)).toBe(true);
    process.kill(owner.workerd![0]!.pid, "SIGKILL");
    // Once miniflare's reassembly removed the socket, hold the owner there (a slow restart; on a
    // loaded machine the reassembly itself can take over 10 s).
    const deadline = Date.now() + 20_000;
    while (existsSync(socket) && Date.now() < deadline) await sleep(1);
    process.kill(owner.pid, "SIGSTOP");
    let reloaded: () => Promise<void>;
    try {
      expect(existsSync(socket)).toBe(false);
      reloaded = await startEdit(sandbox, a);
    } finally {
      process.kill(owner.pid, "SIGCONT");
    }
    await reloaded();
    await waitFor("the cache socket again", () => existsSync(socket), 20_000);
    await sandbox.waitReady(a);
    await expectOneWriter(sandbox, [a, b], "restart-");
  });

  it("a successor elected by a WRANGLER_X_POOLED_STORAGE=0 session still offers the sockets: the pooled session's Cache works again within 5 s", async () => {
    const sandbox = fresh({ WRANGLER_X_OWNER_STANDBY: "0" });
    const a = await sandbox.startSession("cachea");
    await sandbox.startSession("cacheb", { env: { WRANGLER_X_POOLED_STORAGE: "0" } });
    const first = sandbox.owner()!;
    // a's watch is held still (a busy machine), so b's is the one that elects the successor.
    const watcher = wranglerOf(a.pid);
    process.kill(watcher, "SIGSTOP");
    let next;
    try {
      process.kill(first.pid, "SIGKILL");
      next = await waitForOwner(sandbox, "b to elect a new owner", succeeds(first.pid));
    } finally {
      process.kill(watcher, "SIGCONT");
    }
    expect(next.pooledSockets).toBe(first.pooledSockets);
    const since = Date.now();
    await waitFor("a's cache put+match to work again", () => putThenMatch(a, "again"), 5_000, 100);
    console.log(
      `[cache-routes] a's Cache worked again ${Date.now() - since} ms after the successor served`,
    );
  });

  it("a successor elected from another TMPDIR links elsewhere: a session on the owner's Cache reaches it after a reload", async () => {
    const sandbox = fresh({ WRANGLER_X_OWNER_STANDBY: "0" });
    const [tmpA, tmpB] = ["ta", "tb"].map((t) => path.join(sandbox.dir, t));
    for (const t of [tmpA!, tmpB!]) mkdirSync(t, { recursive: true });
    const a = await sandbox.startSession("cachea", { env: { TMPDIR: tmpA! } });
    const b = await sandbox.startSession("cacheb", { env: { TMPDIR: tmpB! } });
    const first = sandbox.owner()!;
    expect(first.pooledSockets?.startsWith(tmpA!)).toBe(true);
    // a goes; the owner dies with no standby: b's watch elects the successor, with b's TMPDIR.
    await sandbox.stopSession(a);
    process.kill(first.pid, "SIGKILL");
    const next = await waitForOwner(
      sandbox,
      "b to elect a new owner that announces its cache socket",
      (o) => succeeds(first.pid)(o) && o.pooledCache === true,
    );
    expect(next.pooledSockets?.startsWith(tmpB!)).toBe(true);
    await edit(sandbox, b);
    await sandbox.waitReady(b);
    await waitFor(
      "b's cache put+match through the successor",
      () => putThenMatch(b, "reloaded"),
      5_000,
      100,
    );
    const holders = processesWithOpen(isCacheFile(sandbox.persistRoot)).map(parentPid);
    expect(holders.length).toBeGreaterThan(0);
    expect(holders.filter((pid) => pid !== next.pid)).toEqual([]);
  });

  it("a TMPDIR too long for an instance's socket path: the sockets go under /tmp, the Cache through the owner", async () => {
    const sandbox = fresh();
    const tmpdir = path.join(sandbox.dir, "t".repeat(60));
    mkdirSync(tmpdir, { recursive: true });
    sandbox.env.TMPDIR = tmpdir;
    const a = await sandbox.startSession("cachea");
    const b = await sandbox.startSession("cacheb");
    const owner = sandbox.owner()!;
    expect(owner.pooledSockets?.startsWith(`/tmp/x-ss-${process.getuid!()}/`)).toBe(true);
    await expectOneWriter(sandbox, [a, b], "long-tmp-");
  });

  it("an earlier version's data waiting at the owner's start: sessions keep their own Cache, and a promoted standby does not announce its socket beside them", async () => {
    const sandbox = fresh();
    // And a route its owner left, killed after its last session (review5's M1: not a route).
    writeRecordAtomic(rootPaths(sandbox.persistRoot).cacheRoute, {
      schema: SCHEMA_VERSION,
      pid: deadPid(),
      state: "pooled",
      nonce: "left",
      at: new Date().toISOString(),
    });
    const legacy = path.join(rootPaths(sandbox.persistRoot).isolatedDir, "cachea", "cache");
    mkdirSync(path.join(legacy, "miniflare-CacheObject"), { recursive: true });
    writeFileSync(path.join(legacy, "miniflare-CacheObject", "legacy.txt"), "earlier version");
    const a = await sandbox.startSession("cachea");
    expect(existsSync(rootPaths(sandbox.persistRoot).isolatedDir)).toBe(false); // moved
    const first = sandbox.owner()!;
    expect(first.pooledCache).toBeUndefined();
    const standby = await readyStandby(
      sandbox,
      first.pid,
      30_000,
      "a ready standby (started after the move: its workerd listens on a cache socket)",
    );
    process.kill(first.pid, "SIGKILL");
    const promoted = await waitForOwner(
      sandbox,
      "the standby to serve",
      (o) => o.pid === standby.pid && o.phase === "running" && Boolean(o.pooledSockets),
      20_000,
    );
    // Session a runs its own Cache: the promoted standby does not announce its socket.
    expect(promoted.pooledCache).toBeUndefined();
    const b = await sandbox.startSession("cacheb");
    const routes = inspectRoot(sandbox.persistRoot).clients.map((c) => c.storageRoute);
    expect(routes).toEqual(["cache: session", "cache: session"]);
    // As plain wrangler's: each session's workerd opens the files itself; the owner's never.
    const { failed, holders } = await putsAndLookups(sandbox, [a, b], "legacy-");
    expect(failed).toEqual([0, 0]);
    expect(holders.length).toBeGreaterThan(0);
    expect(holders.filter((h) => !h.startsWith("session "))).toEqual([]);
  });
});
