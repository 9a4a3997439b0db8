// What real machines do that a lab run does not: pids that now belong to someone else, an owner
// that crashes in its first second, a failover slower than miniflare's 10 s candidate expiry, a
// workerd that crashes under a live owner, and a session arriving while the owner idles out.
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { versions } from "../src/environment.js";
import { inspectRoot } from "../src/owner/inspect.js";
import { instanceDir } from "../src/owner/instance.js";
import { ownerGone } from "../src/owner/assessment.js";
import { commandLine, isAlive, liveness, readStartTime } from "../src/process-info.js";
import {
  listClients,
  type OwnerRecord,
  readOwner,
  readStandby,
  rootPaths,
  writeRecordAtomic,
} from "../src/records.js";
import { oursIsOldest, ownerCandidateFile, publish } from "../src/storage-candidate.js";
import { isCacheFile } from "./harness/cache.js";
import { readyStandby, succeeds, waitForOwner } from "./harness/records.js";
import {
  cachePutMatch,
  failedWindow,
  maxGap,
  sampleHolders,
  steadyLoad,
  waitForCleanTraffic,
  waitUntilAllWrite,
} from "./harness/load.js";
import {
  killGroup,
  post,
  processesWithOpen,
  isDatabaseFile,
  Sandbox,
  type Session,
  sleep,
  waitFor,
} from "./harness/sandbox.js";

const WORKERS = ["api", "jobs", "admin"];

function newOwner(sandbox: Sandbox, oldPid: number, timeoutMs = 30_000) {
  return waitForOwner(
    sandbox,
    "a new owner to serve",
    (owner) => succeeds(oldPid)(owner) && isAlive(owner),
    timeoutMs,
    20,
  );
}

/** Every holder ever sampled is a workerd that one of `owners` recorded; never two at once. */
function expectOnlyRecordedHolders(
  samples: { holders: number[] }[],
  owners: (OwnerRecord | undefined)[],
  { held = true } = {},
): void {
  const recorded = owners.flatMap((o) => o?.workerd ?? []).map((w) => w.pid);
  // Not vacuous: the sampler looked, and (where an owner served meanwhile) saw the files held.
  expect(samples.length).toBeGreaterThan(0);
  if (held) expect(samples.some((s) => s.holders.length > 0)).toBe(true);
  expect(Math.max(0, ...samples.map((s) => s.holders.length))).toBeLessThanOrEqual(1);
  for (const { holders } of samples) for (const pid of holders) expect(recorded).toContain(pid);
}

