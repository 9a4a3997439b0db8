import path from "node:path";
import type { Reporter } from "vitest/reporters";
import { defineConfig } from "vitest/config";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/** Ends the run with one plain "N passed, N failed" line, for CI logs. */
const summary: Reporter = {
  onFinished(files = []) {
    const tests = files.flatMap((file) => collect(file));
    const count = (state: string) => tests.filter((t) => t === state).length;
    console.log(`\n${count("pass")} passed, ${count("fail")} failed, ${count("skip")} skipped`);
  },
};

type Task = { type: string; mode?: string; result?: { state?: string }; tasks?: Task[] };
function collect(task: Task): string[] {
  if (task.tasks) return task.tasks.flatMap((t) => collect(t));
  if (task.type !== "test") return [];
  return [task.mode === "skip" || task.mode === "todo" ? "skip" : (task.result?.state ?? "skip")];
}

/**
 * Seconds each long file took in a full run on 2 cores (CI, fresh clone). Without a results
 * cache (CI's fresh clone) vitest starts the largest files first, which put the 108 s
 * bench-smoke near the end on one fork while the other idled; longest first keeps both forks
 * busy to the end. Only the order depends on these: refresh them from
 * `npx vitest run --reporter=json --outputFile=times.json` when a file's time changes a lot.
 */
const SECONDS: Record<string, number> = {
  "test/package-managers.test.ts": 116,
  "test/bench-smoke.test.ts": 108,
  "test/local-commands.test.ts": 97,
  "test/hazards.test.ts": 95,
  "test/register.test.ts": 71,
  "test/project-wrangler.test.ts": 63,
  "test/failover.test.ts": 53,
  "test/shared-storage.test.ts": 51,
  "test/continuity.test.ts": 48,
  "test/cache-routes.test.ts": 45,
  "test/registries.test.ts": 43,
  "test/faults.test.ts": 41,
  "test/head-start.test.ts": 30,
  "test/passthrough.test.ts": 28,
  "test/storage-owner.test.ts": 27,
  "test/demo.test.ts": 24,
  "test/failover-limit.test.ts": 19,
  "test/succession.test.ts": 19,
  "test/profile-smoke.test.ts": 18,
  "test/no-proc.test.ts": 12,
  "test/cache.test.ts": 11,
  "test/register-takeover.test.ts": 10,
  "test/pooled.test.ts": 8,
  "test/superseded-owner.test.ts": 3,
};

/** Longest file first; a file not in SECONDS (new, time unknown) before all, as vitest does. */
class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const seconds = (file: TestSpecification) =>
      SECONDS[path.relative(this.ctx.config.root, file.moduleId).split(path.sep).join("/")] ??
      Infinity;
    // Stable: files of equal (or unknown) time keep vitest's own order.
    return (await super.sort(files)).sort((a, b) => seconds(b) - seconds(a) || 0);
  }
}

// Tests start real wrangler/workerd processes: files run in parallel on two forks (the
// machines have two cores); each test bounds its own waits.
export default defineConfig({
  // Vite strips types from .ts/.mts only; src/yes-no.cts is TypeScript too (CommonJS, for the register).
  esbuild: { include: /\.[cm]?tsx?$/ },
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    testTimeout: 180_000,
    hookTimeout: 180_000,
    reporters: ["default", summary],
    sequence: { sequencer: LongestFirst },
  },
});
