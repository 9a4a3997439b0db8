// The fixture cache under the temp dir is bounded: caches of checkouts nobody runs are pruned,
// a checkout whose suite is running is never touched, nor is the tarball in use; the stores that
// checkouts share go once no checkout used them for two days; package-manager caches that earlier
// versions kept in a checkout's cache are removed.
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, expect, it } from "vitest";
import { pruneFixtureCaches, RETIRED } from "./harness/fixture-project.js";

const root = mkdtempSync(path.join(os.tmpdir(), "fixture-cache-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const HOUR = 3600_000;

function cache(name: string, ageMs: number, stamp = true): string {
  const dir = path.join(root, name);
  mkdirSync(path.join(dir, "wrangler-4.164.0"), { recursive: true });
  const seconds = (Date.now() - ageMs) / 1000;
  if (stamp) {
    writeFileSync(path.join(dir, ".last-used"), "");
    utimesSync(path.join(dir, ".last-used"), seconds, seconds);
  }
  utimesSync(dir, seconds, seconds);
  return dir;
}

it("drops other checkouts' caches unused for two days or beyond the two newest, stores no checkout used for two days and retired package-manager caches; keeps running ones, stores in use and the tarball in use", () => {
  const ours = path.join(root, "ours");
  const running = [cache("a", 0.1 * HOUR), cache("b", 0.2 * HOUR), cache("c", 0.5 * HOUR)];
  const recent = cache("d", 3 * HOUR);
  const old = cache("e", 49 * HOUR);
  const unstamped = cache("f", 72 * HOUR, false);
  const pack = path.join(ours, "pack");
  mkdirSync(pack, { recursive: true });
  const inUse = path.join(pack, "shared-storage-wrangler-new.tgz");
  const earlier = path.join(pack, "shared-storage-wrangler-old.tgz");
  const fresh = path.join(pack, "shared-storage-wrangler-other-fork.tgz");
  for (const [file, ageMs] of [
    [inUse, 5 * HOUR],
    [earlier, 2 * HOUR],
    [fresh, 0],
  ] as const) {
    writeFileSync(file, "x");
    const seconds = (Date.now() - ageMs) / 1000;
    utimesSync(file, seconds, seconds);
  }

  // What earlier versions kept in a checkout's cache: package-manager caches and stores.
  expect(RETIRED).toContain("yarn-cache");
  for (const name of RETIRED) mkdirSync(path.join(ours, name, "v3"), { recursive: true });
  // The stores every checkout's projects link into: kept while any checkout used them in two
  // days, though they are not among the two newest caches.
  const store = (name: string, ageMs: number) => cache(path.join("shared", name), ageMs);
  const storesInUse = [
    store("pnpm+wrangler-4.160.0", 0.1 * HOUR),
    store("bun+wrangler-4.160.0", 40 * HOUR),
  ];
  const storeUnused = store("pnpm9+wrangler-4.126.0", 49 * HOUR);
  // Its folder unchanged for hours: were it taken for a checkout's cache, it would go.
  const threeHoursAgo = (Date.now() - 3 * HOUR) / 1000;
  utimesSync(path.join(root, "shared"), threeHoursAgo, threeHoursAgo);

  const removed = pruneFixtureCaches(Date.now(), root, ours, inUse);

  expect(removed.sort()).toEqual(
    [
      recent,
      old,
      unstamped,
      earlier,
      storeUnused,
      ...RETIRED.map((n) => path.join(ours, n)),
    ].sort(),
  );
  for (const dir of storesInUse) expect(existsSync(dir), dir).toBe(true);
  for (const dir of running) expect(existsSync(dir), dir).toBe(true);
  expect(existsSync(inUse)).toBe(true);
  expect(existsSync(fresh)).toBe(true);
  expect(existsSync(path.join(ours, ".last-used"))).toBe(true);
  expect(existsSync(path.join(root, "shared", ".last-used"))).toBe(true);
});
