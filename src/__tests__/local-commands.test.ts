// `wrangler d1|kv|r2 … --local --x-shared-storage` beside running dev sessions.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ownerGone } from "../owner/lifecycle.js";
import { steadyLoad } from "../harness/load.js";
import { getJson, Sandbox, type Session, waitFor } from "../harness/sandbox.js";

const INVOCATIONS = 10;
const INSERTS_PER_INVOCATION = 20;

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
    const api = await sandbox.startSession("admin");
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
  });
});
