// Sessions that share a persist directory find the owner through a dev registry, which each
// terminal's environment chooses. For every way of choosing it: sessions that agree share one
// owner with a live standby and fail over fast; a session whose registry differs refuses, naming
// both registries, and writes nothing.
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspectRoot } from "../src/owner/inspect.js";
import { liveness } from "../src/process-info.js";
import { rootPaths } from "../src/records.js";
import { ownerCandidateName, storageCandidates } from "../src/storage-candidate.js";
import {
  failedWindow,
  sampleHolders,
  steadyLoad,
  waitForCleanTraffic,
  waitUntilAllWrite,
} from "./harness/load.js";
import { killGroup, post, Sandbox, type Session, sleep, waitFor } from "./harness/sandbox.js";

interface Setting {
  name: string;
  /** The environment of the sessions that share, and where their registry is. */
  env: (dir: string) => NodeJS.ProcessEnv;
  registry: (dir: string) => string;
}

const settings: Setting[] = [
  {
    name: "WRANGLER_REGISTRY_PATH",
    env: (dir) => ({ WRANGLER_REGISTRY_PATH: path.join(dir, "wrangler-registry") }),
    registry: (dir) => path.join(dir, "wrangler-registry"),
  },
  {
    name: "CLOUDFLARE_DEV_REGISTRY_PATH",
    env: (dir) => ({
      WRANGLER_REGISTRY_PATH: undefined,
      CLOUDFLARE_DEV_REGISTRY_PATH: path.join(dir, "cf-registry"),
    }),
    registry: (dir) => path.join(dir, "cf-registry"),
  },
  {
    name: "XDG_CONFIG_HOME",
    env: (dir) => ({
      WRANGLER_REGISTRY_PATH: undefined,
      HOME: path.join(dir, "home-without-wrangler"),
      XDG_CONFIG_HOME: path.join(dir, "xdg"),
    }),
    registry: (dir) => path.join(dir, "xdg", ".wrangler", "registry"),
  },
  {
    name: "the default (no setting; ~/.wrangler exists)",
    env: (dir) => ({
      WRANGLER_REGISTRY_PATH: undefined,
      HOME: path.join(dir, "home"),
      XDG_CONFIG_HOME: undefined,
    }),
    registry: (dir) => path.join(dir, "home", ".wrangler", "registry"),
  },
];

