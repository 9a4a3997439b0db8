// D1 inserts/s: one session of plain and ours interleaved, then 2, 4, 8 sessions of each.
import { steadyLoad } from "../../test/harness/load.js";
import { sleep } from "../../test/harness/sandbox.js";
import { round } from "../stats.js";
import { cpuDuring, processesOf } from "../cpu.js";
import { type Bench, bootedStandby, sandboxFor, startSessions } from "../context.js";

/** Total D1 inserts/s with 2, 4, 8 sessions writing at once (1 session: `singleSessionThroughput`). */
export async function scaling(
  bench: Bench,
  contender: "plain" | "ours",
  single: Awaited<ReturnType<typeof singleSessionThroughput>>,
) {
  const rows: { sessions: number; insertsPerSecond: number; failed: number; started: number }[] =
    [];
  for (const count of bench.sizes.scaling) {
    if (count === 1) {
      rows.push(single[contender]);
      continue;
    }
    const sandbox = sandboxFor(contender);
    try {
      const sessions = await startSessions(sandbox, contender, count);
      const load = steadyLoad(sessions, "scale", 4, 0);
      await sleep(bench.sizes.scalingSeconds * 1000);
      await load.stop();
      const ok = load.results.filter((r) => r.ok).length;
      rows.push({
        sessions: count,
        started: sessions.length,
        insertsPerSecond: round(ok / bench.sizes.scalingSeconds),
        failed: load.results.length - ok,
      });
      bench.log(
        `${contender}: ${count} sessions -> ${rows.at(-1)!.insertsPerSecond} inserts/s, ${rows.at(-1)!.failed} failed`,
      );
    } finally {
      await sandbox.cleanup();
    }
  }
  return rows;
}

/**
 * One session's D1 inserts/s, plain against ours: both run at once and take turns in 1 s windows
 * (the order alternating), so both see the same machine; the scaling rows above 1 session are
 * measured one contender after the other.
 */
export async function singleSessionThroughput(bench: Bench) {
  const sandboxes = { plain: sandboxFor("plain"), ours: sandboxFor("ours") };
  try {
    const session = {
      plain: (await startSessions(sandboxes.plain, "plain", 1))[0]!,
      ours: (await startSessions(sandboxes.ours, "ours", 1))[0]!,
    };
    await bootedStandby(sandboxes.ours);
    await sleep(2000);
    // CPU of every process of a contender while its windows ran (ours: session and owner).
    const roles = {
      plain: processesOf({ session: session.plain.pid }),
      ours: processesOf({ session: session.ours.pid, owner: sandboxes.ours.owner()?.pid }),
    };
    const cpuMs = { plain: {} as Record<string, number>, ours: {} as Record<string, number> };
    const ok = { plain: 0, ours: 0 };
    const failed = { plain: 0, ours: 0 };
    // Full: 10 windows each (10 s of load per contender); quick: 6; smoke: 1.
    const windows = bench.mode === "smoke" ? 1 : bench.sizes.scalingSeconds * 2;
    for (let w = 0; w < windows; w++) {
      for (const contender of w % 2 ? (["ours", "plain"] as const) : (["plain", "ours"] as const)) {
        let load!: ReturnType<typeof steadyLoad>;
        const spent = await cpuDuring(roles[contender], async () => {
          load = steadyLoad([session[contender]], "scale", 4, 0);
          await sleep(1000);
          await load.stop();
        });
        for (const [label, ms] of Object.entries(spent))
          cpuMs[contender][label] = (cpuMs[contender][label] ?? 0) + ms;
        ok[contender] += load.results.filter((r) => r.ok).length;
        failed[contender] += load.results.filter((r) => !r.ok).length;
      }
    }
    const rows = (["plain", "ours"] as const).map((contender) => ({
      contender,
      sessions: 1,
      started: 1,
      insertsPerSecond: round(ok[contender] / windows),
      failed: failed[contender],
      windows,
      // CPU-ms per successful insert, by process: where a missed goal's cost is.
      cpuPerInsertMs: Object.fromEntries(
        Object.entries(cpuMs[contender]).map(([label, ms]) => [
          label,
          round(ms / Math.max(1, ok[contender]), 3),
        ]),
      ),
    }));
    bench.log(`1 session, interleaved 1 s windows: ${JSON.stringify(rows)}`);
    return { plain: rows[0]!, ours: rows[1]! };
  } finally {
    for (const sandbox of Object.values(sandboxes)) await sandbox.cleanup();
  }
}
