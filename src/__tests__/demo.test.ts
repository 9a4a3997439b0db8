// `npm run demo` in its short mode: it must finish cleanly and leave nothing running.
import { spawn } from "node:child_process";
import path from "node:path";
import { expect, it } from "vitest";
import { liveness } from "../process-info.js";
import { groupGone, killGroup, NODE, REPO, waitFor } from "../harness/sandbox.js";

it("the demo explains itself, writes from both sessions without failure and cleans up", async () => {
  const demo = spawn(NODE, [path.join(REPO, "dist", "harness", "demo.js"), "--short"], {
    cwd: REPO,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  demo.stdout.on("data", (d) => (output += d));
  demo.stderr.on("data", (d) => (output += d));
  const timer = setTimeout(() => killGroup(demo.pid!, "SIGKILL"), 150_000);
  const code = await new Promise<number | null>((resolve) => demo.on("close", resolve));
  clearTimeout(timer);
  expect(code, output).toBe(0);
  expect(output).toContain("40 of 40 inserts succeeded, 0 failed");
  expect(output).toContain('jobs reads KV "greeting" written by api: "hello from api"');
  expect(output).toMatch(/owner\s+pid \d+ · running/);
  expect(output).toContain("nothing left running");
  const owner = Number(output.match(/storage owner: pid (\d+)/)![1]);
  expect(liveness({ pid: owner })).not.toBe("alive");
  await waitFor("the demo's process group to be gone", () => groupGone(demo.pid!), 10_000);
});
