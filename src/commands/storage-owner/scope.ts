// Which persist roots a storage-owner command looks at, resolved as `wrangler dev` resolves
// them: `--persist-to DIR` is DIR/v3 relative to the cwd; otherwise `.wrangler/state/v3` next to
// the nearest wrangler config (wrangler.json, then .jsonc, then .toml, searching upwards, as
// wrangler's findWranglerConfig does; a test compares the two). `--all` lists every root that
// left a pointer in the dev registry.
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import type { Options } from "yargs";
import { canonicalRootIfExists } from "../../canonical-root.js";
import { resolveRegistryPath } from "../../environment.js";
import { listPointers, pointerDir } from "../../records.js";
import { UserError } from "../create-command.js";

export const scopeArgs = {
  "persist-to": {
    type: "string",
    description:
      "The directory passed to `wrangler dev --persist-to` (default: .wrangler/state next to the config)",
    requiresArg: true,
  },
  config: {
    alias: "c",
    type: "string",
    description: "Path to the Wrangler configuration file whose default persist root to use",
    requiresArg: true,
  },
  all: {
    type: "boolean",
    description:
      "Every persist root with owner records on this machine (found through the dev registry)",
    default: false,
  },
} as const satisfies Record<string, Options>;

export interface ScopeArgs {
  "persist-to"?: string;
  config?: string;
  all?: boolean;
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

export function persistRootFor(args: ScopeArgs, cwd = process.cwd()): string {
  if (args["persist-to"] !== undefined) {
    return canonicalRootIfExists(path.join(path.resolve(cwd, args["persist-to"]), "v3"));
  }
  const config = args.config ? path.resolve(cwd, args.config) : findUserConfig(cwd);
  if (args.config && !existsSync(config!))
    throw new UserError(`No Wrangler configuration file at ${config}.`);
  const base = config ? path.dirname(config) : cwd;
  return canonicalRootIfExists(path.join(base, ".wrangler", "state", "v3"));
}

export interface Scope {
  roots: string[];
  registryPath: string;
  /** Pointer files that name each root, for gc to withdraw. */
  pointers: Map<string, string[]>;
  problems: string[];
}

export function resolveScope(args: ScopeArgs): Scope {
  const registryPath = resolveRegistryPath();
  const pointers = new Map<string, string[]>();
  const problems: string[] = [];
  if (!args.all) {
    const root = persistRootFor(args);
    if (existsSync(root) && !statSync(root).isDirectory()) {
      throw new UserError(`The persist root ${root} is not a directory.`);
    }
    return { roots: [root], registryPath, pointers, problems };
  }
  if (args["persist-to"] !== undefined || args.config !== undefined) {
    throw new UserError(
      "--all looks at every persist root; it cannot be combined with --persist-to or --config.",
    );
  }
  const dir = pointerDir(registryPath);
  if (existsSync(dir)) {
    try {
      statSync(dir);
    } catch (error) {
      throw new UserError(`Cannot read the dev registry at ${dir}: ${(error as Error).message}`);
    }
  }
  for (const { file, record } of listPointers(registryPath)) {
    if (!record.ok) {
      problems.push(record.problem);
      continue;
    }
    // Pointers of one root spelt two ways (left by earlier versions) are one root.
    const root = canonicalRootIfExists(record.value.persistRoot);
    pointers.set(root, [...(pointers.get(root) ?? []), file]);
  }
  return { roots: [...pointers.keys()].sort(), registryPath, pointers, problems };
}