describe.each([
  ["", false],
  // As on macOS (ps, no /proc): also what a record from before a reboot looks like there.
  [", with WRANGLER_X_PROCESS_INFO=portable", true],
])("a pid in a stale record that now belongs to an unrelated process%s", (_, portable) => {
  const sandbox = new Sandbox();
  if (portable) sandbox.env.WRANGLER_X_PROCESS_INFO = "portable";
  // Not ours: its own process group, a command line that says "workerd".
  const decoy = spawn("sleep", ["600"], { argv0: "workerd", detached: true, stdio: "ignore" });
  const paths = rootPaths(sandbox.persistRoot);
  // Another start time, by /proc's ticks and by ps's seconds: a reused pid.
  const stale = { pid: decoy.pid!, startTime: "1", started: "1" };
  afterAll(async () => {
    decoy.kill("SIGKILL");
    await sandbox.cleanup();
  });

  function plantStaleRecords(): void {
    const now = new Date().toISOString();
    writeRecordAtomic(paths.ownerRecord, {
      schema: 1,
      phase: "running",
      ...stale,
      persistRoot: sandbox.persistRoot,
      registryPath: sandbox.registry,
      workerd: [stale],
      versions: versions(),
      startedAt: now,
      heartbeatAt: now,
      logFile: paths.ownerLog,
    });
    writeRecordAtomic(paths.standbyRecord, {
      schema: 1,
      phase: "ready",
      ...stale,
      backs: decoy.pid,
      workerd: [stale],
      since: now,
      versions: versions(),
    });
    // The dead owner's candidate, left pointing at a port nothing serves (as after a reboot).
    publish(
      sandbox.registry,
      sandbox.persistRoot,
      { debugAddress: "127.0.0.1:1", instanceId: "gone" },
      () => {},
    );
  }

  /** Adds the decoy (with its wrong start time) to a live owner's record of its workerd. */
  function plantInLiveRecord(): OwnerRecord {
    const record = readOwner(paths);
    if (!record?.ok) throw new Error("no owner record");
    const planted = { ...record.value, workerd: [...(record.value.workerd ?? []), stale] };
    writeRecordAtomic(paths.ownerRecord, planted);
    return planted;
  }

  it("survives gc, an election, a standby's promotion and stop --force", async () => {
    expect(commandLine(decoy.pid!)).toContain("workerd");
    plantStaleRecords();
    const gc = await sandbox.run(["storage-owner", "gc", "--persist-to", sandbox.persistTo]);
    expect(gc.code).toBe(0);
    expect(liveness({ pid: decoy.pid!, startTime: readStartTime(decoy.pid!) })).toBe("alive");
    expect(existsSync(paths.ownerRecord)).toBe(false);

    // An election over the same stale records.
    plantStaleRecords();
    const sessions: Session[] = [];
    sessions.push(await sandbox.startSession("api"));
    sessions.push(await sandbox.startSession("jobs"));
    expect(isAlive({ pid: decoy.pid!, startTime: readStartTime(decoy.pid!) })).toBe(true);
    const first = sandbox.owner()!;
    expect(first.pid).not.toBe(decoy.pid);
    // Not revived: the record was judged dead and a new owner took the candidate over.
    for (const s of sessions) expect((await post(s.url("/d1/insert?who=rebooted"))).ok).toBe(true);

    // A failover: the dead owner's record names the decoy; its standby reclaims that record.
    await readyStandby(sandbox, first.pid);
    plantInLiveRecord();
    killGroup(first.pid, "SIGKILL");
    const second = await newOwner(sandbox, first.pid);
    expect(decoyAlive()).toBe(true);

    // stop --force of a stopped (SIGSTOP) owner whose record names the decoy: after the timeout
    // it kills the owner and its own workerd, and nothing else.
    await readyStandby(sandbox, second.pid);
    killGroup(second.pid, "SIGSTOP");
    const planted = plantInLiveRecord();
    const stop = await sandbox.run([
      "storage-owner",
      "stop",
      "--force",
      "--timeout",
      "1",
      "--persist-to",
      sandbox.persistTo,
    ]);
    killGroup(second.pid, "SIGCONT");
    expect(stop.code).toBe(0);
    expect(stop.stdout).toContain("did not exit within 1s");
    expect(stop.stdout).not.toMatch(new RegExp(`\\b${decoy.pid}\\b`));
    await waitFor("the stopped owner to be gone", () => ownerGone(planted), 10_000);
    await newOwner(sandbox, second.pid);
    expect(decoyAlive()).toBe(true);
    for (const s of sessions) expect((await post(s.url("/d1/insert?who=decoy"))).ok).toBe(true);
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));

    // gc once more with stale records and nothing running.
    plantStaleRecords();
    const again = await sandbox.run([
      "storage-owner",
      "gc",
      "--json",
      "--persist-to",
      sandbox.persistTo,
    ]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).roots[0].killed).toEqual([]);
    expect(decoyAlive()).toBe(true);
  });

  function decoyAlive(): boolean {
    return liveness({ pid: decoy.pid!, startTime: readStartTime(decoy.pid!) }) === "alive";
  }
});

