// `NODE_OPTIONS="--require shared-storage-wrangler/register"`: vite dev with
// @cloudflare/vite-plugin (its own miniflare, imported as ESM), a getPlatformProxy() script and an
// unstable_startWorker() script share one owner with `wrangler dev --x-shared-storage` sessions
// (the Cache API too), across miniflare versions and whichever of them starts the owner; a
// process that loads two miniflare copies is refused by an error its own code can catch.
import { copyFileSync, symlinkSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addCacheWorker, bulkFound, bulkMixed, isCacheFile } from "./harness/cache.js";
import { fixtureProject } from "./harness/fixture-project.js";
import { sampleHolders } from "./harness/load.js";
import {
  freePort,
  getJson,
  post,
  processesWithOpen,
  Sandbox,
  type Session,
  waitFor,
} from "./harness/sandbox.js";
import { processGroupMembers } from "../src/process-info.js";
import { ownerGone } from "../src/owner/assessment.js";
import { inspectRoot } from "../src/owner/inspect.js";
import { listClients, rootPaths, type OwnerRecord } from "../src/records.js";
import {
  CHILD_COPY_SCRIPT,
  PARENT_SCRIPT,
  PLATFORM_PROXY_SCRIPT,
  registeredEnv,
  START_WORKER_SCRIPT,
  TWO_COPIES_SCRIPT,
  writeScript,
} from "./fixtures/register-scripts.js";

const WRANGLER = "4.164.0";
const VITE_PLUGIN = "1.64.0";
/** wrangler 4.164.0's own miniflare, and the older one @cloudflare/vite-plugin 1.64.0 brings. */
const WRANGLER_MINIFLARE = "5.20261117.0-beta";
const PLUGIN_MINIFLARE = "5.20261012.0-beta";
const PER_SOURCE = 40;

