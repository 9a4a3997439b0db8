// `wrangler dev --x-shared-storage`: real sessions of three workers on one persist root.
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isCacheFile } from "./harness/cache.js";
import { cachePutMatch, sampleHolders, steadyLoad } from "./harness/load.js";
import { inspectRoot } from "../src/owner/inspect.js";
import { ownerGone, ownerLeftovers } from "../src/owner/assessment.js";
import { readCacheRoute, rootPaths } from "../src/records.js";
import { CANDIDATE_PREFIX } from "../src/storage-candidate.js";
import {
  getJson,
  isDatabaseFile,
  parentPid,
  post,
  processesWithOpen,
  Sandbox,
  type Session,
  sleep,
  waitFor,
} from "./harness/sandbox.js";

const WORKERS = ["api", "jobs", "admin"];
const INSERTS_PER_SESSION = 60;

async function concurrentInserts(sessions: Session[], who: string) {
  const results = await Promise.all(
    sessions.flatMap((s) =>
      Array.from({ length: INSERTS_PER_SESSION }, () => post(s.url(`/d1/insert?who=${who}`))),
    ),
  );
  return { ok: results.filter((r) => r.ok).length, failed: results.filter((r) => !r.ok) };
}

describe("plain wrangler dev (flag off), for contrast", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("runs the same workload; its failures are printed, not asserted", async () => {
    const sessions: Session[] = [];
    for (const worker of WORKERS) {
      try {
        sessions.push(await sandbox.startSession(worker, { flag: false }));
      } catch (error) {
        console.log(`[flag off] ${worker} failed to start: ${String(error).slice(0, 300)}`);
      }
    }
    const { ok, failed } = await concurrentInserts(sessions, "plain");
    const total = sessions.length * INSERTS_PER_SESSION;
    console.log(
      `[flag off] ${failed.length} of ${total} concurrent D1 inserts failed` +
        (failed[0] ? `, e.g. HTTP ${failed[0].status}: ${failed[0].body.slice(0, 160)}` : ""),
    );
    expect(ok + failed.length).toBe(total);
    expect(sandbox.owner()).toBeUndefined();
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
  });
});

