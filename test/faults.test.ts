// The faults a dev machine really sees: simultaneous starts, owners that cannot start, stale
// and corrupt records, an owner of another version, a persist directory that cannot be written.
import { spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { versions } from "../src/environment.js";
import { liveness, readStartTime } from "../src/process-info.js";
import { clientRecordPath, rootPaths, type Versions } from "../src/records.js";
import { post, Sandbox, type Session, waitFor } from "./harness/sandbox.js";

/** A live process that is not ours (`sleep`), recorded as a session of other versions. */
function fakeClient(sandbox: Sandbox, otherVersions: Partial<Versions>) {
  const paths = rootPaths(sandbox.persistRoot);
  const client = spawn("sleep", ["120"], { detached: true, stdio: "ignore" });
  mkdirSync(paths.clientsDir, { recursive: true });
  writeFileSync(
    clientRecordPath(paths, client.pid!),
    JSON.stringify({
      schema: 1,
      pid: client.pid,
      startTime: readStartTime(client.pid!),
      worker: "legacy",
      command: "dev",
      since: new Date().toISOString(),
      cwd: "/",
      versions: { ...versions(), ...otherVersions },
    }),
  );
  return client;
}

describe("five sessions started in the same second", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("elect exactly one owner and all route to it", async () => {
    const workers = ["api", "jobs", "admin", "api", "jobs"];
    const sessions: Session[] = await Promise.all(workers.map((w) => sandbox.startSession(w)));
    const owner = sandbox.owner()!;
    const log = readFileSync(owner.logFile, "utf8");
    expect(log.match(/: starting for /g)).toHaveLength(1);
    for (const s of sessions) expect(s.output()).toContain(`served by owner pid ${owner.pid}`);
    const results = await Promise.all(sessions.map((s) => post(s.url("/d1/insert?who=five"))));
    expect(results.every((r) => r.ok)).toBe(true);
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
  });
});

