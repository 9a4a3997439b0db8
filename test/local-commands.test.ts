// `wrangler d1|kv|r2 … --local --x-shared-storage` beside running dev sessions.
import { readFileSync, realpathSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ownerGone } from "../src/owner/assessment.js";
import { steadyLoad } from "./harness/load.js";
import { getJson, post, Sandbox, type Session, waitFor } from "./harness/sandbox.js";
import { readOwner, rootPaths } from "../src/records.js";

// Five commands at once beside two sessions' inserts: concurrent clients of the owner, 200 rows.
// (Ten, each a wrangler with its own Miniflare, cost the suite's CPU twice as much for the same.)
const INVOCATIONS = 5;
const INSERTS_PER_INVOCATION = 40;

async function migrateAndInsertBesideSessions(sandbox: Sandbox, flag: boolean) {
  const shared = flag ? ["--x-shared-storage"] : [];
  const sessions: Session[] = [];
  for (const worker of ["api", "jobs"]) sessions.push(await sandbox.startSession(worker, { flag }));
  const d1 = (args: string[]) =>
    sandbox.run(
      ["d1", ...args, "shared-db", "--local", "--persist-to", sandbox.persistTo, ...shared],
      {
        cwd: sandbox.workerDir("api"),
      },
    );
  const load = steadyLoad(sessions, "dev", 2, 10);
  const migration = await d1(["migrations", "apply"]);
  const statements = (i: number) =>
    Array.from(
      { length: INSERTS_PER_INVOCATION },
      (_, j) => `INSERT INTO items (who, at) VALUES ('cli', '${i}-${j}')`,
    ).join("; ");
  const inserts = await Promise.all(
    Array.from({ length: INVOCATIONS }, (_, i) => d1(["execute", "--command", statements(i)])),
  );
  await load.stop();
  return { sessions, migration, inserts, load };
}

