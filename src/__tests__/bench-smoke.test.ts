// One tiny iteration of `npm run bench`, so it cannot rot. Its figures are not asserted.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, expect, it } from "vitest";
import { groupGone, killGroup, NODE, REPO, Sandbox, waitFor } from "../harness/sandbox.js";

const sandbox = new Sandbox();
afterAll(() => sandbox.cleanup());

it("runs every figure for every contender and writes its results", async () => {
  const out = path.join(sandbox.dir, "results.json");
  const bench = spawn(
    NODE,
    [path.join(REPO, "dist", "bench", "main.js"), "--smoke", "--out", out],
    {
      cwd: REPO,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    },
  );
  let output = "";
  bench.stdout.on("data", (d) => (output += d));
  bench.stderr.on("data", (d) => (output += d));
  const timer = setTimeout(() => killGroup(bench.pid!, "SIGKILL"), 170_000);
  const code = await new Promise<number | null>((resolve) => bench.on("close", resolve));
  clearTimeout(timer);
  expect(code, output).toBe(0);
  const results = JSON.parse(readFileSync(out, "utf8")) as Record<string, Record<string, unknown>>;
  expect(Object.keys(results.correctness!)).toEqual(["plain", "upstream", "ours"]);
  expect(results.latency).toHaveProperty("ours");
  expect(results.ready).toHaveProperty("warmMs");
  expect(results.passthrough).toHaveProperty("statusMs");
  expect(output).toContain("failed window after kill -9 of the owner");
  await waitFor("the bench's process group to be gone", () => groupGone(bench.pid!), 10_000);
});
