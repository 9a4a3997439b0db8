// Succession: the pure decision every election and failover takes (one case per situation the
// real-process tests stage), the retirement of an owner of another version, the owner's first
// record, the pooled link's move to a successor, and the election lock across real processes, in
// the style of miniflare's persist-root-lock.spec.ts: one holder at a time, a dead holder's lock
// reclaimed, released only by its holder.
import { spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  decide,
  type ElectionView,
  RETIRE_TIMEOUT_MS,
  retirement,
  type RetireView,
} from "../src/owner/succession.js";
import {
  rootPaths,
  startingOwnerRecord,
  validateOwner,
  writeRecordAtomic,
} from "../src/records.js";
import { servePooled } from "../src/pooled/owner-sockets.js";
import { linkTarget, writeHolder } from "../src/pooled/sockets.js";
import {
  commandLine,
  currentIdentity,
  identityOf,
  liveness,
  procPids,
  procStat,
  readStartTime,
  signalIfOurs,
} from "../src/process-info.js";
import { FIRST_RECORD_TIMEOUT_MS } from "../src/owner/spawn.js";
import { ownerRecordFixture } from "./harness/records.js";
import { NODE, REPO } from "./harness/sandbox.js";

const owner = ownerRecordFixture();
const serving = (over: Partial<Extract<ElectionView, { kind: "owner" }>> = {}): ElectionView => ({
  kind: "owner",
  owner,
  state: "running",
  sameVersions: true,
  candidateReady: true,
  ...over,
});

describe("decide", () => {
  it.each<[string, ElectionView, ReturnType<typeof decide>["kind"], string?]>([
    ["a serving owner of our versions, candidate fresh and oldest: join", serving(), "join"],
    [
      "a stale (stopped) owner whose candidate is fresh: join (its lease holds)",
      serving({ state: "stale" }),
      "join",
    ],
    [
      "a serving owner whose candidate expired (SIGSTOP > 10 s): wait",
      serving({ candidateReady: false }),
      "wait",
      "missing or not the oldest (it republishes it within 2 s)",
    ],
    [
      "a stopped owner whose candidate expired: wait, saying why",
      serving({ state: "stale", candidateReady: false }),
      "wait",
      "the owner is stopped or hung",
    ],
    [
      "an owner serving through another dev registry: refuse",
      serving({ registryMismatch: "other registry" }),
      "refuse",
      "other registry",
    ],
    [
      "an owner of another version: retire it (when no session of its version is left)",
      serving({ sameVersions: false }),
      "retire",
    ],
    [
      "another registry outranks another version (nothing is signalled)",
      serving({ sameVersions: false, registryMismatch: "other registry" }),
      "refuse",
    ],
    [
      "an owner starting: wait",
      serving({ state: "starting" }),
      "wait",
      "owner pid 4242 is starting",
    ],
    [
      "an owner stopping (idle exit under way): wait",
      serving({ state: "stopping" }),
      "wait",
      "is stopping",
    ],
    [
      "a dead owner whose live standby still has priority: wait for it",
      serving({ state: "dead", standby: 4343 }),
      "wait",
      "standby pid 4343 is taking over",
    ],
    ["a dead owner, no standby: replace", serving({ state: "dead" }), "replace"],
    [
      "a dead owner (pid reused after a reboot counts as dead): replace",
      serving({ state: "dead", candidateReady: undefined }),
      "replace",
    ],
    [
      "a dead owner while sessions of another registry are alive: refuse",
      serving({ state: "dead", otherRegistry: "their registry" }),
      "refuse",
      "their registry",
    ],
    ["no owner record: replace", { kind: "none" }, "replace"],
    [
      "no owner record, sessions of another registry alive: refuse",
      { kind: "none", otherRegistry: "their registry" },
      "refuse",
    ],
    [
      "a corrupt owner record: replace (it is set aside under the lock)",
      { kind: "corrupt", problem: "not JSON" },
      "replace",
    ],
    [
      "a corrupt owner record, sessions of another registry: refuse",
      { kind: "corrupt", problem: "not JSON", otherRegistry: "theirs" },
      "refuse",
    ],
  ])("%s", (_, view, kind, text) => {
    const decision = decide(view);
    expect(decision.kind).toBe(kind);
    if (text) expect(JSON.stringify(decision)).toContain(text);
    if (kind === "join") expect(decision).toEqual({ kind: "join", owner });
  });
});

