// `NODE_OPTIONS="--require shared-storage-wrangler/register"`: vite dev with
// @cloudflare/vite-plugin (its own miniflare, imported as ESM) and a getPlatformProxy() script
// share one owner with a `wrangler dev --x-shared-storage` session, across miniflare versions.
import { symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtureProject } from "../harness/fixture-project.js";
import { sampleHolders } from "../harness/load.js";
import { freePort, getJson, post, Sandbox, type Session, waitFor } from "../harness/sandbox.js";
import { ownerGone } from "../owner/lifecycle.js";
import { listClients, rootPaths } from "../records.js";

const WRANGLER = "4.164.0";
const VITE_PLUGIN = "1.64.0";
const PER_SOURCE = 40;
const REGISTER = "--require shared-storage-wrangler/register";

/** What a framework's dev server does: getPlatformProxy(), then D1 writes through its bindings. */
const PLATFORM_PROXY_SCRIPT = `
import { getPlatformProxy } from "wrangler";
const proxy = await getPlatformProxy({
  configPath: "workers/jobs/wrangler.jsonc",
  // getPlatformProxy takes the root itself: wrangler dev's --persist-to plus "v3".
  persist: { path: process.env.X_PERSIST_TO + "/v3" },
});
const db = proxy.env.DB;
await db.prepare("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT NOT NULL, at TEXT NOT NULL)").run();
process.stdout.write("ready\\n");
await new Promise((resolve) => process.stdin.once("data", resolve));
const results = await Promise.allSettled(
  Array.from({ length: Number(process.argv[2]) }, () =>
    db.prepare("INSERT INTO items (who, at) VALUES (?, ?)").bind("mixed", new Date().toISOString()).run(),
  ),
);
const failed = results.flatMap((r) => (r.status === "rejected" ? [String(r.reason)] : []));
const count = await db.prepare("SELECT COUNT(*) AS n FROM items WHERE who = 'mixed'").first();
process.stdout.write(JSON.stringify({ failed, count: count.n }) + "\\n");
await proxy.dispose();
`;

describe("register: vite sessions, a wrangler session and getPlatformProxy() on one root", () => {
  const sandbox = new Sandbox();
  let bin = "";
  beforeAll(() => {
    const fixture = fixtureProject(WRANGLER, sandbox.env, {
      devDependencies: { vite: "8.3.8", "@cloudflare/vite-plugin": VITE_PLUGIN },
    });
    console.log(
      `[fixture] vite + @cloudflare/vite-plugin ${VITE_PLUGIN}: install ${fixture.installSeconds} s`,
    );
    symlinkSync(path.join(fixture.dir, "node_modules"), path.join(sandbox.project, "node_modules"));
    bin = path.join(sandbox.project, "node_modules", ".bin", "wrangler");
  }, 600_000);
  afterAll(() => sandbox.cleanup());

  /** Env of a process that only has the one-line switch (plus the test's own registry). */
  const registered: NodeJS.ProcessEnv = {
    NODE_OPTIONS: REGISTER,
    // The plugin's miniflare finds the registry through MINIFLARE_REGISTRY_PATH, wrangler through
    // WRANGLER_REGISTRY_PATH (the sandbox sets that one): both name the sandbox's registry.
    MINIFLARE_REGISTRY_PATH: sandbox.registry,
    X_PERSIST_TO: sandbox.persistTo,
  };

  async function startVite(): Promise<Session> {
    const port = await freePort();
    const vite = path.join(sandbox.project, "node_modules", "vite", "bin", "vite.js");
    const args = [vite, "dev", "--port", String(port), "--strictPort", "--host", "127.0.0.1"];
    return sandbox.startProcess("web", port, args, {
      cwd: sandbox.workerDir("vite"),
      env: registered,
    });
  }

  it("serves every process through one owner: 0 failed, exact counts, one holder", async () => {
    const vites = [await startVite(), await startVite()];
    const owner = sandbox.owner()!;
    const wrangler = await sandbox.startSession("api", { bin: bin });
    for (const session of [...vites, wrangler]) {
      expect(session.output()).toContain(`served by owner pid ${owner.pid}`);
    }
    // The owner runs the miniflare of the session that started it: the plugin's, not wrangler's.
    expect(owner.versions.miniflare).toBe("5.20261012.0-beta");
    const clients = listClients(rootPaths(sandbox.persistRoot)).flatMap((c) =>
      c.record.ok ? [c.record.value] : [],
    );
    expect(clients.find((c) => c.worker === "api")?.versions.miniflare).toBe("5.20261117.0-beta");
    expect(clients.filter((c) => c.worker === "web").map((c) => c.versions.miniflare)).toEqual([
      "5.20261012.0-beta",
      "5.20261012.0-beta",
    ]);

    // A framework's getPlatformProxy(), started with the same switch.
    const script = path.join(sandbox.project, "platform-proxy.mjs");
    writeFileSync(script, PLATFORM_PROXY_SCRIPT);
    const proxyPort = await freePort();
    const proxy = await sandbox.startProcess("proxy", proxyPort, [script, String(PER_SOURCE)], {
      cwd: sandbox.project,
      env: registered,
      wait: false,
      stdin: true,
    });
    await waitFor(
      "the getPlatformProxy() script to be ready",
      () => {
        if (proxy.child.exitCode !== null) throw new Error(`script exited:\n${proxy.output()}`);
        return proxy.output().includes("ready");
      },
      60_000,
    );
    expect(proxy.output()).toContain(`served by owner pid ${owner.pid}`);

    const sampler = sampleHolders(sandbox.persistRoot);
    const http = Promise.all(
      [...vites, wrangler].flatMap((session) =>
        Array.from({ length: PER_SOURCE }, () => post(session.url("/d1/insert?who=mixed"))),
      ),
    );
    proxy.child.stdin!.end("go\n");
    const results = await http;
    const line = await waitFor(
      "the script's result",
      () =>
        proxy
          .output()
          .split("\n")
          .find((l) => l.startsWith("{")),
      60_000,
    );
    await sampler.stop();
    const scripted = JSON.parse(line) as { failed: string[]; count: number };
    expect(results.filter((r) => !r.ok).map((r) => r.body)).toEqual([]);
    expect(scripted.failed).toEqual([]);
    const total = 4 * PER_SOURCE;
    for (const session of [...vites, wrangler]) {
      expect(await getJson(session.url("/d1/count?who=mixed"))).toMatchObject({ count: total });
    }
    const holders = new Set(sampler.samples.flatMap((s) => s.holders));
    console.log(
      `[register] ${results.length} HTTP + ${PER_SOURCE} getPlatformProxy inserts, ` +
        `${sampler.samples.length} samples, holders ${[...holders].join(",")}, script count ${scripted.count}`,
    );
    expect([...holders]).toEqual(sandbox.owner()!.workerd!.map((w) => w.pid));

    expect(await waitFor("the script to exit", () => proxy.child.exitCode ?? false, 30_000)).toBe(
      0,
    );
    await sandbox.stopAllSessions();
    await waitFor("the owner to leave", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});
