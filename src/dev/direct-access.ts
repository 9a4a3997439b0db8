// A local storage command (or a plain `wrangler dev`) that opens a persist root's files itself,
// while a storage owner serves that root: say so in one line on stderr, then run it as asked.
// Loaded only for those commands; reads one record, loads nothing of wrangler.
import { resolvePersistRoot } from "../persist-root.js";
import { isAlive } from "../process-info.js";
import { readOwner, rootPaths } from "../records.js";

/** A passthrough command that will open a persist root's files itself. */
export interface DirectStorageUse {
  command: string;
  /** Whether --x-shared-storage would route it through the owner. */
  sharable: boolean;
  persistTo?: string;
  config?: string;
  /** The directory wrangler runs in (`--cwd`). */
  cwd: string;
}

export function directAccessWarning(use: DirectStorageUse): string | undefined {
  const found = resolvePersistRoot({ "persist-to": use.persistTo, config: use.config }, use.cwd);
  if ("missingConfig" in found) return undefined; // wrangler itself reports a missing config
  const { root } = found;
  const record = readOwner(rootPaths(root));
  if (!record?.ok || !isAlive(record.value)) return undefined;
  const advice = use.sharable
    ? "add --x-shared-storage to go through the owner"
    : "--x-shared-storage does not cover this command";
  return (
    `▲ [x-shared-storage] \`wrangler ${use.command}\` opens ${root} directly while storage owner ` +
    `pid ${record.value.pid} serves it; concurrent writes may fail with SQLITE_BUSY (${advice}).`
  );
}

export function warnIfOwnerServes(use: DirectStorageUse): void {
  const warning = directAccessWarning(use);
  if (warning) process.stderr.write(`${warning}\n`);
}
