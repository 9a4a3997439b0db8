// The owner's head start (src/dev/head-start.ts): the first `wrangler dev --x-shared-storage` of a
// root starts its owner at the preload, beside wrangler's own start. Real sessions, real owners.
import { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { listClients, readOwner, rootPaths } from "../src/records.js";
import { freePort, Sandbox, waitFor } from "./harness/sandbox.js";

/** An argument wrangler refuses (yargs strict), after our preload ran. */
const BOGUS = "--x-head-start-test-unknown";

describe("the owner's head start", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("starts the owner before the session registers, through the registry and root it then joins", async () => {
    const session = await sandbox.startSession("api");
    const owner = sandbox.owner()!;
    const out = session.output();
    const line = `started storage owner pid ${owner.pid} for ${sandbox.persistRoot}`;
    expect(out).toContain(line);
    expect(out.match(/started storage owner pid/g)).toHaveLength(1);
    // wrangler prints the bindings once it has read the config and bundled: the owner was first.
    expect(out.indexOf(line)).toBeLessThan(out.indexOf("Your Worker has access"));
    const clients = listClients(rootPaths(sandbox.persistRoot)).flatMap((c) =>
      c.record.ok ? [c.record.value] : [],
    );
    expect(clients).toHaveLength(1);
    const [client] = clients;
    // Started before the session wrote its presence (the election proper writes presence first
    // and starts an owner only after), and found through the same registry.
    expect(Date.parse(owner.startedAt)).toBeLessThan(Date.parse(client!.since));
    expect(owner.registryPath).toBe(client!.registryPath);
    expect(owner.persistRoot).toBe(sandbox.persistRoot);
    const put = await fetch(session.url("/kv/ahead"), { method: "PUT", body: "v" });
    expect(put.status).toBe(200);
    expect(await (await fetch(session.url("/kv/ahead"))).text()).toBe("v");
    await sandbox.stopSession(session);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });

  it("starts nothing for `dev --help`", async () => {
    const persistTo = path.join(sandbox.dir, "help-state");
    const { code, stdout } = await sandbox.run([
      "dev",
      "--x-shared-storage",
      "--persist-to",
      persistTo,
      "--help",
    ]);
    expect(code).toBe(0);
    expect(stdout).toContain("--persist-to");
    expect(existsSync(rootPaths(path.join(persistTo, "v3")).stateDir)).toBe(false);
  });

  it("an owner started ahead for a session that fails before it registers exits by itself, leaving nothing", async () => {
    const dir = path.join(sandbox.project, "workers", "broken");
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(dir, "wrangler.jsonc"),
      JSON.stringify({ name: "broken", main: "src/missing.js", compatibility_date: "2025-01-01" }),
    );
    const persistTo = path.join(sandbox.dir, "broken-state");
    const root = path.join(persistTo, "v3");
    const port = String(await freePort());
    const run = await sandbox.run(
      ["dev", "--x-shared-storage", "--persist-to", persistTo, "--port", port, "--ip", "127.0.0.1"],
      { cwd: dir },
    );
    expect(run.code).not.toBe(0);
    expect(run.stdout + run.stderr).toMatch(/missing\.js/);
    expect(run.stderr).toContain(`started storage owner pid`);
    expect(await sandbox.settledLeftovers(15_000)).toEqual([]);
    const log = readFileSync(rootPaths(root).ownerLog, "utf8");
    expect(log).toMatch(/stopping: no client for \d+ ms/);
    expect(listClients(rootPaths(root))).toEqual([]);
  });

  it("an owner started ahead in a registry a project .env changes is stopped, and the session elects in its own", async () => {
    const dir = path.join(sandbox.project, "workers", "dotenv");
    cpSync(sandbox.workerDir("jobs"), dir, { recursive: true });
    const registry = path.join(sandbox.dir, "dotenv-registry");
    // wrangler loads the project's .env into its environment after our preload predicted.
    writeFileSync(path.join(dir, ".env"), `WRANGLER_REGISTRY_PATH=${registry}\n`);
    const persistTo = path.join(sandbox.dir, "dotenv-state");
    const root = path.join(persistTo, "v3");
    // dotenv sets only what the environment lacks: the shell names no registry (the default).
    const env = { WRANGLER_REGISTRY_PATH: undefined };
    const predicted = path.join(sandbox.env.XDG_CONFIG_HOME!, ".wrangler", "registry");
    const session = await sandbox.startSession("dotenv", { persistTo, env });
    const out = session.output();
    const ahead = /started storage owner pid (\d+) for /.exec(out);
    expect(ahead).not.toBeNull();
    expect(out).toContain(
      `stopping owner pid ${ahead![1]}, started ahead for the dev registry ${predicted}`,
    );
    expect(out).not.toMatch(/serves sessions through the dev registry/);
    const owner = readOwner(rootPaths(root));
    expect(owner?.ok && owner.value.registryPath).toBe(registry);
    expect(owner?.ok && owner.value.pid).not.toBe(Number(ahead![1]));
    // Its log says why it went, whether it was still starting or already served.
    expect(readFileSync(rootPaths(root).ownerLog, "utf8")).toContain(
      `owner ${ahead![1]}: stopping: SIGTERM`,
    );
    const put = await fetch(session.url("/kv/dotenv"), { method: "PUT", body: "v" });
    expect(put.status).toBe(200);
    await sandbox.stopSession(session);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });

  it("no head start where the root is uncertain: no config (e.g. $HOME), several configs, --persistTo; --cwd through a symlink is followed", async () => {
    const home = path.join(sandbox.dir, "home");
    mkdirSync(home, { recursive: true });
    const apiRoot = path.join(sandbox.workerDir("api"), ".wrangler", "state", "v3");
    const adminRoot = path.join(sandbox.workerDir("admin"), ".wrangler", "state", "v3");
    const sub = path.join(sandbox.workerDir("jobs"), "sub");
    mkdirSync(sub, { recursive: true });
    const link = path.join(sandbox.dir, "link-to-sub");
    symlinkSync(sub, link);
    const jobsRoot = path.join(sandbox.workerDir("jobs"), ".wrangler", "state", "v3");
    const camelTo = path.join(sandbox.dir, "camel-state");
    const dev = async (extra: string[], cwd: string) => {
      const port = String(await freePort());
      const inspector = String(await freePort());
      const base = ["dev", "--x-shared-storage", "--port", port, "--ip", "127.0.0.1"];
      return sandbox.run([...base, "--inspector-port", inspector, ...extra], {
        cwd,
        timeoutMs: 60_000,
      });
    };
    // wrangler refuses an unknown argument once it has loaded: after our preload's head start.
    const [inHome, several, camel, linked, unpersisted, empty] = await Promise.all([
      dev([], home),
      dev(
        ["-c", "wrangler.jsonc", "-c", "../admin/wrangler.jsonc", BOGUS],
        sandbox.workerDir("api"),
      ),
      dev(["--persistTo", camelTo, BOGUS], sandbox.workerDir("api")),
      dev(["--cwd", link, BOGUS], sandbox.dir),
      dev(["--no-persist-to", BOGUS], sandbox.workerDir("admin")),
      dev(["--persist-to=", BOGUS], sandbox.workerDir("counter")),
    ]);
    expect(inHome.code).not.toBe(0);
    expect(existsSync(path.join(home, ".wrangler"))).toBe(false);
    expect(inHome.stderr).not.toContain("started storage owner");
    for (const run of [several, camel, linked, unpersisted, empty])
      expect(run.stderr).toMatch(/Unknown argument/);
    expect(existsSync(rootPaths(adminRoot).stateDir)).toBe(false);
    expect(existsSync(rootPaths(apiRoot).stateDir)).toBe(false);
    expect(existsSync(path.join(camelTo, "v3"))).toBe(false);
    expect(existsSync(rootPaths(path.join(sub, ".wrangler", "state", "v3")).stateDir)).toBe(false);
    // wrangler chdirs to --cwd: the config found is the real path's parent's, and so is the root.
    expect(linked.stderr).toContain(`started storage owner pid`);
    expect(readFileSync(rootPaths(jobsRoot).ownerLog, "utf8")).toContain(
      `starting for ${jobsRoot}`,
    );
    // An empty --persist-to= is none to wrangler too: the config's .wrangler/state.
    const counterRoot = path.join(sandbox.workerDir("counter"), ".wrangler", "state", "v3");
    expect(empty.stderr).toContain(`started storage owner pid`);
    expect(readFileSync(rootPaths(counterRoot).ownerLog, "utf8")).toContain(
      `starting for ${counterRoot}`,
    );
    expect(existsSync(path.join(sandbox.workerDir("counter"), "v3"))).toBe(false);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("two sessions whose project .env names one registry, the head start's owner in another", () => {
  // A long grace: the owner started ahead is surely alive when the second session connects.
  const sandbox = new Sandbox({ graceMs: 20_000 });
  afterAll(() => sandbox.cleanup());

  it("the second session waits for that unused owner instead of refusing; both serve in their registry", async () => {
    const registry = path.join(sandbox.dir, "dotenv-registry");
    const slow = path.join(sandbox.project, "workers", "slow");
    cpSync(sandbox.workerDir("api"), slow, { recursive: true });
    const file = path.join(slow, "wrangler.jsonc");
    writeFileSync(
      file,
      readFileSync(file, "utf8").replace(
        `"name": "api",`,
        `"name": "slow", "build": { "command": "sleep 4" },`,
      ),
    );
    for (const dir of [slow, sandbox.workerDir("admin")])
      writeFileSync(path.join(dir, ".env"), `WRANGLER_REGISTRY_PATH=${registry}\n`);
    const env = { WRANGLER_REGISTRY_PATH: undefined };
    // The first one's build is slow: its head start's owner is up, unused, when the second connects.
    const a = await sandbox.startSession("slow", { wait: false, env });
    const ahead = await waitFor(
      "the head start",
      () => {
        const record = readOwner(rootPaths(sandbox.persistRoot));
        return record?.ok ? record.value : undefined;
      },
      30_000,
    );
    const b = await sandbox.startSession("admin", { wait: false, env });
    await Promise.all([sandbox.waitReady(a), sandbox.waitReady(b)]);
    expect(b.output()).toContain(
      `waiting for owner pid ${ahead.pid} of ${sandbox.persistRoot} to go`,
    );
    expect(b.output()).not.toMatch(/serves sessions through the dev registry/);
    expect(a.output()).toContain(`stopping owner pid ${ahead.pid}, started ahead`);
    const owner = sandbox.owner()!;
    expect(owner.registryPath).toBe(registry);
    for (const session of [a, b]) {
      expect(session.output()).toContain(`served by owner pid ${owner.pid}`);
      const put = await fetch(session.url(`/kv/${session.worker}`), { method: "PUT", body: "v" });
      expect(put.status).toBe(200);
    }
    // The owner's 20 s grace outlives the sessions here: the sandbox's cleanup stops it.
    await sandbox.stopAllSessions();
  });
});

describe("a wrangler start slower than the owner's grace (a custom build)", () => {
  const sandbox = new Sandbox({ graceMs: 500, idleMs: 500 });
  afterAll(() => sandbox.cleanup());

  it("lets the owner started ahead exit with no client; the session elects its own once built", async () => {
    const dir = path.join(sandbox.project, "workers", "slow");
    cpSync(sandbox.workerDir("api"), dir, { recursive: true });
    const file = path.join(dir, "wrangler.jsonc");
    const config = readFileSync(file, "utf8");
    expect(config).toContain(`"name": "api",`);
    writeFileSync(
      file,
      config.replace(`"name": "api",`, `"name": "slow", "build": { "command": "sleep 4" },`),
    );
    const session = await sandbox.startSession("slow");
    const starts = session.output().match(/started storage owner pid (\d+)/g) ?? [];
    expect(starts).toHaveLength(2);
    const log = readFileSync(rootPaths(sandbox.persistRoot).ownerLog, "utf8");
    expect(log).toMatch(/stopping: no client for \d+ ms/);
    const owner = sandbox.owner()!;
    expect(session.output()).toContain(`served by owner pid ${owner.pid}`);
    expect(starts[1]).toContain(`pid ${owner.pid}`);
    const put = await fetch(session.url("/kv/slow"), { method: "PUT", body: "v" });
    expect(put.status).toBe(200);
  });
});