describe("an owner killed 1 s after the sessions are ready", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("fails over to the standby it started when it began to serve, without two holders", async () => {
    const sessions = await Promise.all(WORKERS.map((w) => sandbox.startSession(w)));
    const owner = sandbox.owner()!;
    // Started when the owner began to serve; ready or not, it is the one that must take over.
    const standby = inspectRoot(sandbox.persistRoot).standby;
    expect(standby?.backs).toBe(owner.pid);
    const sampler = sampleHolders(sandbox.persistRoot, 25);
    const load = steadyLoad(sessions, "early");
    await sleep(1000);
    const killedAt = Date.now();
    killGroup(owner.pid, "SIGKILL");
    const next = await newOwner(sandbox, owner.pid);
    await waitForCleanTraffic(load, killedAt, { minMs: 1500, timeoutMs: 30_000 });
    await load.stop();
    await sampler.stop();
    const window = failedWindow(load.results, killedAt);
    console.log(
      `kill -9 1 s after ready: ${window.failures} failed, last failure ${window.recoveredAfterMs} ms after the kill; ` +
        `new owner pid ${next.pid}; sampler max gap ${maxGap(sampler.samples)} ms`,
    );
    // The standby, not an election, took over (an election needs a fresh owner start, ~1-2 s).
    expect(next.pid).toBe(standby!.pid);
    expect(window.recoveredAfterMs).toBeLessThan(1500); // the goal (0.5 s) is in the bench
    expectOnlyRecordedHolders(sampler.samples, [owner, next]);
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
  });
});

describe("a failover slower than miniflare's 10 s candidate expiry", () => {
  const sandbox = new Sandbox();
  const marker = path.join(sandbox.dir, "slow-workerd");
  const wrapper = path.join(sandbox.dir, "slow-workerd.sh");
  const realWorkerd = createRequire(import.meta.url).resolve("workerd/bin/workerd");
  let sessions: Session[];
  beforeAll(async () => {
    // The owner's workerd starts 12 s late once the marker exists: new owners are slow to start.
    writeFileSync(
      wrapper,
      `#!/bin/sh\nif [ -e "${marker}" ]; then sleep 12; fi\nexec "${realWorkerd}" "$@"\n`,
    );
    chmodSync(wrapper, 0o755);
    Object.assign(sandbox.env, {
      WRANGLER_X_OWNER_WORKERD_PATH: wrapper,
      WRANGLER_X_OWNER_STANDBY: "0",
      WRANGLER_X_OWNER_START_TIMEOUT_MS: "60000",
    });
    sessions = await Promise.all(WORKERS.slice(0, 2).map((w) => sandbox.startSession(w)));
  });
  afterAll(() => sandbox.cleanup());

  it("keeps the dead owner's candidate the oldest: no session opens the files, calls fail fast, gc keeps it", async () => {
    const owner = sandbox.owner()!;
    const candidate = ownerCandidateFile(owner.registryPath, sandbox.persistRoot);
    mkdirSync(path.dirname(marker), { recursive: true });
    writeFileSync(marker, "");
    const sampler = sampleHolders(sandbox.persistRoot, 50);
    const killedAt = Date.now();
    killGroup(owner.pid, "SIGKILL");
    const calls: { at: number; ms: number; ok: boolean }[] = [];
    let running = true;
    const load = (async () => {
      while (running) {
        for (const s of sessions) {
          const started = Date.now();
          const r = await post(s.url("/d1/insert?who=slow"));
          calls.push({ at: started, ms: Date.now() - started, ok: r.ok });
        }
        await sleep(200);
      }
    })();
    try {
      await sleep(11_000);
      // Past miniflare's 10 s expiry: still there, fresh, the oldest, and no new owner yet.
      expect(existsSync(candidate)).toBe(true);
      expect(Date.now() - statSync(candidate).mtimeMs).toBeLessThan(5000);
      expect(oursIsOldest(owner.registryPath, sandbox.persistRoot)).toBe(true);
      const gc = await sandbox.run([
        "storage-owner",
        "gc",
        "--json",
        "--persist-to",
        sandbox.persistTo,
      ]);
      expect(gc.code).toBe(0);
      const removed = JSON.parse(gc.stdout).roots[0].removed as { path?: string }[];
      expect(removed.map((r) => r.path)).not.toContain(candidate);
      expect(existsSync(candidate)).toBe(true);
      const next = await newOwner(sandbox, owner.pid, 40_000);
      console.log(
        `slow failover: new owner pid ${next.pid} serving ${Date.now() - killedAt} ms after the kill`,
      );
      await waitUntilAllWrite(sessions, "after", 20_000, "storage calls to succeed again");
    } finally {
      running = false;
      await load;
      await sampler.stop();
    }
    const during = calls.filter((c) => !c.ok);
    console.log(
      `${during.length} calls failed during the failover, slowest ${Math.max(0, ...during.map((c) => c.ms))} ms; ` +
        `${sampler.samples.length} holder samples`,
    );
    expect(during.length).toBeGreaterThan(0);
    // Fail fast (a refused connection), never hang for the whole failover.
    for (const c of during) expect(c.ms).toBeLessThan(5000);
    // The sampler runs through the failover, which may outlast it: nobody holds the files then.
    expectOnlyRecordedHolders(sampler.samples, [owner, sandbox.owner()], { held: false });
  });
});

