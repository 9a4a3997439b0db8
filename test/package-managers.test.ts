// Installed with pnpm (12 and 9), yarn (1, and 4 with the node_modules linker) or bun into a
// project that pins wrangler: each manager's documented command lines (README, "Install") start
// sessions that share one owner, and everything else stays the project's own wrangler. Under
// pnpm and yarn (1 and 4) `wrangler` runs the real wrangler's bin, under npm and bun ours: where
// the name is not ours, `wrangler-x` is, and the register (in NODE_OPTIONS, or pnpm's node
// options) teaches the real `wrangler` our command lines.
import { execFileSync } from "node:child_process";
import { readFileSync, realpathSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type FixtureProject,
  type Manager,
  managerBin,
  managerProject,
  MANAGERS,
  PNPM_NODE_OPTIONS,
  REGISTER_OPTION as REGISTER,
  RUN_BIN,
} from "./harness/fixture-project.js";
import { sampleHolders } from "./harness/load.js";
import { getJson, post, REPO, Sandbox, type Session, waitFor } from "./harness/sandbox.js";
import { ownerGone } from "../src/owner/assessment.js";

const WRANGLER = "4.160.0";
const INSERTS = 60;

/** Which package's bin each manager links as `wrangler` when both declare one. */
const WRANGLER_BIN_OWNER: Record<Manager, "ours" | "real"> = {
  pnpm: "real",
  pnpm9: "real",
  yarn: "real",
  // yarn 4 links ours in node_modules/.bin, but `yarn wrangler` runs the real one: it resolves a
  // bin through the dependency tree, where both packages declare `wrangler`.
  yarn4: "ours",
  bun: "ours",
};

/** The two documented ways each manager starts a shared session: [bin, extra env]. */
const WAYS: Record<Manager, { bin: string; env?: NodeJS.ProcessEnv }[]> = {
  // The real bin, taught by the register that pnpm passes in `nodeOptions` (pnpm-workspace.yaml)
  // or, for pnpm 9, `node-options` (.npmrc): managerProject writes it as the README says; and
  // our own bin.
  pnpm: [{ bin: "wrangler" }, { bin: "wrangler-x" }],
  pnpm9: [{ bin: "wrangler" }, { bin: "wrangler-x" }],
  yarn: [{ bin: "wrangler-x" }, { bin: "wrangler", env: { NODE_OPTIONS: REGISTER } }],
  yarn4: [{ bin: "wrangler-x" }, { bin: "wrangler", env: { NODE_OPTIONS: REGISTER } }],
  bun: [{ bin: "wrangler" }, { bin: "wrangler-x" }],
};

describe("the README's pnpm lines", () => {
  it("gives each pnpm major the line this suite installs it with", () => {
    const readme = readFileSync(path.join(REPO, "README.md"), "utf8").replace(/\s+/g, " ");
    for (const { file, line } of Object.values(PNPM_NODE_OPTIONS)) {
      expect(readme).toContain(`\`${line}\``);
      expect(readme).toContain(`\`${file}\``);
    }
  });
});

