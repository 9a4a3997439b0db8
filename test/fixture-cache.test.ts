// The fixture cache under the temp dir is bounded: caches of checkouts nobody runs are pruned,
// a checkout whose suite is running is never touched, nor is the tarball in use.
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, expect, it } from "vitest";
import { pruneFixtureCaches } from "./harness/fixture-project.js";

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

it("drops other checkouts' caches unused for two days or beyond the two newest, keeps running ones and the tarball in use", () => {
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

  const removed = pruneFixtureCaches(Date.now(), root, ours, inUse);

  expect(removed.sort()).toEqual([recent, old, unstamped, earlier].sort());
  for (const dir of running) expect(existsSync(dir), dir).toBe(true);
  expect(existsSync(inUse)).toBe(true);
  expect(existsSync(fresh)).toBe(true);
  expect(existsSync(path.join(ours, ".last-used"))).toBe(true);
});
