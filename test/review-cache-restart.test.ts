// Review repro: while the owner's miniflare restarts its crashed workerd, it removes the cache
// socket file (owner-cache.ts, at config assembly) before the new workerd binds it. A session
// whose config is assembled in that window (a reload) sees no cache socket and keeps its own
// Cache (session-cache.ts's cacheSocketListening), beside the owner's: two writers.
import { appendFileSync, existsSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { linkTarget } from "../src/pooled/sockets.js";
import { addCacheWorker, putsAndLookups } from "./harness/review-cache.js";
import { Sandbox, sleep, waitFor } from "./harness/sandbox.js";

describe.skipIf(process.platform !== "linux")("review: the owner's workerd restarting", () => {
  let sandbox: Sandbox | undefined;
  afterEach(async () => {
    await sandbox?.cleanup();
    sandbox = undefined;
  });

  it("a reload while the owner's workerd restarts loses no cache entry", async () => {
    sandbox = new Sandbox();
    sandbox.env.WRANGLER_X_OWNER_STANDBY = "0";
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    const [a, b] = await Promise.all([
      sandbox.startSession("cachea"),
      sandbox.startSession("cacheb"),
    ]);
    const owner = sandbox.owner()!;
    const socket = path.join(linkTarget(owner.pooledSockets!)!, "cache");
    expect(existsSync(socket)).toBe(true);
    process.kill(owner.workerd![0]!.pid, "SIGKILL");
    // The moment miniflare's reassembly removed the socket: hold the owner there (a slow restart).
    const deadline = Date.now() + 10_000;
    while (existsSync(socket) && Date.now() < deadline) await sleep(1);
    process.kill(owner.pid, "SIGSTOP");
    try {
      expect(existsSync(socket)).toBe(false);
      appendFileSync(path.join(sandbox.workerDir("cachea"), "index.js"), "\n// edited\n");
      await waitFor("session a to reload", () => /Local server updated/i.test(a.output()), 30_000);
    } finally {
      process.kill(owner.pid, "SIGCONT");
    }
    await waitFor("the cache socket again", () => existsSync(socket), 20_000);
    await sandbox.waitReady(a);
    const { failed, found, holders } = await putsAndLookups(sandbox, [a, b], "restart-");
    expect(failed).toEqual([0, 0]);
    expect(found).toEqual([100, 100, 100, 100]);
    expect(holders.filter((h) => h !== "owner")).toEqual([]);
  });
});