describe("local CLI commands with --x-shared-storage", () => {
  const sandbox = new Sandbox({ graceMs: 2000, idleMs: 1000 });
  afterAll(() => sandbox.cleanup());
  // The session of a third worker the commands below meet, started once for them.
  let admin: Promise<Session> | undefined;
  const adminSession = () => (admin ??= sandbox.startSession("admin"));

  it("run a migration and 200 d1 execute inserts while two dev sessions insert: no failure anywhere", async () => {
    const { sessions, migration, inserts, load } = await migrateAndInsertBesideSessions(
      sandbox,
      true,
    );
    expect(migration.code, migration.stderr + migration.stdout).toBe(0);
    expect(migration.stdout).toContain("0001_items.sql");
    for (const run of inserts) expect(run.code, run.stderr).toBe(0);
    expect(load.results.filter((r) => !r.ok).map((r) => r.body)).toEqual([]);
    const cli = await getJson<{ count: number }>(sessions[0]!.url("/d1/count?who=cli"));
    expect(cli.count).toBe(INVOCATIONS * INSERTS_PER_INVOCATION);
    const dev = await getJson<{ count: number }>(sessions[1]!.url("/d1/count?who=dev"));
    expect(dev.count).toBe(load.results.length);
    for (const run of inserts)
      expect(run.stderr).toContain(`served by owner pid ${sandbox.owner()!.pid}`);
  });

  it("kv key put/get and r2 object put/get meet the running sessions in both directions", async () => {
    const api = await adminSession();
    const cli = (args: string[]) =>
      sandbox.run([...args, "--local", "--persist-to", sandbox.persistTo, "--x-shared-storage"], {
        cwd: sandbox.workerDir("api"),
      });
    expect((await cli(["kv", "key", "put", "from-cli", "cli value", "--binding", "KV"])).code).toBe(
      0,
    );
    expect(await (await fetch(api.url("/kv/from-cli"))).text()).toBe("cli value");
    await fetch(api.url("/kv/from-dev"), { method: "PUT", body: "dev value" });
    const got = await cli(["kv", "key", "get", "from-dev", "--binding", "KV"]);
    expect(got.stdout).toBe("dev value");

    const file = path.join(sandbox.dir, "upload.txt");
    writeFileSync(file, "uploaded by the CLI");
    expect((await cli(["r2", "object", "put", "shared-bucket/cli.txt", "--file", file])).code).toBe(
      0,
    );
    expect(await (await fetch(api.url("/r2/cli.txt"))).text()).toBe("uploaded by the CLI");
    await fetch(api.url("/r2/dev.txt"), { method: "PUT", body: "written by dev" });
    expect((await cli(["r2", "object", "get", "shared-bucket/dev.txt", "--pipe"])).stdout).toBe(
      "written by dev",
    );
  });

  it("runs the other local storage commands through the owner, with global options before the command", async () => {
    const owner = sandbox.owner()!;
    const admin = await adminSession();
    const apiDir = sandbox.workerDir("api");
    const local = ["--local", "--persist-to", sandbox.persistTo];
    // Global options first, from the project root, the flag in each form.
    const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
      sandbox.run(["--cwd", apiDir, "-c", "wrangler.jsonc", ...args], { env });
    const put = await fetch(admin.url("/kv/bulk-key"), { method: "PUT", body: "from dev" });
    expect(put.status, await put.text()).toBe(200);
    expect(await (await fetch(admin.url("/kv/bulk-key"))).text()).toBe("from dev");
    const keys = path.join(sandbox.dir, "keys.json");
    writeFileSync(keys, JSON.stringify(["bulk-key"]));
    const bulkGet = await cli([
      "kv",
      "bulk",
      "get",
      keys,
      "--binding",
      "KV",
      ...local,
      "--x-shared-storage",
      "true",
    ]);
    expect(bulkGet.code, bulkGet.stderr).toBe(0);
    expect(JSON.parse(bulkGet.stdout)).toEqual({ "bulk-key": { value: "from dev" } });
    const upload = path.join(sandbox.dir, "bulk-upload.txt");
    writeFileSync(upload, "bulk upload");
    const objects = path.join(sandbox.dir, "objects.json");
    writeFileSync(objects, JSON.stringify([{ key: "bulk.txt", file: upload }]));
    const bulkPut = await cli(
      ["r2", "bulk", "put", "shared-bucket", "--filename", objects, ...local],
      {
        WRANGLER_X_SHARED_STORAGE: "1",
      },
    );
    expect(bulkPut.code, bulkPut.stderr).toBe(0);
    expect(await (await fetch(admin.url("/r2/bulk.txt"))).text()).toBe("bulk upload");
    const migrations = await cli([
      "d1",
      "migrations",
      "list",
      "shared-db",
      ...local,
      "--x-shared-storage=true",
    ]);
    expect(migrations.code, migrations.stderr).toBe(0);
    expect(migrations.stdout).toContain("No migrations to apply");
    const secret = await cli([
      "secrets-store",
      "secret",
      "create",
      "store-1",
      "--name",
      "TOKEN",
      "--value",
      "s3cret",
      "--scopes",
      "workers",
      "--persist-to",
      sandbox.persistTo,
      "--x-shared-storage",
    ]);
    expect(secret.code, secret.stderr).toBe(0);
    const secrets = await cli([
      "secrets-store",
      "secret",
      "list",
      "store-1",
      "--persist-to",
      sandbox.persistTo,
      "--x-shared-storage",
    ]);
    expect(secrets.stdout).toContain("TOKEN");
    // flagship refuses while a session of the same worker runs: run it as a worker of no session.
    const flags = await sandbox.run(
      ["flagship", "flags", "list", "app-1", ...local, "--x-shared-storage"],
      {
        cwd: sandbox.dir,
      },
    );
    expect(flags.code, flags.stderr).toBe(0);
    for (const run of [bulkGet, bulkPut, migrations, secret, secrets, flags]) {
      expect(run.stderr).toContain(`served by owner pid ${owner.pid}`);
    }
    await sandbox.stopSession(admin);
  });

  it("warns, in one line, that a command run without the flag opens the files directly, and runs it", async () => {
    const owner = sandbox.owner()!;
    const run = await sandbox.run(
      [
        "kv",
        "key",
        "put",
        "direct",
        "yes",
        "--binding",
        "KV",
        "--local",
        "--persist-to",
        sandbox.persistTo,
        "--x-shared-storage",
        "false",
      ],
      { cwd: sandbox.workerDir("api") },
    );
    expect(run.code, run.stderr).toBe(0);
    const warnings = run.stderr.split("\n").filter((line) => line.includes("[x-shared-storage]"));
    expect(warnings).toEqual([
      `▲ [x-shared-storage] \`wrangler kv key put\` opens ${sandbox.persistRoot} directly while storage owner pid ${owner.pid} serves it; concurrent writes may fail with SQLITE_BUSY (add --x-shared-storage to go through the owner).`,
    ]);
    expect(run.stdout).toContain('Writing the value "yes" to key "direct"');
  });

  it("d1 export --local goes through the owner of the config's default root", async () => {
    const apiDir = sandbox.workerDir("api");
    const defaultState = path.join(apiDir, ".wrangler", "state");
    const session = await sandbox.startSession("admin", { persistTo: defaultState });
    await post(session.url("/d1/insert?who=export-me"));
    const dump = path.join(sandbox.dir, "dump.sql");
    const run = await sandbox.run(
      [
        "-c",
        path.join(apiDir, "wrangler.jsonc"),
        "d1",
        "export",
        "shared-db",
        "--local",
        "--output",
        dump,
        "--x-shared-storage",
      ],
      { cwd: sandbox.dir },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(readFileSync(dump, "utf8")).toContain("export-me");
    const owner = readOwner(rootPaths(realpathSync(path.join(defaultState, "v3"))));
    expect(owner?.ok).toBe(true);
    expect(run.stderr).toContain(`served by owner pid ${owner?.ok ? owner.value.pid : "?"}`);
    await sandbox.stopSession(session);
  });

  it("lets the owner idle out after the last command", async () => {
    const owner = sandbox.owner()!;
    await sandbox.stopAllSessions();
    await waitFor("the owner to idle out", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("local CLI commands without the flag, for contrast", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("runs the same workload; its failures are printed, not asserted", async () => {
    const { migration, inserts, load } = await migrateAndInsertBesideSessions(sandbox, false);
    const failedRuns = [migration, ...inserts].filter((r) => r.code !== 0);
    const failedRequests = load.results.filter((r) => !r.ok);
    console.log(
      `[flag off] ${failedRuns.length} of ${inserts.length + 1} CLI runs failed, ` +
        `${failedRequests.length} of ${load.results.length} dev-session inserts failed` +
        (failedRuns[0]
          ? `; e.g. ${(failedRuns[0].stderr + failedRuns[0].stdout).match(/.*(SQLITE_BUSY|locked|ERROR).*/)?.[0] ?? ""}`
          : ""),
    );
    expect(inserts).toHaveLength(INVOCATIONS);
    expect(sandbox.owner()).toBeUndefined();
    // No owner serves the root: nothing to warn about.
    for (const run of [migration, ...inserts])
      expect(run.stderr).not.toContain("[x-shared-storage]");
  });
});
