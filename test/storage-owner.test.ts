// `wrangler storage-owner status | stop | gc` against real sessions and real crashes.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { waitUntilAllWrite } from "./harness/load.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspectRoot } from "../src/owner/inspect.js";
import { ownerGone } from "../src/owner/assessment.js";
import { liveness } from "../src/process-info.js";
import { clientRecordPath, readCacheRoute, rootPaths } from "../src/records.js";
import { storageCandidates } from "../src/storage-candidate.js";
import {
  isDatabaseFile,
  killGroup,
  parentPid,
  post,
  processesWithOpen,
  Sandbox,
  type Session,
  waitFor,
} from "./harness/sandbox.js";

interface StatusJson {
  owners: {
    persistRoot: string;
    state: string;
    pid: number;
    debugAddress: string;
    heartbeatAgeMs: number;
    startedAt: string;
    logFile: string;
    versions: Record<string, string>;
    clients: { pid: number; alive: boolean; worker: string; since: string }[];
    standby: { pid: number; alive: boolean; backs: number } | null;
  }[];
  problems: string[];
}

interface GcJson {
  persistRoot: string;
  removed: { what: string; path: string }[];
  killed: { what: string; pid: number }[];
  kept: { what: string; pid?: number; path?: string; why: string }[];
}

describe.each([
  ["", false],
  // Every process as on macOS: ps start times, no /proc (gc then cannot look for orphans).
  [", with WRANGLER_X_PROCESS_INFO=portable", true],
])("storage-owner with live sessions%s", (_, portable) => {
  const sandbox = new Sandbox({ graceMs: 3000, idleMs: 1000 });
  if (portable) sandbox.env.WRANGLER_X_PROCESS_INFO = "portable";
  let sessions: Session[];
  const cli = (...args: string[]) =>
    sandbox.run(["storage-owner", ...args, "--persist-to", sandbox.persistTo]);

  beforeAll(async () => {
    sessions = await Promise.all(["api", "jobs"].map((w) => sandbox.startSession(w)));
  });
  afterAll(() => sandbox.cleanup());

  it("status --json shows one running owner, its standby and both clients", async () => {
    await waitFor(
      "the standby to be ready",
      () => {
        const standby = inspectRoot(sandbox.persistRoot).owner?.standby;
        return standby?.alive && standby.phase === "ready";
      },
      30_000,
    );
    const { code, stdout } = await cli("status", "--json");
    expect(code).toBe(0);
    const status = JSON.parse(stdout) as StatusJson;
    expect(status.owners).toHaveLength(1);
    const owner = status.owners[0]!;
    const record = sandbox.owner()!;
    expect(owner).toMatchObject({
      state: "running",
      pid: record.pid,
      debugAddress: record.debugAddress,
      persistRoot: sandbox.persistRoot,
    });
    expect(liveness({ pid: owner.pid })).toBe("alive");
    expect(owner.debugAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(owner.heartbeatAgeMs).toBeLessThan(3000);
    expect(owner.versions.wrangler).toBe("4.164.0");
    expect(owner.standby).toMatchObject({ alive: true, backs: owner.pid });
    expect(owner.clients.map((c) => [c.worker, c.alive]).sort()).toEqual([
      ["api", true],
      ["jobs", true],
    ]);
  });

  it("status prints the same to a person", async () => {
    const { code, stdout } = await cli("status");
    expect(code).toBe(0);
    const owner = sandbox.owner()!;
    expect(stdout).toContain(`pid ${owner.pid} · running`);
    expect(stdout).toContain(owner.debugAddress!);
    expect(stdout).toMatch(/heartbeat\s+\d\.\ds ago/);
    expect(stdout).toContain("2 (2 alive)");
    expect(stdout).toMatch(/api\s+dev/);
    expect(stdout).toMatch(/jobs\s+dev/);
    expect(stdout).toContain(owner.logFile);
    expect(stdout).toMatch(/standby\s+pid \d+ · ready at 127\.0\.0\.1:\d+/);
  });

  it("stop refuses while clients are connected and changes nothing", async () => {
    const before = sandbox.owner()!;
    const { code, stderr } = await cli("stop");
    expect(code).not.toBe(0);
    expect(stderr).toContain(`Not stopping storage owner pid ${before.pid}`);
    expect(stderr).toContain("--force");
    expect(liveness(before)).toBe("alive");
    expect(sandbox.owner()).toMatchObject({ pid: before.pid, phase: "running" });
  });

  it("stop --force stops the owner; its standby takes over and the sessions keep working", async () => {
    const before = sandbox.owner()!;
    const standby = inspectRoot(sandbox.persistRoot).owner!.standby!;
    const { code, stdout } = await cli("stop", "--force");
    expect(code).toBe(0);
    expect(stdout).toContain(`Stopped storage owner pid ${before.pid}`);
    expect(stdout).toContain(`standby pid ${standby.pid} took over as their owner`);
    expect(liveness(before)).not.toBe("alive");
    const recoveredAt = Date.now();
    await waitUntilAllWrite(
      sessions,
      "after-stop",
      15_000,
      "inserts to succeed again through a new owner",
    );
    console.log(`sessions wrote again ${Date.now() - recoveredAt} ms after stop --force returned`);
    const after = await waitFor("the new owner to publish", () => {
      const owner = sandbox.owner();
      return owner && owner.pid !== before.pid && owner.phase === "running" ? owner : undefined;
    });
    expect(liveness(after)).toBe("alive");
    expect(after.pid).toBe(standby.pid);
    const results = await Promise.all(
      sessions.map((s) => post(s.url("/d1/insert?who=after-stop"))),
    );
    expect(results.every((r) => r.ok)).toBe(true);
    // No session served in between: the new owner's workerd is the only one with the files open.
    const holders = processesWithOpen(isDatabaseFile(sandbox.persistRoot));
    expect(holders.map((pid) => parentPid(pid))).toEqual([after.pid]);
  });

  it("after kill -9 of everything: status says dead, gc reclaims all, a new session starts clean", async () => {
    const owner = sandbox.owner()!;
    for (const s of sessions) killGroup(s.pid, "SIGKILL");
    killGroup(owner.pid, "SIGKILL");
    await waitFor("the killed processes to be gone", () => ownerGone(owner), 10_000);
    await Promise.all(sessions.map((s) => s.exited));

    const dead = JSON.parse((await cli("status", "--json")).stdout) as StatusJson;
    expect(dead.owners).toHaveLength(1);
    expect(dead.owners[0]).toMatchObject({ state: "dead", pid: owner.pid });
    expect(dead.owners[0]!.clients.every((c) => !c.alive)).toBe(true);
    const leftCandidates = storageCandidates(sandbox.registry, sandbox.persistRoot).map(
      (c) => c.name,
    );
    expect(leftCandidates.length).toBeGreaterThan(0);

    const dry = await cli("gc", "--dry-run");
    expect(dry.stdout).toContain("would remove");
    expect(existsSync(rootPaths(sandbox.persistRoot).ownerRecord)).toBe(true);

    const gc = await cli("gc", "--json");
    expect(gc.code).toBe(0);
    const removed = (
      JSON.parse(gc.stdout) as { roots: { removed: { what: string; path: string }[] }[] }
    ).roots[0]!.removed;
    expect(removed.map((r) => r.what)).toContain("record of dead owner");
    const { notes } = (JSON.parse(gc.stdout) as { roots: { notes: string[] }[] }).roots[0]!;
    expect(notes.length).toBe(portable ? 1 : 0);
    expect(removed.filter((r) => r.what === "client presence")).toHaveLength(2);
    for (const name of leftCandidates)
      expect(removed.map((r) => path.basename(r.path))).toContain(name);
    expect(storageCandidates(sandbox.registry, sandbox.persistRoot).map((c) => c.name)).toEqual([]);
    expect(readdirSync(rootPaths(sandbox.persistRoot).clientsDir)).toEqual([]);

    const after = JSON.parse((await cli("status", "--json")).stdout) as StatusJson;
    expect(after.owners).toEqual([]);

    const fresh = await sandbox.startSession("api");
    expect(fresh.output()).not.toContain("reclaimed");
    expect(sandbox.owner()!.pid).not.toBe(owner.pid);
    expect((await post(fresh.url("/d1/insert?who=fresh"))).ok).toBe(true);
    await sandbox.stopSession(fresh);
  });
});

describe("storage-owner stop and gc, one owner at a time", () => {
  // Long grace and idle: the owner stays up after its last session leaves, for `stop` to stop.
  const sandbox = new Sandbox({ graceMs: 120_000, idleMs: 120_000 });
  const cli = (...args: string[]) =>
    sandbox.run(["storage-owner", ...args, "--persist-to", sandbox.persistTo]);
  afterAll(() => sandbox.cleanup());

  it("gc beside a live owner and session leaves them untouched; the session is served after", async () => {
    const session = await sandbox.startSession("api");
    const before = sandbox.owner()!;
    expect(before.phase).toBe("running");
    const gc = await cli("gc", "--json");
    expect(gc.code).toBe(0);
    const report = (JSON.parse(gc.stdout) as { roots: GcJson[] }).roots[0]!;
    expect(report.killed).toEqual([]);
    expect(report.removed.map((r) => r.what)).not.toContain("record of dead owner");
    expect(report.kept).toContainEqual(expect.objectContaining({ what: "owner", pid: before.pid }));
    // The root's Cache route is kept while an owner or session lives (src/pooled/cache-claim.ts).
    expect(readCacheRoute(rootPaths(sandbox.persistRoot))).toMatchObject({
      ok: true,
      value: { state: "pooled" },
    });
    expect(liveness(before)).toBe("alive");
    expect(sandbox.owner()).toMatchObject({ pid: before.pid, phase: "running" });
    expect((await post(session.url("/d1/insert?who=after-gc"))).ok).toBe(true);
    await sandbox.stopSession(session);
  });

  it("stop with no session connected: exits 0, the owner, its standby and its workerd are gone, no record left", async () => {
    const owner = sandbox.owner()!;
    expect(liveness(owner)).toBe("alive");
    const workerd = owner.workerd ?? [];
    expect(workerd.length).toBeGreaterThan(0);
    const standby = inspectRoot(sandbox.persistRoot).owner?.standby;
    const { code, stdout, stderr } = await cli("stop");
    expect(code, stderr).toBe(0);
    expect(stdout).toContain(`Stopped storage owner pid ${owner.pid}.`);
    // Bounded by the 250 ms for which this process reuses a `ps` answer (portable mode): the
    // owner's liveness was asked just before `stop`.
    const processes = [owner, ...workerd, ...(standby ? [{ pid: standby.pid }] : [])];
    await waitFor(
      "the owner, its workerd and its standby to be gone",
      () => processes.every((p) => liveness(p) !== "alive"),
      1000,
      50,
    );
    expect(liveness(owner)).not.toBe("alive");
    for (const w of workerd) expect(liveness(w), `workerd ${w.pid}`).not.toBe("alive");
    if (standby) expect(liveness({ pid: standby.pid })).not.toBe("alive");
    expect(existsSync(rootPaths(sandbox.persistRoot).ownerRecord)).toBe(false);
    expect(existsSync(rootPaths(sandbox.persistRoot).standbyRecord)).toBe(false);
    expect(storageCandidates(sandbox.registry, sandbox.persistRoot)).toEqual([]);
    expect(await sandbox.settledLeftovers()).toEqual([]);
    const status = JSON.parse((await cli("status", "--json")).stdout) as StatusJson;
    expect(status.owners).toEqual([]);
  });

  it("gc --all reclaims a dead owner's stale records, reports them, and leaves nothing running", async () => {
    const session = await sandbox.startSession("api");
    const owner = sandbox.owner()!;
    await sandbox.stopSession(session);
    killGroup(owner.pid, "SIGKILL");
    await waitFor("the killed owner to be gone", () => ownerGone(owner), 10_000);
    expect(existsSync(rootPaths(sandbox.persistRoot).ownerRecord)).toBe(true);

    const gc = await sandbox.run(["storage-owner", "gc", "--all", "--json"]);
    expect(gc.code).toBe(0);
    const roots = (JSON.parse(gc.stdout) as { roots: GcJson[] }).roots;
    const ours = roots.find((r) => r.persistRoot === sandbox.persistRoot);
    expect(ours, gc.stdout).toBeDefined();
    expect(ours!.removed).toContainEqual(
      expect.objectContaining({
        what: "record of dead owner",
        path: rootPaths(sandbox.persistRoot).ownerRecord,
      }),
    );
    expect(existsSync(rootPaths(sandbox.persistRoot).ownerRecord)).toBe(false);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("storage-owner with bad records", () => {
  const sandbox = new Sandbox();
  const cli = (...args: string[]) =>
    sandbox.run(["storage-owner", ...args, "--persist-to", sandbox.persistTo]);
  afterAll(() => sandbox.cleanup());

  it("explains garbage, truncated and reused-pid records, and gc never kills the unrelated process", async () => {
    const paths = rootPaths(sandbox.persistRoot);
    mkdirSync(paths.clientsDir, { recursive: true });
    writeFileSync(paths.ownerRecord, "\u0000\u0001 not json at all");
    writeFileSync(paths.cacheRoute, "{ torn");
    writeFileSync(clientRecordPath(paths, 111111), '{"schema":1,"pid":111111,"worker":"api","comm');
    // A live process that is not ours, recorded with another start time: a reused pid.
    const unrelated = spawn("sleep", ["60"], { detached: true, stdio: "ignore" });
    try {
      writeFileSync(
        clientRecordPath(paths, unrelated.pid!),
        JSON.stringify({
          schema: 1,
          pid: unrelated.pid,
          startTime: "1",
          worker: "old",
          command: "dev",
          since: new Date(0).toISOString(),
          cwd: "/",
          versions: {},
        }),
      );

      const status = await cli("status", "--json");
      expect(status.code).toBe(0);
      const json = JSON.parse(status.stdout) as StatusJson & {
        unowned: { clients: { pid: number; alive: boolean }[] }[];
      };
      expect(json.owners).toEqual([]);
      expect(json.problems.join("\n")).toContain(`${paths.ownerRecord} is not valid JSON`);
      expect(json.problems.join("\n")).toContain(clientRecordPath(paths, 111111));
      expect(json.unowned[0]!.clients).toEqual([
        expect.objectContaining({ pid: unrelated.pid, alive: false }),
      ]);

      const table = await cli("status");
      expect(table.stdout).toContain("no (pid reused)");
      expect(table.stdout).toContain("not valid JSON");

      const gc = await cli("gc");
      expect(gc.code).toBe(0);
      expect(gc.stdout).toContain(`removed owner record ${paths.ownerRecord}`);
      // With no owner or session left, the Cache route goes too: the next owner decides afresh.
      expect(gc.stdout).toContain(`removed cache route ${paths.cacheRoute}`);
      expect(existsSync(paths.cacheRoute)).toBe(false);
      // Set aside for diagnosis under the election lock, as an election does: not lost.
      const aside = readdirSync(paths.stateDir).filter((f) => f.startsWith("owner.json.corrupt-"));
      expect(aside).toHaveLength(1);
      expect(gc.stdout).toContain(`moved it to ${path.join(paths.stateDir, aside[0]!)}`);
      expect(gc.stdout).toContain(`pid ${unrelated.pid} is now another process`);
      expect(liveness({ pid: unrelated.pid! })).toBe("alive");
      expect(readdirSync(paths.clientsDir)).toEqual([]);
    } finally {
      unrelated.kill("SIGKILL");
    }
  });

  it("gc never signals a live process an owner record names but does not prove ours", async () => {
    const paths = rootPaths(sandbox.persistRoot);
    mkdirSync(paths.stateDir, { recursive: true });
    const unrelated = spawn("sleep", ["60"], { detached: true, stdio: "ignore" });
    const alsoUnrelated = spawn("sleep", ["60"], { detached: true, stdio: "ignore" });
    try {
      for (const startTime of ["1", undefined]) {
        // A reused pid (another start time), then a record with no start time at all.
        writeFileSync(
          paths.ownerRecord,
          JSON.stringify({
            schema: 1,
            phase: "running",
            pid: unrelated.pid,
            ...(startTime ? { startTime } : {}),
            persistRoot: sandbox.persistRoot,
            registryPath: sandbox.registry,
            logFile: paths.ownerLog,
            // A workerd entry must carry a start time; without one the record names none.
            ...(startTime ? { workerd: [{ pid: alsoUnrelated.pid, startTime }] } : {}),
            startedAt: new Date(0).toISOString(),
            heartbeatAt: new Date(0).toISOString(),
            versions: {},
          }),
        );
        const gc = await cli("gc", "--json");
        expect(gc.code, gc.stderr).toBe(0);
        const report = (JSON.parse(gc.stdout) as { roots: GcJson[] }).roots[0]!;
        // The path taken: a reused pid is a dead owner (its record goes, nothing it names is
        // signalled); a record that cannot be checked is kept as alive.
        if (startTime) expect(report.removed.map((r) => r.what)).toEqual(["record of dead owner"]);
        else expect(report.kept.map((k) => k.what)).toEqual(["owner"]);
        expect(report.killed, `startTime ${startTime}`).toEqual([]);
        expect(liveness({ pid: unrelated.pid! }), `startTime ${startTime}`).toBe("alive");
        expect(liveness({ pid: alsoUnrelated.pid! }), `startTime ${startTime}`).toBe("alive");
        console.log(
          `owner record naming a live unrelated pid, startTime ${startTime}: removed ${JSON.stringify(report.removed.map((r) => r.what))}, kept ${JSON.stringify(report.kept.map((k) => `${k.what}: ${k.why}`))}`,
        );
      }
    } finally {
      unrelated.kill("SIGKILL");
      alsoUnrelated.kill("SIGKILL");
    }
  });

  it("fails clearly on a bad flag or a persist root that is a file", async () => {
    const bad = await cli("status", "--no-such-flag");
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("Unknown argument");
    const file = path.join(sandbox.dir, "a-file");
    writeFileSync(file, "");
    mkdirSync(path.join(sandbox.dir, "p"), { recursive: true });
    writeFileSync(path.join(sandbox.dir, "p", "v3"), "");
    const notDir = await sandbox.run([
      "storage-owner",
      "status",
      "--persist-to",
      path.join(sandbox.dir, "p"),
    ]);
    expect(notDir.code).toBe(1);
    expect(notDir.stderr).toContain(`${path.join(sandbox.dir, "p", "v3")} is not a directory`);
  });
});
