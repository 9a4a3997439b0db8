// Installed into a project that pins its own wrangler, we run that wrangler: for passthrough, in
// the sessions (the preload) and in the owner. A wrangler whose miniflare cannot share storage
// gets one clear line for --x-shared-storage and unchanged passthrough for everything else.
import { execFileSync } from "node:child_process";
import { readFileSync, realpathSync, symlinkSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtureProject, type FixtureProject } from "./harness/fixture-project.js";
import { sampleHolders } from "./harness/load.js";
import { getJson, post, Sandbox, type Session, waitFor } from "./harness/sandbox.js";
import { ownerGone } from "../src/owner/assessment.js";
import { listClients, rootPaths } from "../src/records.js";
import { PLATFORM_PROXY_SCRIPT, registeredEnv, writeScript } from "./fixtures/register-scripts.js";

const INSERTS = 60;

function setUp(wrangler: string, options: { legacyPeerDeps?: boolean } = {}) {
  const sandbox = new Sandbox();
  let fixture: FixtureProject;
  beforeAll(() => {
    fixture = fixtureProject(wrangler, sandbox.env, options);
    console.log(`[fixture] wrangler ${wrangler}: install ${fixture.installSeconds} s`);
    // The example project, with the fixture's node_modules as its own.
    symlinkSync(path.join(fixture.dir, "node_modules"), path.join(sandbox.project, "node_modules"));
  }, 600_000);
  afterAll(() => sandbox.cleanup());
  const bin = () => path.join(sandbox.project, "node_modules", ".bin", "wrangler");
  const installed = (pkg: string) =>
    (
      JSON.parse(
        readFileSync(
          path.join(
            path.dirname(
              realpathSync(path.join(sandbox.project, "node_modules", "wrangler", "package.json")),
            ),
            ...(pkg === "wrangler" ? [] : ["..", pkg]),
            "package.json",
          ),
          "utf8",
        ),
      ) as { version: string }
    ).version;
  const npx = (args: string[], cwd = sandbox.project) =>
    execFileSync("npx", ["--no-install", "wrangler", ...args], {
      cwd,
      env: sandbox.env,
      encoding: "utf8",
    });
  return { sandbox, bin, installed, npx };
}

