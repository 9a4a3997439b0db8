// Pure logic: record parsing, owner state decisions, argv routing, path resolution.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ownerRecordFixture } from "./harness/records.js";
import { persistRootFor } from "../src/commands/storage-owner/scope.js";
import { findUserConfig } from "../src/persist-root.js";
import { formatDuration, table } from "../src/commands/storage-owner/format.js";
import { incompatibility } from "../src/dev/shared-storage.js";
import { DIRECT_STORAGE_COMMANDS, LOCAL_STORAGE_COMMANDS, route } from "../src/dispatch.js";
import {
  miniflareEntry,
  ownerTimings,
  resolveRegistryPath,
  sameVersions,
  versions,
} from "../src/environment.js";
import {
  assessOwner,
  BOOTING_STANDBY_PRIORITY_MS,
  STANDBY_PRIORITY_MS,
  standbyTakingOver,
} from "../src/owner/assessment.js";
import { execFileSync } from "node:child_process";
import { askLifeline, openLifeline, parseHello } from "../src/lifeline.js";
import net from "node:net";
import { instanceDirIdentity } from "../src/owner/instance.js";
import {
  currentIdentity,
  identityOf,
  liveness,
  parseLstart,
  parsePsList,
  parsePsStat,
} from "../src/process-info.js";
import {
  readRecord,
  rootPaths,
  SCHEMA_VERSION,
  validateClient,
  validateOwner,
  writeRecordAtomic,
} from "../src/records.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-unit-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const owner = ownerRecordFixture;

describe("records", () => {
  it("round-trips an owner record and rejects what is not one, naming the file", () => {
    const file = path.join(tmp, "owner.json");
    writeRecordAtomic(file, owner());
    expect(readRecord(file, validateOwner)).toEqual({ ok: true, value: owner() });
    const cases: [string, string][] = [
      ["", "is empty"],
      ['{"schema":1,"pid":', "is not valid JSON (truncated or corrupt)"],
      ["[1,2]", "not a JSON object"],
      [JSON.stringify({ ...owner(), schema: 99 }), "unknown schema 99"],
      [JSON.stringify({ ...owner(), pid: -3 }), 'field "pid" is not a process id'],
      [JSON.stringify({ ...owner(), pid: "12" }), 'field "pid" is missing or not a number'],
      [JSON.stringify({ ...owner(), phase: "dancing" }), 'unknown phase "dancing"'],
      [JSON.stringify({ ...owner(), debugAddress: 5 }), 'field "debugAddress" is not a string'],
      [JSON.stringify({ ...owner(), lifelinePort: "80" }), 'field "lifelinePort" is not a number'],
      [JSON.stringify({ ...owner(), lifelinePort: 70000 }), "lifelinePort 70000 is not a port"],
      [JSON.stringify({ ...owner(), lifelinePort: 1.5 }), "lifelinePort 1.5 is not a port"],
    ];
    for (const [text, problem] of cases) {
      writeFileSync(file, text);
      expect(readRecord(file, validateOwner)).toEqual({
        ok: false,
        problem: `${file}${problem.startsWith("is") ? " " : ": "}${problem}`,
      });
    }
    expect(readRecord(path.join(tmp, "missing.json"), validateOwner)).toBeUndefined();
  });

  it("validates client presence records", () => {
    const good = {
      schema: 1,
      pid: 7,
      worker: "api",
      command: "dev",
      since: "x",
      cwd: "/",
      versions: {},
    };
    expect(validateClient(good)).toBeUndefined();
    expect(validateClient({ ...good, worker: 3 })).toBe(
      'field "worker" is missing or not a string',
    );
    expect(validateClient({ ...good, port: "8787" })).toBe('field "port" is not a number');
    expect(validateClient({ ...good, started: 5 })).toBe('field "started" is not a string');
  });

  it("accepts workerd recorded by either start time, never a group", () => {
    expect(validateOwner(owner({ workerd: [{ pid: 5, started: "17" }] }))).toBeUndefined();
    expect(validateOwner(owner({ workerd: [{ pid: 5, startTime: "17" }] }))).toBeUndefined();
    expect(validateOwner(owner({ workerd: [{ pid: 5 }] }))).toBe(
      'field "workerd" is not a list of {pid, startTime or started}',
    );
    expect(validateOwner(owner({ workerd: [{ pid: 5, started: "1", group: true }] }))).toBe(
      'field "workerd" is not a list of {pid, startTime or started}',
    );
    expect(validateOwner(owner({ group: true }))).toBe('field "group" is not a record field');
    expect(validateOwner(owner({ started: "soon" }))).toBe(
      'field "started" is not a number of seconds',
    );
  });
});

