// `npm run demo` in its short mode: a wrangler session and a vite session share one owner; it
// must finish cleanly and leave nothing running.
import path from "node:path";
import { afterAll, expect, it } from "vitest";
import { liveness } from "../src/process-info.js";
import { REPO, Sandbox, TOOL_RUNNER } from "./harness/sandbox.js";

const sandbox = new Sandbox();
afterAll(() => sandbox.cleanup());

it("the demo explains itself, a wrangler and a vite session write through one owner without failure, and it cleans up", async () => {
  // The first run installs vite and @cloudflare/vite-plugin into a cached fixture project.
  const { code, stdout, stderr } = await sandbox.run(
    [path.join(REPO, "test", "harness", "demo.ts"), "--short"],
    {
      bin: TOOL_RUNNER,
      timeoutMs: 420_000,
    },
  );
  expect(code, stdout + stderr).toBe(0);
  const owner = Number(stdout.match(/storage owner: pid (\d+)/)![1]);
  expect(stdout).toMatch(
    new RegExp(
      `api +ready on .*\\(pid \\d+, wrangler, miniflare 5\\.20261117\\.0-beta\\): storage served by owner pid ${owner}\\n`,
    ),
  );
  expect(stdout).toMatch(
    new RegExp(
      `web +ready on .*\\(pid \\d+, vite \\+ @cloudflare/vite-plugin, miniflare 5\\.20261012\\.0-beta\\): storage served by owner pid ${owner}\\n`,
    ),
  );
  expect(stdout).toContain("40 of 40 inserts succeeded, 0 failed");
  expect(stdout).toMatch(/pid \d+ \(the owner's workerd\): one holder\n/);
  expect(stdout).toContain('web reads KV "greeting" written by api: "hello from api"');
  expect(stdout).toContain('api reads R2 "report.txt" written by web: "report from web"');
  expect(stdout).toMatch(/api +sees 40 rows in D1 \(20 of them its own\)/);
  expect(stdout).toMatch(/web +sees 40 rows in D1 \(20 of them its own\)/);
  expect(stdout).toMatch(new RegExp(`owner\\s+pid ${owner} · running`));
  expect(stdout).toContain("nothing left running");
  expect(stdout).toContain(
    "Demo finished: no failed request, one process held the database files.",
  );
  expect(liveness({ pid: owner })).not.toBe("alive");
  expect(await sandbox.settledLeftovers()).toEqual([]);
}, 480_000);
