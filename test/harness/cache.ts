// The Cache API's real-process instruments, for the tests and the bench: a worker that exercises
// the Cache (test/fixtures/cache-worker), and which of a root's files hold cached entries.
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO, type Sandbox, type Session, getJson } from "./sandbox.js";

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