describe.each([
  ["with a ready standby, which takes over at once", true],
  ["with WRANGLER_X_OWNER_STANDBY=0, where miniflare restarts it under the same owner", false],
])("the owner's workerd killed alone, %s", (_, standby) => {
  const sandbox = new Sandbox();
  if (!standby) sandbox.env.WRANGLER_X_OWNER_STANDBY = "0";
  afterAll(() => sandbox.cleanup());

  it("serves storage and the Cache again through the same candidate, never with two holders", async () => {
    const sessions = await Promise.all(WORKERS.slice(0, 2).map((w) => sandbox.startSession(w)));
    const owner = sandbox.owner()!;
    const successor = standby ? await readyStandby(sandbox, owner.pid) : undefined;
    const [workerd] = owner.workerd!;
    // Entries cached before the kill: the files are the root's, so they outlive the workerd.
    for (let i = 0; i < 10; i++)
      expect(
        (await fetch(sessions[0]!.url(`/cache/before-${i}`), { method: "PUT", body: `b${i}` })).ok,
      ).toBe(true);
    const sampler = sampleHolders(sandbox.persistRoot, 25);
    const cacheSampler = sampleHolders(sandbox.persistRoot, 50, isCacheFile(sandbox.persistRoot));
    const load = steadyLoad(sessions, "workerd");
    const cacheLoad = steadyLoad(sessions, "workerd", 1, 5, cachePutMatch);
    await sleep(500);
    const killedAt = Date.now();
    process.kill(workerd!.pid, "SIGKILL");
    const next = await waitForOwner(
      sandbox,
      "the owner record to name a new workerd",
      (current) =>
        current.phase === "running" &&
        isAlive(current) &&
        current.workerd?.[0]?.pid !== workerd!.pid,
      20_000,
      20,
    );
    await waitForCleanTraffic(load, killedAt, { minMs: 1500, timeoutMs: 30_000 });
    await waitForCleanTraffic(cacheLoad, killedAt, { minMs: 1500, minRequests: 10 });
    await Promise.all([load.stop(), cacheLoad.stop(), sampler.stop(), cacheSampler.stop()]);
    const window = failedWindow(load.results, killedAt);
    const cacheWindow = failedWindow(cacheLoad.results, killedAt);
    console.log(
      `owner's workerd killed (standby ${standby ? "ready" : "off"}): ${window.failures} failed, last failure ${window.recoveredAfterMs} ms after the kill; ` +
        `cache put+match ${cacheWindow.failures} failed / ${cacheWindow.successes} ok, last failure ${cacheWindow.recoveredAfterMs} ms after the kill; ` +
        `owner pid ${next.pid} (was ${owner.pid}); ${cacheSampler.samples.length} cache holder samples` +
        (cacheWindow.sample ? `; e.g. ${cacheWindow.sample}` : ""),
    );
    if (successor) {
      expect(next.pid).toBe(successor.pid);
      expect(liveness(owner)).not.toBe("alive");
    } else {
      expect(next.pid).toBe(owner.pid);
      expect(next.debugAddress).not.toBe(owner.debugAddress);
    }
    // Bounds, not the goal (<= 1 s, in the bench): a handover is tens of ms, a restart ~1 s.
    expect(window.recoveredAfterMs).toBeLessThan(standby ? 1500 : 5000);
    expect(cacheWindow.recoveredAfterMs).toBeLessThan(standby ? 1500 : 5000);
    expect(cacheWindow.successes).toBeGreaterThan(0);
    expectOnlyRecordedHolders(sampler.samples, [owner, next]);
    expectOnlyRecordedHolders(cacheSampler.samples, [owner, next]);
    for (let i = 0; i < 10; i++)
      expect(await (await fetch(sessions[1]!.url(`/cache/before-${i}`))).text()).toBe(`b${i}`);
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
  });
});

