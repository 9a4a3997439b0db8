import { defineConfig } from "vitest/config";

// Tests start real wrangler/workerd processes: files run in parallel on two forks (the
// machines have two cores), each test bounds its own waits.
export default defineConfig({
  test: {
    include: ["src/__tests__/**/*.test.ts"],
    pool: "forks",
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    testTimeout: 180_000,
    hookTimeout: 180_000,
    reporters: ["default"],
  },
});