describe("retirement (an owner of another version)", () => {
  const view = (over: Partial<RetireView> = {}): RetireView => ({
    owner,
    persistRoot: "/p/v3",
    ours: { ...owner.versions, package: "9" },
    itsClients: [],
    proof: "proven",
    ...over,
  });
  const aSession = [{ worker: "api", pid: 777 }];
  it.each<[string, RetireView, ReturnType<typeof retirement>["kind"], string?]>([
    [
      "a session of its version still uses it: refuse, naming it (nothing is signalled)",
      view({ itsClients: aSession }),
      "refuse",
      "1 session(s) of its version still use it (api pid 777)",
    ],
    [
      "…also once asked to stop and past the timeout: refuse",
      view({ itsClients: aSession, askedMsAgo: RETIRE_TIMEOUT_MS + 1 }),
      "refuse",
      "api pid 777",
    ],
    [
      "no session of its version, proven: SIGTERM it, saying why",
      view(),
      "terminate",
      "runs package 1, miniflare 3, workerd 4, this session runs package 9",
    ],
    [
      "no session of its version, unproven (no start time): refuse, signal nothing",
      view({ proof: "unproven" }),
      "refuse",
      "does not prove which process it is",
    ],
    [
      "not asked yet and already gone: wait (the next step replaces it)",
      view({ proof: "gone" }),
      "wait",
    ],
    ["asked, within the timeout: wait", view({ askedMsAgo: 5000 }), "wait"],
    ["asked exactly the timeout ago: still wait", view({ askedMsAgo: RETIRE_TIMEOUT_MS }), "wait"],
    [
      "asked, past the timeout, proven: SIGKILL it and its workerd",
      view({ askedMsAgo: RETIRE_TIMEOUT_MS + 1 }),
      "kill",
    ],
    [
      "asked, past the timeout, no longer proven: wait, signal nothing",
      view({ askedMsAgo: RETIRE_TIMEOUT_MS + 1, proof: "unproven" }),
      "wait",
    ],
    [
      "asked, past the timeout, gone: wait",
      view({ askedMsAgo: RETIRE_TIMEOUT_MS + 1, proof: "gone" }),
      "wait",
    ],
  ])("%s", (_, v, kind, text) => {
    const action = retirement(v);
    expect(action.kind).toBe(kind);
    if (text) expect(JSON.stringify(action)).toContain(text);
  });

  it("never signals an unproven owner, whatever else holds", () => {
    for (const proof of ["unproven", "gone"] as const)
      for (const askedMsAgo of [undefined, 0, RETIRE_TIMEOUT_MS, RETIRE_TIMEOUT_MS + 1, 1e9])
        for (const itsClients of [[], aSession])
          expect(["refuse", "wait"]).toContain(
            retirement(view({ proof, askedMsAgo, itsClients })).kind,
          );
  });

  it("reads the proof only where it decides (the election's is a fresh process-table read)", () => {
    let reads = 0;
    const counting = (over: Partial<RetireView>): RetireView => ({
      ...view(over),
      get proof() {
        reads++;
        return "proven" as const;
      },
    });
    retirement(counting({ itsClients: aSession }));
    retirement(counting({ askedMsAgo: 5000 }));
    expect(reads).toBe(0);
    retirement(counting({}));
    retirement(counting({ askedMsAgo: RETIRE_TIMEOUT_MS + 1 }));
    expect(reads).toBe(2);
  });
});