describe.each(MANAGERS)("installed with %s", (manager) => {
  const sandbox = new Sandbox();
  let fixture: FixtureProject;
  beforeAll(() => {
    fixture = managerProject(manager, WRANGLER, sandbox.env);
    console.log(`[fixture] ${manager} + wrangler ${WRANGLER}: install ${fixture.installSeconds} s`);
  }, 600_000);
  afterAll(() => sandbox.cleanup());

  // Everything runs in the installed project (yarn runs bins there anyway); the sandbox's
  // workers are named by --config.
  const via = (bin: string) => [managerBin(manager), ...RUN_BIN[manager], bin];
  const config = (worker: string) => [
    "--config",
    path.join(sandbox.workerDir(worker), "wrangler.jsonc"),
  ];
  const run = (bin: string, args: string[], env: NodeJS.ProcessEnv = {}) => {
    const [command, ...launcher] = via(bin);
    return execFileSync(command!, [...launcher, ...args], {
      cwd: fixture.dir,
      env: { ...sandbox.env, ...env },
      encoding: "utf8",
      timeout: 60_000,
    });
  };

  it("links `wrangler` as the manager does, and every bin runs the project's wrangler", () => {
    const linked = realpathSync(fixture.bin);
    expect(linked.includes(`${path.sep}shared-storage-wrangler${path.sep}`)).toBe(
      WRANGLER_BIN_OWNER[manager] === "ours",
    );
    for (const { bin, env } of WAYS[manager]) {
      expect(run(bin, ["--version"], env).trim()).toBe(WRANGLER);
    }
  });

  it("starts two sessions the documented ways: one owner, 0 failed, one holder", async () => {
    const sessions: Session[] = [];
    for (const [i, way] of WAYS[manager].entries()) {
      const worker = i === 0 ? "api" : "jobs";
      sessions.push(
        await sandbox.startSession(worker, {
          via: via(way.bin),
          env: way.env,
          cwd: fixture.dir,
          extraArgs: config(worker),
        }),
      );
    }
    const owner = sandbox.owner()!;
    expect(owner.versions.wrangler).toBe(WRANGLER);
    for (const session of sessions) {
      expect(session.output()).toContain(`served by owner pid ${owner.pid}`);
    }
    const sampler = sampleHolders(sandbox.persistRoot);
    const results = await Promise.all(
      Array.from({ length: INSERTS }, (_, i) =>
        post(sessions[i % 2]!.url(`/d1/insert?who=${manager}`)),
      ),
    );
    await sampler.stop();
    expect(results.filter((r) => !r.ok).map((r) => r.body)).toEqual([]);
    for (const session of sessions) {
      expect(await getJson(session.url(`/d1/count?who=${manager}`))).toMatchObject({
        count: INSERTS,
      });
    }
    const holders = new Set(sampler.samples.flatMap((s) => s.holders));
    expect([...holders]).toEqual(owner.workerd!.map((w) => w.pid));

    // A local storage command beside the sessions, through the owner, by `wrangler` itself (the
    // real bin taught by the register under pnpm and yarn, ours under bun).
    const wranglerWay = WAYS[manager].find((way) => way.bin === "wrangler")!;
    const counted = JSON.parse(
      run(
        "wrangler",
        [
          "d1",
          "execute",
          "shared-db",
          "--local",
          "--x-shared-storage",
          "--persist-to",
          sandbox.persistTo,
          ...config("api"),
          "--json",
          "--command",
          `SELECT COUNT(*) AS n FROM items WHERE who = '${manager}'`,
        ],
        wranglerWay.env,
      ),
    ) as { results: { n: number }[] }[];
    expect(counted[0]!.results[0]!.n).toBe(INSERTS);

    // `storage-owner` by the name each manager gives us.
    const { bin, env } = WAYS[manager][0]!;
    const status = JSON.parse(
      run(bin, ["storage-owner", "status", "--persist-to", sandbox.persistTo, "--json"], env),
    ) as { owners: { pid: number }[] };
    expect(status.owners.map((o) => o.pid)).toEqual([owner.pid]);

    await sandbox.stopAllSessions();
    await waitFor("the owner to leave", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});

describe("pnpm with the register in nodeOptions", () => {
  const sandbox = new Sandbox();
  let fixture: FixtureProject;
  beforeAll(() => {
    fixture = managerProject("pnpm", WRANGLER, sandbox.env);
  }, 600_000);
  afterAll(() => sandbox.cleanup());

  it("leaves sharing off when a command line asks, though the register is in every pnpm bin", async () => {
    const session = await sandbox.startSession("api", {
      via: [managerBin("pnpm"), ...RUN_BIN.pnpm, "wrangler"],
      cwd: fixture.dir,
      extraArgs: [
        "--config",
        path.join(sandbox.workerDir("api"), "wrangler.jsonc"),
        "--no-x-shared-storage",
      ],
      flag: false,
    });
    const inserted = await post(session.url("/d1/insert?who=plain"));
    expect(inserted.ok).toBe(true);
    expect(session.output()).not.toContain("[x-shared-storage]");
    expect(sandbox.owner()).toBeUndefined();
    await sandbox.stopAllSessions();
    expect(await sandbox.settledLeftovers()).toEqual([]);
  });
});
