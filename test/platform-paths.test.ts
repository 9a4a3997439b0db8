// Pure logic for macOS and Windows, run on Linux: the dev registry where wrangler keeps it on each
// platform, one persist root per directory however it is spelt (win32 and darwin rules against a
// file system that ignores case), and renames/removals that Windows fails for a moment.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  canonicalRoot,
  canonicalRootIfExists,
  ignoresCase,
  nodeRootFs,
  type RootFs,
  sameDirectory,
} from "../src/canonical-root.js";
import { adoptLegacyLayout } from "../src/dev/continuity.js";
import { miniflareEntry, resolveRegistryPath } from "../src/environment.js";
import {
  removeFileWithRetrySync,
  removeTreeWithRetrySync,
  renameWithRetrySync,
} from "../src/fs-retry.js";
import { legacyIsolatedPathFor, rootPaths, writeRecordAtomic } from "../src/records.js";
import { registryPathFor, type RegistryPathInputs, xdgConfigHome } from "../src/registry-path.js";
import { ownerCandidateName } from "../src/storage-candidate.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-platform-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("the dev registry on each platform", () => {
  const none = () => false;
  const mac = (over: Partial<RegistryPathInputs> = {}): RegistryPathInputs => ({
    platform: "darwin",
    env: {},
    homedir: "/Users/me",
    isDirectory: none,
    ...over,
  });
  const win = (over: Partial<RegistryPathInputs> = {}): RegistryPathInputs => ({
    platform: "win32",
    env: { APPDATA: "C:\\Users\\me\\AppData\\Roaming" },
    homedir: "C:\\Users\\me",
    isDirectory: none,
    ...over,
  });
  const linux = (over: Partial<RegistryPathInputs> = {}): RegistryPathInputs => ({
    platform: "linux",
    env: {},
    homedir: "/home/me",
    isDirectory: none,
    ...over,
  });

  it("macOS: ~/Library/Preferences/.wrangler/registry, unless ~/.wrangler exists", () => {
    expect(registryPathFor(mac())).toBe("/Users/me/Library/Preferences/.wrangler/registry");
    const legacy = mac({ isDirectory: (dir) => dir === "/Users/me/.wrangler" });
    expect(registryPathFor(legacy)).toBe("/Users/me/.wrangler/registry");
    // XDG_CONFIG_HOME is honoured on macOS too (xdg-app-paths).
    expect(registryPathFor(mac({ env: { XDG_CONFIG_HOME: "/cfg" } }))).toBe(
      "/cfg/.wrangler/registry",
    );
  });

  it("Windows: %APPDATA%\\xdg.config\\.wrangler\\registry, unless ~\\.wrangler exists", () => {
    expect(registryPathFor(win())).toBe(
      "C:\\Users\\me\\AppData\\Roaming\\xdg.config\\.wrangler\\registry",
    );
    // Without APPDATA, the roaming profile under the home directory.
    expect(registryPathFor(win({ env: {}, homedir: "D:\\home" }))).toBe(
      "D:\\home\\AppData\\Roaming\\xdg.config\\.wrangler\\registry",
    );
    const legacy = win({ isDirectory: (dir) => dir === "C:\\Users\\me\\.wrangler" });
    expect(registryPathFor(legacy)).toBe("C:\\Users\\me\\.wrangler\\registry");
    expect(registryPathFor(win({ env: { XDG_CONFIG_HOME: "E:\\cfg" } }))).toBe(
      "E:\\cfg\\.wrangler\\registry",
    );
  });

  it("Linux: $XDG_CONFIG_HOME or ~/.config, ~/.wrangler when it exists", () => {
    expect(registryPathFor(linux())).toBe("/home/me/.config/.wrangler/registry");
    expect(registryPathFor(linux({ env: { XDG_CONFIG_HOME: "/xdg" } }))).toBe(
      "/xdg/.wrangler/registry",
    );
    const legacy = linux({ isDirectory: (dir) => dir === "/home/me/.wrangler" });
    expect(registryPathFor(legacy)).toBe("/home/me/.wrangler/registry");
  });

  it("settings win on every platform: CLOUDFLARE_DEV_REGISTRY_PATH, then WRANGLER_REGISTRY_PATH", () => {
    for (const inputs of [mac(), win(), linux()]) {
      const env = { ...inputs.env, WRANGLER_REGISTRY_PATH: inputs.homedir };
      expect(registryPathFor({ ...inputs, env })).toBe(inputs.homedir);
      const both = { ...env, CLOUDFLARE_DEV_REGISTRY_PATH: `${inputs.homedir}x` };
      expect(registryPathFor({ ...inputs, env: both })).toBe(`${inputs.homedir}x`);
      // WRANGLER_REGISTRY_PATH="" hands miniflare nothing: miniflare's own default, no legacy dir.
      const empty = { ...inputs, env: { ...inputs.env, WRANGLER_REGISTRY_PATH: "" } };
      const rules = inputs.platform === "win32" ? path.win32 : path.posix;
      expect(registryPathFor({ ...empty, isDirectory: () => true })).toBe(
        rules.join(xdgConfigHome(inputs), "cloudflare", "dev-registry", "v5"),
      );
    }
  });

  it("agrees with the installed miniflare's default on Linux and macOS", () => {
    const miniflare = createRequire(miniflareEntry())(miniflareEntry()) as {
      resolveDevRegistryPath: (p?: string) => string;
    };
    const saved = {
      platform: Object.getOwnPropertyDescriptor(process, "platform")!,
      xdg: process.env.XDG_CONFIG_HOME,
      cf: process.env.CLOUDFLARE_DEV_REGISTRY_PATH,
    };
    delete process.env.XDG_CONFIG_HOME;
    delete process.env.CLOUDFLARE_DEV_REGISTRY_PATH;
    try {
      for (const platform of ["linux", "darwin"] as const) {
        Object.defineProperty(process, "platform", { value: platform });
        const ours = registryPathFor({
          platform,
          env: { WRANGLER_REGISTRY_PATH: "" },
          homedir: os.homedir(),
          isDirectory: () => false,
        });
        expect(miniflare.resolveDevRegistryPath()).toBe(ours);
      }
    } finally {
      Object.defineProperty(process, "platform", saved.platform);
      if (saved.xdg !== undefined) process.env.XDG_CONFIG_HOME = saved.xdg;
      if (saved.cf !== undefined) process.env.CLOUDFLARE_DEV_REGISTRY_PATH = saved.cf;
    }
  });

  it("resolveRegistryPath reads the given env's home, as the child it is meant for would", () => {
    const home = path.join(tmp, "home");
    mkdirSync(path.join(home, ".wrangler"), { recursive: true });
    expect(resolveRegistryPath({ HOME: home })).toBe(path.join(home, ".wrangler", "registry"));
    expect(resolveRegistryPath({ HOME: path.join(tmp, "nohome"), XDG_CONFIG_HOME: "/x" })).toBe(
      "/x/.wrangler/registry",
    );
  });
});

