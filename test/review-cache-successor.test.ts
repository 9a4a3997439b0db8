// Review repro: the owner's successor inherits the environment of whichever session elected it.
// One elected by a session with WRANGLER_X_POOLED_STORAGE=0 offers no sockets (no cache socket);
// the sessions whose config routes their Cache to the stable link then fail every cache call
// until they reload, far past the failover bound test/cache.test.ts holds (1.5 s).
import { execFileSync } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { procPids, procStat, commandLine } from "../src/process-info.js";
import { addCacheWorker } from "./harness/review-cache.js";
import { Sandbox, waitFor } from "./harness/sandbox.js";

/** The real wrangler under our bin's session pid: the process whose preload watches the owner. */
function wranglerOf(sessionPid: number): number {
  const pid = procPids().find(
    (p) => procStat(p)?.ppid === sessionPid && commandLine(p).includes("wrangler-dist"),
  );
  if (pid === undefined) throw new Error(`no wrangler under ${sessionPid}`);
  return pid;
}

describe.skipIf(process.platform !== "linux")("review: a successor elected by another env", () => {
  let sandbox: Sandbox | undefined;
  afterEach(async () => {
    await sandbox?.cleanup();
    sandbox = undefined;
  });

  it("a pooled session's cache calls work again within 5 s after its owner is replaced by one a WRANGLER_X_POOLED_STORAGE=0 session elected", async () => {
    sandbox = new Sandbox();
    sandbox.env.WRANGLER_X_OWNER_STANDBY = "0";
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    const a = await sandbox.startSession("cachea");
    await sandbox.startSession("cacheb", { env: { WRANGLER_X_POOLED_STORAGE: "0" } });
    const first = sandbox.owner()!;
    expect(first.pooledSockets).toBeDefined();
    // a's watch is held still (a busy machine), so b's is the one that elects the successor.
    const watcher = wranglerOf(a.pid);
    process.kill(watcher, "SIGSTOP");
    let next;
    try {
      process.kill(first.pid, "SIGKILL");
      next = await waitFor(
        "b to elect a new owner",
        () => {
          const o = sandbox!.owner();
          return o && o.pid !== first.pid && o.phase === "running" ? o : undefined;
        },
        30_000,
      );
    } finally {
      process.kill(watcher, "SIGCONT");
    }
    const env = execFileSync("cat", [`/proc/${next.pid}/environ`], { encoding: "utf8" });
    console.log(
      `[review] successor ${next.pid}: pooledSockets ${next.pooledSockets}; WRANGLER_X_POOLED_STORAGE=0 in its env: ${env.split("\0").includes("WRANGLER_X_POOLED_STORAGE=0")}`,
    );
    const since = Date.now();
    let last = "";
    const ok = await waitFor(
      "a's cache put+match to work again",
      async () => {
        try {
          await fetch(a.url("/put/again"), { method: "PUT", body: "again" });
          const got = await (await fetch(a.url("/match/again"))).text();
          last = got;
          return (JSON.parse(got) as { body?: string }).body === "again";
        } catch (error) {
          last = String(error);
          return false;
        }
      },
      20_000,
      200,
    ).then(
      () => true,
      () => false,
    );
    console.log(
      `[review] a's cache ${ok ? `works again after ${Date.now() - since} ms` : `still failing after 20 s: ${last.slice(0, 200)}`}`,
    );
    expect(ok).toBe(true);
    expect(Date.now() - since).toBeLessThan(5000);
  });
});