describe.each(settings)("dev registry chosen by $name", (setting) => {
  const sandbox = new Sandbox();
  let env: NodeJS.ProcessEnv;
  let sessions: Session[];
  beforeAll(async () => {
    mkdirSync(path.join(sandbox.dir, "home", ".wrangler"), { recursive: true });
    mkdirSync(path.join(sandbox.dir, "home-without-wrangler"), { recursive: true });
    // spawn() leaves out variables whose value is undefined: the setting unsets them.
    env = setting.env(sandbox.dir);
    sessions = await Promise.all(["api", "jobs"].map((w) => sandbox.startSession(w, { env })));
  });
  afterAll(() => sandbox.cleanup());

  it("shares one owner through that registry, with a live standby, and fails over fast", async () => {
    const registry = setting.registry(sandbox.dir);
    const owner = sandbox.owner()!;
    expect(owner.registryPath).toBe(registry);
    // The owner's candidate is in that registry and is the oldest for the root.
    expect(storageCandidates(registry, sandbox.persistRoot)[0]?.name).toBe(
      ownerCandidateName(sandbox.persistRoot),
    );
    const standby = await waitFor(
      "the standby to be ready",
      () => {
        const report = inspectRoot(sandbox.persistRoot).standby;
        return report?.alive && report.phase === "ready" && report.backs === owner.pid
          ? report
          : undefined;
      },
      30_000,
    );
    // It registered nowhere the sessions look (CLOUDFLARE_DEV_REGISTRY_PATH made it do so once).
    expect(storageCandidates(registry, sandbox.persistRoot)).toHaveLength(3); // owner + 2 sessions
    await sleep(1500);
    expect(liveness(standby)).toBe("alive");

    const sampler = sampleHolders(sandbox.persistRoot, 25);
    const load = steadyLoad(sessions, "registry");
    await sleep(500);
    const killedAt = Date.now();
    killGroup(owner.pid, "SIGKILL");
    await waitForCleanTraffic(load, killedAt, { minMs: 1500, timeoutMs: 20_000 });
    await load.stop();
    await sampler.stop();
    const window = failedWindow(load.results, killedAt);
    console.log(
      `[${setting.name}] kill -9 of the owner at ${new Date(killedAt).toISOString()}: ${window.failures} failed, last failure ${window.recoveredAfterMs} ms after the kill`,
    );
    const next = sandbox.owner()!;
    expect(next.pid).toBe(standby.pid);
    // The bench measures the goal (<= 0.5 s); this bound only catches a standby that did not act.
    expect(window.recoveredAfterMs).toBeLessThan(1500);
    // Never two holders, and every holder a workerd that an owner recorded as its own.
    expect(Math.max(...sampler.samples.map((s) => s.holders.length))).toBe(1);
    const recorded = [...(owner.workerd ?? []), ...(next.workerd ?? [])].map((w) => w.pid);
    for (const { holders } of sampler.samples)
      for (const pid of holders) expect(recorded).toContain(pid);
  });

  it("refuses a session of the same persist directory whose registry differs, naming both, writing nothing", async () => {
    const owner = sandbox.owner()!;
    const other = path.join(sandbox.dir, "another-registry");
    const clientsBefore = readdirSync(rootPaths(sandbox.persistRoot).clientsDir).sort();
    const stray = await sandbox.startSession("admin", {
      env: { ...env, WRANGLER_REGISTRY_PATH: other, CLOUDFLARE_DEV_REGISTRY_PATH: other },
      wait: false,
    });
    const code = await stray.exited;
    expect(code).not.toBe(0);
    const output = stray.output();
    expect(output).toContain(owner.registryPath);
    expect(output).toContain(other);
    expect(output).toContain("must share a dev registry");
    expect(output).not.toMatch(/\n\s+at /); // one clear message, no stack trace
    expect(readdirSync(rootPaths(sandbox.persistRoot).clientsDir).sort()).toEqual(clientsBefore);
    expect(existsSync(path.join(other, ownerCandidateName(sandbox.persistRoot)))).toBe(false);
    expect(sandbox.owner()!.pid).toBe(owner.pid);
    const results = await Promise.all(sessions.map((s) => post(s.url("/d1/insert?who=after"))));
    expect(results.every((r) => r.ok)).toBe(true);
  });
});

describe("a session of another dev registry while no owner is alive", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("is refused because live sessions found the root through another registry", async () => {
    const sessions = await Promise.all(["api", "jobs"].map((w) => sandbox.startSession(w)));
    const owner = sandbox.owner()!;
    const standby = await waitFor(
      "the standby",
      () => inspectRoot(sandbox.persistRoot).standby ?? undefined,
      30_000,
    );
    // The sessions cannot elect while stopped; the owner and its standby are gone.
    for (const s of sessions) killGroup(s.pid, "SIGSTOP");
    try {
      killGroup(standby.pid, "SIGKILL");
      killGroup(owner.pid, "SIGKILL");
      await waitFor("the owner to be dead", () => liveness(owner) !== "alive", 10_000);
      const other = path.join(sandbox.dir, "another-registry");
      const stray = await sandbox.startSession("admin", {
        env: { WRANGLER_REGISTRY_PATH: other },
        wait: false,
      });
      expect(await stray.exited).not.toBe(0);
      expect(stray.output()).toContain(`use the dev registry ${sandbox.registry}`);
      expect(stray.output()).toContain(other);
      expect(existsSync(path.join(other, ownerCandidateName(sandbox.persistRoot)))).toBe(false);
    } finally {
      for (const s of sessions) killGroup(s.pid, "SIGCONT");
    }
    // Resumed, the sessions elect a new owner through their own registry and write again.
    await waitUntilAllWrite(sessions, "back", 30_000, "the sessions to write again");
  });
});