describe("the owner's first record (startingOwnerRecord)", () => {
  const paths = rootPaths("/p/v3");
  const fields = {
    paths,
    registryPath: "/r",
    identity: { pid: 4242, startTime: "100" },
    versions: owner.versions,
    spawnedBy: 17,
  };
  it("is the same record whoever writes it, the owner's with its token", () => {
    const bySession = startingOwnerRecord(fields);
    const byOwner = startingOwnerRecord({ ...fields, token: "t0k" });
    expect(validateOwner(bySession)).toBeUndefined();
    expect(validateOwner(byOwner)).toBeUndefined();
    expect(bySession).toMatchObject({
      phase: "starting",
      pid: 4242,
      startTime: "100",
      persistRoot: "/p/v3",
      registryPath: "/r",
      logFile: paths.ownerLog,
      spawnedBy: 17,
    });
    expect("token" in bySession).toBe(false);
    const { token, ...rest } = byOwner;
    expect(token).toBe("t0k");
    expect({ ...rest, startedAt: "", heartbeatAt: "" }).toEqual({
      ...bySession,
      startedAt: "",
      heartbeatAt: "",
    });
  });
});

describe("the pooled link's retry (servePooled)", () => {
  it("moves the link once the previous holder is gone, and nothing moves it once disposed", async () => {
    const base = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-link-"));
    const holder = spawn(NODE, ["-e", "setTimeout(() => {}, 60_000)"], { stdio: "ignore" });
    try {
      const stable = path.join(base, "root");
      const previous = path.join(base, "root.old");
      mkdirSync(previous);
      writeHolder(previous, { owner: identityOf(holder.pid!), workerd: [] });
      symlinkSync(path.basename(previous), stable);
      const offered: string[] = [];
      const link = (name: string) => {
        const dir = path.join(base, name);
        mkdirSync(dir);
        return servePooled(
          { stable, dir, cache: false },
          currentIdentity(),
          () => {},
          (s) => offered.push(`${name} ${s}`),
        );
      };
      // Disposed while it waits: left running, it would move the link after `live` does.
      link("root.disposed").dispose();
      const live = link("root.live");
      expect(live.offered).toBeUndefined();
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(linkTarget(stable)).toBe(previous);
      holder.kill("SIGKILL");
      await new Promise((resolve) => holder.once("exit", resolve));
      const deadline = Date.now() + 2000;
      while (offered.length === 0 && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 10));
      // Ten fast retry periods more, for a retry that should not be there.
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(offered).toEqual([`root.live ${stable}`]);
      expect(live.offered).toBe(stable);
      expect(linkTarget(stable)).toBe(path.join(base, "root.live"));
      live.dispose();
    } finally {
      holder.kill("SIGKILL");
      rmSync(base, { recursive: true, force: true });
    }
  });
});