describe("wrangler dev --x-shared-storage", () => {
  const sandbox = new Sandbox({ graceMs: 3000, idleMs: 1000 });
  let sessions: Session[] = [];

  beforeAll(async () => {
    // Started together, as several terminals would be: exactly one owner must come out of it.
    sessions = await Promise.all(WORKERS.map((worker) => sandbox.startSession(worker)));
  });
  afterAll(() => sandbox.cleanup());

  it("serves 3 sessions x 60 concurrent D1 inserts with no failure and exact counts", async () => {
    const { ok, failed } = await concurrentInserts(sessions, "shared");
    expect(failed.map((f) => `${f.status} ${f.body.slice(0, 200)}`)).toEqual([]);
    expect(ok).toBe(WORKERS.length * INSERTS_PER_SESSION);
    for (const session of sessions) {
      const { count, worker } = await getJson<{ count: number; worker: string }>(
        session.url("/d1/count?who=shared"),
      );
      expect({ worker, count }).toEqual({ worker: session.worker, count: 180 });
    }
  });

  it("shares KV and R2 between sessions", async () => {
    const [a, b, c] = sessions as [Session, Session, Session];
    expect((await fetch(a.url("/kv/greeting"), { method: "PUT", body: "from api" })).ok).toBe(true);
    expect(await (await fetch(b.url("/kv/greeting"))).text()).toBe("from api");
    expect((await fetch(b.url("/r2/report.txt"), { method: "PUT", body: "from jobs" })).ok).toBe(
      true,
    );
    expect(await (await fetch(c.url("/r2/report.txt"))).text()).toBe("from jobs");
    expect(await (await fetch(a.url("/r2/report.txt"))).text()).toBe("from jobs");
  });

  it("has exactly one process with the database files open: the owner's workerd", async () => {
    const owner = sandbox.owner();
    expect(owner?.phase).toBe("running");
    const holders = processesWithOpen(isDatabaseFile(sandbox.persistRoot));
    expect(holders).toHaveLength(1);
    expect(parentPid(holders[0]!)).toBe(owner!.pid);
    // The owner recorded it (pid + start time): the only workerd anyone may signal for it.
    expect(ownerLeftovers(owner!).map((w) => w.pid)).toEqual([holders[0]]);
    // Every session routes to it and none spawned an owner of its own.
    expect(sessions.every((s) => s.output().includes(`owner pid ${owner!.pid}`))).toBe(true);
  });

  it("keeps serving other sessions while one session's worker is edited 5 times, the Cache too", async () => {
    const [edited, writer] = sessions as [Session, Session];
    const ownerBefore = sandbox.owner()!.pid;
    const source = path.join(sandbox.workerDir(edited.worker), "src", "index.js");
    const original = readFileSync(source, "utf8");
    const cachedBefore = Array.from({ length: 10 }, (_, i) => `before-reload-${i}`);
    for (const key of cachedBefore)
      expect((await fetch(edited.url(`/cache/${key}`), { method: "PUT", body: key })).ok).toBe(
        true,
      );
    const cacheLoad = steadyLoad([writer], "reload", 1, 10, cachePutMatch);
    /** What the edited session answers for the entries it cached before the edits. */
    const matchedBefore = async () =>
      Promise.all(
        cachedBefore.map(async (key) => (await fetch(edited.url(`/cache/${key}`))).text()),
      );
    const afterReload: { matched: string[]; round: { ok: boolean; body: string } }[] = [];
    let stop = false;
    let sent = 0;
    const failures: string[] = [];
    const load = (async () => {
      while (!stop) {
        const batch = await Promise.all(
          Array.from({ length: 4 }, () => post(writer.url("/d1/insert?who=reload"))),
        );
        sent += batch.length;
        for (const r of batch) if (!r.ok) failures.push(`${r.status} ${r.body.slice(0, 160)}`);
        await sleep(10);
      }
    })();
    for (let edit = 1; edit <= 5; edit++) {
      writeFileSync(
        source,
        original.replace(
          `createHandler("${edited.worker}")`,
          `createHandler("${edited.worker}-v${edit}")`,
        ),
      );
      await waitFor(
        `reload ${edit} of ${edited.worker}`,
        async () => {
          try {
            return (
              (await getJson<{ worker: string }>(edited.url("/whoami"))).worker ===
              `${edited.worker}-v${edit}`
            );
          } catch {
            return false;
          }
        },
        60_000,
        100,
      );
      // The reloaded session's Cache: a new round works, and what it cached before is there.
      afterReload.push({
        matched: await matchedBefore(),
        round: await cachePutMatch(edited, "edit"),
      });
      await sleep(300);
    }
    stop = true;
    await Promise.all([load, cacheLoad.stop()]);
    const cacheFailures = cacheLoad.results.filter((r) => !r.ok).map((r) => r.body);
    console.log(
      `[reload] ${sent} D1 inserts, ${cacheLoad.results.length} cache put+match rounds from ${writer.worker} ` +
        `(${cacheFailures.length} failed) during 5 edits of ${edited.worker}`,
    );
    expect(afterReload).toEqual(
      Array.from({ length: 5 }, () => ({
        matched: cachedBefore,
        round: { ok: true, body: expect.any(String) },
      })),
    );
    expect(cacheLoad.results.length).toBeGreaterThan(10);
    expect(cacheFailures).toEqual([]);
    // Still through the owner after the reloads: its workerd alone holds the cache entries.
    const edits = inspectRoot(sandbox.persistRoot).clients.find((c) => c.worker === edited.worker);
    expect(edits?.storageRoute).toBe("pooled");
    const cacheHolders = processesWithOpen(isCacheFile(sandbox.persistRoot));
    expect(cacheHolders.length).toBeGreaterThan(0);
    expect(cacheHolders.map(parentPid)).toEqual(cacheHolders.map(() => ownerBefore));
    expect(sent).toBeGreaterThan(20);
    expect(failures).toEqual([]);
    expect(sandbox.owner()?.pid).toBe(ownerBefore);
    const count = await getJson<{ count: number }>(writer.url("/d1/count?who=reload"));
    expect(count.count).toBe(sent);
  });

  it("lets the owner go once the last session exits; a new session sees all earlier data", async () => {
    const owner = sandbox.owner()!;
    const route = rootPaths(sandbox.persistRoot).cacheRoute;
    // The sessions' Cache went through the owner: the root's route says so while they live.
    expect(readCacheRoute(rootPaths(sandbox.persistRoot))).toMatchObject({
      ok: true,
      value: { state: "pooled" },
    });
    const stoppedAt = Date.now();
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
    // grace (3 s, long over) + idle debounce (1 s) + polling slack
    await waitFor(
      "the owner to exit",
      () => ownerLeftovers(owner).length === 0 && sandbox.owner() === undefined,
      10_000,
    );
    console.log(`owner exited ${Date.now() - stoppedAt} ms after the sessions were told to stop`);
    expect(await sandbox.settledLeftovers()).toEqual([]);
    // Retired by the idle exit, under the election lock: the next owner decides afresh.
    expect(existsSync(route)).toBe(false);

    const again = await sandbox.startSession("admin");
    const { count } = await getJson<{ count: number }>(again.url("/d1/count?who=shared"));
    expect(count).toBe(180);
    expect(await (await fetch(again.url("/kv/greeting"))).text()).toBe("from api");
    expect(sandbox.owner()?.pid).not.toBe(owner.pid);
    await sandbox.stopSession(again);
  });
});

