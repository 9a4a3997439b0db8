// Issue 23: the root's Cache route (src/pooled/cache-claim.ts) against every order of a session's
// decision and an owner's claim, with real records under a temp root and real live and dead pids.
// In each, the cache files end with one writer: the owner's workerd (route `pooled`, the session
// pooled) or the sessions' own (no route).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Presence, type PresenceNote } from "../src/dev/presence.js";
import { claimCache, decideCacheRoute, retireCacheRoute } from "../src/pooled/cache-claim.js";
import { SessionRoutes } from "../src/pooled/session-routes.js";
import { ownerRecordFixture } from "./harness/records.js";
import { stableSocketDir } from "../src/pooled/sockets.js";
import { currentIdentity, identityOf, isAlive, type ProcessIdentity } from "../src/process-info.js";
import {
  type CacheDecision,
  type CacheRouteRecord,
  type OwnerRecord,
  readCacheRoute,
  rootPaths,
  SCHEMA_VERSION,
  writeRecordAtomic,
} from "../src/records.js";
import { sleep, sleepSync } from "../src/wait.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "x-ss-cache-claim-"));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const child of children) child.kill("SIGKILL");
  rmSync(tmp, { recursive: true, force: true });
});

/** Short timings, so that each timeout costs tens of ms. */
const FAST = { waitMs: 60, intentMs: 120, staleMs: 300, pollMs: 5 };
const me = currentIdentity();

/** A live process that is not this one (another owner, another session), killed after the file. */
function liveOther(): ProcessIdentity {
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], { stdio: "ignore" });
  children.push(child);
  return identityOf(child.pid!);
}

/** A pid no process has any more: a child that ran and exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]);
  return Number(child.stdout.toString());
}

let roots = 0;
const newRoot = () => path.join(tmp, `root-${++roots}`);

function writeRoute(
  root: string,
  state: CacheRouteRecord["state"],
  owner: ProcessIdentity,
  nonce = "n1",
): void {
  writeRecordAtomic(rootPaths(root).cacheRoute, {
    schema: SCHEMA_VERSION,
    ...owner,
    state,
    nonce,
    at: new Date().toISOString(),
  });
}

const routeOf = (root: string) => {
  const route = readCacheRoute(rootPaths(root));
  return route?.ok ? route.value : route;
};

/** An owner record naming the pooled sockets at the root's stable path, or (a successor starting) none. */
function writeOwnerRecord(
  root: string,
  fields: { pooledSockets?: string; phase?: OwnerRecord["phase"] },
): void {
  writeRecordAtomic(
    rootPaths(root).ownerRecord,
    ownerRecordFixture({ pid: 999_999_988, persistRoot: root, ...fields }),
  );
}

/** Another process's presence under `root` noting `decision`. */
function writeClientNote(root: string, who: ProcessIdentity, decision: CacheDecision): void {
  writeRecordAtomic(path.join(rootPaths(root).clientsDir, `${who.pid}.json`), {
    schema: SCHEMA_VERSION,
    ...who,
    worker: `w${who.pid}`,
    command: "dev",
    since: new Date().toISOString(),
    cwd: tmp,
    versions: {},
    cacheDecision: decision,
  });
}

const DECIDING_SCRIPT = `const fs = require("node:fs");
const [note, base, ms, file, content] = process.argv.slice(1);
const put = (f, v) => { fs.writeFileSync(f + ".tmp", v); fs.renameSync(f + ".tmp", f); };
const noted = (d) => put(note, JSON.stringify({ ...JSON.parse(base), pid: process.pid, cacheDecision: d }));
noted("deciding");
process.stdout.write("noted\\n");
setTimeout(() => (file ? put(file, content) : noted("follows-owner")), Number(ms));
setTimeout(() => {}, 60000);`;

/**
 * Another real process, noted `deciding` under `root` once this resolves; `ms` later it writes
 * `later` (what a concurrent owner would write), or else its note as `follows-owner`.
 */
