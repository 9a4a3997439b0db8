// Which persist roots a storage-owner command looks at: the one `wrangler dev` would use
// (src/persist-root.ts resolves it), or with `--all` every root that left a pointer in the dev
// registry.
import { existsSync, statSync } from "node:fs";
import type { Options } from "yargs";
import { canonicalRootIfExists } from "../../canonical-root.js";
import { resolveRegistryPath } from "../../environment.js";
import { type PersistRootArgs, resolvePersistRoot } from "../../persist-root.js";
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

export interface ScopeArgs extends PersistRootArgs {
  all?: boolean;
}

/** The persist root `wrangler dev` in `cwd` would use with these arguments (src/persist-root.ts). */
export function persistRootFor(args: ScopeArgs, cwd = process.cwd()): string {
  const found = resolvePersistRoot(args, cwd);
  if ("missingConfig" in found)
    throw new UserError(`No Wrangler configuration file at ${found.missingConfig}.`);
  return found.root;
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