describe("an owner idling out", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("keeps its record until its workerd has let go of the files, and a late session waits for it", async () => {
    const session = await sandbox.startSession("api");
    expect((await post(session.url("/d1/insert?who=idle"))).ok).toBe(true);
    const owner = sandbox.owner()!;
    const paths = rootPaths(sandbox.persistRoot);
    const samples: { record: boolean; holders: number }[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        samples.push({
          record: readOwner(paths)?.ok === true,
          holders: processesWithOpen(isDatabaseFile(sandbox.persistRoot)).length,
        });
        await sleep(5);
      }
    })();
    await sandbox.stopSession(session);
    // Arrive as it stops: as soon as its record says "stopping" (or is gone, on a busy machine).
    await waitFor(
      "the owner to start stopping",
      () => sandbox.owner()?.phase !== "running",
      20_000,
      2,
    );
    const late = await sandbox.startSession("jobs");
    sampling = false;
    await sampler;
    // No moment without a record while the old workerd still held a database file (and the
    // sampler did see the old owner's record with its workerd holding the files).
    expect(samples.some((s) => s.record && s.holders > 0)).toBe(true);
    expect(samples.filter((s) => !s.record && s.holders > 0)).toEqual([]);
    const next = sandbox.owner()!;
    expect(next.pid).not.toBe(owner.pid);
    expect(ownerGone(owner)).toBe(true);
    expect((await post(late.url("/d1/insert?who=late"))).ok).toBe(true);
    await sandbox.stopSession(late);
  });
});

describe("a stopped owner whose candidate went unrefreshed for over 10 s", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("is not joined while its candidate is gone; the new session waits, then joins it: never a second holder", async () => {
    const first = await sandbox.startSession("api");
    expect((await post(first.url("/d1/insert?who=stale"))).ok).toBe(true);
    const owner = sandbox.owner()!;
    await readyStandby(sandbox, owner.pid);
    // Stop only the owner's node process: its workerd keeps serving, nobody touches the candidate,
    // and the next session's wrangler (its first Miniflare) drops it as older than 10 s.
    process.kill(owner.pid, "SIGSTOP");
    let resumed = false;
    try {
      await sandbox.stopSession(first);
      await sleep(11_000);
      const sampler = sampleHolders(sandbox.persistRoot, 25);
      const late = await sandbox.startSession("jobs", { wait: false });
      // Until its presence is written the stopped owner has no client, and would rightly idle
      // out the moment it resumes: wait for the new session to be waiting on it.
      await waitFor(
        "the new session's presence",
        () =>
          listClients(rootPaths(sandbox.persistRoot)).some(
            (c) => c.record.ok && c.record.value.worker === "jobs" && isAlive(c.record.value),
          ),
        60_000,
      );
      await sleep(2000);
      // wrangler may already listen and hold the request until its worker is ready: bound it.
      const waiting = await fetch(late.url("/whoami"), { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.ok,
        () => false,
      );
      process.kill(owner.pid, "SIGCONT");
      resumed = true;
      await sandbox.waitReady(late);
      const results = await Promise.all(
        Array.from({ length: 10 }, () => post(late.url("/d1/insert?who=late"))),
      );
      await sampler.stop();
      console.log(`stale owner: the new session answered while the owner was stopped: ${waiting}`);
      expect(waiting).toBe(false);
      expect(results.every((r) => r.ok)).toBe(true);
      expect(oursIsOldest(owner.registryPath, sandbox.persistRoot)).toBe(true);
      // The owner's workerd as recorded before and after (a workerd restart is recorded too).
      expectOnlyRecordedHolders(sampler.samples, [owner, sandbox.owner()]);
      expect(late.output()).toContain(`served by owner pid ${owner.pid}`);
      await sandbox.stopSession(late);
    } finally {
      if (!resumed) process.kill(owner.pid, "SIGCONT");
    }
  });
});

