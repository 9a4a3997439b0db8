// A user project as npm builds it: `npm install` of our packed tarball into a project that pins
// its own wrangler. Installs are cached under os.tmpdir() per checkout and wrangler version; a
// changed tarball is reinstalled over the cached wrangler (seconds), a new wrangler version costs
// a full install (~15 s with a warm npm cache). Package managers' caches live only while they
// install; the stores projects hard-link are shared by checkouts. Caches nobody uses are pruned.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import lockfile from "proper-lockfile";
import { errnoCode } from "../../src/errors.js";
import { sleepSync } from "../../src/wait.js";
import { REPO } from "./sandbox.js";

/** What all the commands of one fixture install may take together. */
const INSTALL_TIMEOUT_MS = 600_000;

const CACHES = path.join(os.tmpdir(), "x-shared-storage-fixtures");
const CACHE = path.join(CACHES, createHash("sha256").update(REPO).digest("hex").slice(0, 8));
/** Stamped at every use: tells the caches of checkouts still in use from those nobody runs. */
const LAST_USED = ".last-used";
/** Other checkouts' caches are kept this long after their last use, and at most this many. */
const KEEP_OTHERS_MS = 2 * 24 * 3600_000;
const KEEP_OTHERS = 2;
/** Tarballs of earlier builds: a fork of this run packs the same bytes, so old ones are unused. */
const KEEP_TARBALLS_MS = 3600_000;
/**
 * What the installed projects of every checkout hard-link (pnpm's stores, bun's cache, with
 * pnpm's metadata): one copy on the machine per manager and wrangler version, stamped at each use.
 * Both managers make these for many projects installing at once (by default one per user), so
 * concurrent suites share them.
 */
const STORES = path.join(CACHES, "shared");
/** A fixture's package-manager caches while it installs: `<fixture dir><SCRATCH>`. */
const SCRATCH = ".install-cache";
/** What earlier versions of this file kept in a checkout's cache: managers' caches and stores. */
export const RETIRED = [
  "yarn-cache",
  "yarn4-cache",
  "pnpm-cache",
  "pnpm9-cache",
  "pnpm9-store",
  "bun-cache",
];

export interface FixtureProject {
  dir: string;
  /** node_modules/.bin/wrangler of the project. */
  bin: string;
  /** Seconds the install took (0 when cached). */
  installSeconds: number;
}

let packed: { file: string; hash: string } | undefined;

function lastUsed(cache: string): number {
  for (const file of [path.join(cache, LAST_USED), cache]) {
    try {
      return statSync(file).mtimeMs;
    } catch {
      // no stamp: fall back to the directory itself
    }
  }
  return 0;
}

/**
 * Each checkout caches ~2 GB of installs. Without pruning, every clone a contributor ever ran
 * the suite in keeps its own under the temp dir: drop those unused for two days (and all but the
 * two most recently used), the stores they share once no checkout used them for two days, this
 * checkout's tarballs of earlier builds, and what earlier versions kept for good.
 */
export function pruneFixtureCaches(
  now = Date.now(),
  caches = CACHES,
  ours = CACHE,
  keep: string | undefined = packed?.file,
): string[] {
  const removed: string[] = [];
  const shared = path.join(caches, path.basename(STORES));
  // The shared folder is stamped too: a checkout of an earlier version takes it for a checkout's.
  for (const dir of [ours, shared]) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, LAST_USED), "");
  }
  const others = readdirSync(caches)
    .map((name) => path.join(caches, name))
    .filter((dir) => dir !== ours && dir !== shared && statSync(dir).isDirectory())
    .sort((a, b) => lastUsed(b) - lastUsed(a));
  others.forEach((dir, index) => {
    const unused = now - lastUsed(dir);
    // A checkout whose suite is running now stamped its cache within the hour: never removed.
    if (unused > KEEP_OTHERS_MS || (index >= KEEP_OTHERS && unused > KEEP_TARBALLS_MS)) {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      removed.push(dir);
    }
  });
  // A store no checkout used for two days: a checkout that still links into it keeps its files
  // (hard links), and its next install, finding the store gone, starts over.
  for (const entry of readdirSync(shared, { withFileTypes: true })) {
    const store = path.join(shared, entry.name);
    if (entry.isDirectory() && now - lastUsed(store) > KEEP_OTHERS_MS) {
      rmSync(store, { recursive: true, force: true, maxRetries: 3 });
      removed.push(store);
    }
  }
  for (const name of RETIRED) {
    const dir = path.join(ours, name);
    if (!existsSync(dir)) continue;
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    removed.push(dir);
  }
  const tarballs = path.join(ours, "pack");
  for (const name of existsSync(tarballs) ? readdirSync(tarballs) : []) {
    const file = path.join(tarballs, name);
    if (file !== keep && now - statSync(file).mtimeMs > KEEP_TARBALLS_MS) {
      rmSync(file, { force: true });
      removed.push(file);
    }
  }
  return removed;
}

