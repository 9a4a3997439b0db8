// The Cache API's real-process instruments, for the tests and the bench: a worker that exercises
// the Cache (test/fixtures/cache-worker), and which of a root's files hold cached entries.
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { readOwner, rootPaths } from "../../src/records.js";
import {
  getJson,
  parentPid,
  processesWithOpen,
  REPO,
  type Sandbox,
  type Session,
} from "./sandbox.js";

export const CACHE_WORKER = path.join(REPO, "test", "fixtures", "cache-worker", "index.js");

/** A worker `name` in the sandbox's project that serves the cache worker's routes. */
export function addCacheWorker(sandbox: Sandbox, name: string): string {
  const dir = sandbox.workerDir(name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(CACHE_WORKER, path.join(dir, "index.js"));
  writeFileSync(
    path.join(dir, "wrangler.jsonc"),
    JSON.stringify({ name, main: "index.js", compatibility_date: "2025-11-01" }),
  );
  return dir;
}

/**
 * The root's cached entries (plain wrangler's layout, `<root>/cache/`): each cache's database and
 * the blobs. Like `isDatabaseFile`, not the namespace's metadata.sqlite, which every workerd that
 * declares the Cache's object opens at start (a ready standby too) and no entry lives in.
 */
export const isCacheFile = (persistRoot: string) => (file: string) =>
  file.startsWith(path.join(persistRoot, "cache") + path.sep) &&
  (/\/[0-9a-f]{64}\.sqlite(-wal|-shm)?$/.test(file) || /\/blobs\//.test(file));

export interface BulkResult {
  failed: number;
  first?: string;
  /** Each round's milliseconds inside the worker (put, match, and delete where it deletes). */
  ms?: number[];
}

/** `n` concurrent put/match rounds in one session, every other entry deleted after its match. */
export const bulkMixed = (s: Session, prefix: string, n = 100, ns?: string) =>
  getJson<BulkResult>(s.url(`/bulk-mixed?n=${n}&prefix=${prefix}${ns ? `&ns=${ns}` : ""}`));

/** `n` concurrent puts in one session. */
export const bulkPut = (s: Session, prefix: string, n = 100) =>
  getJson<BulkResult>(s.url(`/bulk-put?n=${n}&prefix=${prefix}`));

/** How many of `prefix`0…n-1 one session matches, each with its own body. */
export const bulkFound = async (s: Session, prefix: string, n = 100, ns?: string) =>
  (
    await getJson<{ found: number }>(
      s.url(`/bulk-match?n=${n}&prefix=${prefix}${ns ? `&ns=${ns}` : ""}`),
    )
  ).found;

/** Who holds `persistRoot`'s cache entry files now, by role: "owner", "session <worker>", or a pid. */
export function cacheHolders(persistRoot: string, ownerPid: number, sessions: Session[]): string[] {
  return processesWithOpen(isCacheFile(persistRoot)).map((pid) => {
    const parent = parentPid(pid);
    if (parent === ownerPid) return "owner";
    // A session's workerd: its parent is wrangler, whose parent is our bin (the session's pid).
    const session = sessions.find((s) => s.pid === parentPid(parent!));
    return session ? `session ${session.worker}` : `pid ${pid} (parent ${parent})`;
  });
}

/**
 * 100 concurrent puts from each session (prefix `<tag><i>`), who holds the cache entry files
 * right after, then every session's entries looked up from every session (`found`, in that order).
 */
export async function putsAndLookups(
  sandbox: Sandbox,
  sessions: Session[],
  tag: string,
  persistRoot = sandbox.persistRoot,
) {
  const puts = await Promise.all(sessions.map((s, i) => bulkPut(s, `${tag}${i}`)));
  const owner = readOwner(rootPaths(persistRoot));
  if (!owner?.ok) throw new Error(`no owner record for ${persistRoot}`);
  const holders = cacheHolders(persistRoot, owner.value.pid, sessions);
  const found: number[] = [];
  for (const s of sessions)
    for (const i of sessions.keys()) found.push(await bulkFound(s, `${tag}${i}`));
  console.log(
    `[cache] ${tag}: puts failed ${puts.map((p) => p.failed).join(", ")}; of 100 each, found from sessions x entries: ${found.join(", ")}; cache file holders: ${holders.join(", ")}`,
  );
  return { failed: puts.map((p) => p.failed), found, holders };
}

/** One put of `key` then its match, from one session: true when the match returns what was put. */
export async function putThenMatch(s: Session, key: string): Promise<boolean> {
  try {
    await fetch(s.url(`/put/${key}`), { method: "PUT", body: key });
    const got = (await (await fetch(s.url(`/match/${key}`))).json()) as { body?: string };
    return got.body === key;
  } catch {
    return false;
  }
}