describe("an owner killed while it starts", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("does not leave miniflare's startup lock to stall the next owner", async () => {
    const session = await sandbox.startSession("api", { wait: false });
    const lock = path.join(sandbox.persistRoot, ".miniflare-startup.lock");
    // The moment the starting owner holds miniflare's startup lock (its workerd is starting).
    const owner = await waitForOwner(
      sandbox,
      "the starting owner to take miniflare's startup lock",
      (record) => record.phase === "starting" && existsSync(lock),
      60_000,
      5,
    );
    const killedAt = Date.now();
    killGroup(owner.pid, "SIGKILL");
    await sandbox.waitReady(session, 60_000);
    const readyAfterMs = Date.now() - killedAt;
    expect((await post(session.url("/d1/insert?who=after"))).ok).toBe(true);
    const next = sandbox.owner()!;
    console.log(
      `owner killed while starting: session ready ${readyAfterMs} ms later, owner pid ${next.pid}`,
    );
    expect(next.pid).not.toBe(owner.pid);
    // miniflare would wait out its 30 s staleness; the reclaim released it.
    expect(readyAfterMs).toBeLessThan(20_000);
    expect(session.output()).not.toContain("✘");
    await sandbox.stopSession(session);
  });
});

describe("a standby stopped while it boots", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("takes miniflare's startup lock with it, so that the next owner does not wait 30 s", async () => {
    const session = await sandbox.startSession("api");
    const lock = path.join(sandbox.persistRoot, ".miniflare-startup.lock");
    const paths = rootPaths(sandbox.persistRoot);
    // The moment the booting standby holds the lock: its own noted token is in the lock file.
    const standby = await waitFor(
      "the booting standby to hold miniflare's startup lock",
      () => {
        const record = readStandby(paths);
        if (!record?.ok || record.value.phase !== "starting") return undefined;
        const token = path.join(instanceDir(paths, record.value), "startup-lock-token");
        try {
          const held = readFileSync(lock, "utf8");
          return held !== "" && held === readFileSync(token, "utf8") ? record.value : undefined;
        } catch {
          return undefined;
        }
      },
      60_000,
      2,
    );
    const token = readFileSync(lock, "utf8");
    // What its owner does when it idles out: SIGTERM (the standby is ours: the sandbox started it).
    process.kill(standby.pid, "SIGTERM");
    await waitFor("the standby to exit", () => liveness(standby) !== "alive", 10_000, 10);
    const left = existsSync(lock) ? readFileSync(lock, "utf8") : undefined;
    expect(
      left,
      `the stopped standby's token is still in the startup lock; owner log:\n${readFileSync(paths.ownerLog, "utf8")}`,
    ).not.toBe(token);
    expect((await post(session.url("/d1/insert?who=after"))).ok).toBe(true);
    await sandbox.stopSession(session);
  });
});

describe("a second owner crash soon after the first", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("finds the promoted standby's own standby already booting", async () => {
    const sessions = await Promise.all(WORKERS.slice(0, 2).map((w) => sandbox.startSession(w)));
    const first = sandbox.owner()!;
    await readyStandby(sandbox, first.pid);
    const load = steadyLoad(sessions, "twice");
    await sleep(500);
    killGroup(first.pid, "SIGKILL");
    const second = await newOwner(sandbox, first.pid);
    // Its successor is started as it takes over, not a heartbeat later.
    const successor = await waitFor(
      "the promoted owner's standby",
      () => {
        const standby = inspectRoot(sandbox.persistRoot).standby;
        return standby?.alive && standby.backs === second.pid ? standby : undefined;
      },
      5000,
      10,
    );
    await sleep(400);
    const killedAt = Date.now();
    killGroup(second.pid, "SIGKILL");
    const third = await newOwner(sandbox, second.pid);
    await waitForCleanTraffic(load, killedAt, { minMs: 1500, timeoutMs: 30_000 });
    await load.stop();
    const window = failedWindow(load.results, killedAt);
    console.log(
      `second kill 400 ms after the first failover: last failure ${window.recoveredAfterMs} ms after it (${window.failures} failed)`,
    );
    expect(third.pid).toBe(successor.pid);
    expect(window.recoveredAfterMs).toBeLessThan(5000); // its standby was still booting
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
  });
});
