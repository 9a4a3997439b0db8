// N sessions × M concurrent D1 inserts plus a KV/R2 mix; reloads of one session under load; a
// kill -9 of the owner under load. For every contender.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { failedWindow, steadyLoad, waitForCleanTraffic } from "../../test/harness/load.js";
import { killGroup, sleep, waitFor } from "../../test/harness/sandbox.js";
import {
  type Bench,
  type Contender,
  countOf,
  fetchOk,
  sandboxFor,
  startSessions,
  whoami,
} from "../context.js";

/** N sessions x M concurrent D1 inserts plus a KV/R2 mix; then reloads; then a kill -9 of the owner. */
export async function correctness(bench: Bench, contender: Contender) {
  const sandbox = sandboxFor(contender);
  try {
    // Sequential starts so that, for miniflare's own mode, the first session owns storage.
    const sessions = await startSessions(sandbox, contender, bench.sizes.sessions, true);
    const tag = "burst";
    const mix = Math.ceil(bench.sizes.inserts / 4);
    const [inserts, others] = await Promise.all([
      Promise.all(
        sessions.flatMap((s) =>
          Array.from({ length: bench.sizes.inserts }, () =>
            fetchOk(s.url(`/d1/insert?who=${tag}`), "POST"),
          ),
        ),
      ),
      Promise.all(
        sessions.flatMap((s, i) => [
          ...Array.from({ length: mix }, (_, j) => fetchOk(s.url(`/kv/k${i}-${j}`), "PUT", "v")),
          ...Array.from({ length: mix }, (_, j) => fetchOk(s.url(`/r2/o${i}-${j}`), "PUT", "v")),
        ]),
      ),
    ]);
    const outcomes = [...inserts, ...others];
    const failed = outcomes.filter((ok) => !ok).length;
    const okInserts = inserts.filter(Boolean).length;
    const count = await countOf(sessions[0]!, tag);
    const burst = {
      sessionsStarted: sessions.length,
      requests: outcomes.length,
      failed,
      d1SuccessfulInserts: okInserts,
      d1FinalCount: count,
      exact: count === okInserts,
    };
    bench.log(
      `${contender}: burst ${failed}/${outcomes.length} failed, D1 count ${count} vs ${okInserts} acknowledged`,
    );

    // Reloads of the first (for miniflare's own mode: the owning) session under steady load.
    let reload:
      | { reloads: number; requests: number; failed: number; sampleFailure?: string }
      | undefined;
    if (sessions.length >= 2) {
      const edited = sessions[0]!;
      // Sessions of the edited worker reload too (same source); load only the others.
      const others = sessions.filter((s) => s.worker !== edited.worker);
      const source = path.join(sandbox.workerDir(edited.worker), "src", "index.js");
      const original = readFileSync(source, "utf8");
      const load = steadyLoad(others, "reload");
      for (let i = 1; i <= bench.sizes.reloads; i++) {
        writeFileSync(
          source,
          original.replace(
            `createHandler("${edited.worker}")`,
            `createHandler("${edited.worker}-v${i}")`,
          ),
        );
        await waitFor(
          `reload ${i}`,
          async () => (await whoami(edited)) === `${edited.worker}-v${i}`,
          60_000,
          100,
        );
        await sleep(500);
      }
      await load.stop();
      const failures = load.results.filter((r) => !r.ok);
      reload = {
        reloads: bench.sizes.reloads,
        requests: load.results.length,
        failed: failures.length,
        sampleFailure: failures[0]?.body,
      };
      bench.log(
        `${contender}: ${reload.failed}/${reload.requests} failed during ${bench.sizes.reloads} reloads`,
      );
    }

    // kill -9 of the owner's process group under steady load (not for plain: no owner).
    let kill: Record<string, number> | undefined;
    if (contender !== "plain" && sessions.length >= 2) {
      const victim = contender === "ours" ? sandbox.owner()!.pid : sessions[0]!.pid;
      const survivors = contender === "ours" ? sessions : sessions.slice(1);
      const load = steadyLoad(survivors, "kill");
      await sleep(1000);
      const killedAt = Date.now();
      killGroup(victim, "SIGKILL");
      await waitForCleanTraffic(load, killedAt);
      await load.stop();
      const window = failedWindow(load.results, killedAt);
      kill = {
        failed: window.failures,
        succeeded: window.successes,
        windowMs: window.windowMs,
        recoveredAfterMs: window.recoveredAfterMs,
      };
      bench.log(
        `${contender}: kill -9 of the owner: failed window ${window.windowMs} ms (${window.failures} failed)`,
      );
    }
    return { burst, reload, kill };
  } finally {
    await sandbox.cleanup();
  }
}
