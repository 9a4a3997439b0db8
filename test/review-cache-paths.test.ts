// Review experiments: the Cache through the owner with a persist root and a temp dir whose paths
// hold spaces, and with a temp dir too long for the cache socket.
import { mkdirSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { inspectRoot } from "../src/owner/inspect.js";
import { addCacheWorker, putsAndLookups } from "./harness/review-cache.js";
import { Sandbox } from "./harness/sandbox.js";

describe.skipIf(process.platform !== "linux")("review: Cache paths", () => {
  let sandbox: Sandbox | undefined;
  afterEach(async () => {
    await sandbox?.cleanup();
    sandbox = undefined;
  });

  it.each([
    ["spaces in the persist root and the temp dir", "tmp dir with spaces", "state with spaces"],
    ["a temp dir too long for the cache socket", "t".repeat(60), "state"],
  ])("%s: two workers' sessions lose no entry", async (_, tmp, state) => {
    sandbox = new Sandbox();
    const tmpdir = path.join(sandbox.dir, tmp);
    mkdirSync(tmpdir, { recursive: true });
    sandbox.env.TMPDIR = tmpdir;
    const persistTo = path.join(sandbox.dir, state);
    for (const name of ["cachea", "cacheb"]) addCacheWorker(sandbox, name);
    const a = await sandbox.startSession("cachea", { persistTo });
    const b = await sandbox.startSession("cacheb", { persistTo });
    const root = path.join(persistTo, "v3");
    const routes = inspectRoot(root).clients.map((c) => c.storageRoute);
    console.log(`[review] ${tmpdir.length} chars of TMPDIR: routes ${routes.join(" | ")}`);
    const { failed, found } = await putsAndLookups(sandbox, [a, b], "paths-", root);
    expect(failed).toEqual([0, 0]);
    expect(found).toEqual([100, 100, 100, 100]);
  });
});
