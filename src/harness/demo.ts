// `npm run demo`: two example workers with --x-shared-storage on one persist directory, writing
// to the same D1 database, KV namespace and R2 bucket at once; then who owns what, then a
// clean stop. `--short` (used by the test suite) writes less.
import { ownerGone } from "../owner/lifecycle.js";
import { cleanUpOnSignal, getJson, post, Sandbox, type Session, waitFor } from "./sandbox.js";

const short = process.argv.includes("--short");
const INSERTS = short ? 20 : 100;
const step = (message: string) => console.log(`\n▶ ${message}`);
const info = (message: string) => console.log(`  ${message}`);

async function main(): Promise<void> {
  cleanUpOnSignal(); // Ctrl-C leaves nothing running
  // Short timings so the owner's exit is visible; the defaults are 5 s grace and 2 s idle.
  const sandbox = new Sandbox({ graceMs: 2000, idleMs: 1000 });
  let sessions: Session[] = [];
  try {
    console.log(
      "Shared storage demo: two `wrangler dev --x-shared-storage` sessions on one persist directory.",
    );
    info(`persist directory: ${sandbox.persistTo}`);
    info(`example project:   ${sandbox.project} (a copy of templates/)`);

    step(
      "Starting workers `api` and `jobs` (the first one elects itself and starts the storage owner)…",
    );
    sessions = await Promise.all(["api", "jobs"].map((worker) => sandbox.startSession(worker)));
    const owner = sandbox.owner()!;
    for (const s of sessions) info(`${s.worker.padEnd(4)} ready on ${s.url("")} (pid ${s.pid})`);
    info(
      `storage owner: pid ${owner.pid}, debug address ${owner.debugAddress}, log ${owner.logFile}`,
    );

    step(
      "Applying the D1 migration with `wrangler d1 migrations apply --local --x-shared-storage`…",
    );
    const migration = await sandbox.run(
      [
        "d1",
        "migrations",
        "apply",
        "shared-db",
        "--local",
        "--persist-to",
        sandbox.persistTo,
        "--x-shared-storage",
      ],
      { cwd: sandbox.workerDir("api") },
    );
    if (migration.code !== 0) throw new Error(`migration failed:\n${migration.stderr}`);
    info("0001_items.sql applied through the owner");

    step(
      `Writing from both sessions at once: ${INSERTS} concurrent D1 inserts each, plus KV and R2…`,
    );
    const results = await Promise.all(
      sessions.flatMap((s) =>
        Array.from({ length: INSERTS }, () => post(s.url(`/d1/insert?who=${s.worker}`))),
      ),
    );
    const failed = results.filter((r) => !r.ok).length;
    info(`${results.length - failed} of ${results.length} inserts succeeded, ${failed} failed`);
    const [api, jobs] = sessions as [Session, Session];
    await fetch(api.url("/kv/greeting"), { method: "PUT", body: "hello from api" });
    await fetch(jobs.url("/r2/report.txt"), { method: "PUT", body: "report from jobs" });
    info(
      `jobs reads KV "greeting" written by api: ${JSON.stringify(await (await fetch(jobs.url("/kv/greeting"))).text())}`,
    );
    info(
      `api reads R2 "report.txt" written by jobs: ${JSON.stringify(await (await fetch(api.url("/r2/report.txt"))).text())}`,
    );
    for (const s of sessions) {
      const all = await getJson<{ count: number }>(s.url("/d1/count"));
      const mine = await getJson<{ count: number }>(s.url(`/d1/count?who=${s.worker}`));
      info(`${s.worker.padEnd(4)} sees ${all.count} rows in D1 (${mine.count} of them its own)`);
    }

    step("`wrangler storage-owner status`:");
    const status = await sandbox.run([
      "storage-owner",
      "status",
      "--persist-to",
      sandbox.persistTo,
    ]);
    console.log(status.stdout.trimEnd().replace(/^/gm, "  "));

    step("Stopping both sessions (Ctrl-C)…");
    const stoppedAt = Date.now();
    await sandbox.stopAllSessions();
    info("sessions stopped; the owner leaves once no client remains (grace + idle debounce)");
    await waitFor("the owner to exit", () => ownerGone(owner), 20_000);
    info(`owner pid ${owner.pid} exited ${Date.now() - stoppedAt} ms after the stop`);
    const left = await sandbox.settledLeftovers();
    if (left.length > 0) throw new Error(`processes left running: ${left.join(", ")}`);
    info("nothing left running");
    if (failed > 0) process.exitCode = 1;
    console.log(
      failed === 0
        ? "\nDemo finished: no failed request."
        : `\nDemo finished with ${failed} failed requests.`,
    );
  } catch (error) {
    for (const s of sessions) console.error(`--- ${s.worker} output ---\n${s.output()}`);
    throw error;
  } finally {
    await sandbox.cleanup();
  }
}

await main();