describe("two spellings of one persist root (--persist-to a directory and a symlink to it)", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("one owner, one holder, 0 failed concurrent inserts, exact counts", async () => {
    mkdirSync(sandbox.persistRoot, { recursive: true });
    const alias = path.join(sandbox.dir, "alias-of-state");
    symlinkSync(sandbox.persistTo, alias);
    const real = realpathSync(sandbox.persistRoot);
    const sessions = await Promise.all([
      sandbox.startSession("api"),
      sandbox.startSession("jobs", { persistTo: alias }),
    ]);
    const sampler = sampleHolders(real);
    const { ok, failed } = await concurrentInserts(sessions, "alias");
    await sampler.stop();
    expect(failed.map((f) => `${f.status} ${f.body.slice(0, 200)}`)).toEqual([]);
    expect(ok).toBe(2 * INSERTS_PER_SESSION);
    for (const session of sessions) {
      expect(await getJson(session.url("/d1/count?who=alias"))).toMatchObject({
        count: 2 * INSERTS_PER_SESSION,
      });
    }
    const owner = sandbox.owner()!;
    expect(owner.persistRoot).toBe(real);
    for (const session of sessions) {
      expect(session.output()).toContain(`storage for ${real} is served by owner pid ${owner.pid}`);
    }
    // miniflare elects per storageScope string: every candidate in the registry names one scope.
    const scopeOf = (name: string): string[] => {
      try {
        const file = path.join(sandbox.registry, name);
        return [(JSON.parse(readFileSync(file, "utf8")) as { storageScope: string }).storageScope];
      } catch {
        return []; // withdrawn or being written as we read it
      }
    };
    const scopes = new Set(
      readdirSync(sandbox.registry)
        .filter((name) => name.startsWith(CANDIDATE_PREFIX))
        .flatMap(scopeOf),
    );
    expect([...scopes]).toEqual([real]);
    const holders = new Set(sampler.samples.flatMap((sample) => sample.holders));
    expect(sampler.samples.length).toBeGreaterThan(0);
    expect([...holders]).toEqual(owner.workerd!.map((w) => w.pid));

    await sandbox.stopAllSessions();
    await waitFor("the owner to leave", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});
