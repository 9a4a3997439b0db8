// Which persist root a command in a directory uses, resolved as `wrangler dev` resolves it:
// `--persist-to DIR` is DIR/v3 relative to the cwd; otherwise `.wrangler/state/v3` next to the
// nearest wrangler config (wrangler.json, then .jsonc, then .toml, searching upwards, as
// wrangler's findWranglerConfig does; a test compares the two). Used by `storage-owner` and by
// the warning for commands that open a root's files directly.
import { existsSync } from "node:fs";
import path from "node:path";
import { canonicalRootIfExists } from "./canonical-root.js";

export interface PersistRootArgs {
  "persist-to"?: string;
  config?: string;
}

const CONFIG_NAMES = ["wrangler.json", "wrangler.jsonc", "wrangler.toml"];

function findUp(name: string, from: string): string | undefined {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, name);
    if (existsSync(candidate)) return candidate;
    if (dir === path.dirname(dir)) return undefined;
  }
}

/** The config file `wrangler dev` in `cwd` would use (its userConfigPath). */
export function findUserConfig(cwd: string): string | undefined {
  for (const name of CONFIG_NAMES) {
    const found = findUp(name, cwd);
    if (found) return found;
  }
  return undefined;
}

/** The persist root, or `missingConfig`: the file `--config` names, which does not exist. */
export function resolvePersistRoot(
  args: PersistRootArgs,
  cwd = process.cwd(),
): { root: string } | { missingConfig: string } {
  // As wrangler's getLocalPersistencePath: an empty `--persist-to=` is none.
  if (args["persist-to"]) {
    return {
      root: canonicalRootIfExists(path.join(path.resolve(cwd, args["persist-to"]), "v3")),
    };
  }
  const config = args.config ? path.resolve(cwd, args.config) : findUserConfig(cwd);
  if (args.config && !existsSync(config!)) return { missingConfig: config! };
  const base = config ? path.dirname(config) : cwd;
  return { root: canonicalRootIfExists(path.join(base, ".wrangler", "state", "v3")) };
}
