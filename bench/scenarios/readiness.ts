// Time to the first answer of `wrangler dev`, cold and warm, and the owner's exit after the last session.
import { ownerGone } from "../../src/owner/assessment.js";
import { type Sandbox, waitFor } from "../../test/harness/sandbox.js";
import { median, round } from "../stats.js";
import { type Bench, type Contender, flagFor, sandboxFor } from "../context.js";

/** Time to first answer of `wrangler dev`: plain, ours with the owner spawned (cold), ours with it running (warm). */
export async function readiness(bench: Bench) {
  const timed = async (sandbox: Sandbox, contender: Contender, worker: string) => {
    const started = performance.now();
    const session = await sandbox.startSession(worker, { flag: flagFor(contender) });
    return { ms: performance.now() - started, session };
  };
  const plain: number[] = [];
  const cold: number[] = [];
  const warm: number[] = [];
  const ownerExit: number[] = [];
  let orphans = 0;
  for (let run = 0; run < bench.sizes.readyRuns; run++) {
    const p = sandboxFor("plain");
    try {
      const { ms, session } = await timed(p, "plain", "api");
      plain.push(ms);
      await p.stopSession(session);
    } finally {
      await p.cleanup();
    }
    const o = sandboxFor("ours");
    try {
      const first = await timed(o, "ours", "api");
      cold.push(first.ms);
      const second = await timed(o, "ours", "jobs");
      warm.push(second.ms);
      const owner = o.owner()!;
      await o.stopSession(second.session);
      await o.stopSession(first.session);
      const stoppedAt = performance.now();
      await waitFor("the owner to exit", () => ownerGone(owner), 30_000, 20);
      ownerExit.push(performance.now() - stoppedAt);
      orphans += (await o.settledLeftovers(2000)).length;
    } finally {
      await o.cleanup();
    }
  }
  const figures = {
    plainMs: round(median(plain)),
    coldMs: round(median(cold)),
    warmMs: round(median(warm)),
    coldOverPlainMs: round(median(cold) - median(plain)),
    warmOverPlainMs: round(median(warm) - median(plain)),
    runs: plain.length,
    ownerExitAfterLastClientMs: round(median(ownerExit)),
    ownerExitBoundMs: 2000 + 1000,
    orphans,
  };
  bench.log(`ready: ${JSON.stringify(figures)}`);
  return figures;
}
