// `wrangler dev --x-shared-storage` (and the local storage commands): check that sharing is
// possible, then run the real wrangler with our preload. The preload does the rest inside
// wrangler's own process, where wrangler has already resolved the persist root and registry.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseCommandLine } from "../command-line.js";
import { MINIFLARE_ENTRY_ENV, WRANGLER_PACKAGE_ENV, wranglerPackageJson } from "../environment.js";
import { runRealWrangler } from "../real-wrangler.js";

export const PRELOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), "preload-entry.cjs");
/** Tells the preload which command it runs in; its presence is what turns the preload on. */
export const SESSION_ENV = "WRANGLER_X_SHARED_STORAGE_SESSION";

/** Why sharing cannot work for these arguments, or undefined when it can. */
export function incompatibility(command: string, args: string[]): string | undefined {
  const { options } = parseCommandLine(args);
  if (options.remote === true) {
    return `--x-shared-storage shares local storage between sessions; it cannot be combined with --remote.`;
  }
  if (command === "dev" && options.disableDevRegistry === true) {
    return (
      `--x-shared-storage needs the dev registry: sessions find the storage owner through it. ` +
      `Remove --disable-dev-registry, or drop --x-shared-storage.`
    );
  }
  if (command.startsWith("flagship ") && options.local !== true) {
    return `\`wrangler ${command}\` uses the local flag store only with --local; add --local to share it.`;
  }
  return undefined;
}

export function runWithSharedStorage(command: string, args: string[]): void {
  const problem = incompatibility(command, args);
  if (problem) {
    console.error(`✘ [ERROR] ${problem}`);
    process.exitCode = 1;
    return;
  }
  // The preload, the owner and its standby load this wrangler's miniflare, not one they find,
  // nor the copy a registered parent process (a vite dev server) handed down.
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    [SESSION_ENV]: command,
    [WRANGLER_PACKAGE_ENV]: wranglerPackageJson(),
  };
  delete env[MINIFLARE_ENTRY_ENV];
  runRealWrangler(args, { nodeArgs: ["--require", PRELOAD], env });
}