describe("an owner that cannot start", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("gives every waiting session a clear error naming the owner log, within a bounded wait", async () => {
    const env = {
      WRANGLER_X_OWNER_WORKERD_PATH: "/bin/false",
      WRANGLER_X_OWNER_START_TIMEOUT_MS: "20000",
    };
    const sessions = await Promise.all(
      ["api", "jobs"].map((w) => sandbox.startSession(w, { env, wait: false })),
    );
    const codes = await Promise.all(sessions.map((s) => s.exited));
    const log = rootPaths(sandbox.persistRoot).ownerLog;
    for (const [i, s] of sessions.entries()) {
      expect(codes[i]).not.toBe(0);
      expect(s.output()).toContain(`Owner log ${log}`);
    }
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe.each([
  ["", false],
  [", with WRANGLER_X_PROCESS_INFO=portable", true],
])("an owner that crashes during start-up%s", (_, portable) => {
  const sandbox = new Sandbox();
  if (portable) sandbox.env.WRANGLER_X_PROCESS_INFO = "portable";
  afterAll(() => sandbox.cleanup());

  it("is seen dead while a zombie of the waiting session: it gives up after three tries, not at the timeout", async () => {
    // Its "workerd" kills the owner: a crash that leaves the record saying "starting", and a
    // zombie, since the session that spawned it waits synchronously and cannot reap it.
    const crash = path.join(sandbox.dir, "crash-owner.sh");
    writeFileSync(crash, "#!/bin/sh\nkill -9 $PPID\n", { mode: 0o755 });
    const env = {
      WRANGLER_X_OWNER_WORKERD_PATH: crash,
      WRANGLER_X_OWNER_START_TIMEOUT_MS: "25000",
    };
    const session = await sandbox.startSession("api", { env, wait: false });
    expect(await session.exited).not.toBe(0);
    expect(session.output()).toContain("the storage owner exited during startup 3 times");
    expect(session.output()).not.toContain("within 25000 ms");
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("an owner log that cannot be opened", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("is reported by path", async () => {
    const paths = rootPaths(sandbox.persistRoot);
    mkdirSync(paths.ownerLog, { recursive: true }); // a directory where the log file goes
    const session = await sandbox.startSession("api", { wait: false });
    expect(await session.exited).not.toBe(0);
    expect(session.output()).toContain(
      `cannot open the storage owner's log ${paths.ownerLog} (EISDIR)`,
    );
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("stale and corrupt records", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("reclaims a spawn lock left by a dead process instead of waiting on it", async () => {
    const paths = rootPaths(sandbox.persistRoot);
    const gone = spawn("true");
    await new Promise((resolve) => gone.on("exit", resolve));
    mkdirSync(paths.spawnLock, { recursive: true });
    writeFileSync(
      paths.spawnLockHolder,
      JSON.stringify({ schema: 1, pid: gone.pid, acquiredAt: new Date().toISOString() }),
    );
    const session = await sandbox.startSession("api");
    expect(session.output()).toContain(
      `reclaimed spawn lock ${paths.spawnLock} held by dead pid ${gone.pid}`,
    );
    await sandbox.stopSession(session);
  });

  it("sets a garbage owner record aside (nothing deleted) and starts an owner", async () => {
    const paths = rootPaths(sandbox.persistRoot);
    await waitFor("the previous owner to leave", () => sandbox.owner() === undefined, 15_000);
    writeFileSync(paths.ownerRecord, '{"schema":1,"pid":');
    const session = await sandbox.startSession("jobs");
    expect(session.output()).toContain(
      `${paths.ownerRecord} is not valid JSON (truncated or corrupt); moved it to`,
    );
    const aside = readdirSync(paths.stateDir).filter((n) => n.startsWith("owner.json.corrupt-"));
    expect(aside).toHaveLength(1);
    expect(readFileSync(path.join(paths.stateDir, aside[0]!), "utf8")).toBe('{"schema":1,"pid":');
    expect((await post(session.url("/d1/insert?who=after-garbage"))).ok).toBe(true);
    await sandbox.stopSession(session);
  });

  it("fails cleanly, naming the path, when the persist directory cannot be created", async () => {
    const blocker = path.join(sandbox.dir, "not-a-dir");
    writeFileSync(blocker, "");
    const session = await sandbox.startSession("api", {
      wait: false,
      persistTo: path.join(blocker, "state"),
    });
    expect(await session.exited).not.toBe(0);
    expect(session.output()).toContain(path.join(blocker, "state"));
    expect(session.output()).toMatch(/ENOTDIR|EEXIST/);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("an owner of another version", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  function fakeOwner(version: string) {
    const paths = rootPaths(sandbox.persistRoot);
    const process = spawn("sleep", ["120"], { detached: true, stdio: "ignore" });
    mkdirSync(paths.stateDir, { recursive: true });
    const now = new Date().toISOString();
    writeFileSync(
      paths.ownerRecord,
      JSON.stringify({
        schema: 1,
        phase: "running",
        pid: process.pid,
        startTime: readStartTime(process.pid!),
        persistRoot: sandbox.persistRoot,
        registryPath: sandbox.registry,
        debugAddress: "127.0.0.1:9",
        versions: { ...versions(), package: version },
        startedAt: now,
        heartbeatAt: now,
        logFile: paths.ownerLog,
      }),
    );
    return process;
  }

  it("is refused while a session of its version uses it", async () => {
    const owner = fakeOwner("0.0.1-old");
    const client = fakeClient(sandbox, { package: "0.0.1-old" });
    try {
      const session = await sandbox.startSession("api", { wait: false });
      expect(await session.exited).not.toBe(0);
      expect(session.output()).toContain(`(pid ${owner.pid}) runs package 0.0.1-old`);
      expect(session.output()).toContain(`legacy pid ${client.pid}`);
      expect(owner.exitCode).toBeNull(); // left alone
    } finally {
      owner.kill("SIGKILL");
      client.kill("SIGKILL");
    }
  });

  it("is stopped once no session of its version remains, and a current owner takes over", async () => {
    const paths = rootPaths(sandbox.persistRoot);
    for (const name of readdirSync(paths.clientsDir))
      writeFileSync(path.join(paths.clientsDir, name), "");
    const owner = fakeOwner("0.0.1-old");
    const exited = new Promise((resolve) => owner.on("exit", (_code, signal) => resolve(signal)));
    const session = await sandbox.startSession("api");
    expect(await exited).toBe("SIGTERM");
    expect(session.output()).toContain("no session of its version remains, so it is being stopped");
    expect(sandbox.owner()!.versions.package).toBe(versions().package);
    expect((await post(session.url("/d1/insert?who=current"))).ok).toBe(true);
    await sandbox.stopSession(session);
  });
});

describe("an owner and sessions of another version", () => {
  const sandbox = new Sandbox({ graceMs: 1500, idleMs: 500 });
  afterAll(() => sandbox.cleanup());

  it("do not keep each other alive: an owner counts only sessions of its own version", async () => {
    const other = fakeClient(sandbox, { package: "0.0.0-other" });
    try {
      // A session of our version starts the owner, then leaves; the other version's stays.
      const session = await sandbox.startSession("api");
      const owner = sandbox.owner()!;
      await sandbox.stopSession(session);
      await waitFor(
        "the owner to idle out despite the other version's session",
        () => liveness(owner) !== "alive",
        15_000,
      );
      expect(readFileSync(owner.logFile, "utf8")).toContain(
        `owner ${owner.pid}: stopping: no client for 500 ms`,
      );
      expect(await sandbox.settledLeftovers()).toEqual([]);
    } finally {
      other.kill("SIGKILL");
    }
  });
});