describe("owner state", () => {
  it("is decided by the pid, with the heartbeat only telling running from stale", () => {
    const now = 11_000;
    expect(assessOwner(owner(), "alive", now).state).toBe("running");
    expect(assessOwner(owner(), "alive", now + 10_000).state).toBe("stale");
    expect(assessOwner(owner(), "alive", now, true).state).toBe("stale");
    expect(assessOwner(owner(), "dead", now).state).toBe("dead");
    expect(assessOwner(owner(), "reused", now).state).toBe("dead");
    // An old heartbeat does not make a live owner dead; a fresh one does not make a dead one live.
    expect(
      assessOwner(owner({ heartbeatAt: new Date(0).toISOString() }), "alive", 10 ** 9).state,
    ).toBe("stale");
    expect(assessOwner(owner({ phase: "starting" }), "alive", now).state).toBe("starting");
    expect(assessOwner(owner({ phase: "stopping" }), "alive", now).state).toBe("stopping");
    expect(assessOwner(owner({ heartbeatAt: "garbage" }), "alive", now).state).toBe("stale");
  });

  it("gives a dead owner's live standby priority: 5 s after its last heartbeat, 15 s while booting", () => {
    const paths = rootPaths(path.join(tmp, "standby-root"));
    mkdirSync(paths.stateDir, { recursive: true });
    const dead = owner({ heartbeatAt: new Date(100_000).toISOString() });
    // This test process stands in for the standby: alive, not stopped, with its start time.
    const standby = (phase: "starting" | "ready", backs = dead.pid) =>
      writeRecordAtomic(paths.standbyRecord, {
        schema: SCHEMA_VERSION,
        ...currentIdentity(),
        phase,
        backs,
        since: new Date(0).toISOString(),
        versions: {},
      });
    const after = (ms: number) => standbyTakingOver(paths, dead, 100_000 + ms);
    standby("ready");
    expect(after(STANDBY_PRIORITY_MS - 1)).toBe(process.pid);
    expect(after(STANDBY_PRIORITY_MS + 1)).toBeUndefined();
    standby("starting");
    expect(after(STANDBY_PRIORITY_MS + 1)).toBe(process.pid);
    expect(after(BOOTING_STANDBY_PRIORITY_MS - 1)).toBe(process.pid);
    expect(after(BOOTING_STANDBY_PRIORITY_MS + 1)).toBeUndefined();
    standby("starting", dead.pid + 1); // backs another owner
    expect(after(0)).toBeUndefined();
  });

  it("tells a live process from a reused pid and a dead one", () => {
    expect(liveness({ pid: process.pid })).toBe("alive");
    expect(liveness({ pid: process.pid, startTime: "1" })).toBe("reused");
    expect(liveness({ pid: 2 ** 22 + 7 })).toBe("dead");
    expect(liveness({ pid: 0 })).toBe("dead");
  });

  it("judges a record by its portable start (seconds) where it has no ticks", () => {
    const self = currentIdentity();
    expect(self.started).toMatch(/^\d+$/);
    expect(liveness({ pid: process.pid, started: self.started })).toBe("alive");
    expect(liveness({ pid: process.pid, started: String(Number(self.started) - 3600) })).toBe(
      "reused",
    );
    // Ticks win where both sides have them.
    expect(liveness({ pid: process.pid, startTime: "1", started: self.started })).toBe("reused");
  });

  it("gives the same identity from /proc and, with WRANGLER_X_PROCESS_INFO=portable, from ps", () => {
    // Written by one source, compared by the other: both must say the same seconds.
    const script = `import("${path.join(process.cwd(), "dist/process-info.js")}").then((m) => console.log(JSON.stringify({ source: m.infoSource(), self: m.currentIdentity(), parent: m.identityOf(${process.pid}), alive: m.liveness(${JSON.stringify(currentIdentity())}), reused: m.liveness({ pid: ${process.pid}, startTime: "1", started: "1" }) })))`;
    const out = JSON.parse(
      execFileSync(process.execPath, ["-e", script], {
        env: { ...process.env, WRANGLER_X_PROCESS_INFO: "portable" },
        encoding: "utf8",
      }),
    );
    expect(out.source).toBe("ps");
    expect(out.self.startTime).toBeUndefined();
    expect(out.parent).toEqual({ pid: process.pid, started: currentIdentity().started });
    expect(out.alive).toBe("alive");
    expect(out.reused).toBe("reused");
    expect(identityOf(out.self.pid).pid).toBe(out.self.pid);
  });

  it("parses ps output: lstart in UTC, state letter, parent, group, command", () => {
    expect(parseLstart("Wed Dec  2 04:59:03 2026")).toBe(
      String(Date.UTC(2026, 11, 2, 4, 59, 3) / 1000),
    );
    expect(parseLstart("Thu Jan 1 00:00:00 1970")).toBe("0");
    expect(parseLstart("yesterday")).toBeUndefined();
    expect(parseLstart("Wed Foo  2 04:59:03 2026")).toBeUndefined();
    expect(parsePsStat("Ss+      1   812 Wed Dec  2 04:59:03 2026")).toEqual({
      state: "S",
      ppid: 1,
      pgrp: 812,
      started: parseLstart("Wed Dec  2 04:59:03 2026"),
    });
    expect(parsePsStat("Z 5 5 Wed Dec  2 04:59:03 2026")?.state).toBe("Z");
    expect(parsePsStat("garbage")).toBeUndefined();
    // macOS prints the full path; command lines may contain anything.
    const list = parsePsList(
      [
        "  812     1 Ss   Wed Dec  2 04:59:03 2026 /usr/local/bin/node owner.js --persist-root /a b",
        "  900   812 S    Wed Dec  2 04:59:04 2026 /x/workerd serve --binary -",
        "  901   812 Z    Wed Dec  2 04:59:05 2026 (workerd)",
        "not a line",
      ].join("\n"),
    );
    expect(list.map((p) => [p.pid, p.ppid, p.state])).toEqual([
      [812, 1, "S"],
      [900, 812, "S"],
      [901, 812, "Z"],
    ]);
    expect(list[0]!.command).toBe("/usr/local/bin/node owner.js --persist-root /a b");
    expect(list[1]!.started).toBe(String(Number(list[0]!.started) + 1));
  });

  it("names instance dirs by whichever start time the process had, and reads them back", () => {
    expect(instanceDirIdentity("12-3456")).toEqual({ pid: 12, startTime: "3456" });
    expect(instanceDirIdentity("12-s1764651543")).toEqual({ pid: 12, started: "1764651543" });
    expect(instanceDirIdentity("12-0")).toEqual({ pid: 12 });
    expect(instanceDirIdentity("12-x")).toBeUndefined();
  });

  it("reads the lifeline's hello line, nothing else", () => {
    expect(parseHello("x-shared-storage 42 00ff\n")).toEqual({ pid: 42, token: "00ff" });
    expect(parseHello("HTTP/1.1 400 Bad Request")).toBeUndefined();
    expect(parseHello("x-shared-storage 42")).toBeUndefined();
  });

  it("compares versions by package only (miniflare and workerd may differ)", () => {
    const v = versions();
    expect(sameVersions(v, { ...v, wrangler: "other" })).toBe(true);
    expect(sameVersions(v, { ...v, miniflare: "other", workerd: "other" })).toBe(true);
    expect(sameVersions(v, { ...v, package: "other" })).toBe(false);
    expect(v.miniflare).toMatch(/^\d/);
    expect(miniflareEntry()).toContain(`${path.sep}miniflare${path.sep}`);
  });

  it("reads owner timings from the environment and rejects nonsense", () => {
    expect(ownerTimings({})).toEqual({ graceMs: 5000, idleMs: 2000, startTimeoutMs: 30000 });
    expect(ownerTimings({ WRANGLER_X_OWNER_IDLE_MS: "250" }).idleMs).toBe(250);
    expect(() => ownerTimings({ WRANGLER_X_OWNER_GRACE_MS: "soon" })).toThrow(
      'WRANGLER_X_OWNER_GRACE_MS must be a number of milliseconds, got "soon"',
    );
  });
});

