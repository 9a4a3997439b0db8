// Where things are: the project's wrangler and its miniflare, the dev registry, our settings.
// Nothing here loads wrangler's bundle or miniflare; callers that need them do so explicitly.
import { existsSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Versions } from "./records.js";
import { homedirFor, registryPathFor } from "./registry-path.js";

export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Set by our `wrangler` for the processes it starts with shared storage (the real wrangler with
 * the preload, and through it the owner and its standby): the wrangler whose miniflare they all
 * must load, so that owner and sessions run the same code.
 */
export const WRANGLER_PACKAGE_ENV = "WRANGLER_X_WRANGLER_PACKAGE";

/**
 * The wrangler to run: the one named by WRANGLER_X_WRANGLER_PACKAGE, else the one the project in
 * `cwd` resolves (its own pin, or our peer dependency), else the one next to our package.
 */
export function resolveWranglerPackage(
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): string {
  const given = env[WRANGLER_PACKAGE_ENV];
  if (given) return given;
  for (const from of [path.join(cwd, "package.json"), path.join(PACKAGE_ROOT, "package.json")]) {
    try {
      return createRequire(from).resolve("wrangler/package.json");
    } catch {
      // not installed there; try the next
    }
  }
  throw new Error(
    `shared-storage-wrangler needs wrangler (a peer dependency): none resolves from ${cwd} or ${PACKAGE_ROOT}. Install it: npm install -D wrangler`,
  );
}

/**
 * What this process resolves once and keeps: its wrangler, that wrangler's miniflare, and the
 * versions of each miniflare copy it runs. The one process-wide cache of this module, on purpose
 * (the answers cannot change while the process runs, and `versions()` is asked on every record
 * written), filled on first use, never at import: the register loads this module in processes
 * where no wrangler resolves, and a taken-over wrangler names itself (WRANGLER_X_WRANGLER_PACKAGE)
 * before anything here asks.
 */
class EnvironmentCache {
  wranglerPackageJson?: string;
  wranglerMiniflareEntry?: string;
  /** Per miniflare entry (`miniflareEntry()`). */
  readonly versions = new Map<string, Versions>();

  /** Forgets everything, for a test that changes the environment within one process. */
  reset(): void {
    this.wranglerPackageJson = undefined;
    this.wranglerMiniflareEntry = undefined;
    this.versions.clear();
  }
}

const cache = new EnvironmentCache();
/** For tests: `environmentCache.reset()`. */
export { cache as environmentCache };

/** This process's wrangler (`resolveWranglerPackage`), resolved on first use. */
export function wranglerPackageJson(): string {
  return (cache.wranglerPackageJson ??= resolveWranglerPackage());
}
/** That wrangler's bundle, and its bin (which checks the Node version first). */
export const wranglerCli = () =>
  path.join(path.dirname(wranglerPackageJson()), "wrangler-dist", "cli.js");
export const wranglerBin = () =>
  path.join(path.dirname(wranglerPackageJson()), "bin", "wrangler.js");

/**
 * The miniflare file a session actually runs, set by the session (the preload or the register)
 * when its first persisting Miniflare is built, and inherited by the owner and its standby: a vite
 * session runs @cloudflare/vite-plugin's miniflare, not wrangler's.
 */
export const MINIFLARE_ENTRY_ENV = "WRANGLER_X_MINIFLARE_ENTRY";

/** That wrangler's own copy of miniflare. */
function wranglerMiniflareEntry(): string {
  return (cache.wranglerMiniflareEntry ??=
    createRequire(wranglerPackageJson()).resolve("miniflare"));
}

/**
 * The copy of miniflare this process runs (the owner must run exactly the code the sessions run):
 * WRANGLER_X_MINIFLARE_ENTRY once set (the owner's env names the session's copy), else wrangler's.
 */
export function miniflareEntry(env: NodeJS.ProcessEnv = process.env): string {
  return env[MINIFLARE_ENTRY_ENV] || wranglerMiniflareEntry();
}

/** Loads (or returns, if loaded) the miniflare copy this process runs (`miniflareEntry()`). */
export function requireMiniflare(): unknown {
  return createRequire(import.meta.url)(miniflareEntry());
}