describe.each(["4.160.0", "4.126.0"])("a project that pins wrangler %s", (wrangler) => {
  const { sandbox, bin, installed, npx } = setUp(wrangler);

  it("links our bin as `wrangler`, which passes through to the project's wrangler", () => {
    expect(realpathSync(bin())).toMatch(
      /node_modules\/shared-storage-wrangler\/bin\/wrangler\.mjs$/,
    );
    expect(npx(["--version"]).trim()).toBe(wrangler);
    expect(installed("wrangler")).toBe(wrangler);
  });

  it("shares storage through one owner that runs the project's wrangler and miniflare", async () => {
    const sessions: Session[] = [];
    for (const worker of ["api", "jobs"]) {
      sessions.push(await sandbox.startSession(worker, { bin: bin() }));
    }
    const owner = sandbox.owner()!;
    for (const session of sessions) {
      expect(session.output()).toContain(`served by owner pid ${owner.pid}`);
    }
    expect(owner.versions).toMatchObject({
      wrangler,
      miniflare: installed("miniflare"),
    });
    const results = await Promise.all(
      Array.from({ length: INSERTS }, (_, i) =>
        post(sessions[i % 2]!.url(`/d1/insert?who=pinned`)),
      ),
    );
    expect(results.filter((r) => !r.ok).map((r) => r.body)).toEqual([]);
    const count = await (await fetch(sessions[1]!.url("/d1/count?who=pinned"))).json();
    expect(count).toMatchObject({ count: INSERTS });
    const status = JSON.parse(
      npx(["storage-owner", "status", "--persist-to", sandbox.persistTo, "--json"]),
    );
    expect(status.owners[0].versions.wrangler).toBe(wrangler);
    // 4.160.0's miniflare opens plugin sockets and reads the namespace header: pooled, the Cache
    // too. 4.126.0's does neither: its owner offers no sockets, and its sessions keep miniflare's
    // proxy path and their own Cache, as plain wrangler's do.
    expect(status.owners[0].clients.map((c: { storageRoute?: string }) => c.storageRoute)).toEqual(
      wrangler === "4.126.0"
        ? ["proxy; cache: session", "proxy; cache: session"]
        : ["pooled", "pooled"],
    );
    await sandbox.stopAllSessions();
    await waitFor("the owner to leave", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("a project that pins wrangler 4.125.0 (its miniflare cannot share storage)", () => {
  const { sandbox, bin, npx } = setUp("4.125.0", { legacyPeerDeps: true });

  it("passes commands through to it unchanged", () => {
    expect(npx(["--version"]).trim()).toBe("4.125.0");
  });

  it("refuses --x-shared-storage in one clear line, exit 1", async () => {
    for (const args of [
      ["dev", "--x-shared-storage", "--persist-to", sandbox.persistTo],
      ["d1", "execute", "shared-db", "--local", "--command", "SELECT 1", "--x-shared-storage"],
    ]) {
      const run = await sandbox.run(args, { bin: bin(), cwd: sandbox.workerDir("api") });
      expect(run.code).toBe(1);
      expect(run.stdout).toBe("");
      expect(run.stderr.trim().split("\n")).toEqual([
        expect.stringMatching(
          /^✘ \[ERROR\] --x-shared-storage needs miniflare's unsafeEnableSharedStorage, which this project's wrangler 4\.125\.0 \(miniflare 5\.20260820\.0-alpha, .*\) does not have\. Use wrangler 4\.126\.0 or later, or drop --x-shared-storage\.$/,
        ),
      ]);
    }
    expect(sandbox.owner()).toBeUndefined();
  });

  it("refuses the register in a getPlatformProxy() script with a thrown error naming its miniflare (uncaught: exit 1)", async () => {
    // Not a silent no-op: the process asked to share, and this miniflare cannot. The script does
    // not catch, so Node prints the error and exits 1; the register itself exits nothing.
    const script = writeScript(sandbox, "platform-proxy.mjs", PLATFORM_PROXY_SCRIPT);
    const run = await sandbox.run(["1"], {
      bin: script,
      env: registeredEnv(sandbox),
      timeoutMs: 90_000,
    });
    console.log(`[4.125.0] register: exit ${run.code}\n${run.stderr}`);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).not.toContain("[x-shared-storage]");
    const named = run.stderr
      .split("\n")
      .filter((line) => line.includes("unsafeEnableSharedStorage"));
    expect(named).toEqual([
      expect.stringMatching(
        /^SharedStorageError: shared storage needs miniflare's unsafeEnableSharedStorage, which the miniflare this process runs \(5\.20260820\.0-alpha, \S+\/node_modules\/miniflare\/dist\/src\/index\.js\) does not have\. Use wrangler 4\.126\.0 or later \(miniflare 5\.20260825\.0-alpha or later\), or remove shared-storage-wrangler\/register from NODE_OPTIONS\.$/,
      ),
    ]);
    expect(sandbox.owner()).toBeUndefined();
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("an owner of wrangler 4.160.0's miniflare, a session of 4.126.0's (older) joining", () => {
  const { sandbox, bin } = setUp("4.160.0");
  let olderBin = "";
  beforeAll(() => {
    // A monorepo whose `jobs` workspace pins the older wrangler: our bin there resolves its own.
    const older = fixtureProject("4.126.0", sandbox.env);
    console.log(`[fixture] wrangler 4.126.0: install ${older.installSeconds} s`);
    const jobs = sandbox.workerDir("jobs");
    symlinkSync(path.join(older.dir, "node_modules"), path.join(jobs, "node_modules"));
    olderBin = path.join(jobs, "node_modules", ".bin", "wrangler");
  }, 600_000);

  it("serves both through one owner: 0 failed, exact counts, one holder", async () => {
    const newer = await sandbox.startSession("api", { bin: bin() });
    const owner = sandbox.owner()!;
    expect(owner.versions).toMatchObject({ wrangler: "4.160.0", miniflare: "5.20261110.0-beta" });
    const older = await sandbox.startSession("jobs", { bin: olderBin });
    expect(older.output()).toContain(`served by owner pid ${owner.pid}`);
    const jobs = listClients(rootPaths(sandbox.persistRoot)).flatMap((c) =>
      c.record.ok && c.record.value.worker === "jobs" ? [c.record.value.versions] : [],
    );
    expect(jobs).toEqual([
      expect.objectContaining({ wrangler: "4.126.0", miniflare: "5.20260825.0-alpha" }),
    ]);

    const sampler = sampleHolders(sandbox.persistRoot);
    const results = await Promise.all(
      [newer, older].flatMap((session) =>
        Array.from({ length: INSERTS }, () => post(session.url("/d1/insert?who=reverse"))),
      ),
    );
    await sampler.stop();
    const holders = [...new Set(sampler.samples.flatMap((s) => s.holders))];
    console.log(
      `[reverse] ${results.length} inserts, ${sampler.samples.length} samples, holders ${holders.join(",")}`,
    );
    expect(results.filter((r) => !r.ok).map((r) => r.body)).toEqual([]);
    for (const session of [newer, older]) {
      expect(await getJson(session.url("/d1/count?who=reverse"))).toMatchObject({
        count: 2 * INSERTS,
      });
    }
    expect(holders).toEqual(owner.workerd!.map((w) => w.pid));
    // The older session's miniflare builds the same targets: it routes pooled to the newer owner.
    const routes = listClients(rootPaths(sandbox.persistRoot)).flatMap((c) =>
      c.record.ok ? [[c.record.value.worker, c.record.value.storageRoute]] : [],
    );
    expect(new Map(routes as [string, string][])).toEqual(
      new Map([
        ["api", "pooled"],
        ["jobs", "pooled"],
      ]),
    );
    await sandbox.stopAllSessions();
    await waitFor("the owner to leave", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});