describe("argv routing", () => {
  const cwd = "/project";
  const shared = (command: string, args: string[]) => ({ kind: "shared", command, args });

  it("passes everything that is not ours through unchanged", () => {
    for (const argv of [
      ["--version"],
      ["d1", "--help"],
      ["deploy"],
      ["-c", "api/wrangler.jsonc", "deploy", "--dry-run"],
      ["--", "--x-shared-storage"],
    ]) {
      expect(route(argv, {}, cwd)).toEqual({ kind: "passthrough", args: argv });
    }
  });

  it("takes storage-owner, also after global options", () => {
    expect(route(["storage-owner", "status"], {}).kind).toBe("storage-owner");
    expect(route(["-c", "a.jsonc", "storage-owner", "status"], {})).toEqual({
      kind: "storage-owner",
      args: ["-c", "a.jsonc", "storage-owner", "status"],
    });
  });

  it("finds the command after wrangler's global options", () => {
    const cases = [
      ["-c", "api/wrangler.jsonc", "dev"],
      ["--config=api/wrangler.jsonc", "dev"],
      ["--cwd", "workers/api", "-e", "staging", "dev"],
      ["--experimental-provision", "dev"],
      ["--x-provision", "false", "dev"],
      ["--experimental-something-new", "dev"],
      ["--profile", "work", "--install-skills", "dev"],
    ];
    for (const before of cases) {
      // The flag after the command, and between the global options and the command.
      expect(route([...before, "--x-shared-storage"], {}, cwd), before.join(" ")).toEqual(
        shared("dev", before),
      );
      expect(route([...before.slice(0, -1), "--x-shared-storage", "dev"], {}, cwd)).toEqual(
        shared("dev", before),
      );
    }
    // --env-file is a greedy array, in wrangler's yargs too: it takes the words after it.
    expect(
      route(["dev", "--env-file", ".env.a", "--env-file", ".env.b", "--x-shared-storage"], {}, cwd),
    ).toEqual(shared("dev", ["dev", "--env-file", ".env.a", "--env-file", ".env.b"]));
    expect(route(["--env-file", ".env", "dev", "--x-shared-storage"], {}, cwd)).toMatchObject({
      kind: "error",
    });
    expect(
      route(
        ["--cwd", "api", "d1", "-c", "x.jsonc", "migrations", "apply", "db", "--x-shared-storage"],
        {},
        cwd,
      ),
    ).toEqual(
      shared("d1 migrations apply", [
        "--cwd",
        "api",
        "d1",
        "-c",
        "x.jsonc",
        "migrations",
        "apply",
        "db",
      ]),
    );
  });

  it("reads the flag in every form wrangler's yargs accepts, the last one winning", () => {
    const on = shared("dev", ["dev", "--port", "1"]);
    const off = { kind: "passthrough", args: ["dev", "--port", "1"] };
    for (const flag of [
      ["--x-shared-storage"],
      ["--x-shared-storage", "true"],
      ["--x-shared-storage=true"],
      ["--x-shared-storage=1"],
    ]) {
      expect(route(["dev", ...flag, "--port", "1"], {}, cwd), flag.join(" ")).toEqual(on);
    }
    for (const flag of [
      ["--x-shared-storage", "false"],
      ["--x-shared-storage=false"],
      ["--x-shared-storage=0"],
      ["--no-x-shared-storage"],
      ["--x-shared-storage", "--no-x-shared-storage"],
    ]) {
      const env = { WRANGLER_X_SHARED_STORAGE: "true" };
      expect(route(["dev", ...flag, "--port", "1"], env, cwd), flag.join(" ")).toMatchObject(off);
    }
    expect(
      route(["dev", "--no-x-shared-storage", "--x-shared-storage", "--port", "1"], {}, cwd),
    ).toEqual(on);
    // A positional after the switch stays a positional.
    expect(route(["dev", "--x-shared-storage", "src/index.ts"], {}, cwd)).toEqual(
      shared("dev", ["dev", "src/index.ts"]),
    );
    expect(route(["dev", "--x-shared-storage=maybe"], {}, cwd)).toEqual({
      kind: "error",
      message: '--x-shared-storage takes true or false, not "maybe".',
    });
  });

  it("reads WRANGLER_X_SHARED_STORAGE for the commands it applies to", () => {
    expect(route(["dev"], { WRANGLER_X_SHARED_STORAGE: "true" }, cwd)).toEqual(
      shared("dev", ["dev"]),
    );
    expect(route(["-c", "a.jsonc", "dev"], { WRANGLER_X_SHARED_STORAGE: "1" }, cwd)).toEqual(
      shared("dev", ["-c", "a.jsonc", "dev"]),
    );
    expect(
      route(
        ["d1", "migrations", "apply", "db", "--local"],
        { WRANGLER_X_SHARED_STORAGE: "yes" },
        cwd,
      ),
    ).toMatchObject({ kind: "shared", command: "d1 migrations apply" });
    expect(route(["dev"], { WRANGLER_X_SHARED_STORAGE: "false" }, cwd)).toMatchObject({
      kind: "passthrough",
      args: ["dev"],
    });
    expect(route(["deploy"], { WRANGLER_X_SHARED_STORAGE: "true" }, cwd)).toEqual({
      kind: "passthrough",
      args: ["deploy"],
    });
    expect(route(["dev"], { WRANGLER_X_SHARED_STORAGE: "sure" }, cwd)).toEqual({
      kind: "error",
      message: 'WRANGLER_X_SHARED_STORAGE takes true or false, not "sure".',
    });
    expect(route(["deploy"], { WRANGLER_X_SHARED_STORAGE: "sure" }, cwd).kind).toBe("passthrough");
  });

  it("names the local storage command, subcommands of a group included", () => {
    const command = (argv: string[]) => {
      const decided = route([...argv, "--x-shared-storage"], {}, cwd);
      return decided.kind === "shared" ? decided.command : decided.kind;
    };
    expect(command(["kv", "key", "put", "k", "v", "--local"])).toBe("kv key put");
    expect(command(["kv", "bulk", "get", "keys.json"])).toBe("kv bulk get");
    expect(command(["d1", "execute", "--local", "db"])).toBe("d1 execute");
    expect(command(["d1", "export", "db", "--output", "x.sql"])).toBe("d1 export");
    expect(command(["r2", "bulk", "put", "bucket"])).toBe("r2 bulk put");
    expect(command(["flagship", "flags", "list", "app", "--local"])).toBe("flagship flags list");
    expect(command(["secrets-store", "secret", "list", "store"])).toBe("secrets-store secret list");
    expect(command(["d1", "time-travel", "info", "db"])).toBe("error");
    expect(command(["pages", "dev"])).toBe("error");
    expect(route(["deploy", "--x-shared-storage"], {}, cwd)).toEqual({
      kind: "error",
      message: expect.stringContaining("not to `wrangler deploy`"),
    });
    expect(route(["--x-shared-storage"], {}, cwd)).toEqual({
      kind: "error",
      message: expect.stringContaining("not to `wrangler (no command)`"),
    });
  });

  it("marks commands that will open local storage files themselves", () => {
    const direct = (argv: string[]) => {
      const decided = route(argv, {}, cwd);
      return decided.kind === "passthrough" ? decided.direct : decided.kind;
    };
    expect(direct(["kv", "key", "put", "k", "v", "--persist-to", "s"])).toEqual({
      command: "kv key put",
      sharable: true,
      persistTo: "s",
      config: undefined,
      cwd,
    });
    expect(direct(["--cwd", "/elsewhere", "-c", "w.jsonc", "dev"])).toEqual({
      command: "dev",
      sharable: true,
      persistTo: undefined,
      config: "w.jsonc",
      cwd: "/elsewhere",
    });
    expect(direct(["pages", "dev", "public"])).toMatchObject({
      command: "pages dev",
      sharable: false,
    });
    expect(direct(["kv", "key", "put", "k", "v", "--remote"])).toBeUndefined();
    expect(direct(["dev", "-r"])).toBeUndefined();
    expect(direct(["flagship", "flags", "list", "app"])).toBeUndefined();
    expect(direct(["flagship", "flags", "list", "app", "--local"])).toMatchObject({
      sharable: true,
    });
    expect(direct(["deploy"])).toBeUndefined();
    expect(direct(["d1", "execute", "--help"])).toBeUndefined();
  });

  it("covers every command of the pinned wrangler that opens local storage", () => {
    interface Node {
      definition?: { args?: Record<string, unknown> };
      subtree: Map<string, Node>;
    }
    const wrangler = createRequire(path.join(process.cwd(), "package.json"))("wrangler") as {
      experimental_getWranglerCommands: () => { registry: Node };
    };
    const local: string[][] = [];
    const walk = (node: Node, words: string[]) => {
      for (const [word, child] of node.subtree) {
        const args = Object.keys(child.definition?.args ?? {});
        if (args.includes("local") || args.includes("persist-to")) local.push([...words, word]);
        walk(child, [...words, word]);
      }
    };
    walk(wrangler.experimental_getWranglerCommands().registry, []);
    // `workflows … --local` talks to a running dev session over HTTP; it opens no file.
    const opensFiles = local.filter((words) => words[0] !== "workflows");
    const listed = [["dev"], ...LOCAL_STORAGE_COMMANDS, ...DIRECT_STORAGE_COMMANDS];
    const covers = (path: readonly string[], words: string[]) =>
      path.every((word, i) => words[i] === word);
    const uncovered = opensFiles.filter((words) => !listed.some((path) => covers(path, words)));
    expect(uncovered.map((w) => w.join(" "))).toEqual([]);
    const unused = listed.filter((path) => !opensFiles.some((words) => covers(path, words)));
    expect(unused.map((p) => p.join(" "))).toEqual([]);
    expect(opensFiles.length).toBeGreaterThan(30);
  });

  it("refuses combinations that cannot share", () => {
    expect(incompatibility("dev", ["dev", "--remote"])).toContain("--remote");
    expect(incompatibility("dev", ["dev", "-r"])).toContain("--remote");
    expect(incompatibility("dev", ["--remote", "true", "dev"])).toContain("--remote");
    expect(incompatibility("dev", ["dev", "--disable-dev-registry"])).toContain("dev registry");
    expect(incompatibility("dev", ["dev", "--port", "8787", "--remote=false"])).toBeUndefined();
    expect(incompatibility("d1 execute", ["d1", "execute", "db", "--remote"])).toContain(
      "--remote",
    );
    expect(incompatibility("flagship flags list", ["flagship", "flags", "list", "a"])).toContain(
      "--local",
    );
  });
});

