// The Cache API from two workers' sessions on one root, plain wrangler against ours: N concurrent
// puts from each, then every entry matched from both (found of 2N: plain's two workerds write
// one cache's files and lose some); then N concurrent put/match/delete rounds from each (failed,
// and each round's time inside the worker).
import {
  addCacheWorker,
  type BulkResult,
  bulkFound,
  bulkMixed,
  bulkPut,
} from "../../test/harness/cache.js";
import type { Session } from "../../test/harness/sandbox.js";
import { type Bench, flagFor, sandboxFor } from "../context.js";
import { percentile, round } from "../stats.js";

const WORKERS = ["cachea", "cacheb"];

/** A bulk call that failed as a whole (HTTP error, connection lost) counts all its rounds. */
async function settled(call: Promise<BulkResult>, n: number): Promise<BulkResult> {
  try {
    return await call;
  } catch (error) {
    return { failed: n, first: String(error).slice(0, 200) };
  }
}

async function foundOrZero(session: Session, prefix: string, n: number): Promise<number> {
  try {
    return await bulkFound(session, prefix, n);
  } catch {
    return 0;
  }
}

async function cacheRun(bench: Bench, contender: "plain" | "ours") {
  const n = bench.sizes.cacheOps;
  const sandbox = sandboxFor(contender);
  try {
    for (const name of WORKERS) addCacheWorker(sandbox, name);
    // One after the other: plain sessions started together can die at startup (SQLITE_BUSY).
    const sessions: Session[] = [];
    for (const name of WORKERS)
      sessions.push(await sandbox.startSession(name, { flag: flagFor(contender) }));
    const puts = await Promise.all(sessions.map((s, i) => settled(bulkPut(s, `p${i}`, n), n)));
    // Each session looks for every entry of both: what it finds of 2N.
    const found = await Promise.all(
      sessions.map(async (s) => {
        const each = await Promise.all(sessions.map((_, i) => foundOrZero(s, `p${i}`, n)));
        return each.reduce((sum, k) => sum + k, 0);
      }),
    );
    const started = performance.now();
    const mixed = await Promise.all(sessions.map((s, i) => settled(bulkMixed(s, `m${i}`, n), n)));
    const wallMs = performance.now() - started;
    const rounds = mixed.flatMap((r) => r.ms ?? []);
    const figures = {
      sessions: sessions.length,
      putFailed: puts.reduce((sum, r) => sum + r.failed, 0),
      found,
      foundOf: sessions.length * n,
      mixedFailed: mixed.reduce((sum, r) => sum + r.failed, 0),
      mixedRounds: sessions.length * n,
      roundP50Ms: round(percentile(rounds, 50)),
      roundP95Ms: round(percentile(rounds, 95)),
      burstWallMs: round(wallMs),
      sampleFailure: [...puts, ...mixed].find((r) => r.first)?.first,
    };
    bench.log(`cache ${contender}: ${JSON.stringify(figures)}`);
    return figures;
  } finally {
    await sandbox.cleanup();
  }
}

export async function cacheLoad(bench: Bench) {
  return { plain: await cacheRun(bench, "plain"), ours: await cacheRun(bench, "ours") };
}
