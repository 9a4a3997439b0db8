// Review experiments: the Cache route across owner changes, with real processes.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { addCacheWorker, isCacheFile, putsAndLookups } from "./harness/review-cache.js";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { inspectRoot } from "../src/owner/inspect.js";
import { rootPaths } from "../src/records.js";
import {
  getJson,
  parentPid,
  processesWithOpen,
  Sandbox,
  type Session,
  sleep,
  waitFor,
} from "./harness/sandbox.js";

/** Put+match rounds from `sessions` until stopped; each round's time and outcome. */
function cacheLoad(sessions: Session[]) {
  const results: { at: number; ok: boolean; body: string }[] = [];
  let running = true;
  let n = 0;
  const loops = sessions.map(async (s) => {
    while (running) {
      const key = `f${n++}`;
      let ok = false;
      let body = "";
      try {
        const put = await fetch(s.url(`/put/${key}`), {
          method: "PUT",
          body: key,
          signal: AbortSignal.timeout(5000),
        });
        body = await put.text();
        const match = await fetch(s.url(`/match/${key}`), { signal: AbortSignal.timeout(5000) });
        body = await match.text();
        ok = put.ok && match.ok && (JSON.parse(body) as { body?: string }).body === key;
      } catch (error) {
        body = String(error);
      }
      results.push({ at: Date.now(), ok, body });
      await sleep(5);
    }
  });
  return {
    results,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

async function cleanFor(
  results: { at: number; ok: boolean; body: string }[],
  from: number,
  timeoutMs: number,
) {
  await waitFor(
    "1.5 s of clean cache traffic",
    () => {
      const last = results.filter((r) => !r.ok).at(-1)?.at ?? from;
      return Date.now() - last > 1500 && results.some((r) => r.at > last + 1000 && r.ok);
    },
    timeoutMs,
  );
  const failures = results.filter((r) => r.at >= from && !r.ok);
  return { failures, lastMs: failures.length ? failures.at(-1)!.at - from : 0 };
}

describe.skipIf(process.platform !== "linux")("review: the Cache across owner changes", () => {
  let sandbox: Sandbox | undefined;
  afterEach(async () => {
    await sandbox?.cleanup();
    sandbox = undefined;
  });

  it("legacy isolated/ moved, then the standby (which offers the cache socket) promoted: only the owner's workerd holds cache entries", async () => {
    sandbox = new Sandbox();
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    // An earlier version's data for cachea: the first owner offers no cache socket because of it.
    const legacy = path.join(rootPaths(sandbox.persistRoot).isolatedDir, "cachea", "cache");
    mkdirSync(path.join(legacy, "miniflare-CacheObject"), { recursive: true });
    writeFileSync(path.join(legacy, "miniflare-CacheObject", "legacy.txt"), "earlier version");
    const a = await sandbox.startSession("cachea");
    expect(existsSync(rootPaths(sandbox.persistRoot).isolatedDir)).toBe(false); // moved
    const first = sandbox.owner()!;
    const standby = await waitFor(
      "a ready standby",
      () => {
        const s = inspectRoot(sandbox!.persistRoot).standby;
        return s?.alive && s.phase === "ready" && s.backs === first.pid ? s : undefined;
      },
      30_000,
    );
    process.kill(first.pid, "SIGKILL");
    await waitFor(
      "the standby to serve",
      () => {
        const o = sandbox!.owner();
        return o?.pid === standby.pid && o.phase === "running" && o.pooledSockets ? o : undefined;
      },
      20_000,
    );
    const b = await sandbox.startSession("cacheb");
    console.log(
      `[review] routes after promotion: ${inspectRoot(sandbox.persistRoot)
        .clients.map((c) => `${c.worker}: ${c.storageRoute}`)
        .join(" | ")}`,
    );
    const { failed, found, holders } = await putsAndLookups(sandbox, [a, b], "promoted-");
    expect(failed).toEqual([0, 0]);
    expect(found).toEqual([100, 100, 100, 100]);
    expect(holders.length).toBeGreaterThan(0);
    expect(holders.filter((h) => h !== "owner")).toEqual([]);
  });

  it("the owner's workerd killed alone, standby off: cache calls recover within 5 s and keep what was cached", async () => {
    sandbox = new Sandbox();
    sandbox.env.WRANGLER_X_OWNER_STANDBY = "0";
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    const [a, b] = await Promise.all([
      sandbox.startSession("cachea"),
      sandbox.startSession("cacheb"),
    ]);
    expect((await getJson<{ failed: number }>(a.url("/bulk-put?n=50&prefix=k"))).failed).toBe(0);
    const owner = sandbox.owner()!;
    const [workerd] = owner.workerd!;
    const load = cacheLoad([a, b]);
    await sleep(500);
    const killedAt = Date.now();
    process.kill(workerd!.pid, "SIGKILL");
    const { failures, lastMs } = await cleanFor(load.results, killedAt, 30_000);
    await load.stop();
    console.log(
      `[review] owner's workerd killed: ${failures.length} failed of ${load.results.length}, last ${lastMs} ms after; e.g. ${failures[0]?.body.slice(0, 160)}`,
    );
    expect(sandbox.owner()!.pid).toBe(owner.pid);
    expect(lastMs).toBeLessThan(5000);
    expect((await getJson<{ found: number }>(b.url("/bulk-match?n=50&prefix=k"))).found).toBe(50);
  });

  it("kill -9 of the owner mid cache-put load, standby off: recovers, keeps what was cached, one holder", async () => {
    sandbox = new Sandbox();
    sandbox.env.WRANGLER_X_OWNER_STANDBY = "0";
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    const [a, b] = await Promise.all([
      sandbox.startSession("cachea"),
      sandbox.startSession("cacheb"),
    ]);
    expect((await getJson<{ failed: number }>(a.url("/bulk-put?n=50&prefix=k"))).failed).toBe(0);
    const dead = sandbox.owner()!;
    const load = cacheLoad([a, b]);
    await sleep(500);
    const killedAt = Date.now();
    process.kill(dead.pid, "SIGKILL");
    const { failures, lastMs } = await cleanFor(load.results, killedAt, 60_000);
    await load.stop();
    const next = sandbox.owner()!;
    console.log(
      `[review] owner killed (no standby): ${failures.length} failed of ${load.results.length}, last ${lastMs} ms after; new owner ${next.pid}`,
    );
    expect(next.pid).not.toBe(dead.pid);
    expect((await getJson<{ found: number }>(b.url("/bulk-match?n=50&prefix=k"))).found).toBe(50);
    const parents = processesWithOpen(isCacheFile(sandbox.persistRoot)).map(parentPid);
    expect(parents.length).toBeGreaterThan(0);
    expect(parents).toEqual(parents.map(() => next.pid));
  });
});