describe("paths, resolved as wrangler resolves them", () => {
  it("finds the same user config as wrangler's own resolution", async () => {
    const requireWrangler = createRequire(path.join(process.cwd(), "package.json"));
    const wrangler = requireWrangler("wrangler") as {
      experimental_readRawConfig: (args: { script?: string }) => { userConfigPath?: string };
    };
    const root = path.join(tmp, "layout");
    mkdirSync(path.join(root, "a", "b", "c"), { recursive: true });
    writeFileSync(path.join(root, "wrangler.toml"), 'name = "outer"\n');
    writeFileSync(path.join(root, "a", "wrangler.jsonc"), '{ "name": "inner" }\n');
    for (const dir of [root, path.join(root, "a"), path.join(root, "a", "b", "c")]) {
      const theirs = wrangler.experimental_readRawConfig({
        script: path.join(dir, "index.js"),
      }).userConfigPath;
      expect(findUserConfig(dir)).toBe(theirs);
    }
    expect(persistRootFor({}, path.join(root, "a", "b"))).toBe(
      path.join(root, "a", ".wrangler", "state", "v3"),
    );
    expect(persistRootFor({ "persist-to": "x" }, root)).toBe(path.join(root, "x", "v3"));
    // wrangler's getLocalPersistencePath: an empty --persist-to= is none (`persistTo ? … : …`).
    expect(persistRootFor({ "persist-to": "" }, path.join(root, "a"))).toBe(
      path.join(root, "a", ".wrangler", "state", "v3"),
    );
  });

  it("resolves the dev registry like wrangler and miniflare", () => {
    const miniflare = createRequire(miniflareEntry())(miniflareEntry()) as {
      resolveDevRegistryPath: (p?: string) => string;
    };
    const home = path.join(tmp, "home");
    mkdirSync(home, { recursive: true });
    expect(resolveRegistryPath({ WRANGLER_REGISTRY_PATH: "/a/b" })).toBe("/a/b");
    expect(
      resolveRegistryPath({ WRANGLER_REGISTRY_PATH: "/a/b", CLOUDFLARE_DEV_REGISTRY_PATH: "/c" }),
    ).toBe("/c");
    const saved = process.env.CLOUDFLARE_DEV_REGISTRY_PATH;
    process.env.CLOUDFLARE_DEV_REGISTRY_PATH = "/c";
    try {
      expect(miniflare.resolveDevRegistryPath("/a/b")).toBe("/c");
    } finally {
      if (saved === undefined) delete process.env.CLOUDFLARE_DEV_REGISTRY_PATH;
      else process.env.CLOUDFLARE_DEV_REGISTRY_PATH = saved;
    }
    expect(resolveRegistryPath({ XDG_CONFIG_HOME: "/xdg" })).toMatch(
      /\/(\.wrangler|xdg\/\.wrangler)\/registry$/,
    );
  });
});

