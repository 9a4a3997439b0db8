// `NODE_OPTIONS="--require shared-storage-wrangler/register"`: shared storage for every Miniflare
// that persists in this process and its Node children (vite dev with @cloudflare/vite-plugin,
// getPlatformProxy(), unstable_startWorker), whichever copy of miniflare they load.
// miniflare is CommonJS. We wrap the loader's `.js` handler: when a miniflare entry finishes
// loading, its `module.exports` becomes a copy with our Miniflare (src/dev/preload.ts) before
// anyone sees it. ES-module importers get the `module.exports` captured right after the load, so
// a later swap (as the wrangler preload does through `require.cache`) would not reach them.
// Costs nothing until a miniflare loads: only then is the session code required.
import nodeModule = require("node:module");
import path = require("node:path");

type Loader = (this: unknown, module: NodeJS.Module, filename: string) => void;

/** miniflare's main file, in any install layout (nested, hoisted, pnpm's store). */
const MINIFLARE_MAIN = /[\\/]node_modules[\\/]miniflare[\\/]dist[\\/]src[\\/]index\.js$/;
/** The owner and its standby inherit NODE_OPTIONS: they must not join themselves as a session. */
const OWNER_MAIN = path.join(__dirname, "owner", "main.js");

function hook(): void {
  const extensions = (nodeModule as unknown as { _extensions: Record<string, Loader> })._extensions;
  const load = extensions[".js"];
  if (!load) throw new Error("node's CommonJS loader has no .js handler");
  extensions[".js"] = function (this: unknown, module: NodeJS.Module, filename: string) {
    load.call(this, module, filename);
    if (!MINIFLARE_MAIN.test(filename)) return;
    const exports = module.exports as { Miniflare?: unknown };
    if (typeof exports?.Miniflare !== "function") return;
    let preload: typeof import("./dev/preload.js");
    try {
      preload = require("./dev/preload.js") as typeof import("./dev/preload.js");
    } catch (error) {
      process.stderr.write(
        `✘ [x-shared-storage] shared-storage-wrangler/register cannot share storage in this process: ${(error as Error).message}\n`,
      );
      process.exit(1);
    }
    module.exports = preload.sharedStorageModule(
      module.exports as Parameters<typeof preload.sharedStorageModule>[0],
      filename,
    );
  };
}

if (path.resolve(process.argv[1] ?? "") !== OWNER_MAIN) hook();