function packageVersion(packageJson: string): string {
  try {
    return (
      (JSON.parse(readFileSync(packageJson, "utf8")) as { version?: string }).version ?? "unknown"
    );
  } catch {
    return "unknown";
  }
}

function findPackageJson(entry: string, name: string): string | undefined {
  for (let dir = path.dirname(entry); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const candidate = path.join(dir, "package.json");
    if (existsSync(candidate) && path.basename(dir) === name) return candidate;
  }
  return undefined;
}

/** The versions of the miniflare copy this process runs (`miniflareEntry()`), and its workerd. */
export function versions(): Versions {
  const entry = miniflareEntry();
  const cached = cache.versions.get(entry);
  if (cached) return cached;
  const miniflareJson = findPackageJson(entry, "miniflare");
  let workerd = "unknown";
  try {
    workerd = packageVersion(createRequire(miniflareJson ?? entry).resolve("workerd/package.json"));
  } catch {
    // workerd resolves from miniflare in every supported layout; "unknown" only labels output.
  }
  const found: Versions = {
    package: packageVersion(path.join(PACKAGE_ROOT, "package.json")),
    wrangler: packageVersion(wranglerPackageJson()),
    miniflare: miniflareJson ? packageVersion(miniflareJson) : "unknown",
    workerd,
  };
  cache.versions.set(entry, found);
  return found;
}

/**
 * Whether a session may use an owner. Only this package's version must match: it defines every
 * record, the election and the candidate handling. miniflare and workerd may differ: sessions reach
 * the owner through miniflare's storage candidate and workerd's debug port, which
 * @cloudflare/vite-plugin 1.64.0's miniflare (5.20261012.0-beta) and wrangler 4.164.0's
 * (5.20261117.0-beta) both speak, in both directions (test/register.test.ts: vite sessions,
 * a wrangler session and a getPlatformProxy() script on one owner, 0 failed inserts, one holder).
 * The files are opened by the owner alone, whichever version it runs, as plain wrangler opens a
 * persist directory that an older or newer wrangler wrote.
 */
export function sameVersions(a: Versions, b: Versions): boolean {
  return a.package === b.package;
}

function isDirectory(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The dev registry directory every session of this machine uses: wrangler's `getRegistryPath()`
 * and miniflare's `resolveDevRegistryPath()` on this platform (src/registry-path.ts; a unit test
 * compares them), so that `storage-owner status` can answer without loading wrangler's bundle.
 */
export function resolveRegistryPath(env: NodeJS.ProcessEnv = process.env): string {
  return registryPathFor({
    platform: process.platform,
    env,
    homedir: homedirFor(process.platform, env, os.homedir()),
    isDirectory,
  });
}

function envMs(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a number of milliseconds, got ${JSON.stringify(raw)}`);
  }
  return value;
}

export interface OwnerTimings {
  /** After start, the owner waits this long for its first client before it may idle out. */
  graceMs: number;
  /** With no live client for this long, the owner withdraws and exits. */
  idleMs: number;
  /** Sessions wait at most this long for an owner to publish its address. */
  startTimeoutMs: number;
}

export function ownerTimings(env: NodeJS.ProcessEnv = process.env): OwnerTimings {
  return {
    graceMs: envMs(env, "WRANGLER_X_OWNER_GRACE_MS", 5000),
    idleMs: envMs(env, "WRANGLER_X_OWNER_IDLE_MS", 2000),
    startTimeoutMs: envMs(env, "WRANGLER_X_OWNER_START_TIMEOUT_MS", 30000),
  };
}

/** WRANGLER_X_OWNER_STANDBY=0 saves the standby's memory (~260 MiB) at the cost of ~1 s failovers. */
export function standbyEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return !["0", "false", "no"].includes((env.WRANGLER_X_OWNER_STANDBY ?? "").toLowerCase());
}

export const SHARED_STORAGE_FLAG = "x-shared-storage";
export const SHARED_STORAGE_ENV = "WRANGLER_X_SHARED_STORAGE";
