// One tiny iteration of `npm run bench`, so it cannot rot. Its figures are not asserted.
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, expect, it } from "vitest";
import { REPO, Sandbox, TOOL_RUNNER } from "./harness/sandbox.js";

const sandbox = new Sandbox();
afterAll(() => sandbox.cleanup());

it("runs every figure for every contender and writes its results", async () => {
  const out = path.join(sandbox.dir, "results.json");
  const { code, stdout, stderr } = await sandbox.run(
    [path.join(REPO, "bench", "main.ts"), "--smoke", "--out", out],
    {
      bin: TOOL_RUNNER,
      timeoutMs: 280_000,
    },
  );
  expect(code, stdout + stderr).toBe(0);
  const results = JSON.parse(readFileSync(out, "utf8")) as Record<string, Record<string, unknown>>;
  expect(Object.keys(results.correctness!)).toEqual(["plain", "upstream", "ours"]);
  // The Cache row: both contenders ran the load (figures not asserted beyond that it ran).
  for (const contender of ["plain", "ours"]) {
    expect(results.cache).toHaveProperty([contender, "foundOf"], 20);
    expect(results.cache).toHaveProperty([contender, "mixedRounds"], 20);
    expect(results.cache).toHaveProperty([contender, "found"], expect.any(Array));
  }
  expect(stdout).toContain("cache: 2 × 10 concurrent put/match/delete rounds");
  expect(results.latency).toHaveProperty("ours");
  expect(results.ready).toHaveProperty("warmMs");
  // Rows that miss a goal say what the cost is made of: these figures must be there to say it.
  expect(results.ready).toHaveProperty("coldPhasesMs.ownerMiniflareMs");
  expect(results.idle).toHaveProperty("ours.byRole");
  expect(results.latency).toHaveProperty(["ours", "cpuPerCallMs", "KV put"]);
  expect(results.passthrough).toHaveProperty("statusMs");
  expect(stdout).toContain("failed window after kill -9 of the owner");
  expect(stdout).toContain("kill -9 of the owner 1 s after the sessions are ready");
  expect(stdout).toContain("idle CPU-s");
  expect(stdout).toContain("goal ≤ 1.05× (floor 1.10×)");
  expect(await sandbox.settledLeftovers()).toEqual([]);
}, 300_000);
