// A head start for `wrangler dev --x-shared-storage`: the first session's owner starts (node,
// miniflare, its workerd: ~1 s) beside wrangler's own start (its CLI, the config, the bundle)
// instead of after it. At the preload, before wrangler loads, the persist root and dev registry
// are predicted as `wrangler dev` resolves them (persist-root.ts, registry-path.ts); where the
// election's first step would start an owner (none, or a dead one nobody else takes over), one
// is started through the same critical section (`Election.startAhead`) and not waited for.
// Nothing routes yet, so no presence is written: the session's own election (preload.ts
// `connect`) writes it before it routes, finds the owner starting or serving, and decides as it
// always does. A prediction that turns out wrong costs an owner no session uses, which exits by
// itself after its grace (WRANGLER_X_OWNER_GRACE_MS + WRANGLER_X_OWNER_IDLE_MS, ~7 s).
import { mkdirSync } from "node:fs";
import path from "node:path";
import { ensureCanonicalRoot } from "../canonical-root.js";
import { parseCommandLine } from "../command-line.js";
import { Election } from "../owner/succession.js";
import { resolvePersistRoot } from "../persist-root.js";
import type { ProcessIdentity } from "../process-info.js";
import { rootPaths } from "../records.js";

export interface HeadStart {
  persistRoot: string;
  registryPath: string;
  owner: ProcessIdentity;
}

/**
 * Starts the owner ahead for `wrangler dev <args>`, or does nothing (help, --remote, a missing
 * config, an owner already there or starting, any failure: the session's election reports those
 * in its own words). `registryPath` is the registry the session will find the owner through.
 */
export function startOwnerAhead(
  args: string[],
  registryPath: string,
  say: (message: string) => void,
): HeadStart | undefined {
  const { options } = parseCommandLine(args);
  if (options.helpOrVersion || options.remote === true) return undefined;
  const cwd = options.cwd === undefined ? process.cwd() : path.resolve(options.cwd);
  const found = resolvePersistRoot(
    { "persist-to": options.persistTo, config: options.config },
    cwd,
  );
  if ("missingConfig" in found) return undefined;
  try {
    // The spelling the session's Miniflare will use (preload.ts `canonical`): created as it does.
    const persistRoot = ensureCanonicalRoot(found.root);
    const paths = rootPaths(persistRoot);
    mkdirSync(paths.stateDir, { recursive: true }); // where the election lock goes
    const notes: string[] = [];
    const owner = new Election(paths, registryPath).startAhead(notes);
    for (const note of notes) say(note);
    if (owner === undefined) return undefined;
    say(`started storage owner pid ${owner.pid} for ${persistRoot} (log: ${paths.ownerLog})`);
    return { persistRoot, registryPath, owner };
  } catch {
    return undefined;
  }
}
