// `npm run bench`: shared storage against plain wrangler and miniflare's own shared storage
// (the oldest session owns), every figure measured for every contender in this one run.
//   npm run bench              full run (several minutes)
//   npm run bench -- --quick   under three minutes
//   npm run bench -- --smoke   one tiny iteration of everything (the test suite runs this)
//   npm run bench -- --profile where the time of a call through the owner goes (profile.ts);
//                              with --quick or --smoke, shorter; writes bench/profile.json
//   --only ready               the readiness scenario alone (cold/warm start); its rows only
//   --only idle                the idle-CPU scenario alone (30 s of two idle sessions each)
//   --out FILE                 write the JSON there instead of bench/results.json
// Prints a table and writes bench/results.json. Figures are never asserted anywhere. Each
// scenario is a module of its own under scenarios/; this file only runs them in order.
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { versions } from "../src/environment.js";
import { cleanUpOnSignal, REPO } from "../test/harness/sandbox.js";
import { type Bench, CONTENDERS, type Mode, SIZES } from "./context.js";
import { profile } from "./profile.js";
import { formatTable, type Figures, HEADER, readyRows, reportTable } from "./report.js";
import { cacheLoad } from "./scenarios/cache.js";
import { correctness } from "./scenarios/correctness.js";
import { earlyCrash } from "./scenarios/early-crash.js";
import { idleCost } from "./scenarios/idle.js";
import { latencyAndMemory } from "./scenarios/latency.js";
import { passthrough } from "./scenarios/passthrough.js";
import { readiness } from "./scenarios/readiness.js";
import { scaling, singleSessionThroughput } from "./scenarios/throughput.js";
import { round } from "./stats.js";

function write(file: string, value: object): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(value, null, 2) + "\n");
  console.log(`\nWritten to ${file}`);
}

/** Every scenario, one after the other, in an order that keeps the machine's state alike for each. */
async function runAll(bench: Bench): Promise<Figures> {
  const correctnessBy: Figures["correctness"] = {};
  for (const contender of CONTENDERS)
    correctnessBy[contender] = await correctness(bench, contender);
  const cache = await cacheLoad(bench);
  const latency = await latencyAndMemory(bench);
  const ready = await readiness(bench);
  // 1 session: both contenders at once, taking turns; more: one contender after the other.
  const single = await singleSessionThroughput(bench);
  return {
    correctness: correctnessBy,
    cache,
    latency,
    ready,
    single,
    scaling: {
      plain: await scaling(bench, "plain", single),
      ours: await scaling(bench, "ours", single),
    },
    earlyCrash: await earlyCrash(bench),
    idle: { plain: await idleCost(bench, "plain"), ours: await idleCost(bench, "ours") },
    passthrough: await passthrough(bench),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      smoke: { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      profile: { type: "boolean", default: false },
      only: { type: "string" },
      out: { type: "string" },
    },
  });
  const mode: Mode = values.smoke ? "smoke" : values.quick ? "quick" : "full";
  const bench: Bench = {
    mode,
    sizes: SIZES[mode],
    log: (message) =>
      process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`),
  };
  cleanUpOnSignal();
  const startedAt = Date.now();
  const date = new Date().toISOString();
  if (values.profile) {
    const figures = await profile(mode);
    const out = values.out ? path.resolve(values.out) : path.join(REPO, "bench", "profile.json");
    write(out, { mode, date, versions: versions(), ...figures });
    return;
  }
  bench.log(`mode ${mode}: ${JSON.stringify(bench.sizes)}`);
  if (values.only === "idle") {
    const idle = { plain: await idleCost(bench, "plain"), ours: await idleCost(bench, "ours") };
    const ratio = idle.plain.cpuSeconds > 0 ? idle.ours.cpuSeconds / idle.plain.cpuSeconds : NaN;
    console.log(
      `\nidle CPU-s: plain ${idle.plain.cpuSeconds}, ours ${idle.ours.cpuSeconds} (${round(ratio, 2)}x)`,
    );
    const out = values.out ? path.resolve(values.out) : path.join(REPO, "bench", "idle.json");
    write(out, { mode, sizes: bench.sizes, date, versions: versions(), idle });
    return;
  }
  if (values.only !== undefined) {
    if (values.only !== "ready")
      throw new Error(`--only takes "ready" or "idle", not "${values.only}"`);
    const ready = await readiness(bench);
    console.log(`\n${formatTable([HEADER, ...readyRows(ready)])}`);
    const out = values.out ? path.resolve(values.out) : path.join(REPO, "bench", "ready.json");
    write(out, { mode, sizes: bench.sizes, date, versions: versions(), ready });
    return;
  }
  const figures = await runAll(bench);
  const durationSeconds = round((Date.now() - startedAt) / 1000);
  console.log(
    `\nBench (${mode}) on ${os.cpus().length} cores, node ${process.version}, wrangler ${versions().wrangler}, ${durationSeconds} s\n`,
  );
  console.log(reportTable(bench.sizes, figures));
  write(values.out ? path.resolve(values.out) : path.join(REPO, "bench", "results.json"), {
    mode,
    sizes: bench.sizes,
    durationSeconds,
    date,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memoryGiB: round(os.totalmem() / 2 ** 30, 1),
      platform: `${os.platform()} ${os.release()}`,
      node: process.version,
    },
    versions: versions(),
    ...figures,
  });
}

await main();
