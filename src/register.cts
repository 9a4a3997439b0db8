// `NODE_OPTIONS="--require shared-storage-wrangler/register"`: shared storage for every Miniflare
// that persists in this process and its Node children (vite dev with @cloudflare/vite-plugin,
// getPlatformProxy(), unstable_startWorker), whichever copy of miniflare they load.
// miniflare is CommonJS. We wrap the loader's `.js` handler: when a miniflare entry finishes
// loading, its `module.exports` becomes a copy with our Miniflare (src/dev/preload.ts) before
// anyone sees it. ES-module importers get the `module.exports` captured right after the load, so
// a later swap (as the wrangler preload does through `require.cache`) would not reach them.
// Costs nothing until a miniflare loads: only then is the session code required.
// In the real wrangler's own process (pnpm and yarn link its bin as `wrangler`, not ours), it
// also teaches that wrangler our command lines: `--x-shared-storage`, `storage-owner`.
// `WRANGLER_X_SHARED_STORAGE=false` (which `--x-shared-storage=false` sets for the wrangler it
// runs) turns the register off in that process and its children.
import fs = require("node:fs");
import nodeModule = require("node:module");
import path = require("node:path");

type Loader = (this: unknown, module: NodeJS.Module, filename: string) => void;

/** miniflare's main file, in any install layout (nested, hoisted, pnpm's store). */
const MINIFLARE_MAIN = /[\\/]node_modules[\\/]miniflare[\\/]dist[\\/]src[\\/]index\.js$/;
/** The owner and its standby inherit NODE_OPTIONS: they must not join themselves as a session. */
const OWNER_MAIN = path.join(__dirname, "owner", "main.js");
/** The real wrangler's entries: its bin, and the bundle that bin starts. */
const WRANGLER_MAIN = /[\\/]bin[\\/]wrangler\.js$|[\\/]wrangler-dist[\\/]cli\.js$/;
/** Set on globalThis when this process's register shares storage (read by dispatch.ts). */
const REGISTER_SHARES = "shared-storage-wrangler.register-shares";

/**
 * `WRANGLER_X_SHARED_STORAGE` says no, as our command line reads it (yes-no.cts, dependency-free).
 * Unset in most processes: then nothing else of ours is loaded.
 */
function switchedOff(): boolean {
  const raw = process.env.WRANGLER_X_SHARED_STORAGE;
  if (raw === undefined) return false;
  const { yesNo } = require("./yes-no.cjs") as typeof import("./yes-no.cjs");
  return yesNo(raw.trim()) === false;
}

/** The wrangler package whose entry `main` is, if it is one. */
function wranglerPackageOf(main: string): string | undefined {
  const packageJson = path.join(path.dirname(path.dirname(main)), "package.json");
  try {
    const { name } = JSON.parse(fs.readFileSync(packageJson, "utf8")) as { name?: string };
    return name === "wrangler" ? packageJson : undefined;
  } catch {
    return undefined;
  }
}

/** Whether our dispatch took the real wrangler's command line over (then wrangler must not run). */
function tookOver(main: string): boolean {
  const packageJson = wranglerPackageOf(main);
  if (!packageJson) return false;
  // The wrangler the user ran is the project's: ours, the sessions and the owner run that one.
  process.env.WRANGLER_X_WRANGLER_PACKAGE ??= packageJson;
  try {
    const dispatch = require("./dispatch.js") as typeof import("./dispatch.js");
    return dispatch.takeOverRealWrangler(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(
      `✘ [x-shared-storage] shared-storage-wrangler/register cannot read this wrangler command line: ${(error as Error).message}\n`,
    );
    return false;
  }
}

function hook(sharing: boolean): void {
  // Our dispatch in this process (a taken-over wrangler, or our bin under NODE_OPTIONS) hands its
  // command to a wrangler that inherits this register: that one shares, it opens nothing directly.
  if (sharing) (globalThis as Record<symbol, unknown>)[Symbol.for(REGISTER_SHARES)] = true;
  const extensions = (nodeModule as unknown as { _extensions: Record<string, Loader> })._extensions;
  const load = extensions[".js"];
  if (!load) throw new Error("node's CommonJS loader has no .js handler");
  extensions[".js"] = function (this: unknown, module: NodeJS.Module, filename: string) {
    if (module.id === "." && WRANGLER_MAIN.test(filename) && tookOver(filename)) return;
    load.call(this, module, filename);
    if (!sharing || !MINIFLARE_MAIN.test(filename)) return;
    const exports = module.exports as { Miniflare?: unknown };
    if (typeof exports?.Miniflare !== "function") return;
    let preload: typeof import("./dev/preload.js");
    try {
      preload = require("./dev/preload.js") as typeof import("./dev/preload.js");
    } catch (error) {
      // The user's process: its require (or import) of miniflare fails, it is not exited.
      throw new Error(
        `shared-storage-wrangler/register cannot share storage through ${filename} in process ${process.pid}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    module.exports = preload.sharedStorageModule(
      module.exports as Parameters<typeof preload.sharedStorageModule>[0],
      filename,
    );
  };
}

if (path.resolve(process.argv[1] ?? "") !== OWNER_MAIN) hook(!switchedOff());