/** A file system that ignores case, as NTFS and APFS do by default, with a stored spelling. */
function caseInsensitiveFs(rules: path.PlatformPath, stored: string[]): RootFs {
  const key = (p: string) => rules.resolve(p).toLowerCase();
  const byKey = new Map(stored.map((p) => [key(p), p]));
  return {
    path: rules,
    realpath: (dir) => {
      // Like realpath(3) on some systems: resolves, but keeps the case it was given.
      if (!byKey.has(key(dir))) throw Object.assign(new Error(`ENOENT ${dir}`), { code: "ENOENT" });
      return rules.resolve(dir);
    },
    identity: (file) => (byKey.has(key(file)) ? key(file) : undefined),
    readdir: (dir) =>
      stored
        .filter((p) => key(rules.dirname(p)) === key(dir) && key(p) !== key(dir))
        .map((p) => rules.basename(p)),
  };
}

describe("one persist root per directory", () => {
  it("win32 rules: C:\\x\\State and c:\\X\\state are one root, spelt as stored", () => {
    const fs = caseInsensitiveFs(path.win32, ["C:\\", "C:\\x", "C:\\x\\State", "C:\\x\\State\\v3"]);
    expect(ignoresCase("c:\\X\\state\\V3", fs)).toBe(true);
    const a = canonicalRoot("C:\\x\\State\\v3", fs);
    const b = canonicalRoot("c:\\X\\state\\V3", fs);
    expect(a).toBe("C:\\x\\State\\v3");
    expect(b).toBe(a);
    // So both terminals' sessions name one owner candidate and one pointer.
    expect(ownerCandidateName(b)).toBe(ownerCandidateName(a));
    expect(sameDirectory("c:/x/state/v3", "C:\\X\\STATE\\V3", fs)).toBe(true);
    // Not created yet: canonical up to the nearest directory that exists.
    expect(canonicalRootIfExists("c:\\X\\state\\v3\\new", fs)).toBe("C:\\x\\State\\v3\\new");
  });

  it("darwin rules: ../State beside ../state on a case-insensitive volume", () => {
    const stored = ["/", "/Users", "/Users/me", "/Users/me/State", "/Users/me/State/v3"];
    const fs = caseInsensitiveFs(path.posix, stored);
    const cwd = "/Users/me/app";
    expect(canonicalRoot(path.posix.join(cwd, "../state/v3"), fs)).toBe("/Users/me/State/v3");
    expect(canonicalRoot(path.posix.join(cwd, "../State/v3"), fs)).toBe("/Users/me/State/v3");
  });

  it("a case-sensitive file system keeps two spellings apart (probed, here on Linux)", () => {
    const lower = path.join(tmp, "cs", "state");
    const upper = path.join(tmp, "cs", "State");
    mkdirSync(lower, { recursive: true });
    mkdirSync(upper, { recursive: true });
    expect(ignoresCase(lower)).toBe(false);
    expect(canonicalRoot(lower)).not.toBe(canonicalRoot(upper));
    expect(sameDirectory(lower, upper)).toBe(false);
    expect(sameDirectory(lower, path.join(tmp, "cs", ".", "state", ".."), nodeRootFs)).toBe(false);
    expect(sameDirectory(lower, `${lower}/`)).toBe(true);
    const link = path.join(tmp, "cs", "link");
    symlinkSync(lower, link);
    expect(canonicalRoot(path.join(link, "..", "link"))).toBe(canonicalRoot(lower));
    expect(sameDirectory(path.join(link, "v3"), path.join(lower, "v3"))).toBe(true);
  });
});