/**
 * Our package as `npm publish` would ship it (dist must be built), named by its content: test
 * files in parallel forks pack at once and must not replace a tarball another one installs, and
 * pnpm, yarn and bun cache a local tarball by its path.
 */
function pack(env: NodeJS.ProcessEnv): { file: string; hash: string } {
  if (packed) return packed;
  const scratch = path.join(CACHE, `pack-${process.pid}`);
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  const name = execFileSync(
    "npm",
    ["pack", "--ignore-scripts", "--silent", "--pack-destination", scratch],
    { cwd: REPO, encoding: "utf8", env },
  )
    .trim()
    .split("\n")
    .pop()!;
  const made = path.join(scratch, name);
  const hash = createHash("sha256").update(readFileSync(made)).digest("hex");
  const dir = path.join(CACHE, "pack");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `shared-storage-wrangler-${hash.slice(0, 12)}.tgz`);
  // Same name, same bytes: a rename over another fork's copy changes nothing it reads.
  renameSync(made, file);
  rmSync(scratch, { recursive: true, force: true });
  packed = { file, hash };
  pruneFixtureCaches();
  return packed;
}

/**
 * The fixture in `dir`, installed by `install` unless it already holds this tarball. Under the
 * fixture's lock: test files in parallel forks (and `npm run demo`) may want the same fixture at
 * once, and the second must find it installed, not half written.
 */
function cachedFixture(
  dir: string,
  env: NodeJS.ProcessEnv,
  install: (tarball: string) => void,
): FixtureProject {
  const ours = pack(env);
  const marker = path.join(dir, ".installed");
  const bin = path.join(dir, "node_modules", ".bin", "wrangler");
  // An install blocks the event loop, so the lock's mtime is not refreshed meanwhile: it counts
  // as stale only well after the longest install (its commands' timeouts add up to this).
  const options = { realpath: false, lockfilePath: `${dir}.lock`, stale: 2 * INSTALL_TIMEOUT_MS };
  const deadline = Date.now() + 2 * INSTALL_TIMEOUT_MS;
  let release: () => void;
  for (;;) {
    try {
      release = lockfile.lockSync(dir, options);
      break;
    } catch (error) {
      if (errnoCode(error) !== "ELOCKED" || Date.now() > deadline) throw error;
      sleepSync(500);
    }
  }
  try {
    if (existsSync(marker) && readFileSync(marker, "utf8") === ours.hash) {
      return { dir, bin, installSeconds: 0 };
    }
    const started = Date.now();
    rmSync(marker, { force: true });
    install(ours.file);
    writeFileSync(marker, ours.hash);
    return { dir, bin, installSeconds: (Date.now() - started) / 1000 };
  } finally {
    release();
  }
}

