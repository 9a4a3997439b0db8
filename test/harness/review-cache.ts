// Shared by the review's Cache repros (test/review-cache-*.test.ts): the cache worker fixture and
// what two writers of <root>/cache cost, measured with real sessions.
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { readOwner, rootPaths } from "../../src/records.js";
import { getJson, parentPid, processesWithOpen, type Sandbox, type Session } from "./sandbox.js";

const WORKER = path.join(import.meta.dirname, "..", "fixtures", "cache-worker", "index.js");

export function addCacheWorker(sandbox: Sandbox, name: string): void {
  const dir = sandbox.workerDir(name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(WORKER, path.join(dir, "index.js"));
  writeFileSync(
    path.join(dir, "wrangler.jsonc"),
    JSON.stringify({ name, main: "index.js", compatibility_date: "2025-11-01" }),
  );
}

/** Cache entry files (each cache's database, blobs): not the namespace's metadata.sqlite. */
export const isCacheFile = (persistRoot: string) => (file: string) =>
  file.startsWith(path.join(persistRoot, "cache") + path.sep) &&
  (/\/[0-9a-f]{64}\.sqlite(-wal|-shm)?$/.test(file) || /\/blobs\//.test(file));

/**
 * 100 concurrent puts from each session (prefix `tag<i>`), who holds the cache entry files right
 * after (by role), then every session's entries looked up from every session.
 */
export async function putsAndLookups(
  sandbox: Sandbox,
  sessions: Session[],
  tag: string,
  persistRoot = sandbox.persistRoot,
) {
  const puts = await Promise.all(
    sessions.map((s, i) => getJson<{ failed: number }>(s.url(`/bulk-put?n=100&prefix=${tag}${i}`))),
  );
  const owner = readOwner(rootPaths(persistRoot))!;
  if (!owner.ok) throw new Error(`no owner record for ${persistRoot}`);
  const holders = processesWithOpen(isCacheFile(persistRoot)).map((pid) => {
    const parent = parentPid(pid);
    if (parent === owner.value.pid) return "owner";
    // A session's workerd: its parent is wrangler, whose parent is our bin (the session's pid).
    const session = sessions.find((s) => s.pid === parentPid(parent!));
    return session ? `session ${session.worker}` : `pid ${pid} (parent ${parent})`;
  });
  const found: number[] = [];
  for (const s of sessions)
    for (const i of sessions.keys())
      found.push(
        (await getJson<{ found: number }>(s.url(`/bulk-match?n=100&prefix=${tag}${i}`))).found,
      );
  console.log(
    `[review] ${tag}: puts failed ${puts.map((p) => p.failed).join(", ")}; of 100 each, found from sessions x entries: ${found.join(", ")}; cache file holders: ${holders.join(", ")}`,
  );
  return { failed: puts.map((p) => p.failed), found, holders };
}
