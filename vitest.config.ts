import type { Reporter } from "vitest/reporters";
import { defineConfig } from "vitest/config";

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

// Tests start real wrangler/workerd processes: files run in parallel on two forks (the
// machines have two cores); each test bounds its own waits.
export default defineConfig({
  // Vite transforms only .ts/.mts by default: src/yes-no.cts (imported by src/environment.ts)
  // failed to parse in every test that imports the package's modules.
  esbuild: { include: /\.[cm]?tsx?$/ },
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    testTimeout: 180_000,
    hookTimeout: 180_000,
    reporters: ["default", summary],
  },
});
