// Every process of the package in a mount namespace whose /proc is an empty tmpfs: no /proc and
// no working ps, the hardest case for identity (a macOS has ps). The test watches from outside,
// through the host's /proc: who holds the database files, which workerd is left.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  failedWindow,
  maxGap,
  sampleHolders,
  steadyLoad,
  waitForCleanTraffic,
  waitUntilAllWrite,
} from "./harness/load.js";
import {
  getJson,
  isDatabaseFile,
  parentPid,
  post,
  processesWithOpen,
  Sandbox,
  type Session,
  waitFor,
  withoutProc,
} from "./harness/sandbox.js";
import { readyStandby, succeeds, waitForOwner } from "./harness/records.js";
import { liveness, readStartTime } from "../src/process-info.js";

const namespace = withoutProc();
if ("skip" in namespace) console.log(`skipping the tests without /proc: ${namespace.skip}`);

/** No line of a stack trace ("    at fn (file:1:2)"). */
const STACK = /^\s+at .+:\d+:\d+\)?$/m;

describe.skipIf("skip" in namespace)(
  "every process without /proc (unshare -m, tmpfs over /proc)",
  () => {
    const via = "via" in namespace ? namespace.via : [];
    const sandbox = new Sandbox();
    let sessions: Session[];
    const cli = (...args: string[]) =>
      sandbox.run(["storage-owner", ...args, "--persist-to", sandbox.persistTo], { via });
    const newOwner = (oldPid: number) =>
      waitForOwner(sandbox, "a new owner to serve", succeeds(oldPid), 30_000, 50);

    beforeAll(async () => {
      sessions = await Promise.all(["api", "jobs"].map((w) => sandbox.startSession(w, { via })));
    });
    afterAll(() => sandbox.cleanup());

    it("two sessions share one owner that recorded no start time, only its lifeline token", async () => {
      const owner = sandbox.owner()!;
      // Proof that the processes really saw no /proc and no ps: nothing to record a start by.
      expect(owner.startTime).toBeUndefined();
      expect(owner.started).toBeUndefined();
      expect(owner.token).toMatch(/^[0-9a-f]{32}$/);
      for (const s of sessions) expect(s.output()).toContain(`served by owner pid ${owner.pid}`);
      expect((await post(sessions[0]!.url("/d1/insert?who=shared"))).ok).toBe(true);
      const { count } = await getJson<{ count: number }>(sessions[1]!.url("/d1/count?who=shared"));
      expect(count).toBe(1);
    });

    it("kill -9 of the owner alone: never two holders, and its workerd does not survive it", async () => {
      const dead = sandbox.owner()!;
      const holders = await waitFor("the owner's workerd to hold the files", () => {
        const found = processesWithOpen(isDatabaseFile(sandbox.persistRoot));
        return found.length === 1 && parentPid(found[0]!) === dead.pid ? found : undefined;
      });
      const workerd = holders.map((pid) => ({ pid, startTime: readStartTime(pid) }));
      const standby = await readyStandby(sandbox, dead.pid);
      const sampler = sampleHolders(sandbox.persistRoot, 50);
      const load = steadyLoad(sessions, "crash");
      await new Promise((resolve) => setTimeout(resolve, 500));
      const killedAt = Date.now();
      process.kill(dead.pid, "SIGKILL"); // the owner only: its workerd is left to the package
      const next = await newOwner(dead.pid);
      await waitForCleanTraffic(load, killedAt, {
        minMs: 2000,
        timeoutMs: 30_000,
      });
      await load.stop();
      await sampler.stop();
      const window = failedWindow(load.results, killedAt);
      console.log(
        `no /proc: kill -9 of owner ${dead.pid}: ${window.failures} failed / ${window.successes} ok after it, ` +
          `last failure ${window.recoveredAfterMs} ms after; new owner ${next.pid}; max fd-sample gap ${maxGap(sampler.samples)} ms`,
      );
      expect(next.pid).toBe(standby.pid);
      expect(maxGap(sampler.samples)).toBeLessThan(1000);
      expect(Math.max(...sampler.samples.map((s) => s.holders.length))).toBe(1);
      for (const w of workerd) expect(liveness(w)).not.toBe("alive");
      const last = sampler.samples[sampler.samples.length - 1]!;
      expect(last.holders.map((pid) => parentPid(pid))).toEqual([next.pid]);
    });

    it("status, stop --force and gc work, with clear lines and no stack trace", async () => {
      const owner = sandbox.owner()!;
      const status = await cli("status");
      expect(status.code).toBe(0);
      expect(status.stdout).toContain(`pid ${owner.pid} · running`);
      expect(status.stdout).toContain("2 (2 alive)");
      expect(status.stdout + status.stderr).not.toMatch(STACK);

      // No signal can be proven here: the stop request goes over the owner's lifeline.
      const stop = await cli("stop", "--force");
      expect(stop.stderr).toBe("");
      expect(stop.code).toBe(0);
      expect(stop.stdout).toContain(`Stopped storage owner pid ${owner.pid}`);
      expect(stop.stdout + stop.stderr).not.toMatch(STACK);
      await newOwner(owner.pid);
      await waitUntilAllWrite(sessions, "after-stop", 20_000);
      expect(processesWithOpen(isDatabaseFile(sandbox.persistRoot))).toHaveLength(1);

      await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
      const gc = await cli("gc");
      expect(gc.code).toBe(0);
      expect(gc.stdout).toContain(`Persist root ${sandbox.persistRoot}`);
      expect(gc.stdout).toContain("note: orphaned workerd processes were not looked for");
      expect(gc.stdout + gc.stderr).not.toMatch(STACK);
      expect(await sandbox.settledLeftovers(15_000)).toEqual([]);
    });
  },
);
