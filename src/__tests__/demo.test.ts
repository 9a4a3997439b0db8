// `npm run demo` in its short mode: it must finish cleanly and leave nothing running.
import path from "node:path";
import { afterAll, expect, it } from "vitest";
import { liveness } from "../process-info.js";
import { REPO, Sandbox } from "../harness/sandbox.js";

const sandbox = new Sandbox();
afterAll(() => sandbox.cleanup());

it("the demo explains itself, writes from both sessions without failure and cleans up", async () => {
  const { code, stdout, stderr } = await sandbox.run(["--short"], {
    bin: path.join(REPO, "dist", "harness", "demo.js"),
    timeoutMs: 150_000,
  });
  expect(code, stdout + stderr).toBe(0);
  expect(stdout).toContain("40 of 40 inserts succeeded, 0 failed");
  expect(stdout).toContain('jobs reads KV "greeting" written by api: "hello from api"');
  expect(stdout).toMatch(/owner\s+pid \d+ · running/);
  expect(stdout).toContain("nothing left running");
  const owner = Number(stdout.match(/storage owner: pid (\d+)/)![1]);
  expect(liveness({ pid: owner })).not.toBe("alive");
  expect(await sandbox.settledLeftovers()).toEqual([]);
});
