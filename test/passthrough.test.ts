// Everything that is not ours reaches the real wrangler unchanged, cheaply; and after
// `npm install` of our tarball, `npx wrangler` is ours.
import { execFileSync } from "node:child_process";
import { readFileSync, realpathSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { resolveRegistryPath } from "../src/environment.js";
import { OUR_BIN, REAL_BIN, REPO, Sandbox, waitFor } from "./harness/sandbox.js";

const TRACER = path.join(REPO, "test", "fixtures", "module-tracer.mjs");

describe("passthrough", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());
  const both = async (args: string[]) => {
    const [ours, real] = await Promise.all([
      sandbox.run(args),
      sandbox.run(args, { bin: REAL_BIN }),
    ]);
    return { ours, real };
  };
  // Log file names and timings differ from run to run; nothing else may.
  const normal = (text: string) =>
    text.replace(/wrangler-[\d_-]+\.log/g, "wrangler-*.log").replace(/\(\d+ms\)/g, "");

  it.each([
    [["--version"]],
    [["d1", "--help"]],
    [["whoami"]],
    [["d1", "execute"]],
    [["no-such-command"]],
  ])("`wrangler %j` prints and exits exactly as the real wrangler", async (args) => {
    const { ours, real } = await both(args);
    expect(ours.code).toBe(real.code);
    expect(normal(ours.stdout)).toBe(normal(real.stdout));
    expect(normal(ours.stderr)).toBe(normal(real.stderr));
  });

  it("never loads our commands, yargs or wrangler's bundle in our own process", async () => {
    const trace = path.join(sandbox.dir, "modules.tsv");
    writeFileSync(trace, "");
    const { code } = await sandbox.run(["--version"], {
      env: { NODE_OPTIONS: `--import ${TRACER}`, X_MODULE_TRACE: trace },
    });
    expect(code).toBe(0);
    const lines = readFileSync(trace, "utf8")
      .trim()
      .split("\n")
      .map((l) => l.split("\t"));
    const ourPid = lines.find(([, kind, what]) => kind === "main" && what === OUR_BIN)?.[0];
    expect(ourPid).toBeDefined();
    const ours = lines
      .filter(([pid, kind]) => pid === ourPid && kind === "load")
      .map(([, , url]) => url!);
    const wranglerChild = lines
      .filter(([pid, kind]) => pid !== ourPid && kind === "load")
      .map(([, , url]) => url!);
    expect(ours.some((u) => u.endsWith("/dist/dispatch.js"))).toBe(true);
    // The command line is read by yargs-parser alone (4 modules), not yargs/helpers (~30).
    expect(ours.filter((u) => u.includes("/node_modules/yargs-parser/")).length).toBeGreaterThan(0);
    expect(
      ours.filter((u) =>
        /\/dist\/(commands|dev|owner)\/|\/yargs\/|wrangler-dist\/cli\.js|\/miniflare\//.test(u),
      ),
    ).toEqual([]);
    // The bundle runs, once, in the child, as with the real bin.
    expect(wranglerChild.some((u) => u.includes("wrangler-dist/cli.js"))).toBe(true);
  });

  it.each([
    ["unset", undefined, "xdg/.wrangler/registry"],
    ["empty", "", "xdg/cloudflare/dev-registry/v5"],
  ])(
    "resolves the dev registry as `wrangler dev` does, WRANGLER_REGISTRY_PATH %s",
    async (_, value, expected) => {
      // The owner record's registryPath comes from the options wrangler itself built.
      const env = {
        HOME: path.join(sandbox.dir, "home"),
        XDG_CONFIG_HOME: path.join(sandbox.dir, "xdg"),
        WRANGLER_REGISTRY_PATH: value,
      };
      const session = await sandbox.startSession("api", { env });
      const ours = resolveRegistryPath({ ...sandbox.env, ...env });
      expect(ours).toBe(path.join(sandbox.dir, expected));
      expect(sandbox.owner()!.registryPath).toBe(ours);
      const status = await sandbox.run(["storage-owner", "status", "--all", "--json"], { env });
      expect(JSON.parse(status.stdout).owners).toEqual([
        expect.objectContaining({ pid: sandbox.owner()!.pid }),
      ]);
      await sandbox.stopSession(session);
      await waitFor("the owner to leave", () => sandbox.owner() === undefined, 15_000);
    },
  );

  it("rejects --x-shared-storage on commands it does not apply to, and --remote/--disable-dev-registry", async () => {
    const deploy = await sandbox.run(["deploy", "--x-shared-storage"]);
    expect(deploy.code).toBe(1);
    expect(deploy.stderr).toContain("--x-shared-storage applies to `wrangler dev`");
    const remote = await sandbox.run(["dev", "--x-shared-storage", "--remote"], {
      cwd: sandbox.workerDir("api"),
    });
    expect(remote.code).toBe(1);
    expect(remote.stderr).toContain("cannot be combined with --remote");
    const registry = await sandbox.run(["dev", "--x-shared-storage", "--disable-dev-registry"], {
      cwd: sandbox.workerDir("api"),
    });
    expect(registry.code).toBe(1);
    expect(registry.stderr).toContain("needs the dev registry");
  });
});

describe("npm install of our tarball", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());

  it("links our bin as `wrangler` (and `wrangler-x`), beside the real wrangler it depends on", async () => {
    const packed = execFileSync(
      "npm",
      ["pack", "--ignore-scripts", "--silent", "--pack-destination", sandbox.dir],
      {
        cwd: REPO,
        encoding: "utf8",
        env: sandbox.env,
      },
    ).trim();
    const tarball = path.join(sandbox.dir, packed.split("\n").pop()!);
    const project = path.join(sandbox.dir, "user-project");
    execFileSync("mkdir", ["-p", project]);
    // A user project that lists the real wrangler too, as most do.
    writeFileSync(
      path.join(project, "package.json"),
      JSON.stringify({
        name: "user-project",
        private: true,
        devDependencies: { wrangler: "4.164.0" },
      }),
    );
    execFileSync(
      "npm",
      ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", tarball],
      {
        cwd: project,
        env: sandbox.env,
        stdio: "pipe",
        timeout: 240_000,
      },
    );
    const bin = (name: string) => realpathSync(path.join(project, "node_modules", ".bin", name));
    const ourBin = path.join(
      project,
      "node_modules",
      "shared-storage-wrangler",
      "bin",
      "wrangler.mjs",
    );
    expect(bin("wrangler")).toBe(realpathSync(ourBin));
    expect(bin("wrangler-x")).toBe(realpathSync(ourBin));
    const npx = (args: string[]) =>
      execFileSync("npx", ["--no-install", "wrangler", ...args], {
        cwd: project,
        env: sandbox.env,
        encoding: "utf8",
      });
    expect(npx(["storage-owner", "--help"])).toContain("wrangler storage-owner status");
    expect(npx(["--version"]).trim()).toBe("4.164.0");
  });
});
