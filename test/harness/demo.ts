// `npm run demo`: a `wrangler dev --x-shared-storage` session and a `vite dev` session
// (@cloudflare/vite-plugin, joined by the one-line register switch) on one persist directory,
// writing to the same D1 database, KV namespace and R2 bucket at once; who holds the database
// files meanwhile; then who owns what, then a clean stop. `--short` (used by the test suite)
// writes less.
import { symlinkSync } from "node:fs";
import path from "node:path";
import { ownerGone } from "../../src/owner/assessment.js";
import { listClients, rootPaths } from "../../src/records.js";
import { fixtureProject } from "./fixture-project.js";
import { sampleHolders } from "./load.js";
import {
  cleanUpOnSignal,
  freePort,
  getJson,
  post,
  Sandbox,
  type Session,
  waitFor,
} from "./sandbox.js";

const short = process.argv.includes("--short");
const INSERTS = short ? 20 : 100;
const WRANGLER = "4.164.0";
// The same install as register.test.ts's (cached; fixtureProject locks it while installing).
const VITE_PACKAGES = { vite: "8.3.8", "@cloudflare/vite-plugin": "1.64.0" };
const REGISTER = "--require shared-storage-wrangler/register";
const step = (message: string) => console.log(`\n▶ ${message}`);
const info = (message: string) => console.log(`  ${message}`);

async function main(): Promise<void> {
  cleanUpOnSignal(); // Ctrl-C leaves nothing running
  // Short timings so the owner's exit is visible; the defaults are 5 s grace and 2 s idle.
  const sandbox = new Sandbox({ graceMs: 2000, idleMs: 1000 });
  let sessions: Session[] = [];
  try {
    console.log(
      "Shared storage demo: a `wrangler dev --x-shared-storage` session and a `vite dev` session on one persist directory.",
    );
    info(`persist directory: ${sandbox.persistTo}`);
    info(`example project:   ${sandbox.project} (a copy of templates/)`);

    step(
      `Installing the example project's packages: wrangler ${WRANGLER}, ` +
        `${Object.entries(VITE_PACKAGES)
          .map(([name, version]) => `${name} ${version}`)
          .join(", ")} and this package as npm packs it…`,
    );
    const fixture = fixtureProject(WRANGLER, sandbox.env, { devDependencies: VITE_PACKAGES });
    symlinkSync(path.join(fixture.dir, "node_modules"), path.join(sandbox.project, "node_modules"));
    const bin = path.join(sandbox.project, "node_modules", ".bin", "wrangler");
    info(
      fixture.installSeconds === 0
        ? `already installed in ${fixture.dir}`
        : `installed in ${Math.round(fixture.installSeconds)} s into ${fixture.dir} (kept for the next run)`,
    );

    step(
      "Starting worker `api` (`wrangler dev --x-shared-storage`) and worker `web` " +
        `(\`NODE_OPTIONS="${REGISTER}" vite dev\`) at once; the first to get there starts the storage owner…`,
    );
    const vitePort = await freePort();
    const vite = path.join(sandbox.project, "node_modules", "vite", "bin", "vite.js");
    sessions = await Promise.all([
      sandbox.startSession("api", { bin }),
      sandbox.startProcess(
        "web",
        vitePort,
        [vite, "dev", "--port", String(vitePort), "--strictPort", "--host", "127.0.0.1"],
        {
          cwd: sandbox.workerDir("vite"),
          env: {
            NODE_OPTIONS: REGISTER,
            // The plugin finds the dev registry through MINIFLARE_REGISTRY_PATH, wrangler
            // through WRANGLER_REGISTRY_PATH (set by the sandbox): both name the same one.
            MINIFLARE_REGISTRY_PATH: sandbox.registry,
            X_PERSIST_TO: sandbox.persistTo,
          },
        },
      ),
    ]);
    const owner = sandbox.owner()!;
    const miniflares = new Map(
      listClients(rootPaths(sandbox.persistRoot)).flatMap((c) =>
        c.record.ok ? [[c.record.value.worker, c.record.value.versions.miniflare] as const] : [],
      ),
    );
    for (const s of sessions) {
      const servedBy = s.output().match(/served by owner pid (\d+)/)?.[1] ?? "?";
      info(
        `${s.worker.padEnd(4)} ready on ${s.url("")} (pid ${s.pid}, ` +
          `${s.worker === "web" ? "vite + @cloudflare/vite-plugin" : "wrangler"}, ` +
          `miniflare ${miniflares.get(s.worker) ?? "?"}): storage served by owner pid ${servedBy}`,
      );
    }
    info(
      `storage owner: pid ${owner.pid} (miniflare ${owner.versions.miniflare}), ` +
        `debug address ${owner.debugAddress}, log ${owner.logFile}`,
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
      { bin, cwd: sandbox.workerDir("api") },
    );
    if (migration.code !== 0) throw new Error(`migration failed:\n${migration.stderr}`);
    info("0001_items.sql applied through the owner");

    step(
      `Writing from both sessions at once: ${INSERTS} concurrent D1 inserts each, plus KV and R2…`,
    );
    const sampler = sampleHolders(sandbox.persistRoot);
    const results = await Promise.all(
      sessions.flatMap((s) =>
        Array.from({ length: INSERTS }, () => post(s.url(`/d1/insert?who=${s.worker}`))),
      ),
    );
    await sampler.stop();
    const failed = results.filter((r) => !r.ok).length;
    info(`${results.length - failed} of ${results.length} inserts succeeded, ${failed} failed`);
    const holders = [...new Set(sampler.samples.flatMap((s) => s.holders))];
    const ownerWorkerd = (owner.workerd ?? []).map((w) => w.pid);
    const oneHolder =
      holders.length === 1 && ownerWorkerd.includes(holders[0]!) ? "one holder" : "NOT one holder";
    info(
      `processes that held the database files meanwhile (${sampler.samples.length} looks): ` +
        `${holders.map((pid) => `pid ${pid}${ownerWorkerd.includes(pid) ? " (the owner's workerd)" : ""}`).join(", ") || "none seen"}: ${oneHolder}`,
    );
    const [api, web] = sessions as [Session, Session];
    await fetch(api.url("/kv/greeting"), { method: "PUT", body: "hello from api" });
    await fetch(web.url("/r2/report.txt"), { method: "PUT", body: "report from web" });
    info(
      `web reads KV "greeting" written by api: ${JSON.stringify(await (await fetch(web.url("/kv/greeting"))).text())}`,
    );
    info(
      `api reads R2 "report.txt" written by web: ${JSON.stringify(await (await fetch(api.url("/r2/report.txt"))).text())}`,
    );
    for (const s of sessions) {
      const all = await getJson<{ count: number }>(s.url("/d1/count"));
      const mine = await getJson<{ count: number }>(s.url(`/d1/count?who=${s.worker}`));
      info(`${s.worker.padEnd(4)} sees ${all.count} rows in D1 (${mine.count} of them its own)`);
    }

    step("`wrangler storage-owner status`:");
    const status = await sandbox.run(
      ["storage-owner", "status", "--persist-to", sandbox.persistTo],
      { bin },
    );
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
    const ok = failed === 0 && oneHolder === "one holder";
    if (!ok) process.exitCode = 1;
    console.log(
      ok
        ? "\nDemo finished: no failed request, one process held the database files."
        : `\nDemo finished with ${failed} failed requests, ${oneHolder}.`,
    );
  } catch (error) {
    for (const s of sessions) console.error(`--- ${s.worker} output ---\n${s.output()}`);
    throw error;
  } finally {
    await sandbox.cleanup();
  }
}

await main();