/** An operation that fails with `code` `times` times, then does the real thing. */
function flaky<A extends unknown[]>(times: number, code: string, real: (...args: A) => void) {
  let failures = 0;
  const calls: string[] = [];
  const op = (...args: A) => {
    calls.push(String(args[0]));
    if (failures < times) {
      failures++;
      throw Object.assign(new Error(`${code}: operation not permitted, '${String(args[0])}'`), {
        code,
      });
    }
    real(...args);
  };
  return { op, calls };
}
const noSleep = { sleep: () => {} };

describe("Windows file semantics: transient EPERM/EBUSY", () => {
  it("a record write completes through EPERM on the rename, the old record whole until then", () => {
    const file = path.join(tmp, "records", "owner.json");
    writeRecordAtomic(file, { v: 1 });
    const seen: string[] = [];
    const { op, calls } = flaky(3, "EPERM", (from: string, to: string) => {
      renameSync(from, to);
    });
    writeRecordAtomic(file, { v: 2 }, (from, to) =>
      renameWithRetrySync(from, to, {
        rename: (a, b) => {
          seen.push(readFileSync(file, "utf8"));
          op(a, b);
        },
        ...noSleep,
      }),
    );
    expect(calls).toHaveLength(4);
    // Every reader in between saw the old record, complete.
    expect(seen.every((text) => JSON.parse(text).v === 1)).toBe(true);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ v: 2 });
    expect(existsSync(`${file}.${process.pid}.tmp`)).toBe(false);
  });

  it("a lasting error surfaces with the path; the old record stays and no temp file is left", () => {
    const file = path.join(tmp, "records", "lasting.json");
    writeRecordAtomic(file, { v: 1 });
    const { op, calls } = flaky(99, "EPERM", () => {});
    expect(() =>
      writeRecordAtomic(file, { v: 2 }, (from, to) =>
        renameWithRetrySync(from, to, { rename: op, ...noSleep }),
      ),
    ).toThrow(new RegExp(`cannot rename .*lasting\\.json.*\\(5 tries\\).*EPERM`));
    expect(calls).toHaveLength(5);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ v: 1 });
    expect(existsSync(`${file}.${process.pid}.tmp`)).toBe(false);
  });

  it("an error that is not transient is not retried", () => {
    const { op, calls } = flaky(99, "ENOENT", () => {});
    expect(() => renameWithRetrySync("/nowhere/a", "/nowhere/b", { rename: op })).toThrow(
      /cannot rename \/nowhere\/a to \/nowhere\/b: ENOENT/,
    );
    expect(calls).toHaveLength(1);
  });

  it("an instance dir whose workerd is still exiting (EBUSY) is removed on a later try", () => {
    const dir = path.join(tmp, "instances", "123-456");
    mkdirSync(path.join(dir, "registry"), { recursive: true });
    writeFileSync(path.join(dir, "registry", "x"), "x");
    const { op, calls } = flaky(2, "EBUSY", (target: string, options: object) =>
      rmSync(target, options),
    );
    removeTreeWithRetrySync(dir, { rm: op, ...noSleep });
    expect(calls).toHaveLength(3);
    expect(existsSync(dir)).toBe(false);
    const lasting = flaky(99, "ENOTEMPTY", () => {});
    expect(() => removeTreeWithRetrySync(dir, { rm: lasting.op, ...noSleep })).toThrow(
      /cannot remove .*123-456 \(5 tries\)/,
    );
  });

  it("a presence file held open (EPERM) is removed on a later try; a missing one is false", () => {
    const file = path.join(tmp, "clients", "1.json");
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, "{}");
    const { op } = flaky(2, "EPERM", (target: string) => rmSync(target));
    expect(removeFileWithRetrySync(file, { rm: op, ...noSleep })).toBe(true);
    expect(existsSync(file)).toBe(false);
    expect(removeFileWithRetrySync(file)).toBe(false);
  });

  it("the continuity move completes through EPERM and loses nothing", () => {
    const paths = rootPaths(path.join(tmp, "continuity", "v3"));
    const legacy = legacyIsolatedPathFor(paths, "counter");
    mkdirSync(path.join(legacy, "do", "counter-Counter"), { recursive: true });
    writeFileSync(path.join(legacy, "do", "counter-Counter", "a.sqlite"), "data");
    const { op, calls } = flaky(2, "EPERM", (from: string, to: string) => renameSync(from, to));
    const report = adoptLegacyLayout(paths, "counter", (from, to) =>
      renameWithRetrySync(from, to, { rename: op, ...noSleep }),
    );
    expect(calls).toHaveLength(3);
    expect(report.moved.map((m) => m.unit)).toEqual(["do/counter-Counter"]);
    expect(
      readFileSync(path.join(paths.persistRoot, "do", "counter-Counter", "a.sqlite"), "utf8"),
    ).toBe("data");
  });
});
