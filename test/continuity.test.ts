// Issue 16: turning --x-shared-storage on or off never hides data. Durable Objects, Cache and
// Workflows live where plain wrangler keeps them; data of earlier versions moves there once.
import { createHash } from "node:crypto";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { adoptLegacyLayout } from "../src/dev/continuity.js";
import { commandLine, openFiles, processGroupMembers, procStat } from "../src/process-info.js";
import { linkTarget } from "../src/pooled/sockets.js";
import { legacyIsolatedPathFor, rootPaths } from "../src/records.js";
import { isCacheFile } from "./harness/cache.js";
import {
  getJson,
  post,
  processesWithOpen,
  Sandbox,
  type Session,
  waitFor,
} from "./harness/sandbox.js";

const WORKER = "counter";

async function startCounter(sandbox: Sandbox, flag: boolean, persistTo?: string): Promise<Session> {
  const session = await sandbox.startSession(WORKER, {
    flag,
    ...(persistTo ? { persistTo } : {}),
  });
  // Another test process may have taken the port between the harness's check and wrangler's bind.
  expect((await getJson<{ worker: string }>(session.url("/whoami"))).worker).toBe(WORKER);
  return session;
}

/** `times` sequential increments of a counter route; the counts it answered. */
async function increments(session: Session, route: string, times = 2): Promise<number[]> {
  const counts: number[] = [];
  for (let i = 0; i < times; i++) {
    const response = await post(session.url(route));
    expect(response.ok, `${route}: ${response.status} ${response.body.slice(0, 300)}`).toBe(true);
    counts.push((JSON.parse(response.body) as { count: number }).count);
  }
  return counts;
}

async function workflowStatus(
  session: Session,
  id: string,
): Promise<{ status?: string; output?: unknown }> {
  const response = await fetch(session.url(`/workflow/${id}`));
  const text = await response.text();
  return response.ok
    ? (JSON.parse(text) as { status?: string; output?: unknown })
    : { status: `HTTP ${response.status}` };
}

async function createWorkflow(session: Session, id: string): Promise<void> {
  const created = await post(session.url(`/workflow/${id}`));
  expect(created.ok, created.body.slice(0, 300)).toBe(true);
  await waitFor(
    `workflow ${id} to complete`,
    async () => (await workflowStatus(session, id)).status === "complete",
    30_000,
    200,
  );
}

/** Every file below `dir` with a hash of its content, to show that nothing changed. */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const name of readdirSync(dir, { recursive: true }).map(String).sort()) {
    const file = path.join(dir, name);
    if (statSync(file).isFile())
      files[name] = createHash("sha256").update(readFileSync(file)).digest("hex");
  }
  return files;
}

