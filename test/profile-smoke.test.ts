// One tiny iteration of `npm run bench -- --profile`, so it cannot rot. Its figures are not
// asserted; what is: every part ran, and workerd refused a debug-port client kept at module
// scope for a second request (the fact the "Where the time goes" section rests on).
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, expect, it } from "vitest";
import { REPO, Sandbox, TOOL_RUNNER } from "./harness/sandbox.js";

const sandbox = new Sandbox();
afterAll(() => sandbox.cleanup());

it("profiles every path and writes its results", async () => {
  const out = path.join(sandbox.dir, "profile.json");
  const { code, stdout, stderr } = await sandbox.run(
    [path.join(REPO, "bench", "main.ts"), "--profile", "--smoke", "--out", out],
    {
      bin: TOOL_RUNNER,
      timeoutMs: 200_000,
    },
  );
  expect(code, stdout + stderr).toBe(0);
  const results = JSON.parse(readFileSync(out, "utf8")) as {
    http: Record<string, Record<string, unknown>>;
    loopPerCallMs: Record<string, Record<string, number>>;
    probe: { moduleScope: string[]; loopPerCallMs: Record<string, number> };
    oursRoute: string;
    oursOverPlain: Record<string, Record<string, number>>;
  };
  expect(Object.keys(results.http["D1 insert"]!)).toEqual([
    "plain",
    "mfOwning",
    "mfNonOwning",
    "ours",
  ]);
  expect(results.loopPerCallMs["KV get"]!.ours).toBeGreaterThan(0);
  expect(results.probe.loopPerCallMs["kv-raw-reuse"]).toBeGreaterThan(0);
  expect(results.probe.moduleScope[0]).toMatch(/^200 /);
  expect(results.probe.moduleScope[1]).toMatch(/^500 .*different request/);
  expect(stdout).toContain("Where the time goes");
  // The pooled path's own breakdown: which route ours took, and the owner's share per call.
  expect(results.oursRoute).toMatch(/pooled/);
  expect(Object.keys(results.oursOverPlain["KV put"]!)).toContain("ownerWorkerdCpuMs");
  expect(await sandbox.settledLeftovers()).toEqual([]);
}, 220_000);
