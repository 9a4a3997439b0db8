// Review repros: sessions on one root whose Cache routes differ. A session that keeps its own
// Cache ("cache: session") opens <root>/cache/ in its own workerd while the owner's workerd serves
// the other sessions' cache calls from the same files: two writers, which docs/experimental.md
// says never happens with --x-shared-storage ("only the owner's workerd opens them").
import { appendFileSync, copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { inspectRoot } from "../src/owner/inspect.js";
import {
  getJson,
  parentPid,
  processesWithOpen,
  Sandbox,
  type Session,
  waitFor,
} from "./harness/sandbox.js";

const WORKER = path.join(import.meta.dirname, "fixtures", "cache-worker", "index.js");

function addCacheWorker(sandbox: Sandbox, name: string): void {
  const dir = sandbox.workerDir(name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(WORKER, path.join(dir, "index.js"));
  writeFileSync(
    path.join(dir, "wrangler.jsonc"),
    JSON.stringify({ name, main: "index.js", compatibility_date: "2025-11-01" }),
  );
}

/** Cache entry files (each cache's database, blobs): not the namespace's metadata.sqlite. */
const isCacheFile = (persistRoot: string) => (file: string) =>
  file.startsWith(path.join(persistRoot, "cache") + path.sep) &&
  (/\/[0-9a-f]{64}\.sqlite(-wal|-shm)?$/.test(file) || /\/blobs\//.test(file));

/** Puts from both sessions, then who holds the root's cache entry files, by parent pid. */
async function holdersAfterPuts(sandbox: Sandbox, sessions: Session[]) {
  const results = await Promise.all(
    sessions.map((s, i) => getJson<{ failed: number }>(s.url(`/bulk-put?n=50&prefix=p${i}`))),
  );
  expect(results.map((r) => r.failed)).toEqual(sessions.map(() => 0));
  const holders = processesWithOpen(isCacheFile(sandbox.persistRoot));
  expect(holders.length).toBeGreaterThan(0);
  const owner = sandbox.owner()!;
  const parents = holders.map(parentPid);
  // Which process each holder's parent is: the owner, or a session's wrangler (its grandparent
  // being our bin, the session's pid).
  const who = parents.map((p) =>
    p === owner.pid
      ? "owner"
      : `session ${sessions.find((s) => s.pid === parentPid(p!))?.worker ?? `? (pid ${p})`}`,
  );
  console.log(`[review] cache entry holders: ${who.join(", ")}`);
  return { owner, parents };
}

describe.skipIf(process.platform !== "linux")("review: mixed Cache routes on one root", () => {
  let sandbox: Sandbox | undefined;
  afterEach(async () => {
    await sandbox?.cleanup();
    sandbox = undefined;
  });

  it("a session with WRANGLER_X_POOLED_STORAGE=0 beside a pooled one: only the owner's workerd holds cache entries", async () => {
    sandbox = new Sandbox();
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    const a = await sandbox.startSession("cachea");
    const b = await sandbox.startSession("cacheb", { env: { WRANGLER_X_POOLED_STORAGE: "0" } });
    const { owner, parents } = await holdersAfterPuts(sandbox, [a, b]);
    console.log(
      `[review] cache entry holders' parents: ${parents.join(", ")} (owner ${owner.pid}, sessions ${a.pid}, ${b.pid}); routes ${inspectRoot(
        sandbox.persistRoot,
      )
        .clients.map((c) => c.storageRoute)
        .join(" | ")}`,
    );
    expect(parents).toEqual(parents.map(() => owner.pid));
  });

  it("a reload while the owner record names no pooled sockets (a starting owner): the session keeps no Cache of its own", async () => {
    sandbox = new Sandbox();
    sandbox.env.WRANGLER_X_OWNER_STANDBY = "0";
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    const [a, b] = await Promise.all([
      sandbox.startSession("cachea"),
      sandbox.startSession("cacheb"),
    ]);
    const first = sandbox.owner()!;
    expect(first.pooledSockets).toBeDefined();
    // Kill the owner; hold its successor in its start (phase "starting", no pooledSockets), as a
    // slow machine would, and let session a reload its worker meanwhile.
    process.kill(first.pid, "SIGKILL");
    const starting = await waitFor(
      "a new owner to start",
      () => {
        const o = sandbox!.owner();
        return o && o.pid !== first.pid && o.phase === "starting" ? o : undefined;
      },
      20_000,
      5,
    );
    process.kill(starting.pid, "SIGSTOP");
    try {
      const file = path.join(sandbox.workerDir("cachea"), "index.js");
      appendFileSync(file, "\n// reloaded\n");
      await waitFor(
        "session a to reload",
        () => /Reloading local server|Local server updated/i.test(a.output()),
        30_000,
      );
    } finally {
      process.kill(starting.pid, "SIGCONT");
    }
    await waitFor(
      "the new owner to serve its sockets",
      () => {
        const o = sandbox!.owner();
        return o?.pid === starting.pid && o.phase === "running" && o.pooledSockets ? o : undefined;
      },
      30_000,
    );
    await sandbox.waitReady(a);
    const { owner, parents } = await holdersAfterPuts(sandbox, [a, b]);
    console.log(
      `[review] after the reload: holders' parents ${parents.join(", ")} (owner ${owner.pid}, sessions ${a.pid}, ${b.pid})`,
    );
    expect(parents).toEqual(parents.map(() => owner.pid));
  });
});
