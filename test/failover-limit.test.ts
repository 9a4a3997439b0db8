// failover recovery's start limit on real processes. The owner's
// "workerd" is a wrapper that kills its owner (a crash during startup) while a counter file says
// so, else runs the real workerd. No standby: the session's own recovery starts every owner.
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rootPaths } from "../src/records.js";
import { succeeds, waitForOwner } from "./harness/records.js";
import { killGroup, post, Sandbox, type Session, waitFor } from "./harness/sandbox.js";

describe.each([
  ["", false],
  [", with WRANGLER_X_PROCESS_INFO=portable", true],
])("failover recovery's limit of owner starts%s", (_, portable) => {
  const sandbox = new Sandbox();
  if (portable) sandbox.env.WRANGLER_X_PROCESS_INFO = "portable";
  const crashes = path.join(sandbox.dir, "crashes-left");
  const wrapper = path.join(sandbox.dir, "crashing-workerd.sh");
  const realWorkerd = createRequire(import.meta.url).resolve("workerd/bin/workerd");
  let first: Session;
  beforeAll(async () => {
    writeFileSync(crashes, "0");
    writeFileSync(
      wrapper,
      `#!/bin/sh\nn=$(cat "${crashes}")\nif [ "$n" -gt 0 ]; then echo $((n-1)) > "${crashes}"; kill -9 $PPID; sleep 5; exit 1; fi\nexec "${realWorkerd}" "$@"\n`,
    );
    chmodSync(wrapper, 0o755);
    Object.assign(sandbox.env, {
      WRANGLER_X_OWNER_WORKERD_PATH: wrapper,
      WRANGLER_X_OWNER_STANDBY: "0",
      WRANGLER_X_OWNER_START_TIMEOUT_MS: "60000",
    });
    first = await sandbox.startSession("api");
  });
  afterAll(() => sandbox.cleanup());

  it("does not claim three startup exits when only two owners exited (the third serves)", async () => {
    const owner = sandbox.owner()!;
    const before = first.output().length;
    writeFileSync(crashes, "2"); // the next two owners crash during startup; the third serves
    killGroup(owner.pid, "SIGKILL");
    const next = await waitForOwner(sandbox, "an owner to serve", succeeds(owner.pid), 40_000);
    await waitFor(
      "the session to route to it",
      async () => ((await post(first.url("/d1/insert?who=limit"))).ok ? true : undefined),
      20_000,
    );
    await waitFor(
      "the session's watch to join it",
      () => first.output().slice(before).includes(`storage owner is now pid ${next.pid}`),
      10_000,
    );
    const said = first.output().slice(before);
    const log = readFileSync(rootPaths(sandbox.persistRoot).ownerLog, "utf8");
    console.log(`session said after the kill:\n${said}`);
    expect(log.match(/: starting for /g)!.length).toBeGreaterThanOrEqual(4);
    expect(next.pid).not.toBe(owner.pid);
    // Only two owners exited during startup; the third one serves.
    expect(said).not.toContain("exited during startup 3 times");
  });

  it("after giving up, joins an owner another session starts", async () => {
    const owner = sandbox.owner()!;
    const before = first.output().length;
    writeFileSync(crashes, "3");
    killGroup(owner.pid, "SIGKILL");
    await waitFor(
      "the session to give up",
      () => (first.output().slice(before).includes("starts no further owner") ? true : undefined),
      40_000,
    );
    const said = first.output().slice(before);
    expect(said).toContain(`Owner log ${rootPaths(sandbox.persistRoot).ownerLog}`);
    await waitFor(
      "the third crash",
      () => (readFileSync(crashes, "utf8").trim() === "0" ? true : undefined),
      20_000,
    );
    const second = await sandbox.startSession("jobs");
    const next = sandbox.owner()!;
    expect(next.phase).toBe("running");
    await waitFor(
      "the first session to route to the new owner",
      async () => ((await post(first.url("/d1/insert?who=limit-b"))).ok ? true : undefined),
      20_000,
    );
    // Its watch joins too (a lifeline to it, within one 2 s check): it is not stuck "gave up".
    await waitFor(
      "the first session's watch to join the new owner",
      () => first.output().slice(before).includes(`storage owner is now pid ${next.pid}`),
      10_000,
    );
    await Promise.all([first, second].map((s) => sandbox.stopSession(s)));
  });
});