function npm(args: string[], cwd: string, env: NodeJS.ProcessEnv): void {
  execFileSync(
    "npm",
    [...args, "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
    { cwd, env, stdio: "pipe", timeout: INSTALL_TIMEOUT_MS / 2 },
  );
}

function installedVersion(dir: string): string | undefined {
  try {
    const json = path.join(dir, "node_modules", "wrangler", "package.json");
    return (JSON.parse(readFileSync(json, "utf8")) as { version: string }).version;
  } catch {
    return undefined;
  }
}

/**
 * A project whose package.json pins `wrangler` and that then ran `npm i -D <our tarball>`.
 * `legacyPeerDeps` installs us beside a wrangler outside our peer range, as `--legacy-peer-deps`
 * (or `--force`) lets a user do.
 */
export function fixtureProject(
  wrangler: string,
  env: NodeJS.ProcessEnv,
  options: { legacyPeerDeps?: boolean; devDependencies?: Record<string, string> } = {},
): FixtureProject {
  const extra = options.devDependencies ?? {};
  const dir = path.join(
    CACHE,
    [`wrangler-${wrangler}`, ...Object.entries(extra).map(([n, v]) => `${n}-${v}`)]
      .join("+")
      .replace(/[@/]/g, "_"),
  );
  const peers = options.legacyPeerDeps ? ["--legacy-peer-deps"] : [];
  return cachedFixture(dir, env, (tarball) => {
    if (installedVersion(dir) !== wrangler) {
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      writeFileSync(
        path.join(dir, "package.json"),
        JSON.stringify({
          name: "fixture",
          private: true,
          devDependencies: { wrangler, ...extra },
        }),
      );
      npm(["install", ...peers], dir, env);
    }
    npm(["install", "-D", ...peers, tarball], dir, env);
  });
}

/**
 * The package managers besides npm that the suite installs us with (our devDependencies): the
 * oldest major of each still in wide use and the newest — pnpm 9 (the alias `pnpm9`) and 12,
 * yarn 1 and 4 (`yarn4`, @yarnpkg/cli-dist, with the node_modules linker) — and bun.
 */
export const MANAGERS = ["pnpm", "pnpm9", "yarn", "yarn4", "bun"] as const;
export type Manager = (typeof MANAGERS)[number];

/** pnpm of any major: they share the command lines and differ in where settings live. */
export const isPnpm = (manager: Manager): boolean => manager.startsWith("pnpm");

/** How each manager runs one of the project's bins: `pnpm exec wrangler …`. */
export const RUN_BIN: Record<Manager, string[]> = {
  pnpm: ["exec"],
  pnpm9: ["exec"],
  yarn: ["--silent", "run"],
  yarn4: ["run"],
  bun: ["run", "--silent"],
};

/** Our devDependency that provides each manager (pnpm 9 is an npm alias). */
const MANAGER_PACKAGE: Record<Manager, { name: string; bin: string }> = {
  pnpm: { name: "pnpm", bin: "pnpm" },
  pnpm9: { name: "pnpm9", bin: "pnpm" },
  yarn: { name: "yarn", bin: "yarn" },
  yarn4: { name: "yarn4", bin: "yarn" },
  bun: { name: "bun", bin: "bun" },
};

/**
 * The manager's executable, read from its package's `bin` rather than node_modules/.bin: two
 * pnpm packages both declare a `pnpm` bin, and npm links only one of them there.
 */
export function managerBin(manager: Manager): string {
  const { name, bin } = MANAGER_PACKAGE[manager];
  const dir = path.join(REPO, "node_modules", name);
  const declared = (
    JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as {
      bin: Record<string, string>;
    }
  ).bin[bin];
  if (!declared) throw new Error(`${dir}/package.json declares no "${bin}" bin`);
  return path.join(dir, declared);
}

/**
 * Where each manager keeps what it needs only while installing: yarn 1's cache (~1.7 GB: it
 * fetches every platform's workerd, esbuild and sharp) and yarn 4's cache and global mirror
 * (~480 MB), in `scratch`, which the install removes when it ends; adding our next tarball then
 * fetches them again (~9 s and ~6 s here, against 0.6 s from a kept cache). What the installed
 * projects hard-link stays, shared by every checkout: pnpm's stores and bun's cache (~230 MB
 * each, no more than the one project linked to them), with pnpm's metadata.
 */
function managerEnv(env: NodeJS.ProcessEnv, scratch: string, shared: string): NodeJS.ProcessEnv {
  return {
    ...env,
    YARN_CACHE_FOLDER: scratch,
    // yarn 4: its own cache folder rather than the global one, installs that may write the
    // lockfile (the sandbox sets CI, which makes them immutable), and npm's registry (the only
    // one this machine reaches; the project's .yarnrc.yml does not name one).
    YARN_ENABLE_GLOBAL_CACHE: "false",
    YARN_GLOBAL_FOLDER: path.join(scratch, "yarn-global"),
    YARN_ENABLE_IMMUTABLE_INSTALLS: "false",
    YARN_ENABLE_TELEMETRY: "0",
    YARN_NPM_REGISTRY_SERVER: "https://registry.npmjs.org",
    BUN_INSTALL_CACHE_DIR: shared,
    // pnpm keeps its metadata cache and state under XDG_CACHE_HOME and XDG_STATE_HOME
    // (~/.cache/pnpm): a few MB, which make adding our next tarball 0.1 s instead of 5.
    XDG_CACHE_HOME: path.join(shared, "xdg-cache"),
    XDG_STATE_HOME: path.join(shared, "xdg-state"),
  };
}

const pnpmAdd = (tarball: string) => ["add", "-D", tarball, "--reporter=silent"];
/** The first command a user of each manager types to add us: `pnpm add -D <tarball>`. */
const ADD_DEV: Record<Manager, (tarball: string) => string[]> = {
  pnpm: pnpmAdd,
  pnpm9: pnpmAdd,
  yarn: (tarball) => ["add", "-D", `file:${tarball}`, "--silent", "--non-interactive"],
  yarn4: (tarball) => ["add", "-D", `shared-storage-wrangler@file:${tarball}`],
  bun: (tarball) => ["add", "-d", tarball, "--silent"],
};

export const REGISTER_OPTION = "--require=shared-storage-wrangler/register";

/**
 * The README's line that makes pnpm pass the register to every node it runs, in the file that
 * major reads: pnpm 9 reads settings from `.npmrc` only (and refuses every command when a
 * pnpm-workspace.yaml lacks `packages`); pnpm 11 and later read only auth and registry settings
 * from `.npmrc`, the rest from pnpm-workspace.yaml.
 */
export const PNPM_NODE_OPTIONS: Record<"pnpm" | "pnpm9", { file: string; line: string }> = {
  pnpm: { file: "pnpm-workspace.yaml", line: `nodeOptions: "${REGISTER_OPTION}"` },
  pnpm9: { file: ".npmrc", line: `node-options=${REGISTER_OPTION}` },
};

/** The README's yarn 4 line. */
export const YARN4_RC = "nodeLinker: node-modules\n";

/** A project that pins `wrangler` and then ran `<manager> add -D <our tarball>`. */
export function managerProject(
  manager: Manager,
  wrangler: string,
  env: NodeJS.ProcessEnv,
): FixtureProject {
  const dir = path.join(CACHE, `${manager}+wrangler-${wrangler}`);
  const scratch = `${dir}${SCRATCH}`;
  // What the project links into, shared by checkouts: one per manager (each pnpm major has its
  // own store layout) and wrangler, so a store of versions the suite no longer pins is pruned.
  const linked = isPnpm(manager) || manager === "bun";
  const shared = linked ? path.join(STORES, path.basename(dir)) : scratch;
  if (linked) {
    mkdirSync(shared, { recursive: true });
    writeFileSync(path.join(shared, LAST_USED), "");
  }
  const store = isPnpm(manager) ? [`--store-dir=${path.join(shared, "store")}`] : [];
  const run = (args: string[]) =>
    execFileSync(managerBin(manager), [...args, ...store], {
      cwd: dir,
      env: managerEnv(env, scratch, shared),
      stdio: "pipe",
      timeout: INSTALL_TIMEOUT_MS / 4,
    });
  // pnpm 10 and later run no dependency's install script unless the project allows it (as a
  // user does when `pnpm approve-builds` asks); pnpm 9 runs them all.
  const allowBuilds = manager === "pnpm" ? "allowBuilds:\n  esbuild: true\n  workerd: true\n" : "";
  const installWrangler = () => {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(dir, "package.json"),
      JSON.stringify({ name: "fixture", private: true, devDependencies: { wrangler } }),
    );
    if (allowBuilds) writeFileSync(path.join(dir, "pnpm-workspace.yaml"), allowBuilds);
    // yarn 4 as the README says: the node_modules linker (Plug'n'Play is untested).
    if (manager === "yarn4") writeFileSync(path.join(dir, ".yarnrc.yml"), YARN4_RC);
    const quiet: Record<Manager, string[]> = {
      pnpm: ["--reporter=silent"],
      pnpm9: ["--reporter=silent"],
      yarn: ["--silent"],
      yarn4: [],
      bun: ["--silent"],
    };
    try {
      run(["install", ...quiet[manager]]);
    } catch (error) {
      // A half-done install (node_modules/wrangler linked, a script failed) is no cached wrangler.
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
  };
  return cachedFixture(dir, env, (tarball) => {
    // Under the fixture's lock, so no other install uses this scratch; one a killed install left
    // is removed here.
    rmSync(scratch, { recursive: true, force: true });
    try {
      if (installedVersion(dir) !== wrangler) installWrangler();
      try {
        run(ADD_DEV[manager](tarball));
      } catch {
        // The cached project names a tarball that is gone (yarn then cannot resolve it): start over.
        installWrangler();
        run(ADD_DEV[manager](tarball));
      }
    } finally {
      rmSync(scratch, { recursive: true, force: true, maxRetries: 3 });
    }
    // Then, as the README says, the one line that teaches the real `wrangler` our command lines,
    // which pnpm passes to every node it runs (install scripts included). Written before we are
    // installed, every install script fails on `Cannot find module 'shared-storage-wrangler/register'`.
    if (manager === "pnpm" || manager === "pnpm9") {
      const { file, line } = PNPM_NODE_OPTIONS[manager];
      const target = path.join(dir, file);
      const before = file === "pnpm-workspace.yaml" ? allowBuilds : "";
      writeFileSync(target, `${before}${line}\n`);
    }
  });
}
