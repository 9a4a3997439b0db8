// CPU of everything a contender runs while two sessions sit idle, from the moment both answer.
import { inspectRoot } from "../../src/owner/inspect.js";
import { processGroupMembers, processName } from "../../src/process-info.js";
import { sleep } from "../../test/harness/sandbox.js";
import { round } from "../stats.js";
import { type Bench, cpuTicks, sandboxFor, startSessions } from "../context.js";

/** The window: 30 s that include the start-up GCs (smoke: the mode's tiny window). */
const IDLE_WINDOW_S = 30;

const comm = (pid: number) => processName(pid) ?? "?";

/**
 * CPU-seconds of every process a contender started, over a window that opens as soon as both
 * sessions answer (so their start-up GCs, and our standby's boot, fall inside it), split by role
 * (`sessions node`, `owner workerd`, `standby node`, ...): what the remaining cost is made of.
 * A process born inside the window counts from its start.
 */
export async function idleCost(bench: Bench, contender: "plain" | "ours") {
  const sandbox = sandboxFor(contender);
  const seconds = bench.mode === "smoke" ? bench.sizes.idleSeconds : IDLE_WINDOW_S;
  try {
    const sessions = await startSessions(sandbox, contender, 2, true);
    const processes = () => sandbox.leftovers();
    const before = new Map(processes().map((pid) => [pid, cpuTicks(pid)]));
    await sleep(seconds * 1000);
    const role = new Map<number, string>();
    const groups: [string, number | undefined][] = [
      ...sessions.map((s) => ["sessions", s.pid] as [string, number]),
      ["owner", sandbox.owner()?.pid],
      ["standby", inspectRoot(sandbox.persistRoot).owner?.standby?.pid],
    ];
    for (const [name, pgid] of groups)
      if (pgid !== undefined)
        for (const pid of processGroupMembers(pgid)) role.set(pid, `${name} ${comm(pid)}`);
    const pids = processes();
    const byRole: Record<string, number> = {};
    let ticks = 0;
    for (const pid of pids) {
      const spent = cpuTicks(pid) - (before.get(pid) ?? 0);
      ticks += spent;
      const label = role.get(pid) ?? `other ${comm(pid)}`;
      byRole[label] = round((byRole[label] ?? 0) + spent / 100, 2);
    }
    const cpuSeconds = round(ticks / 100, 2); // USER_HZ is 100 on Linux
    bench.log(
      `${contender}: idle ${seconds} s from ready: ${pids.length} processes, ${cpuSeconds} CPU-s ${JSON.stringify(byRole)}`,
    );
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
    return { processes: pids.length, cpuSeconds, seconds, byRole };
  } finally {
    await sandbox.cleanup();
  }
}