describe("output helpers", () => {
  it("formats durations and aligns tables", () => {
    expect(formatDuration(420)).toBe("0.4s");
    expect(formatDuration(65_000)).toBe("1m 5s");
    expect(formatDuration(7_200_000)).toBe("2h 0m");
    expect(table(["A", "BB"], [["xxx", "y"]])).toBe("A    BB\nxxx  y");
  });
});

describe("the lifeline's token", () => {
  it("is never sent to whoever connects: a client that only read the hello cannot stop the owner", async () => {
    const token = "0123456789abcdef0123456789abcdef";
    let stops = 0;
    const port = await openLifeline({ pid: 4242, token, onStopRequest: () => stops++ });
    // Anyone on the machine may connect; echo back whatever the hello carried, as a stop request.
    const hello = await new Promise<string>((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port });
      let received = "";
      socket.on("error", reject);
      socket.on("data", (chunk) => {
        received += String(chunk);
        const line = received.split("\n")[0]!;
        if (!received.includes("\n")) return;
        socket.end(`stop ${line.split(" ")[2]}\n`, () => resolve(line));
      });
    });
    expect(hello).toMatch(/^x-shared-storage 4242 [0-9a-f]+$/);
    expect(hello).not.toContain(token);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(stops).toBe(0);
    // Who read the token from the owner's record proves it and may stop it.
    expect(await askLifeline(port, { pid: 4242, token: "f".repeat(32) })).toBe(false);
    expect(await askLifeline(port, { pid: 4242, token })).toBe(true);
    expect(await askLifeline(port, { pid: 4242, token }, { stop: true })).toBe(true);
    await waitForValue(() => stops === 1);
  });
});

async function waitForValue(check: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(check()).toBe(true);
}
