// src/environment.ts resolves this process's wrangler once, on first use, and keeps it in one
// cache object that a test can reset.
import { afterEach, expect, it } from "vitest";
import { environmentCache, WRANGLER_PACKAGE_ENV, wranglerPackageJson } from "../src/environment.js";

const saved = process.env[WRANGLER_PACKAGE_ENV];
afterEach(() => {
  if (saved === undefined) delete process.env[WRANGLER_PACKAGE_ENV];
  else process.env[WRANGLER_PACKAGE_ENV] = saved;
  environmentCache.reset();
});

it("keeps the wrangler resolved first until reset", () => {
  environmentCache.reset();
  process.env[WRANGLER_PACKAGE_ENV] = "/first/wrangler/package.json";
  expect(wranglerPackageJson()).toBe("/first/wrangler/package.json");
  process.env[WRANGLER_PACKAGE_ENV] = "/second/wrangler/package.json";
  expect(wranglerPackageJson()).toBe("/first/wrangler/package.json");
  environmentCache.reset();
  expect(wranglerPackageJson()).toBe("/second/wrangler/package.json");
});
