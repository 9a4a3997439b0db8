// Owner crash and owner stall under steady load from three sessions.
import { existsSync, readdirSync, statSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspectRoot } from "../src/owner/inspect.js";
import { ownerGone, ownerLeftovers } from "../src/owner/assessment.js";
import { liveness } from "../src/process-info.js";
import { rootPaths } from "../src/records.js";
import { ownerCandidateFile } from "../src/storage-candidate.js";
import {
  failedWindow,
  maxGap,
  sampleHolders,
  steadyLoad,
  waitForCleanTraffic,
  waitUntilAllWrite,
} from "./harness/load.js";
import {
  establishedRemotePorts,
  getJson,
  killGroup,
  parentPid,
  post,
  Sandbox,
  type Session,
  sleep,
  waitFor,
} from "./harness/sandbox.js";
import { readyStandby, succeeds, waitForOwner } from "./harness/records.js";

const WORKERS = ["api", "jobs", "admin"];

describe.each([
  ["of its process group, with a standby (default)", true, false],
  ["of its process group, with WRANGLER_X_OWNER_STANDBY=0", false, false],
  // As on macOS: start times from ps, no /proc; the owner alone, so its workerd is left to us.
  ["of the owner alone, with WRANGLER_X_PROCESS_INFO=portable", true, true],
])("owner killed with kill -9 %s", (_, standby, portable) => {
  const sandbox = new Sandbox();
  if (!standby) sandbox.env.WRANGLER_X_OWNER_STANDBY = "0";
  if (portable) sandbox.env.WRANGLER_X_PROCESS_INFO = "portable";
  let sessions: Session[];
  beforeAll(async () => {
    sessions = await Promise.all(WORKERS.map((w) => sandbox.startSession(w)));
    for (const s of sessions) expect((await post(s.url("/d1/insert?who=warmup"))).ok).toBe(true);
  });
  afterAll(() => sandbox.cleanup());

  /** Every session holds an open connection to the lifeline that owner `pid` recorded. */
  const holdLifelines = (pid: number) =>
    waitFor(
      `every session to hold owner ${pid}'s lifeline`,
      () => {
        const owner = sandbox.owner();
        const port = owner?.pid === pid ? owner.lifelinePort : undefined;
        return (
          port !== undefined && sessions.every((s) => establishedRemotePorts(s.pid).includes(port))
        );
      },
      10_000,
    );

  it("recovers well inside miniflare's 10 s window, never with two file holders, losing no write", async () => {
    const dead = sandbox.owner()!;
    const successor = standby ? (await readyStandby(sandbox, dead.pid, 20_000)).pid : undefined;
    await holdLifelines(dead.pid);
    const sampler = sampleHolders(sandbox.persistRoot, 50);
    const load = steadyLoad(sessions, "crash");
    await sleep(1000);
    if (portable) {
      // Recorded by ps's start time only (what macOS gives), and its workerd with it.
      expect(dead.startTime).toBeUndefined();
      expect(dead.started).toMatch(/^\d+$/);
      expect(dead.workerd?.length).toBeGreaterThan(0);
      for (const w of dead.workerd ?? [])
        expect(w).toEqual({ pid: w.pid, started: expect.any(String) });
    }
    const killedAt = Date.now();
    if (portable) process.kill(dead.pid, "SIGKILL");
    else killGroup(dead.pid, "SIGKILL");
    const next = await waitForOwner(
      sandbox,
      "a new owner to serve",
      succeeds(dead.pid),
      20_000,
      50,
    );
    // Then a while of clean traffic from every session.
    await waitForCleanTraffic(load, killedAt, { minMs: 3000, timeoutMs: 30_000 });
    await load.stop();
    await sampler.stop();

    const window = failedWindow(load.results, killedAt);
    console.log(
      `kill -9 of owner ${portable ? "alone, portable" : "group"} (standby ${standby ? "on" : "off"}): ${window.failures} failed / ${window.successes} ok requests after the kill; ` +
        `failed window ${window.windowMs} ms, last failure ${window.recoveredAfterMs} ms after the kill; ` +
        `new owner pid ${next.pid} (was ${dead.pid}); ${sampler.samples.length} fd samples, max gap ${maxGap(sampler.samples)} ms` +
        (window.sample ? `; e.g. ${window.sample}` : ""),
    );
    // A bound, not a speed target (the bench measures those): the standby acts in tens of ms (in
    // portable mode each look at a process is a `ps`: seen 0.36–1.6 s on a loaded machine); an
    // election starts a fresh owner, seconds on a loaded 2-core machine. All stay far below the
    // 30 s start timeout, after which sessions would give up.
    expect(window.recoveredAfterMs).toBeLessThan(standby ? (portable ? 5000 : 1500) : 15_000);
    if (successor) expect(next.pid).toBe(successor);
    else expect(inspectRoot(sandbox.persistRoot).standby).toBeUndefined();
    // The holder check is only as good as its sampling: fail the test if the sampler starved.
    expect(maxGap(sampler.samples)).toBeLessThan(1000);
    const most = Math.max(...sampler.samples.map((s) => s.holders.length));
    expect(most).toBe(1);
    const last = sampler.samples[sampler.samples.length - 1]!;
    expect(last.holders.map((pid) => parentPid(pid))).toEqual([next.pid]);
    expect(ownerLeftovers(dead)).toEqual([]);
    // Each session is woken by the new owner's death too: it holds the new owner's lifeline.
    await holdLifelines(next.pid);

    const ok = load.results.filter((r) => r.ok).length;
    const failed = load.results.length - ok;
    const { count } = await getJson<{ count: number }>(sessions[0]!.url("/d1/count?who=crash"));
    expect(count).toBeGreaterThanOrEqual(ok);
    expect(count).toBeLessThanOrEqual(ok + failed);
  });

  it("leaves nothing running once the sessions stop", async () => {
    const owner = sandbox.owner()!;
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
    // Each session's exit path (Session.dispose) removed its presence, after a failover too.
    expect(readdirSync(rootPaths(sandbox.persistRoot).clientsDir)).toEqual([]);
    await waitFor("the owner to idle out", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("owner stopped with SIGSTOP for 15 s", () => {
  const sandbox = new Sandbox();
  let sessions: Session[];
  beforeAll(async () => {
    sessions = await Promise.all(WORKERS.slice(0, 2).map((w) => sandbox.startSession(w)));
    for (const s of sessions) expect((await post(s.url("/d1/insert?who=warmup"))).ok).toBe(true);
  });
  afterAll(() => sandbox.cleanup());

  it("is never treated as dead: no second owner, no second file holder; requests resume on SIGCONT", async () => {
    const owner = sandbox.owner()!;
    const candidate = ownerCandidateFile(owner.registryPath, sandbox.persistRoot);
    const sampler = sampleHolders(sandbox.persistRoot, 100);
    killGroup(owner.pid, "SIGSTOP");
    let resumed = false;
    try {
      // Requests sent now wait for the stalled owner.
      const pending = sessions.map((s) => post(s.url("/d1/insert?who=stalled")));
      await sleep(15_000);
      expect(sandbox.owner()!.pid).toBe(owner.pid);
      expect(liveness(owner)).toBe("alive");
      // Its clients kept the root's candidate fresh (miniflare drops one untouched for 10 s).
      expect(existsSync(candidate)).toBe(true);
      expect(Date.now() - statSync(candidate).mtimeMs).toBeLessThan(5000);
      const status = JSON.parse(
        (
          await sandbox.run([
            "storage-owner",
            "status",
            "--json",
            "--persist-to",
            sandbox.persistTo,
          ])
        ).stdout,
      ) as {
        owners: { state: string; pid: number }[];
      };
      expect(status.owners).toEqual([expect.objectContaining({ pid: owner.pid, state: "stale" })]);
      killGroup(owner.pid, "SIGCONT");
      resumed = true;
      const results = await Promise.all(pending);
      console.log(`requests sent during the stall: ${results.map((r) => r.status).join(", ")}`);
      await waitUntilAllWrite(sessions, "resumed", 10_000, "requests to succeed again");
    } finally {
      if (!resumed) killGroup(owner.pid, "SIGCONT");
      await sampler.stop();
    }
    const holders = new Set(sampler.samples.flatMap((s) => s.holders));
    expect(Math.max(...sampler.samples.map((s) => s.holders.length))).toBe(1);
    expect([...holders].map((pid) => parentPid(pid))).toEqual([owner.pid]);
    expect(sandbox.owner()!.pid).toBe(owner.pid);
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
  });
});