async function decidingProcess(
  root: string,
  ms: number,
  later?: { file: string; content: string },
): Promise<void> {
  const { clientsDir } = rootPaths(root);
  mkdirSync(clientsDir, { recursive: true });
  const base = { schema: SCHEMA_VERSION, worker: "w", command: "dev", since: "", cwd: tmp };
  const child = spawn(
    process.execPath,
    [
      "-e",
      DECIDING_SCRIPT,
      path.join(clientsDir, "deciding.json"),
      JSON.stringify({ ...base, versions: {} }),
      String(ms),
      later?.file ?? "",
      later?.content ?? "",
    ],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  children.push(child);
  await new Promise((resolve) => child.stdout!.once("data", resolve));
}

/**
 * This process's presence under `root`, with `before`/`after` run around each note it writes
 * (where a test puts an owner's steps between the session's), and the notes listed in order.
 */
function steppedPresence(
  root: string,
  around: { before?: (note: PresenceNote) => void; after?: (note: PresenceNote) => void } = {},
) {
  const real = Presence.write(rootPaths(root), path.join(tmp, "registry"), {
    worker: "w",
    command: "dev",
  });
  const notes: (CacheDecision | undefined)[] = [];
  const presence: Presence = {
    file: real.file,
    note(note) {
      around.before?.(note);
      real.note(note);
      notes.push(note.cacheDecision);
      around.after?.(note);
    },
  };
  return { presence, notes };
}

/** A root whose owner serves pooled sockets at its stable path, and a session on it. */
function cacheRoot(around?: Parameters<typeof steppedPresence>[1]) {
  const root = newRoot();
  const stable = stableSocketDir(root);
  // The stable path's base dir, ours and 0700, as an owner of ours makes it.
  mkdirSync(path.dirname(stable), { recursive: true, mode: 0o700 });
  writeOwnerRecord(root, { pooledSockets: stable });
  const { presence, notes } = steppedPresence(root, around);
  const routes = new SessionRoutes(FAST);
  routes.connected(root, presence);
  return { root, routes, notes, stable, paths: rootPaths(root) };
}

/** The owner's turn at a record write (this process as the owner). */
const ownerTurn = (root: string, owner = me) => claimCache(rootPaths(root), owner, FAST);

/** A route of a dead writer (`state`, `nonce`) that the owner's turn claims afresh, as its own. */
function expectClaimedAfresh(root: string, state: CacheRouteRecord["state"], nonce: string): void {
  writeRoute(root, state, { pid: deadPid() }, nonce);
  expect(ownerTurn(root)).toBe(true);
  expect(routeOf(root)).toMatchObject({ state: "pooled", pid: me.pid });
  expect(routeOf(root)).not.toMatchObject({ nonce });
}

describe("a session's Cache route", () => {
  it("is the owner's where the root's route is pooled, and stays so for the session's life", async () => {
    const { root, routes, notes, stable } = cacheRoot();
    writeRoute(root, "pooled", liveOther());
    expect(await routes.cacheSocketDirFor(root)).toBe(stable);
    expect(notes).toEqual(["deciding", "joining", "pooled"]);
    // A successor starting (no sockets named), an unreadable record, the route gone: still the owner's.
    writeOwnerRecord(root, { phase: "starting" });
    expect(await routes.cacheSocketDirFor(root)).toBe(stable);
    writeFileSync(rootPaths(root).ownerRecord, "{ not json");
    expect(await routes.cacheSocketDirFor(root)).toBe(stable);
    retireCacheRoute(rootPaths(root));
    expect(await routes.cacheSocketDirFor(root)).toBe(stable);
    expect(notes).toEqual(["deciding", "joining", "pooled"]);
    // A root this session never connected to: nothing, and nothing noted.
    expect(await routes.cacheSocketDirFor(newRoot())).toBeUndefined();
  });

  it("starting while a successor starts (its record names no sockets yet): the owner's, at the root's stable path", async () => {
    // review4's H1: the announcement lived in the owner's record, which a successor starts without.
    const { root, routes, notes, stable } = cacheRoot();
    // Its writer killed; a session on the owner's Cache (noted `pooled`) still stands behind it.
    writeRoute(root, "pooled", { pid: deadPid() }, "first");
    writeClientNote(root, liveOther(), "pooled");
    writeOwnerRecord(root, { phase: "starting" });
    expect(await routes.cacheSocketDirFor(root)).toBe(stable);
    expect(notes).toEqual(["deciding", "joining", "pooled"]);
    // And the successor serves it at once, no claim even beside a deciding note, standing behind it.
    writeClientNote(root, liveOther(), "deciding");
    expect(ownerTurn(root)).toBe(true);
    expect(routeOf(root)).toMatchObject({ state: "pooled", nonce: "first", pid: me.pid });
  });

  it("a route left by processes all gone (a reboot) is no route: its own Cache, and the next owner claims afresh", async () => {
    const { root, routes, notes } = cacheRoot();
    writeRoute(root, "pooled", { pid: deadPid() }, "before-reboot");
    writeClientNote(root, { pid: deadPid() }, "pooled");
    expect(await routes.cacheSocketDirFor(root)).toBeUndefined();
    expect(notes).toEqual(["deciding", "session"]);
    const next = newRoot();
    expectClaimedAfresh(next, "pooled", "before-reboot");
  });

  it("the route's last stand gone between its two reads: back to `deciding`, then its own", async () => {
    const writer = liveOther();
    const { root, routes, notes } = cacheRoot({
      after: (note) => {
        if (note.cacheDecision !== "joining") return;
        process.kill(writer.pid, "SIGKILL");
        // Gone (a zombie counts as gone) before the session reads the route again.
        const deadline = performance.now() + 2000;
        while (isAlive(writer) && performance.now() < deadline) sleepSync(5);
      },
    });
    writeRoute(root, "pooled", writer);
    expect(await routes.cacheSocketDirFor(root)).toBeUndefined();
    expect(notes).toEqual(["deciding", "joining", "deciding", "session"]);
  });

  it("another session `joining` a route whose writer died since: followed until its `pooled` note lands, then joined", async () => {
    // review6's H1: P read the route standing twice and returned, its `pooled` note not yet
    // written, when the route's writer died; S deciding then must not take its own Cache.
    const { root, routes, notes, stable } = cacheRoot();
    writeRoute(root, "pooled", { pid: deadPid() }, "writer-died");
    const p = liveOther();
    writeClientNote(root, p, "joining");
    const decided = routes.cacheSocketDirFor(root);
    await sleep(FAST.pollMs * 6);
    expect(notes).toEqual(["deciding", "follows-owner"]);
    writeClientNote(root, p, "pooled");
    expect(await decided).toBe(stable);
    expect(notes).toEqual(["deciding", "follows-owner", "joining", "pooled"]);
    // One stuck `joining` (stopped) is followed at most staleMs, then no longer counts.
    const stuck = cacheRoot();
    writeClientNote(stuck.root, liveOther(), "joining");
    const since = performance.now();
    expect(await stuck.routes.cacheSocketDirFor(stuck.root)).toBeUndefined();
    expect(performance.now() - since).toBeGreaterThanOrEqual(FAST.staleMs);
    expect(stuck.notes).toEqual(["deciding", "follows-owner", "deciding", "session"]);
  });

  it("on the owner's Cache with no socket path of ours to reach: the assembly fails, naming the path", async () => {
    const { root, routes } = cacheRoot();
    writeRoute(root, "pooled", liveOther());
    writeOwnerRecord(root, { phase: "starting" });
    const saved = process.env.TMPDIR;
    const open = mkdtempSync(path.join(tmp, "open-tmpdir-"));
    mkdirSync(path.join(open, `x-ss-${process.getuid!()}`), { mode: 0o755 });
    chmodSync(path.join(open, `x-ss-${process.getuid!()}`), 0o755);
    process.env.TMPDIR = open;
    try {
      await expect(routes.cacheSocketDirFor(root)).rejects.toThrow(
        new RegExp(`${open}/x-ss-\\d+ must be a directory .* mode 0700`),
      );
    } finally {
      process.env.TMPDIR = saved;
    }
  });

  it("is its own where the root has no route, for its life; its note keeps every owner from claiming", async () => {
    const { root, routes, notes, paths } = cacheRoot();
    expect(await routes.cacheSocketDirFor(root)).toBeUndefined();
    expect(notes).toEqual(["deciding", "session"]);
    expect(ownerTurn(root)).toBe(false);
    expect(existsSync(paths.cacheRoute)).toBe(false);
    writeRoute(root, "pooled", me);
    expect(await routes.cacheSocketDirFor(root)).toBeUndefined();
    expect(notes).toEqual(["deciding", "session"]);
  });

  it("an intent whose owner died: its own at once", async () => {
    const { root, routes, notes } = cacheRoot();
    writeRoute(root, "intent", { pid: deadPid() });
    expect(await routes.cacheSocketDirFor(root)).toBeUndefined();
    expect(notes).toEqual(["deciding", "session"]);
  });
});

describe("a session's decision against an owner's claim", () => {
  const oneWriter = (announced: boolean, dir: string | undefined) =>
    expect(announced ? "owner" : "session").toBe(dir === undefined ? "session" : "owner");

  it("the owner claiming after the session read no route, before it notes `session`: withdrawn", async () => {
    let announced: boolean | undefined;
    const { root, routes, notes, paths } = cacheRoot({
      before: (note) => {
        if (note.cacheDecision === "session") announced = ownerTurn(root);
      },
    });
    const dir = await routes.cacheSocketDirFor(root);
    expect(announced).toBe(false);
    expect(existsSync(paths.cacheRoute)).toBe(false);
    oneWriter(announced!, dir);
    expect(notes).toEqual(["deciding", "session"]);
  });

  it("the owner claiming between the session's `deciding` note and its read: withdrawn, its own", async () => {
    let announced: boolean | undefined;
    const { root, routes } = cacheRoot({
      after: (note) => {
        if (note.cacheDecision === "deciding") announced = ownerTurn(root);
      },
    });
    const dir = await routes.cacheSocketDirFor(root);
    expect(announced).toBe(false);
    oneWriter(announced!, dir);
  });

  it("an owner's intent read first: the session follows it, the owner makes it pooled, the session is the owner's", async () => {
    const { root, routes, notes, stable } = cacheRoot();
    writeRoute(root, "intent", me);
    const decision = routes.cacheSocketDirFor(root);
    await sleep(FAST.pollMs * 4);
    expect(notes).toEqual(["deciding", "follows-owner"]);
    // The owner's check (a fresh intent of its own, then the notes): `follows-owner` holds nothing.
    expect(ownerTurn(root)).toBe(true);
    expect(routeOf(root)).toMatchObject({ state: "pooled", pid: me.pid });
    const dir = await decision;
    expect(dir).toBe(stable);
    oneWriter(true, dir);
    expect(notes).toEqual(["deciding", "follows-owner", "joining", "pooled"]);
  });

  it("the owner reading the notes while the session, having read its intent, still notes `deciding`: withdrawn, the session decides again", async () => {
    let announced: boolean | undefined;
    const { root, routes, notes } = cacheRoot({
      before: (note) => {
        if (note.cacheDecision === "follows-owner" && announced === undefined)
          announced = ownerTurn(root);
      },
    });
    writeRoute(root, "intent", me);
    const dir = await routes.cacheSocketDirFor(root);
    expect(announced).toBe(false);
    oneWriter(announced!, dir);
    expect(notes).toEqual(["deciding", "follows-owner", "deciding", "session"]);
  });

  it("follows a live owner's intent until withdrawn, then its own; one never resolved, at most staleMs", async () => {
    const other = liveOther();
    const first = cacheRoot();
    writeRoute(first.root, "intent", other, "withdrawn-later");
    const decision = first.routes.cacheSocketDirFor(first.root);
    await sleep(FAST.pollMs * 4);
    retireCacheRoute(first.paths);
    expect(await decision).toBeUndefined();
    expect(first.notes).toEqual(["deciding", "follows-owner", "deciding", "session"]);

    const second = cacheRoot();
    writeRoute(second.root, "intent", other, "held-still");
    const since = performance.now();
    expect(await second.routes.cacheSocketDirFor(second.root)).toBeUndefined();
    const took = performance.now() - since;
    expect(took).toBeGreaterThanOrEqual(FAST.staleMs);
    expect(took).toBeLessThan(FAST.staleMs + 1000);
    expect(second.notes).toEqual(["deciding", "follows-owner", "deciding", "session"]);
  }, 5000);

  // review5: the route spoiled while the owner serves it (torn, another version's, an unknown
  // state): a session on the owner's Cache still stands behind it, so the next one joins it at
  // once, and the owner writes the route again at its next record write.
  for (const [what, spoil] of [
    ["torn", (file: string) => writeFileSync(file, "{ torn")],
    ["another schema", (file: string) => writeFileSync(file, JSON.stringify({ schema: 2 }))],
    [
      "an unknown state",
      (file: string) =>
        writeFileSync(
          file,
          JSON.stringify({ schema: SCHEMA_VERSION, pid: 1, state: "served", nonce: "x", at: "" }),
        ),
    ],
  ] as const) {
    it(`a route ${what} while a session is on the owner's Cache: the next one joins it, the owner repairs it`, async () => {
      const { root, routes, notes, stable, paths } = cacheRoot();
      writeRoute(root, "pooled", liveOther());
      writeClientNote(root, liveOther(), "pooled");
      spoil(paths.cacheRoute);
      const since = performance.now();
      expect(await routes.cacheSocketDirFor(root)).toBe(stable);
      expect(performance.now() - since).toBeLessThan(FAST.staleMs);
      expect(notes).toEqual(["deciding", "joining", "pooled"]);
      expect(ownerTurn(root)).toBe(true);
      expect(routeOf(root)).toMatchObject({ state: "pooled", pid: me.pid });
    });
  }

  it("an unreadable route is followed (it may have said pooled) until an owner writes over it", async () => {
    const { root, routes, notes, stable, paths } = cacheRoot();
    mkdirSync(paths.stateDir, { recursive: true });
    writeFileSync(paths.cacheRoute, "{ torn");
    const decision = routes.cacheSocketDirFor(root);
    await sleep(FAST.pollMs * 4);
    expect(notes).toEqual(["deciding", "follows-owner"]);
    expect(ownerTurn(root)).toBe(true);
    expect(await decision).toBe(stable);
  });

  it("decideCacheRoute alone: `session` with no route in one read, `pooled` with one in two", async () => {
    const root = newRoot();
    const notes: CacheDecision[] = [];
    expect(await decideCacheRoute(rootPaths(root), (d) => notes.push(d), FAST)).toBe("session");
    writeRoute(root, "pooled", me);
    expect(await decideCacheRoute(rootPaths(root), (d) => notes.push(d), FAST)).toBe("pooled");
    expect(notes).toEqual(["deciding", "deciding", "joining"]);
  });
});

describe("an owner's claim", () => {
  it("waits for a `deciding` note at most waitMs, then withdraws; `follows-owner` does not hold it", () => {
    const root = newRoot();
    const session = liveOther();
    writeClientNote(root, session, "deciding");
    const since = performance.now();
    expect(ownerTurn(root)).toBe(false);
    expect(performance.now() - since).toBeGreaterThanOrEqual(FAST.waitMs);
    expect(existsSync(rootPaths(root).cacheRoute)).toBe(false);
    writeClientNote(root, session, "follows-owner");
    expect(ownerTurn(root)).toBe(true);
    expect(routeOf(root)).toMatchObject({ state: "pooled", pid: me.pid });
  });

  it("waits for the same stuck `deciding` note once, not at every record write; again once it changes", () => {
    // review6's M1: a session stopped mid-decision cost the owner waitMs of blocked thread every 2 s.
    const root = newRoot();
    const session = liveOther();
    writeClientNote(root, session, "deciding");
    const memory = {};
    const timed = () => {
      const since = performance.now();
      const claimed = claimCache(rootPaths(root), me, FAST, memory);
      return { claimed, ms: performance.now() - since };
    };
    const first = timed();
    expect(first.claimed).toBe(false);
    expect(first.ms).toBeGreaterThanOrEqual(FAST.waitMs);
    const again = timed();
    expect(again.claimed).toBe(false);
    expect(again.ms).toBeLessThan(FAST.waitMs / 2);
    expect(existsSync(rootPaths(root).cacheRoute)).toBe(false);
    writeClientNote(root, session, "follows-owner");
    expect(timed().claimed).toBe(true);
  });

  it("does not make an intent pooled once intentMs passed, checked right before that write", async () => {
    // review4's H2: a `deciding` note that becomes `follows-owner` (another real process writes
    // it) after the owner's intentMs, inside its waitMs.
    const root = newRoot();
    const paths = rootPaths(root);
    await decidingProcess(root, 400);
    const since = performance.now();
    expect(claimCache(paths, me, { ...FAST, waitMs: 1500, intentMs: 100 })).toBe(false);
    const took = performance.now() - since;
    expect(took).toBeGreaterThanOrEqual(300);
    expect(took).toBeLessThan(1500);
    expect(existsSync(paths.cacheRoute)).toBe(false);
  });

  it("a live session's `session` note holds it back; a dead pid's note never does", () => {
    const root = newRoot();
    writeClientNote(root, { pid: deadPid() }, "session");
    writeClientNote(root, { pid: deadPid() }, "deciding");
    expect(ownerTurn(root)).toBe(true);
    const held = newRoot();
    writeClientNote(held, liveOther(), "session");
    expect(ownerTurn(held)).toBe(false);
    expect(existsSync(rootPaths(held).cacheRoute)).toBe(false);
  });

  it("leaves another live owner's intent to it, and claims over a dead one's", () => {
    const root = newRoot();
    const other = liveOther();
    writeRoute(root, "intent", other, "theirs");
    expect(ownerTurn(root)).toBe(false);
    expect(routeOf(root)).toMatchObject({ state: "intent", nonce: "theirs" });
    expectClaimedAfresh(root, "intent", "dead");
  });

  it("withdraws only its own intent: a route another owner wrote while ours waited stays", async () => {
    // review5's T1: another process, noted `deciding` (which holds our claim), writes a pooled
    // route 100 ms into our wait, as a concurrent owner's claim would.
    const root = newRoot();
    const paths = rootPaths(root);
    const theirs = { schema: SCHEMA_VERSION, ...liveOther(), state: "pooled", nonce: "theirs" };
    await decidingProcess(root, 100, {
      file: paths.cacheRoute,
      content: JSON.stringify({ ...theirs, at: new Date().toISOString() }),
    });
    expect(claimCache(paths, me, { ...FAST, waitMs: 400, intentMs: 800 })).toBe(false);
    expect(routeOf(root)).toMatchObject({ state: "pooled", nonce: "theirs" });
  });

  it("an intent of a pid alive but reused (no start time to tell) holds claims back only until staleMs old", () => {
    // review5's L3: otherwise every claim of the root fails while that unrelated process lives.
    const root = newRoot();
    writeRecordAtomic(rootPaths(root).cacheRoute, {
      schema: SCHEMA_VERSION,
      pid: liveOther().pid,
      state: "intent",
      nonce: "reused",
      at: new Date(Date.now() - FAST.staleMs - 1000).toISOString(),
    });
    expect(ownerTurn(root)).toBe(true);
    expect(routeOf(root)).toMatchObject({ state: "pooled", pid: me.pid });
  });

  it("counts a `joining` note as no stand, and waits for it as for `deciding`", () => {
    const root = newRoot();
    writeRoute(root, "pooled", { pid: deadPid() }, "left");
    writeClientNote(root, liveOther(), "joining");
    const since = performance.now();
    expect(ownerTurn(root)).toBe(false);
    expect(performance.now() - since).toBeGreaterThanOrEqual(FAST.waitMs);
    expect(existsSync(rootPaths(root).cacheRoute)).toBe(false);
  });
});
