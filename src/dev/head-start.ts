// A head start for `wrangler dev --x-shared-storage`: the first session's owner starts (node,
// miniflare, its workerd: ~1 s) beside wrangler's own start (its CLI, the config, the bundle)
// instead of after it. At the preload, before wrangler loads, the persist root and dev registry
// are predicted as `wrangler dev` resolves them (persist-root.ts, registry-path.ts); where the
// election's first step would start an owner (none, or a dead one nobody else takes over), one
// is started through the same critical section (`Election.startAhead`) and not waited for.
// Nothing routes yet, so no presence is written: the session's own election (preload.ts
// `connect`) writes it before it routes, finds the owner starting or serving, and decides as it
// always does. Only a command line whose root is certain gets a head start (one config file,
// found; `--persist-to` spelled so). What wrangler reads after the preload can still change the
// registry (a project `.env`): the session then stops the owner it started ahead, which no one
// uses yet (`withdrawHeadStart`), and elects as it would have without one. A session that fails
// before its Miniflare leaves that owner without a client: it exits by itself after its grace
// (WRANGLER_X_OWNER_GRACE_MS + WRANGLER_X_OWNER_IDLE_MS, ~7 s).
import { mkdirSync, realpathSync } from "node:fs";
import path from "node:path";
import { ensureCanonicalRoot } from "../canonical-root.js";
import { parseCommandLine } from "../command-line.js";
import { liveSessionCount } from "../owner/assessment.js";
import { Election } from "../owner/succession.js";
import { findUserConfig, resolvePersistRoot } from "../persist-root.js";
import { type ProcessIdentity, signalIfOurs, waitUntilGoneSync } from "../process-info.js";
import { rootPaths, type RootPaths } from "../records.js";

export interface HeadStart {
  persistRoot: string;
  registryPath: string;
  owner: ProcessIdentity;
}

/** How long an owner started ahead, stopped by its session, may take to exit. */
export const WITHDRAW_TIMEOUT_MS = 10_000;

/**
 * Arguments whose persist root we do not predict: several configs (the first is the primary,
 * whose root wrangler uses), and `--persist-to` in spellings yargs also accepts (`--persistTo`).
 */
function uncertainRoot(args: string[]): boolean {
  const configs = args.filter((arg) => /^(-c|--config)(=|$)/.test(arg)).length;
  return configs > 1 || args.some((arg) => /^--(persistTo|persist_to)(=|$)/.test(arg));
}

/**
 * Starts the owner ahead for `wrangler dev <args>`, or does nothing: help, --remote,
 * --no-persist-to, no config found, an uncertain root, an owner already there or starting, any
 * failure (the session's election reports those in its own words). `registryPath` is the
 * registry predicted for it.
 */
export function startOwnerAhead(
  args: string[],
  registryPath: string,
  say: (message: string) => void,
): HeadStart | undefined {
  const { options } = parseCommandLine(args);
  if (options.helpOrVersion || options.remote === true || uncertainRoot(args)) return undefined;
  // wrangler persists nothing then (its getLocalPersistencePath gives false): no owner either.
  if (args.includes("--no-persist-to")) return undefined;
  try {
    // wrangler chdirs to --cwd: its config search then walks the real path's parents.
    const cwd = options.cwd === undefined ? process.cwd() : realpathSync(path.resolve(options.cwd));
    // No config (a command run in the wrong directory, e.g. $HOME): nothing is created there.
    if (options.config === undefined && findUserConfig(cwd) === undefined) return undefined;
    const found = resolvePersistRoot(
      { "persist-to": options.persistTo, config: options.config },
      cwd,
    );
    if ("missingConfig" in found) return undefined;
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

/** What became of the owner started ahead, asked to go by its session (`withdrawHeadStart`). */
export type Withdrawal = "withdrawn" | "in use" | "unproven" | "did not stop";

/**
 * The session's registry is not the one predicted (wrangler loaded a `.env` after the preload):
 * the root's owner, the one this process started ahead, is stopped where no session uses it yet
 * (SIGTERM, proven by the pid and start time recorded at its spawn) and waited for, so that the
 * session's election starts the root's owner in the session's registry. Anything but `withdrawn`:
 * the session refuses, as it would for any owner of another registry.
 */
export function withdrawHeadStart(
  ahead: HeadStart,
  paths: RootPaths,
  say: (message: string) => void,
): Withdrawal {
  if (liveSessionCount(paths) > 0) return "in use";
  say(
    `stopping owner pid ${ahead.owner.pid}, started ahead for the dev registry ${ahead.registryPath}: ` +
      `wrangler's settings (a .env?) name another; the session starts its own`,
  );
  if (signalIfOurs(ahead.owner, "SIGTERM") === "unproven") return "unproven";
  return waitUntilGoneSync([ahead.owner], WITHDRAW_TIMEOUT_MS) ? "withdrawn" : "did not stop";
}