describe("one history when the flag is turned on and off (real sessions)", () => {
  const sandbox = new Sandbox({ graceMs: 3000, idleMs: 1000 });
  afterAll(() => sandbox.cleanup());

  it("plain, shared, plain, shared: the Durable Object, Cache and Workflow continue; KV too", async () => {
    const phases = [false, true, false, true];
    const seen: string[] = [];
    for (const [phase, flag] of phases.entries()) {
      const session = await startCounter(sandbox, flag);
      const doCounts = await increments(session, "/do/visits");
      const cacheCounts = await increments(session, "/cache/visits");
      expect(doCounts).toEqual([2 * phase + 1, 2 * phase + 2]);
      expect(cacheCounts).toEqual([2 * phase + 1, 2 * phase + 2]);
      if (phase === 0) {
        await createWorkflow(session, "first");
        expect(
          (await fetch(session.url("/kv/continuity"), { method: "PUT", body: "plain" })).ok,
        ).toBe(true);
      } else {
        expect(await workflowStatus(session, "first")).toMatchObject({
          status: "complete",
          output: "hello first",
        });
        expect(await (await fetch(session.url("/kv/continuity"))).text()).toBe("plain");
      }
      if (flag) {
        const owner = sandbox.owner();
        expect(owner?.phase).toBe("running");
        expect(session.output()).toContain(`served by owner pid ${owner!.pid}`);
        // Only this session's workerd has the Durable Object files open, the owner never; the
        // Cache's are the owner's workerd's alone (issue 23), the same files plain wrangler uses.
        const under = (dir: string) => (file: string) =>
          file.startsWith(path.join(sandbox.persistRoot, dir) + path.sep);
        const holders = processesWithOpen(under("do"));
        expect(holders.length).toBeGreaterThan(0);
        const own = processGroupMembers(session.pid);
        expect(holders.filter((pid) => !own.includes(pid))).toEqual([]);
        // The entries' files, not metadata.sqlite or the directory, which hold no entry: a ready
        // standby's workerd opens those at start, as every instance does for KV, R2 and D1.
        const cacheHolders = processesWithOpen(
          (file) => under("cache")(file) && /\/[0-9a-f]{64}\.sqlite(-wal|-shm)?$/.test(file),
        );
        expect(cacheHolders.length).toBeGreaterThan(0);
        const strays = cacheHolders
          .filter((pid) => !owner!.workerd!.some((w) => w.pid === pid))
          .map((pid) => {
            const parent = procStat(pid)?.ppid ?? 0;
            const files = (openFiles(pid) ?? []).filter(under("cache"));
            return `${pid} (child of ${parent}: ${commandLine(parent).slice(0, 160)}) holds ${files.join(", ")}`;
          });
        expect(
          strays,
          `owner ${owner!.pid}, its workerd ${owner!.workerd!.map((w) => w.pid)}, session ${session.pid}`,
        ).toEqual([]);
        expect(existsSync(rootPaths(sandbox.persistRoot).isolatedDir)).toBe(false);
      }
      seen.push(
        `${flag ? "shared" : "plain"}: DO ${doCounts.join(",")} cache ${cacheCounts.join(",")}`,
      );
      await sandbox.stopSession(session);
    }
    console.log(`[continuity] ${seen.join(" · ")}`);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("data an earlier version kept under .x-shared-storage/isolated/<worker>/ (real sessions)", () => {
  const sandbox = new Sandbox({ graceMs: 3000, idleMs: 1000 });
  afterAll(() => sandbox.cleanup());
  const paths = () => rootPaths(sandbox.persistRoot);
  const legacyDir = () => legacyIsolatedPathFor(paths(), WORKER);
  const legacyCopy = () => path.join(sandbox.dir, "legacy-copy");

  it("moves into plain wrangler's layout once, announced with both paths, and continues", async () => {
    // Real data of a real session: what an earlier version wrote is plain wrangler's layout, one
    // directory down (its isolatedResourcePersistencePath was the legacy directory).
    const elsewhere = path.join(sandbox.dir, "elsewhere");
    const writer = await startCounter(sandbox, false, elsewhere);
    expect(await increments(writer, "/do/visits")).toEqual([1, 2]);
    expect(await increments(writer, "/cache/visits")).toEqual([1, 2]);
    await createWorkflow(writer, "legacy");
    await sandbox.stopSession(writer);
    mkdirSync(legacyDir(), { recursive: true });
    for (const resource of ["do", "cache", "workflows"]) {
      renameSync(path.join(elsewhere, "v3", resource), path.join(legacyDir(), resource));
    }
    cpSync(legacyDir(), legacyCopy(), { recursive: true });

    const first = await startCounter(sandbox, true);
    const announcement =
      `moved "${WORKER}"'s cache, do/counter-Counter, workflows/miniflare-workflows-greeting ` +
      `from ${legacyDir()} to ${sandbox.persistRoot} (once)`;
    expect(first.output()).toContain(`⎔ [x-shared-storage] ${announcement}`);
    expect(await increments(first, "/do/visits")).toEqual([3, 4]);
    expect(await increments(first, "/cache/visits")).toEqual([3, 4]);
    expect(await workflowStatus(first, "legacy")).toMatchObject({
      status: "complete",
      output: "hello legacy",
    });
    expect(existsSync(paths().isolatedDir)).toBe(false);
    await sandbox.stopSession(first);

    const plain = await startCounter(sandbox, false);
    expect(await increments(plain, "/do/visits")).toEqual([5, 6]);
    expect(await increments(plain, "/cache/visits")).toEqual([5, 6]);
    await sandbox.stopSession(plain);

    const again = await startCounter(sandbox, true);
    expect(again.output()).not.toContain("moved ");
    expect(await increments(again, "/do/visits")).toEqual([7, 8]);
    await sandbox.stopSession(again);
    console.log(`[continuity] ${announcement}`);
  });

  it("leaves both copies, and says so naming both, when plain's layout already has data; the Cache stays in the session, and status says so", async () => {
    cpSync(legacyCopy(), legacyDir(), { recursive: true });
    const before = snapshot(legacyDir());
    // An owner started with the earlier version's data still waiting offers no cache socket: the
    // last test's (started once the data had moved) must be gone first.
    await waitFor("the previous owner to leave", () => sandbox.owner() === undefined, 15_000);
    const session = await startCounter(sandbox, true);
    const lines = session
      .output()
      .split("\n")
      .filter((line) => line.includes("kept both copies"));
    expect(lines).toEqual(
      ["cache", "do/counter-Counter", "workflows/miniflare-workflows-greeting"].map(
        (unit) =>
          `⎔ [x-shared-storage] ⚠ kept both copies of "${WORKER}"'s ${unit}: ` +
          `${path.join(legacyDir(), unit)} (from an earlier --x-shared-storage, not used now) and ` +
          `${path.join(sandbox.persistRoot, unit)} (used with the flag on and off)`,
      ),
    );
    expect(await increments(session, "/do/visits")).toEqual([9, 10]);
    // The Cache works in the session's own workerd, on plain's files (which were at 6), and
    // `storage-owner status` says it is not the owner's.
    expect(await increments(session, "/cache/visits")).toEqual([7, 8]);
    const owner = sandbox.owner()!;
    expect(existsSync(path.join(linkTarget(owner.pooledSockets!)!, "kv"))).toBe(true);
    expect(existsSync(path.join(linkTarget(owner.pooledSockets!)!, "cache"))).toBe(false);
    const cacheHolders = processesWithOpen(isCacheFile(sandbox.persistRoot));
    expect(cacheHolders.length).toBeGreaterThan(0);
    const sessionProcesses = processGroupMembers(session.pid);
    expect(cacheHolders.filter((pid) => !sessionProcesses.includes(pid))).toEqual([]);
    const status = await sandbox.run([
      "storage-owner",
      "status",
      "--json",
      "--persist-to",
      sandbox.persistTo,
    ]);
    const clients = (
      JSON.parse(status.stdout) as { owners: { clients: { storageRoute?: string }[] }[] }
    ).owners.flatMap((o) => o.clients.map((c) => c.storageRoute));
    expect(clients).toEqual(["pooled; cache: session"]);
    const table = await sandbox.run(["storage-owner", "status", "--persist-to", sandbox.persistTo]);
    expect(table.stdout).toMatch(/counter\s+dev\s+\d+\s+pooled; cache: session\s/);
    await sandbox.stopSession(session);
    expect(snapshot(legacyDir())).toEqual(before);
    console.log(`[continuity] ${lines[1]}`);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("earlier data, a plain start that served nothing, then two shared sessions at once (real sessions)", () => {
  const sandbox = new Sandbox({ graceMs: 3000, idleMs: 1000 });
  afterAll(() => sandbox.cleanup());

  it("moves the history anyway: the plain start's empty indexes are set aside, the counters continue", async () => {
    // The earlier version's data: a real session's, one directory down.
    const elsewhere = path.join(sandbox.dir, "elsewhere");
    const writer = await startCounter(sandbox, false, elsewhere);
    expect(await increments(writer, "/do/visits")).toEqual([1, 2]);
    expect(await increments(writer, "/cache/visits")).toEqual([1, 2]);
    await sandbox.stopSession(writer);
    // A plain session that serves no request creates empty indexes where the history will go.
    const idle = await startCounter(sandbox, false);
    await sandbox.stopSession(idle);
    const legacy = legacyIsolatedPathFor(rootPaths(sandbox.persistRoot), WORKER);
    mkdirSync(legacy, { recursive: true });
    for (const resource of ["do", "cache", "workflows"]) {
      const from = path.join(elsewhere, "v3", resource);
      if (existsSync(from)) renameSync(from, path.join(legacy, resource));
    }
    // Two sessions of the worker start together: one moves the history, the other waits for it.
    const sessions = await Promise.all([startCounter(sandbox, true), startCounter(sandbox, true)]);
    const moved = sessions.filter((s) => s.output().includes(`moved "${WORKER}"'s`));
    expect(moved).toHaveLength(1);
    expect(moved[0]!.output()).toContain("empty indexes found there were set aside");
    for (const session of sessions) expect(session.output()).not.toContain("kept both copies");
    expect(await increments(sessions[0]!, "/do/visits")).toEqual([3, 4]);
    expect(await increments(sessions[0]!, "/cache/visits")).toEqual([3, 4]);
    expect(existsSync(legacy)).toBe(false);
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("adoptLegacyLayout (files only)", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-layout-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const paths = rootPaths(dir);
  const legacy = legacyIsolatedPathFor(paths, "w");
  const put = (file: string, text: string) => {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, text);
  };

  it("moves namespaces independently, sets aside what holds no data, and moves the cache only whole", () => {
    put(path.join(legacy, "do/w-A/a.sqlite"), "legacy A");
    put(path.join(legacy, "do/w-B/b.sqlite"), "legacy B");
    put(path.join(legacy, "do/w-C/c.sqlite"), "legacy C");
    put(path.join(legacy, "do/w-D/d.sqlite"), "legacy D");
    put(path.join(dir, "do/w-B/b.sqlite"), "plain B");
    mkdirSync(path.join(dir, "do/w-C/empty"), { recursive: true });
    // What any plain start creates before a request: an index, not data.
    put(path.join(dir, "do/w-D/metadata.sqlite"), "index");
    put(path.join(dir, "do/w-D/metadata.sqlite-wal"), "");
    put(path.join(legacy, "cache/default/blobs/blob"), "legacy blob");
    put(path.join(legacy, "cache/miniflare-CacheObject/x.sqlite"), "legacy cache");
    put(path.join(dir, "cache/miniflare-CacheObject/x.sqlite"), "plain cache");
    put(path.join(legacy, "observability/store/t.sqlite"), "legacy traces");
    mkdirSync(path.join(dir, "observability"));

    const report = adoptLegacyLayout(paths, "w");

    expect(report.moved.map((m) => m.unit)).toEqual([
      "do/w-A",
      "do/w-C",
      "do/w-D",
      "observability",
    ]);
    // Set aside (kept, never deleted): the empty do/w-C, do/w-D's index, the empty observability.
    expect(report.setAside).toHaveLength(3);
    const asideD = report.setAside.find((p) => path.basename(p).startsWith("do_w-D-"))!;
    expect(readFileSync(path.join(asideD, "metadata.sqlite"), "utf8")).toBe("index");
    expect(readFileSync(path.join(dir, "do/w-D/d.sqlite"), "utf8")).toBe("legacy D");
    expect(report.kept).toEqual([
      { unit: "cache", from: path.join(legacy, "cache"), to: path.join(dir, "cache") },
      { unit: "do/w-B", from: path.join(legacy, "do/w-B"), to: path.join(dir, "do/w-B") },
    ]);
    expect(readFileSync(path.join(dir, "do/w-A/a.sqlite"), "utf8")).toBe("legacy A");
    expect(readFileSync(path.join(dir, "do/w-C/c.sqlite"), "utf8")).toBe("legacy C");
    expect(readFileSync(path.join(dir, "observability/store/t.sqlite"), "utf8")).toBe(
      "legacy traces",
    );
    expect(readFileSync(path.join(dir, "do/w-B/b.sqlite"), "utf8")).toBe("plain B");
    expect(readFileSync(path.join(legacy, "do/w-B/b.sqlite"), "utf8")).toBe("legacy B");
    // The cache's blobs stay with its objects: neither moves when one would collide.
    expect(existsSync(path.join(dir, "cache/default"))).toBe(false);
    expect(readFileSync(path.join(legacy, "cache/default/blobs/blob"), "utf8")).toBe("legacy blob");
    expect(readFileSync(path.join(legacy, "cache/miniflare-CacheObject/x.sqlite"), "utf8")).toBe(
      "legacy cache",
    );
    expect(existsSync(path.join(legacy, "do/w-A"))).toBe(false);
    // A second run has nothing left to move and keeps reporting the two conflicts.
    const second = adoptLegacyLayout(paths, "w");
    expect(second.moved).toEqual([]);
    expect(second.kept.map((k) => k.unit)).toEqual(["cache", "do/w-B"]);
  });

  it("does nothing for a worker with no legacy directory", () => {
    expect(adoptLegacyLayout(paths, "other")).toMatchObject({ moved: [], kept: [] });
  });
});

interface SameWorkerStatus {
  owners: {
    clients: { pid: number; worker: string; alive: boolean }[];
    sameWorkerSessions: { worker: string; pids: number[] }[];
  }[];
}

describe("two live sessions of one worker on one root (real sessions)", () => {
  const sandbox = new Sandbox({ graceMs: 3000, idleMs: 1000 });
  afterAll(() => sandbox.cleanup());
  const status = async (...args: string[]) => {
    const result = await sandbox.run([
      "storage-owner",
      "status",
      ...args,
      "--persist-to",
      sandbox.persistTo,
    ]);
    expect(result.code).toBe(0);
    return result.stdout;
  };
  const statusJson = async () => JSON.parse(await status("--json")) as SameWorkerStatus;

  it("warns in the second session and in storage-owner status (table and --json)", async () => {
    const [first, api] = await Promise.all([
      startCounter(sandbox, true),
      sandbox.startSession("api"),
    ]);
    // One session per worker: no warning anywhere.
    expect((await statusJson()).owners[0]!.sameWorkerSessions).toEqual([]);
    expect(await status()).not.toContain("dev sessions of worker");

    const second = await startCounter(sandbox, true);
    const json = await statusJson();
    const pids = json.owners[0]!.clients.filter((c) => c.worker === WORKER && c.alive)
      .map((c) => c.pid)
      .sort((a, b) => a - b);
    expect(pids).toHaveLength(2);
    expect(json.owners[0]!.sameWorkerSessions).toEqual([{ worker: WORKER, pids }]);
    const warning =
      `⚠ 2 dev sessions of worker "${WORKER}" (pids ${pids.join(", ")}) use ${sandbox.persistRoot}: ` +
      `Durable Objects, Cache and Workflows are not shared through the owner`;
    expect(await status()).toContain(`  ${warning}`);
    expect(second.output()).toContain(`⎔ [x-shared-storage] ${warning}`);
    expect(first.output()).not.toContain("dev sessions of worker");
    expect(api.output()).not.toContain("dev sessions of worker");

    // What the warning is about, measured (not asserted: how many fail depends on timing).
    const results = await Promise.all(
      [first, second].flatMap((s) =>
        Array.from({ length: 40 }, () => post(s.url("/do/contended"))),
      ),
    );
    const failed = results.filter((r) => !r.ok);
    console.log(
      `[two sessions of one worker] ${failed.length} of ${results.length} concurrent Durable Object increments failed` +
        (failed[0]
          ? ` (HTTP ${failed[0].status}: ${/internal error[^\\<'"]*/.exec(failed[0].body)?.[0] ?? failed[0].body.slice(0, 120)})`
          : ""),
    );

    await sandbox.stopSession(second);
    expect((await statusJson()).owners[0]!.sameWorkerSessions).toEqual([]);
    await Promise.all([first, api].map((s) => sandbox.stopSession(s)));
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});
