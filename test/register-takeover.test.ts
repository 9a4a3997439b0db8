// The register in a real wrangler's own process (pnpm and yarn link its bin as `wrangler`): the
// command line it takes over runs the wrangler the user started, whatever else resolves, and a
// process that never loads wrangler or miniflare loads nothing of ours; the warning that a command
// opens the files directly is printed only when it does. A stand-in wrangler package (its bin is
// the real one's, its bundle prints what it was given) keeps most of this cheap.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NODE, post, REAL_BIN, REPO, Sandbox, waitFor } from "./harness/sandbox.js";
import { ownerGone } from "../src/owner/assessment.js";

const REGISTER = `--require ${path.join(REPO, "dist", "register.cjs")}`;

describe("the register teaching the real wrangler", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-takeover-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  // A project whose wrangler is not the one that resolves from the directory it is run in.
  const wrangler = path.join(dir, "project", "node_modules", "wrangler");
  mkdirSync(path.join(wrangler, "wrangler-dist"), { recursive: true });
  writeFileSync(
    path.join(wrangler, "package.json"),
    JSON.stringify({ name: "wrangler", version: "9.9.9", main: "wrangler-dist/cli.js" }),
  );
  cpSync(REAL_BIN, path.join(wrangler, "bin", "wrangler.js"));
  writeFileSync(
    path.join(wrangler, "wrangler-dist", "cli.js"),
    "console.log(JSON.stringify({ cli: __filename, args: process.argv.slice(2) }));\n",
  );
  symlinkSync(
    path.join(REPO, "node_modules", "miniflare"),
    path.join(dir, "project", "node_modules", "miniflare"),
  );
  const elsewhere = path.join(dir, "elsewhere");
  mkdirSync(elsewhere);

  const run = (env: NodeJS.ProcessEnv) =>
    JSON.parse(
      execFileSync(NODE, [path.join(wrangler, "bin", "wrangler.js"), "dev", "--x-shared-storage"], {
        cwd: elsewhere,
        env: { PATH: process.env.PATH, HOME: dir, NODE_OPTIONS: REGISTER, ...env },
        encoding: "utf8",
        timeout: 60_000,
      }),
    ) as { cli: string; args: string[] };

  it.each([
    ["--x-shared-storage", {}],
    ["WRANGLER_X_SHARED_STORAGE=true as well", { WRANGLER_X_SHARED_STORAGE: "true" }],
  ])("runs the wrangler that was started (%s)", (_, env) => {
    expect(run(env)).toEqual({
      cli: path.join(wrangler, "wrangler-dist", "cli.js"),
      args: ["dev"],
    });
  });
});

describe("the register in a process that loads neither wrangler nor miniflare", () => {
  it.each([
    { env: {}, ours: ["register.cjs"] },
    // Set, the env var is read by the one dependency-free module our command line reads it with.
    { env: { WRANGLER_X_SHARED_STORAGE: "false" }, ours: ["register.cjs", "yes-no.cjs"] },
    { env: { WRANGLER_X_SHARED_STORAGE: "true" }, ours: ["register.cjs", "yes-no.cjs"] },
  ])("loads nothing of ours beyond $ours ($env)", ({ env, ours }) => {
    const loaded = execFileSync(
      NODE,
      ["-e", "console.log(JSON.stringify(Object.keys(require.cache)))"],
      {
        cwd: os.tmpdir(),
        env: { PATH: process.env.PATH, NODE_OPTIONS: REGISTER, ...env },
        encoding: "utf8",
      },
    );
    expect(JSON.parse(loaded)).toEqual(ours.map((file) => path.join(REPO, "dist", file)));
  });
});

describe("the real `wrangler dev` under the register, beside a serving owner", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());
  const direct = "directly while storage owner";

  it("unflagged, shares through the owner and does not warn that it opens the files directly", async () => {
    await sandbox.startSession("api");
    const owner = sandbox.owner()!;
    const jobs = await sandbox.startSession("jobs", {
      via: [NODE, REAL_BIN],
      env: { NODE_OPTIONS: REGISTER },
      flag: false,
    });
    expect((await post(jobs.url("/d1/insert?who=register"))).ok).toBe(true);
    expect(jobs.output()).toContain(`served by owner pid ${owner.pid}`);
    expect(jobs.output()).not.toContain(direct);
    // Asked for no sharing, it opens the files itself: then the warning is true.
    const plain = await sandbox.startSession("admin", {
      via: [NODE, REAL_BIN],
      env: { NODE_OPTIONS: REGISTER },
      flag: false,
      extraArgs: ["--no-x-shared-storage"],
    });
    expect(plain.output()).toContain(direct);
    expect(plain.output()).not.toContain("served by owner");
    await sandbox.stopAllSessions();
    await waitFor("the owner to leave", () => ownerGone(owner), 15_000);
    expect(await sandbox.settledLeftovers()).toEqual([]);
  }, 180_000);
});