describe("the election lock across processes", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-lock-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const lockModule = path.join(REPO, "dist", "owner", "spawn-lock.js");
  const recordsModule = path.join(REPO, "dist", "records.js");

  /** A child that takes the lock `rounds` times, holding it `holdMs`, and logs when. */
  function contender(root: string, rounds: number, holdMs: number, log: string) {
    const script = `
      const { tryAcquireSpawnLock } = await import(${JSON.stringify(lockModule)});
      const { rootPaths } = await import(${JSON.stringify(recordsModule)});
      const { appendFileSync } = await import("node:fs");
      const paths = rootPaths(${JSON.stringify(root)});
      for (let got = 0; got < ${rounds}; ) {
        const lock = tryAcquireSpawnLock(paths);
        if (!lock.release) { await new Promise((r) => setTimeout(r, 5)); continue; }
        const start = Date.now();
        await new Promise((r) => setTimeout(r, ${holdMs}));
        appendFileSync(${JSON.stringify(log)}, JSON.stringify({ pid: process.pid, start, end: Date.now() }) + "\\n");
        lock.release();
        got++;
      }`;
    const child = spawn(NODE, ["--input-type=module", "-e", script], { stdio: "inherit" });
    return new Promise<number | null>((resolve) => child.on("exit", resolve));
  }

  it("admits one holder at a time among four processes", async () => {
    const root = path.join(dir, "contended");
    mkdirSync(path.join(root, ".x-shared-storage"), { recursive: true });
    const log = path.join(dir, "contended.log");
    const codes = await Promise.all([1, 2, 3, 4].map(() => contender(root, 5, 15, log)));
    expect(codes).toEqual([0, 0, 0, 0]);
    const spans = readFileSync(log, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { pid: number; start: number; end: number })
      .sort((a, b) => a.start - b.start);
    expect(spans).toHaveLength(20);
    expect(new Set(spans.map((s) => s.pid)).size).toBe(4);
    for (let i = 1; i < spans.length; i++)
      expect(spans[i]!.start, `overlap at ${i}`).toBeGreaterThanOrEqual(spans[i - 1]!.end);
  });

  it("reclaims at once the lock of a holder that was killed, and never releases another's", async () => {
    const root = path.join(dir, "killed");
    const paths = rootPaths(root);
    mkdirSync(paths.stateDir, { recursive: true });
    // The holder takes the lock and is SIGKILLed while holding it: no exit handler runs.
    const holder = spawn(
      NODE,
      [
        "--input-type=module",
        "-e",
        `const { tryAcquireSpawnLock } = await import(${JSON.stringify(lockModule)});
         const { rootPaths } = await import(${JSON.stringify(recordsModule)});
         const lock = tryAcquireSpawnLock(rootPaths(${JSON.stringify(root)}));
         console.log(lock.release ? "held" : "refused");
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve) => holder.stdout.once("data", () => resolve()));
    const { tryAcquireSpawnLock } = await import("../src/owner/spawn-lock.js");
    expect(tryAcquireSpawnLock(paths)).toMatchObject({ heldBy: `pid ${holder.pid}` });
    holder.kill("SIGKILL");
    await new Promise((resolve) => holder.once("exit", resolve));
    expect(liveness({ pid: holder.pid! })).not.toBe("alive");
    const mine = tryAcquireSpawnLock(paths);
    expect(mine.release).toBeDefined();
    expect(mine.reclaimed).toContain(`held by dead pid ${holder.pid}`);
    // While we hold it, another process is refused; our release frees it for the next.
    expect(await contenderRefused(root)).toBe(true);
    mine.release!();
    expect(await contenderRefused(root)).toBe(false);
  });

  function contenderRefused(root: string): Promise<boolean> {
    const script = `
      const { tryAcquireSpawnLock } = await import(${JSON.stringify(lockModule)});
      const { rootPaths } = await import(${JSON.stringify(recordsModule)});
      const lock = tryAcquireSpawnLock(rootPaths(${JSON.stringify(root)}));
      lock.release?.();
      process.exit(lock.release ? 0 : 3);`;
    const child = spawn(NODE, ["--input-type=module", "-e", script], { stdio: "inherit" });
    return new Promise((resolve) => child.on("exit", (code) => resolve(code === 3)));
  }
});

describe("an owner too slow to write its first record before the spawn wait ends", () => {
  // Created when the test runs (a filtered-out describe runs no afterAll to remove it).
  let dir = "";
  let root = "";
  let registry = "";
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-slow-owner-"));
    root = path.join(dir, "state", "v3");
    registry = path.join(dir, "registry");
    mkdirSync(root, { recursive: true });
  });
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env))
    if (!key.startsWith("CLOUDFLARE_") && !key.startsWith("WRANGLER_")) env[key] = value;
  Object.assign(env, {
    WRANGLER_X_OWNER_STANDBY: "0",
    WRANGLER_X_OWNER_GRACE_MS: "1000",
    WRANGLER_X_OWNER_IDLE_MS: "1000",
    NODE_OPTIONS: `--import=${path.join(REPO, "test", "fixtures", "slow-owner-start.mjs")}`,
    // Past the electing session's wait for the owner's record, as on an overloaded machine.
    SLOW_OWNER_START_MS: String(FIRST_RECORD_TIMEOUT_MS + 1500),
  });
  /** Owner programs of this root (their command line names it), by pid. */
  const ownersOfRoot = () =>
    procPids().filter((pid) => commandLine(pid).includes(`--persist-root ${root}`));
  afterAll(async () => {
    // Only the owner programs of this test's root (its temp dir is in their command line).
    if (!dir) return;
    for (const pid of ownersOfRoot())
      signalIfOurs({ pid, startTime: readStartTime(pid) }, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  it("is the only owner started: the next election waits for it instead of spawning another", async () => {
    const seen = new Set<number>();
    // A child the owner forks (its workerd) shows the owner's command line until it execs: seen on
    // a loaded machine (a second "owner" whose parent was the owner). Owners are not such children.
    const watch = setInterval(() => {
      const owners = ownersOfRoot();
      for (const pid of owners) if (!owners.includes(procStat(pid)?.ppid ?? 0)) seen.add(pid);
    }, 20);
    const elector = () => {
      const child = spawn(
        NODE,
        [
          path.join(REPO, "test", "fixtures", "elector.mjs"),
          path.join(REPO, "dist"),
          root,
          registry,
          "2000",
        ],
        { env, stdio: ["ignore", "pipe", "inherit"] },
      );
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      return new Promise<{ owner?: number; error?: string; notes: string[] }>((resolve) =>
        child.on("exit", () => resolve(JSON.parse(out.trim()))),
      );
    };
    const results = await Promise.all([elector(), elector()]);
    clearInterval(watch);
    for (const result of results) expect(result.error).toBeUndefined();
    expect(results[0]!.owner).toBe(results[1]!.owner);
    const started = results.flatMap((r) =>
      r.notes.filter((n) => n.startsWith("started storage owner")),
    );
    expect(started, started.join("\n")).toHaveLength(1);
    const log = readFileSync(rootPaths(root).ownerLog, "utf8");
    expect(log.match(/: starting for /g), log).toHaveLength(1);
    expect([...seen], log).toEqual([results[0]!.owner]);
    // With no session left, the owner idles out by itself.
    const deadline = Date.now() + 20_000;
    while (ownersOfRoot().length > 0 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 100));
    expect(ownersOfRoot()).toEqual([]);
  });
});

describe("an owner that finds another's record when it starts", () => {
  it("exits at once: it loads no miniflare and leaves no instance directory", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-superseded-"));
    try {
      const root = path.join(dir, "state", "v3");
      const registry = path.join(dir, "registry");
      const paths = rootPaths(root);
      mkdirSync(paths.stateDir, { recursive: true });
      // The record names a live process that is not the new owner: this test process.
      writeRecordAtomic(
        paths.ownerRecord,
        ownerRecordFixture({ ...currentIdentity(), persistRoot: root, registryPath: registry }),
      );
      const child = spawn(
        NODE,
        [
          path.join(REPO, "dist", "owner", "main.js"),
          "--persist-root",
          root,
          "--registry",
          registry,
        ],
        {
          env: { ...process.env, WRANGLER_X_OWNER_STANDBY: "0" },
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let log = "";
      child.stdout.on("data", (d) => (log += d));
      child.stderr.on("data", (d) => (log += d));
      expect(await new Promise((resolve) => child.on("exit", resolve))).toBe(0);
      expect(log).toContain(`owner record now names pid ${process.pid}; exiting`);
      expect(log).not.toContain("starting for");
      expect(existsSync(paths.instancesDir) ? readdirSync(paths.instancesDir) : []).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
