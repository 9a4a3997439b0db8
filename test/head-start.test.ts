// The owner's head start (src/dev/head-start.ts): the first `wrangler dev --x-shared-storage` of a
// root starts its owner at the preload, beside wrangler's own start. Real sessions, real owners.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { listClients, rootPaths } from "../src/records.js";
import { freePort, Sandbox } from "./harness/sandbox.js";

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
    // Started by the session's own process, before it wrote its presence (the election proper
    // writes presence first and starts an owner only after), and found through the same registry.
    expect(owner.spawnedBy).toBe(client!.pid);
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
});
