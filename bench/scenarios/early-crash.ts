// kill -9 of our owner 1 s after the sessions are ready, then of its successor's workerd alone.
import { readFileSync } from "node:fs";
import { inspectRoot } from "../../src/owner/inspect.js";
import { failedWindow, steadyLoad, waitForCleanTraffic } from "../../test/harness/load.js";
import { killGroup, type Session, sleep, waitFor } from "../../test/harness/sandbox.js";
import { type Bench, sandboxFor, startSessions } from "../context.js";

/**
 * Milliseconds from `since` until the first session prints that it follows a new owner (or
 * elects one): output is polled every 2 ms, so this includes the pipe, not only the detection.
 */
async function firstSessionNotice(sessions: Session[], since: number): Promise<number | undefined> {
  const marks = sessions.map((s) => s.output().length);
  const notice = /storage owner is now pid|is gone; this session takes over/;
  while (Date.now() - since < 30_000) {
    if (sessions.some((s, i) => notice.test(s.output().slice(marks[i])))) return Date.now() - since;
    await sleep(2);
  }
  return undefined;
}

/**
 * kill -9 of our owner 1 s after the sessions are ready (its standby was started beside it, not
 * later), and how long until the first process of ours noticed (the standby's log line).
 */
export async function earlyCrash(bench: Bench) {
  const sandbox = sandboxFor("ours");
  try {
    const sessions = await startSessions(sandbox, "ours", bench.sizes.sessions);
    const owner = sandbox.owner()!;
    const load = steadyLoad(sessions, "early");
    await sleep(1000);
    const killedAt = Date.now();
    const sessionNotice = firstSessionNotice(sessions, killedAt);
    killGroup(owner.pid, "SIGKILL");
    await waitForCleanTraffic(load, killedAt);
    await load.stop();
    const window = failedWindow(load.results, killedAt);
    const noticed = readFileSync(owner.logFile, "utf8").match(
      new RegExp(`\\[([^\\]]+)\\] \\w+ \\d+: owner pid ${owner.pid} is gone`),
    )?.[1];
    const detectionMs = noticed ? Date.parse(noticed) - killedAt : undefined;
    const sessionNoticeMs = await sessionNotice;
    bench.log(
      `ours: kill -9 1 s after ready: last failure ${window.recoveredAfterMs} ms after the kill, noticed after ${detectionMs} ms (standby), ${sessionNoticeMs} ms (first session names the new owner)`,
    );

    // Then the new owner's workerd alone (its own standby booted): storage back within 1 s?
    const next = await waitFor(
      "the new owner and its booted standby",
      () => {
        const record = sandbox.owner();
        const standby = inspectRoot(sandbox.persistRoot).owner?.standby;
        return record && record.pid !== owner.pid && standby?.phase === "ready"
          ? record
          : undefined;
      },
      30_000,
    );
    const workerdLoad = steadyLoad(sessions, "workerd");
    await sleep(1000);
    const workerdKilledAt = Date.now();
    process.kill(next.workerd![0]!.pid, "SIGKILL");
    await waitForCleanTraffic(workerdLoad, workerdKilledAt);
    await workerdLoad.stop();
    const workerdWindow = failedWindow(workerdLoad.results, workerdKilledAt);
    bench.log(
      `ours: owner's workerd killed: last failure ${workerdWindow.recoveredAfterMs} ms after`,
    );
    return {
      failed: window.failures,
      windowMs: window.windowMs,
      recoveredAfterMs: window.recoveredAfterMs,
      detectionMs,
      sessionNoticeMs,
      workerdKilled: {
        failed: workerdWindow.failures,
        recoveredAfterMs: workerdWindow.recoveredAfterMs,
      },
    };
  } finally {
    await sandbox.cleanup();
  }
}
