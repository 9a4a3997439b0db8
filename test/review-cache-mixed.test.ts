// Review repros: sessions on one root whose Cache routes differ. A session that keeps its own
// Cache ("cache: session") opens <root>/cache/ in its own workerd while the owner's workerd serves
// the other sessions' cache calls from the same files: two writers, and the pooled session's
// entries are lost. docs/experimental.md: "with --x-shared-storage only the owner's workerd opens
// them, and none is lost".
import { appendFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { addCacheWorker, putsAndLookups } from "./harness/review-cache.js";
import { Sandbox, waitFor } from "./harness/sandbox.js";

const ALL_FOUND = [100, 100, 100, 100];

describe.skipIf(process.platform !== "linux")("review: mixed Cache routes on one root", () => {
  let sandbox: Sandbox | undefined;
  afterEach(async () => {
    await sandbox?.cleanup();
    sandbox = undefined;
  });

  it("a session with WRANGLER_X_POOLED_STORAGE=0 beside a pooled one loses no cache entry", async () => {
    sandbox = new Sandbox();
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    const a = await sandbox.startSession("cachea");
    const b = await sandbox.startSession("cacheb", { env: { WRANGLER_X_POOLED_STORAGE: "0" } });
    const { failed, found, holders } = await putsAndLookups(sandbox, [a, b], "pooled0-");
    expect(failed).toEqual([0, 0]);
    expect(found).toEqual(ALL_FOUND);
    expect(holders.length).toBeGreaterThan(0);
    expect(holders.filter((h) => h !== "owner")).toEqual([]);
  });

  it("a reload while the owner record names no pooled sockets (a starting owner) loses no cache entry", async () => {
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
    // slow machine would, and let session a reload its worker meanwhile (an edit, saved).
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
      appendFileSync(path.join(sandbox.workerDir("cachea"), "index.js"), "\n// edited\n");
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
    const { failed, found, holders } = await putsAndLookups(sandbox, [a, b], "reload-");
    expect(failed).toEqual([0, 0]);
    expect(found).toEqual(ALL_FOUND);
    expect(holders.length).toBeGreaterThan(0);
    expect(holders.filter((h) => h !== "owner")).toEqual([]);
  });
});