describe("register: vite, getPlatformProxy() and unstable_startWorker() beside wrangler dev on one root", () => {
  const sandbox = new Sandbox();
  let bin = "";
  beforeAll(() => {
    const fixture = fixtureProject(WRANGLER, sandbox.env, {
      devDependencies: { vite: "8.3.8", "@cloudflare/vite-plugin": VITE_PLUGIN },
    });
    console.log(
      `[fixture] vite + @cloudflare/vite-plugin ${VITE_PLUGIN}: install ${fixture.installSeconds} s`,
    );
    symlinkSync(path.join(fixture.dir, "node_modules"), path.join(sandbox.project, "node_modules"));
    bin = path.join(sandbox.project, "node_modules", ".bin", "wrangler");
  }, 600_000);
  afterAll(() => sandbox.cleanup());

  const registered = registeredEnv(sandbox);

  /** A registered node script (stdin open), once it printed `readyLine`. */
  async function startScript(
    name: string,
    source: string,
    args: string[],
    readyLine: string,
  ): Promise<Session> {
    const script = writeScript(sandbox, `${name}.mjs`, source);
    const started = await sandbox.startProcess(name, await freePort(), [script, ...args], {
      cwd: sandbox.project,
      env: registered,
      wait: false,
      stdin: true,
    });
    await waitFor(
      `${name} to print "${readyLine}"`,
      () => {
        if (started.child.exitCode !== null) throw new Error(`script exited:\n${started.output()}`);
        return started.output().includes(readyLine);
      },
      60_000,
    );
    return started;
  }

  async function startVite(cwd = sandbox.workerDir("vite"), worker = "web"): Promise<Session> {
    const port = await freePort();
    const vite = path.join(sandbox.project, "node_modules", "vite", "bin", "vite.js");
    const args = [vite, "dev", "--port", String(port), "--strictPort", "--host", "127.0.0.1"];
    return sandbox.startProcess(worker, port, args, { cwd, env: registered });
  }

  /** The cache worker as `cachewrangler` and, with the example's vite config, `cachevite` (its dir). */
  function addCacheWorkers(): string {
    addCacheWorker(sandbox, "cachewrangler");
    const dir = addCacheWorker(sandbox, "cachevite");
    copyFileSync(
      path.join(sandbox.workerDir("vite"), "vite.config.mjs"),
      path.join(dir, "vite.config.mjs"),
    );
    return dir;
  }

  /** A wrangler session of the fixture's wrangler (our bin, as the project installed it). */
  const startWrangler = (worker: string) => sandbox.startSession(worker, { bin });

  /** The miniflare version each live session of `worker` recorded in its presence. */
  function clientMiniflares(worker: string): string[] {
    return listClients(rootPaths(sandbox.persistRoot)).flatMap((c) =>
      c.record.ok && c.record.value.worker === worker ? [c.record.value.versions.miniflare] : [],
    );
  }

  /**
   * PER_SOURCE concurrent D1 inserts over HTTP through every session, at the same time as `also`
   * (a script's own inserts, returning its failures), while sampling which processes hold the
   * database files: 0 failed, exactly `total` rows seen by every session, one holder (the
   * owner's workerd).
   */
  async function insertFromAll(
    sessions: Session[],
    who: string,
    total: number,
    also: () => Promise<string[]> = async () => [],
  ): Promise<void> {
    const sampler = sampleHolders(sandbox.persistRoot);
    const [results, alsoFailed] = await Promise.all([
      Promise.all(
        sessions.flatMap((session) =>
          Array.from({ length: PER_SOURCE }, () => post(session.url(`/d1/insert?who=${who}`))),
        ),
      ),
      also(),
    ]);
    await sampler.stop();
    const holders = [...new Set(sampler.samples.flatMap((s) => s.holders))];
    console.log(
      `[register] ${who}: ${results.length} HTTP inserts through ${sessions.map((s) => s.worker).join(", ")}, ` +
        `${sampler.samples.length} samples, holders ${holders.join(",")}`,
    );
    expect(results.filter((r) => !r.ok).map((r) => r.body)).toEqual([]);
    expect(alsoFailed).toEqual([]);
    for (const session of sessions) {
      expect(await getJson(session.url(`/d1/count?who=${who}`))).toMatchObject({ count: total });
    }
    expect(holders).toEqual(sandbox.owner()!.workerd!.map((w) => w.pid));
  }

  /** Every session stopped (Ctrl-C), the owner gone, nothing of the test left running. */
  async function stopEverything(owner: OwnerRecord): Promise<void> {
    await sandbox.stopAllSessions();
    await waitFor("the owner to leave", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  }

  it("serves every process through one owner: 0 failed, exact counts, one holder", async () => {
    const vites = [await startVite(), await startVite()];
    const owner = sandbox.owner()!;
    const wrangler = await startWrangler("api");
    for (const session of [...vites, wrangler]) {
      expect(session.output()).toContain(`served by owner pid ${owner.pid}`);
    }
    // The owner runs the miniflare of the session that started it: the plugin's, not wrangler's.
    expect(owner.versions.miniflare).toBe(PLUGIN_MINIFLARE);
    expect(clientMiniflares("api")).toEqual([WRANGLER_MINIFLARE]);
    expect(clientMiniflares("web")).toEqual([PLUGIN_MINIFLARE, PLUGIN_MINIFLARE]);

    // A framework's getPlatformProxy(), started with the same switch.
    const proxy = await startScript("proxy", PLATFORM_PROXY_SCRIPT, [String(PER_SOURCE)], "ready");
    expect(proxy.output()).toContain(`served by owner pid ${owner.pid}`);

    await insertFromAll([...vites, wrangler], "mixed", 4 * PER_SOURCE, async () => {
      proxy.child.stdin!.end("go\n");
      const line = await waitFor(
        "the script's result",
        () =>
          proxy
            .output()
            .split("\n")
            .find((l) => l.startsWith("{")),
        60_000,
      );
      const scripted = JSON.parse(line) as { failed: string[]; count: number };
      console.log(`[register] getPlatformProxy: ${PER_SOURCE} inserts, count ${scripted.count}`);
      return scripted.failed;
    });

    expect(await waitFor("the script to exit", () => proxy.child.exitCode ?? false, 30_000)).toBe(
      0,
    );
    await stopEverything(owner);
  });

  it("unstable_startWorker() beside wrangler dev: one owner, 0 failed, exact counts, one holder", async () => {
    const wrangler = await startWrangler("api");
    const owner = sandbox.owner()!;
    const script = writeScript(sandbox, "start-worker.mjs", START_WORKER_SCRIPT);
    const port = await freePort();
    const started = await sandbox.startProcess("jobs", port, [script, String(port)], {
      cwd: sandbox.project,
      env: registered,
    });
    expect(started.output()).toContain(`started at http://127.0.0.1:${port}/`);
    for (const session of [wrangler, started]) {
      expect(session.output()).toContain(`served by owner pid ${owner.pid}`);
    }
    // Both run wrangler 4.164.0's miniflare: unstable_startWorker builds it as wrangler dev does.
    expect(owner.versions.miniflare).toBe(WRANGLER_MINIFLARE);
    expect(clientMiniflares("jobs")).toEqual([WRANGLER_MINIFLARE]);

    await insertFromAll([wrangler, started], "started", 2 * PER_SOURCE);
    await stopEverything(owner);
  });

  it("an owner of wrangler's newer miniflare serves a vite session of the plugin's older one", async () => {
    // The reverse of the first test: wrangler's session starts the owner, vite joins it.
    const wrangler = await startWrangler("api");
    const owner = sandbox.owner()!;
    expect(owner.versions.miniflare).toBe(WRANGLER_MINIFLARE);
    const vite = await startVite();
    expect(vite.output()).toContain(`served by owner pid ${owner.pid}`);
    expect(clientMiniflares("web")).toEqual([PLUGIN_MINIFLARE]);

    await insertFromAll([wrangler, vite], "reverse", 2 * PER_SOURCE);
    await stopEverything(owner);
  });

  it("a vite session's Cache goes through the owner beside a wrangler session of another worker: 0 failed, one holder", async () => {
    // wrangler first: an owner of wrangler's miniflare offers the cache socket (one of the
    // plugin's older miniflare offers no pooled socket at all, and every session keeps its Cache).
    const dir = addCacheWorkers();
    const wrangler = await startWrangler("cachewrangler");
    const owner = sandbox.owner()!;
    expect(owner.versions.miniflare).toBe(WRANGLER_MINIFLARE);
    const vite = await startVite(dir, "cachevite");
    for (const session of [vite, wrangler])
      expect(session.output()).toContain(`served by owner pid ${owner.pid}`);
    expect(clientMiniflares("cachevite")).toEqual([PLUGIN_MINIFLARE]);
    // The cache worker has no KV/R2/D1 binding: its route is the Cache's alone.
    expect(inspectRoot(sandbox.persistRoot).clients.map((c) => c.storageRoute)).toEqual([
      "pooled",
      "pooled",
    ]);

    const sampler = sampleHolders(sandbox.persistRoot, 25, isCacheFile(sandbox.persistRoot));
    const [rv, rw] = await Promise.all([bulkMixed(vite, "v"), bulkMixed(wrangler, "w")]);
    await sampler.stop();
    const holders = [...new Set(sampler.samples.flatMap((s) => s.holders))];
    const seen = sampler.samples.filter((s) => s.holders.length > 0).length;
    console.log(
      `[register] cache: vite ${rv.failed} failed, wrangler ${rw.failed} failed of 100 put/match/delete each; ` +
        `${sampler.samples.length} samples (${seen} saw a holder), holders ${holders.join(",")}`,
    );
    expect([rv, rw].map((r) => [r.failed, r.first, r.ms?.length])).toEqual([
      [0, undefined, 100],
      [0, undefined, 100],
    ]);
    // One cache for both (a worker's caches.default is every worker's): each sees the other's
    // 50 kept entries, none of the deleted ones.
    expect(await bulkFound(vite, "w")).toBe(50);
    expect(await bulkFound(wrangler, "v")).toBe(50);
    expect(sampler.samples.length).toBeGreaterThan(0);
    expect(seen).toBeGreaterThan(0);
    expect(holders).toEqual(sandbox.owner()!.workerd!.map((w) => w.pid));
    await stopEverything(owner);
  });

  it("an owner of the plugin's older miniflare offers no cache socket: each session keeps its own Cache, and status says so", async () => {
    // vite first: the owner runs miniflare 5.20261012.0-beta, whose KV/R2/D1 entry workers read
    // no namespace header, so it offers no pooled socket at all (the Cache's neither).
    const vite = await startVite(addCacheWorkers(), "cachevite");
    const owner = sandbox.owner()!;
    expect(owner.versions.miniflare).toBe(PLUGIN_MINIFLARE);
    expect(owner.pooledSockets).toBeUndefined();
    const wrangler = await startWrangler("cachewrangler");
    expect(wrangler.output()).toContain(`served by owner pid ${owner.pid}`);
    expect(inspectRoot(sandbox.persistRoot).clients.map((c) => c.storageRoute)).toEqual([
      "cache: session",
      "cache: session",
    ]);
    const table = await sandbox.run(["storage-owner", "status", "--persist-to", sandbox.persistTo]);
    expect(table.stdout).toMatch(/cachewrangler\s+dev\s+\d+\s+cache: session\s/);
    // The Cache works in each session, served by its own workerd (plain wrangler's contention:
    // entries are not asserted here, see docs/experimental.md).
    for (const [session, key] of [
      [vite, "own-v"],
      [wrangler, "own-w"],
    ] as const) {
      expect((await bulkMixed(session, key, 10)).failed).toBe(0);
      expect(await bulkFound(session, key, 10)).toBe(5);
    }
    const holders = processesWithOpen(isCacheFile(sandbox.persistRoot));
    const sessionProcesses = [vite, wrangler].map((s) => processGroupMembers(s.pid));
    expect(
      sessionProcesses.map((members) => holders.filter((pid) => members.includes(pid)).length),
    ).toEqual([1, 1]);
    await stopEverything(owner);
  });

  it("refuses a second miniflare copy in one process with an error the user's code catches (naming both versions), the first copy still sharing", async () => {
    const sampler = sampleHolders(sandbox.persistRoot);
    const both = await startScript("two-copies", TWO_COPIES_SCRIPT, [], "first copy ready");
    // The first copy shares storage through the owner.
    const owner = sandbox.owner()!;
    expect(both.output()).toContain(`served by owner pid ${owner.pid}`);
    both.child.stdin!.end("go\n");
    const code = await both.exited;
    await sampler.stop();
    console.log(`[register] two copies: exit ${code}\n${both.output()}`);
    // The script caught the refusal and ended by itself: the register did not exit its process.
    expect(code).toBe(0);
    expect(both.output()).not.toContain("second copy ready");
    expect(both.output()).not.toContain("✘");
    const caught = both
      .output()
      .split("\n")
      .filter((line) => line.startsWith("caught "));
    expect(caught).toEqual([
      expect.stringMatching(
        /^caught SharedStorageError: this process builds persisting Miniflares from two copies of miniflare, /,
      ),
    ]);
    expect(caught[0]).toContain(`miniflare ${WRANGLER_MINIFLARE}`);
    expect(caught[0]).toContain(`miniflare ${PLUGIN_MINIFLARE}`);
    expect(caught[0]).toContain("Make the process load one miniflare");
    expect(both.output()).toContain("first copy still serves 42");
    // Never a second holder: only the owner's workerd opened the database files.
    const ownerWorkerd = owner.workerd!.map((w) => w.pid);
    const holders = [...new Set(sampler.samples.flatMap((s) => s.holders))];
    expect(holders.filter((pid) => !ownerWorkerd.includes(pid))).toEqual([]);
    await waitFor("the owner to leave", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });

  it("a Node child of a registered process shares through its own miniflare copy (the parent's is not a second copy)", async () => {
    const parent = writeScript(sandbox, "parent.mjs", PARENT_SCRIPT);
    writeScript(sandbox, "child-copy.mjs", CHILD_COPY_SCRIPT);
    const sampler = sampleHolders(sandbox.persistRoot);
    const run = await sandbox.run([], { bin: parent, env: registered, timeoutMs: 120_000 });
    await sampler.stop();
    console.log(`[register] parent and child: exit ${run.code}\n${run.stdout}${run.stderr}`);
    expect(run.code).toBe(0);
    expect(run.stderr).not.toContain("✘");
    expect(run.stdout).toMatch(/^parent ready\nchild inserted, count \d+\nchild exited 0\n$/);
    // Parent (wrangler's copy) and child (the plugin's) were served by the same owner.
    const owners = [...run.stderr.matchAll(/served by owner pid (\d+)/g)].map((m) => m[1]);
    expect(owners).toHaveLength(2);
    expect(new Set(owners).size).toBe(1);
    const holders = new Set(sampler.samples.flatMap((s) => s.holders));
    expect(holders.size).toBeLessThanOrEqual(1);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});
