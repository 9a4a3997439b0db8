// CPU of everything a contender runs while two sessions sit idle.
import { sleep } from "../../test/harness/sandbox.js";
import { round } from "../stats.js";
import { type Bench, bootedStandby, cpuTicks, sandboxFor, startSessions } from "../context.js";

/** CPU-seconds of every process a contender started, over an idle window after start-up. */
export async function idleCost(bench: Bench, contender: "plain" | "ours") {
  const sandbox = sandboxFor(contender);
  try {
    const sessions = await startSessions(sandbox, contender, 2, true);
    if (contender === "ours") await bootedStandby(sandbox);
    await sleep(2000); // let start-up work settle
    const processes = () => sandbox.leftovers();
    const before = new Map(processes().map((pid) => [pid, cpuTicks(pid)]));
    await sleep(bench.sizes.idleSeconds * 1000);
    const pids = processes();
    const ticks = pids.reduce((sum, pid) => sum + cpuTicks(pid) - (before.get(pid) ?? 0), 0);
    const cpuSeconds = round(ticks / 100, 2); // USER_HZ is 100 on Linux
    bench.log(
      `${contender}: idle ${bench.sizes.idleSeconds} s: ${pids.length} processes, ${cpuSeconds} CPU-s`,
    );
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
    return { processes: pids.length, cpuSeconds, seconds: bench.sizes.idleSeconds };
  } finally {
    await sandbox.cleanup();
  }
}
