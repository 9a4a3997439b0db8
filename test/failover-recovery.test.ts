// A session's failover recovery (src/dev/failover.ts `recover`) keeps the first election's rule
// of three owner starts, on scripted election steps: pure logic, no process started.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ElectionSteps, recover } from "../src/dev/failover.js";
import { tooManyOwnerStarts } from "../src/owner/start-attempts.js";
import type { ElectionStep } from "../src/owner/succession.js";
import { rootPaths } from "../src/records.js";
import { ownerRecordFixture } from "./harness/records.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "recovery-"));
const paths = rootPaths(path.join(dir, "v3"));
const dead = ownerRecordFixture({ pid: 100 });
const saved = process.env.WRANGLER_X_OWNER_START_TIMEOUT_MS;
beforeAll(() => {
  // Without the rule, recovery runs until this timeout: short, so that such a run fails quickly.
  process.env.WRANGLER_X_OWNER_START_TIMEOUT_MS = "3000";
});
afterAll(() => {
  if (saved === undefined) delete process.env.WRANGLER_X_OWNER_START_TIMEOUT_MS;
  else process.env.WRANGLER_X_OWNER_START_TIMEOUT_MS = saved;
  rmSync(dir, { recursive: true, force: true });
});

/** An election that answers `steps` in turn (a start it may not make: `exhausted`), then waits. */
function scripted(steps: ElectionStep[]): ElectionSteps & { calls: number } {
  return {
    calls: 0,
    step(_notes, { mayStart = true } = {}) {
      const step = steps[this.calls++] ?? { kind: "wait", reason: "nothing scripted" };
      return step.kind === "spawned" && !mayStart ? { kind: "exhausted" } : step;
    },
  };
}

describe("failover recovery", () => {
  it("gives up when the third started owner died too, as the first election does, naming the owner log", async () => {
    const election = scripted([
      { kind: "spawned", pid: 201 },
      { kind: "wait", reason: "owner pid 201 is starting" },
      { kind: "spawned", pid: 202 },
      { kind: "wait", reason: "owner pid 202 is starting" },
      { kind: "spawned", pid: 203 },
      { kind: "wait", reason: "owner pid 203 is starting" },
      { kind: "spawned", pid: 204 }, // would replace the third: refused to the caller
      { kind: "spawned", pid: 205 },
    ]);
    const said: string[] = [];
    const outcome = await recover(election, paths, dead, (m) => said.push(m));
    expect(outcome).toEqual({ kind: "gaveUp" });
    expect(election.calls).toBe(7); // no step after the one that would start a fourth
    expect(said.filter((m) => m.startsWith("started storage owner pid"))).toHaveLength(3);
    const last = said.at(-1)!;
    expect(last).toContain("✘ the storage owner exited during startup 3 times");
    expect(last).toContain(`Owner log ${paths.ownerLog}`);
    expect(said.join("\n")).not.toContain("after 3000 ms");
  });

  it("takes the third started owner when it serves, without a word of giving up", async () => {
    const next = ownerRecordFixture({ pid: 203 });
    const election = scripted([
      { kind: "spawned", pid: 201 },
      { kind: "spawned", pid: 202 },
      { kind: "spawned", pid: 203 },
      { kind: "ready", owner: next },
    ]);
    const said: string[] = [];
    expect(await recover(election, paths, dead, (m) => said.push(m))).toEqual({
      kind: "served",
      owner: next,
    });
    expect(said.at(-1)).toBe(`storage owner is now pid 203 at ${next.debugAddress}`);
    expect(said.join("\n")).not.toContain("exited during startup");
  });

  it("shares the rule with the first election", () => {
    expect([0, 1, 2, 3].map(tooManyOwnerStarts)).toEqual([
      undefined,
      undefined,
      undefined,
      "the storage owner exited during startup 3 times",
    ]);
  });
});
