// The Cache API's real-process instruments, for the tests and the bench: a worker that exercises
// the Cache (test/fixtures/cache-worker), and which of a root's files hold cached entries.
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
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

/**
 * What an origin answers for `/<kind>-<case>`, by kind: the headers that decide whether
 * Cloudflare's cache keeps a subrequest's response (none, private, a cookie, HTML, a 404).
 */
const ORIGIN_KINDS: Record<string, { status?: number; headers: Record<string, string> }> = {
  bare: { headers: { "content-type": "text/plain" } },
  maxage: { headers: { "content-type": "text/plain", "cache-control": "public, max-age=60" } },
  private: { headers: { "content-type": "text/plain", "cache-control": "private" } },
  cookie: {
    headers: { "content-type": "text/plain", "cache-control": "max-age=60", "set-cookie": "s=1" },
  },
  html: { headers: { "content-type": "text/html" } },
  missing: { status: 404, headers: { "content-type": "text/plain" } },
};

/** A local HTTP origin for the worker's subrequests, counting hits per path. */
export interface Origin {
  url: string;
  hits: Map<string, number>;
  /** The last request's headers per path, but Host (each origin's port differs). */
  asked: Map<string, http.IncomingHttpHeaders>;
  close(): Promise<void>;
}

export async function startOrigin(): Promise<Origin> {
  const hits = new Map<string, number>();
  const asked = new Map<string, http.IncomingHttpHeaders>();
  const server = http.createServer((req, res) => {
    const key = (req.url ?? "/").slice(1);
    const n = (hits.get(key) ?? 0) + 1;
    hits.set(key, n);
    const { host: _, ...headers } = req.headers;
    asked.set(key, headers);
    const kind = ORIGIN_KINDS[key.split("-")[0]!] ?? ORIGIN_KINDS.bare!;
    res.writeHead(kind.status ?? 200, { ...kind.headers, "x-hit": String(n) });
    res.end(kind.headers["content-type"] === "text/html" ? `<p>${key}</p>` : key);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    asked,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections(); // workerd keeps its subrequest connections alive
      }),
  };
}

/** fetch()'s Cache options against each origin kind: `[path, cf options as the route's query]`. */
export const SUBREQUEST_CASES: [string, string][] = [
  ["maxage-1", ""],
  ["bare-1", "cacheTtl=60"],
  ["maxage-2", "cacheTtl=60"],
  ["html-1", "cacheTtl=60"],
  ["html-2", "cacheEverything&cacheTtl=60"],
  ["bare-2", "cacheEverything"],
  ["private-1", "cacheEverything&cacheTtl=60"],
  ["cookie-1", "cacheEverything&cacheTtl=60"],
  ["maxage-3", "cacheTtl=-1"],
  ["missing-1", `cacheTtlByStatus=${encodeURIComponent('{"200-299":60,"404":30}')}`],
  ["bare-3", "cacheEverything&cacheTtl=60&cacheKey=https://cache.example/shared"],
  ["bare-4", "cacheEverything&cacheTtl=60&cacheKey=https://cache.example/shared"],
];

/**
 * Each case's path fetched twice through the session's worker with its `cf` options, against
 * `origin`: both answers as the worker saw them, and how often the origin was asked.
 */
export async function subrequestConversation(s: Session, origin: Origin) {
  const through = async (key: string, query: string) => {
    const p = `/origin/${key}?origin=${encodeURIComponent(origin.url)}${query ? `&${query}` : ""}`;
    return getJson<{ status: number; body: string; headers: Record<string, string> }>(s.url(p));
  };
  const answers = [];
  for (const [key, query] of SUBREQUEST_CASES) {
    const first = await through(key, query);
    const second = await through(key, query);
    answers.push({
      key,
      query,
      first,
      second,
      originHits: origin.hits.get(key) ?? 0,
      asked: origin.asked.get(key),
    });
  }
  return answers;
}
